// A synthetic task that only a token mixer with a long reach can solve at low depth.
//
// Each 32×32 grey image (zero-mean noise) holds two 6×6 marks, one near the left edge and one near
// the right edge, about 20 pixels apart, at independent random rows; each mark is bright (+1) or
// dark (-1). Class 1 ("same"): both marks have the same polarity; class 0 ("different"): opposite
// ones — an XOR over a distance. Why it needs a long reach: the MetaFormer head averages per-token
// features and applies a linear classifier, so a model whose tokens never see both marks scores
// h(A) + h(B), and no function h gives h(+) + h(+) and h(-) + h(-) above a threshold that h(+) + h(-)
// stays below (their sums are equal). A token must see both marks before
// pooling: a 3×3 pooling or small conv mixer on the 8×8 token grid (patch 4) gets that reach only
// after several blocks, a global mixer (attention, spatial MLP, frequency filters) in one.
// Samples are a pure function of (split, index): no augmentation, identical for every run.
#include <fmt/format.h>

#include "core/error.h"
#include "data/dataset.h"

namespace mf {

namespace {

constexpr int kSize = 32, kMark = 6;
class LongRange : public Dataset {
 public:
  LongRange(std::string split, int64_t size, uint64_t seed) : split_(std::move(split)), size_(size), seed_(seed) {}
  int64_t size() const override { return size_; }
  int num_classes() const override { return 2; }
  int channels() const override { return 1; }
  int image_size() const override { return kSize; }
  std::vector<std::string> class_names() const override { return {"different", "same"}; }
  int64_t label(int64_t index) const override { return draw(index).label; }
  std::string describe() const override {
    return fmt::format("long-range {} ({} images, {}x{}, 2 classes)", split_, size_, kSize, kSize);
  }

  Sample get(int64_t index, bool, Rng&) const override {
    MF_CHECK(index >= 0 && index < size_, "long-range: sample {} of {}", index, size_);
    const Layout l = draw(index);
    Sample s;
    s.label = l.label;
    s.image = Tensor::zeros({kSize, kSize, 1});
    Rng noise(seed_ ^ (static_cast<uint64_t>(index) * 0x9E3779B97F4A7C15ULL) ^ 0x5bd1e995);
    for (float& v : s.image.span()) v = 0.1f * noise.normal();  // background noise, mean 0
    stamp(s.image, l.row_left, l.left, l.shape_a);
    stamp(s.image, l.row_right, l.right, l.label ? l.shape_a : l.shape_b);
    return s;
  }

 private:
  struct Layout {
    int64_t label;
    int shape_a, shape_b, row_left, row_right, left, right;
  };

  Layout draw(int64_t index) const {
    Rng r(seed_ + static_cast<uint64_t>(index) * 0x2545F4914F6CDD1DULL);
    Layout l;
    l.label = static_cast<int64_t>(r.below(2));
    l.shape_a = static_cast<int>(r.below(2));  // polarity: 0 bright, 1 dark
    l.shape_b = 1 - l.shape_a;
    l.row_left = 1 + static_cast<int>(r.below(kSize - kMark - 1));   // rows 1 .. 25
    l.row_right = 1 + static_cast<int>(r.below(kSize - kMark - 1));
    l.left = 1 + static_cast<int>(r.below(3));                       // columns 1 .. 3
    l.right = kSize - 1 - kMark - static_cast<int>(r.below(3));      // columns 23 .. 25
    return l;
  }

  static void stamp(Tensor& img, int top, int left, int polarity) {
    for (int y = 0; y < kMark; ++y)
      for (int x = 0; x < kMark; ++x) img.data()[(top + y) * kSize + left + x] += polarity ? -1.f : 1.f;
  }

  std::string split_;
  int64_t size_;
  uint64_t seed_;
};

}  // namespace

DataSplits open_long_range(int64_t train_size, int64_t eval_size) {
  DataSplits s;
  s.train = std::make_unique<LongRange>("train", train_size, 0x1000);
  s.eval = std::make_unique<LongRange>("test", eval_size, 0x2000);
  return s;
}

}  // namespace mf
