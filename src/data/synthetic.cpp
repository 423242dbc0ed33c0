// --data synthetic: random images of the model's input size, channels and classes, for throughput
// measurements (bench's training side-by-side, GPU training checks) where reading real data would be
// the thing measured. A bank of 64 noise images is drawn once from a fixed seed; sample i is image
// i % 64 with label (i · 7) % classes, so the samples cost a copy, and a model can still fit them
// (the loss goes down, which tells a broken training step from a working one).
#include <fmt/format.h>

#include <memory>

#include "core/error.h"
#include "data/dataset.h"

namespace mf {

namespace {

constexpr int64_t kBank = 64;

class Synthetic : public Dataset {
 public:
  Synthetic(std::string split, int64_t size, int image_size, int channels, int classes)
      : split_(std::move(split)), size_(size), image_size_(image_size), channels_(channels), classes_(classes) {
    Rng r(0x5EED);
    for (int64_t k = 0; k < kBank; ++k) {
      Tensor t = Tensor::empty({image_size, image_size, channels});
      for (float& v : t.span()) v = r.normal();
      bank_.push_back(std::move(t));
    }
  }
  int64_t size() const override { return size_; }
  int num_classes() const override { return classes_; }
  int channels() const override { return channels_; }
  int image_size() const override { return image_size_; }
  std::vector<std::string> class_names() const override {
    std::vector<std::string> v;
    for (int c = 0; c < classes_; ++c) v.push_back(fmt::format("class{}", c));
    return v;
  }
  int64_t label(int64_t index) const override { return (index * 7) % classes_; }
  std::string describe() const override {
    return fmt::format("synthetic {} ({} random images, {}x{}x{}, {} classes)", split_, size_, image_size_,
                       image_size_, channels_, classes_);
  }
  Sample get(int64_t index, bool, Rng&) const override {
    MF_CHECK(index >= 0 && index < size_, "synthetic: sample {} of {}", index, size_);
    Sample s;
    s.image = bank_[static_cast<size_t>(index % kBank)];  // shared: the loader copies it into the batch
    s.label = label(index);
    return s;
  }

 private:
  std::string split_;
  int64_t size_;
  int image_size_, channels_, classes_;
  std::vector<Tensor> bank_;
};

}  // namespace

bool is_synthetic_spec(const std::string& spec) { return spec == kSynthetic || spec.rfind("synthetic:", 0) == 0; }

DataSplits open_synthetic(const std::string& spec, int image_size, int channels, int classes) {
  int64_t train_size = 50000;
  if (spec != kSynthetic) {
    const std::string n = spec.substr(10);
    MF_CHECK(!n.empty() && n.size() < 10 && n.find_first_not_of("0123456789") == std::string::npos && std::stoll(n) > 0,
             "--data {}: give synthetic or synthetic:N with N the number of training images", spec);
    train_size = std::stoll(n);
  }
  MF_CHECK(image_size >= 1 && channels >= 1 && classes >= 1, "synthetic data for a {}x{}x{} input and {} classes",
           image_size, image_size, channels, classes);
  DataSplits s;
  s.train = std::make_unique<Synthetic>("train", train_size, image_size, channels, classes);
  s.eval = std::make_unique<Synthetic>("test", 1024, image_size, channels, classes);
  return s;
}

}  // namespace mf
