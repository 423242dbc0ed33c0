// Fashion-MNIST (and MNIST) from IDX files: 28×28 grey images, 10 classes. Training augmentation:
// a random crop of the image padded with `random_crop_padding` black pixels, and a random horizontal
// flip (clothes are left-right symmetric as classes). "fashion-mnist:N" then resizes the image to
// N×N, bilinear with half-pixel centres (PyTorch's interpolate, align_corners=False), so that a
// model's stages get more tokens than 28×28 gives.
#include <algorithm>
#include <filesystem>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "data/dataset.h"
#include "data/idx.h"

namespace mf {

const char* const kDebianFashionMnistDir = "/usr/share/datasets/fashion-mnist";

namespace {

std::string find_file(const std::string& dir, const std::string& stem) {
  for (const std::string& name : {stem, stem + ".gz"}) {
    const std::string path = dir + "/" + name;
    if (std::filesystem::exists(path)) return path;
  }
  fail("{}: no {} or {}.gz (is the dataset-fashion-mnist package installed?)", dir, stem, stem);
}

class FashionMnist : public Dataset {
 public:
  FashionMnist(const std::string& dir, const std::string& split, const DataTransform& t) : t_(t), split_(split) {
    MF_CHECK(split == "train" || split == "test", "unknown Fashion-MNIST split '{}'", split);
    const std::string prefix = split == "train" ? "train" : "t10k";
    const std::string image_path = find_file(dir, prefix + "-images-idx3-ubyte");
    const std::string label_path = find_file(dir, prefix + "-labels-idx1-ubyte");
    IdxArray images = read_idx(image_path);
    IdxArray labels = read_idx(label_path);
    MF_CHECK(images.dims.size() == 3, "{}: expected images [N, H, W], got {} dimensions", image_path,
             images.dims.size());
    MF_CHECK(labels.dims.size() == 1, "{}: expected labels [N], got {} dimensions", label_path, labels.dims.size());
    MF_CHECK(images.dims[0] == labels.dims[0], "{} has {} images but {} has {} labels", image_path, images.dims[0],
             label_path, labels.dims[0]);
    MF_CHECK(images.dims[0] > 0, "{}: no images", image_path);
    MF_CHECK(images.dims[1] == images.dims[2] && images.dims[1] >= 1,
             "{}: images are {}x{}; square images expected", image_path, images.dims[1], images.dims[2]);
    for (size_t i = 0; i < labels.data.size(); ++i)
      MF_CHECK(labels.data[i] < 10, "{}: label {} of sample {} is outside 0..9", label_path, labels.data[i], i);
    n_ = images.dims[0];
    side_ = static_cast<int>(images.dims[1]);
    out_side_ = t_.upscale > 0 ? t_.upscale : side_;
    pixels_ = std::move(images.data);
    labels_ = std::move(labels.data);
    MF_CHECK(t_.mean.size() == 1 && t_.std.size() == 1, "Fashion-MNIST is grey: give one mean and one std");
  }

  int64_t size() const override { return n_; }
  int num_classes() const override { return 10; }
  int channels() const override { return 1; }
  int image_size() const override { return out_side_; }
  std::vector<std::string> class_names() const override {
    return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  }
  int64_t label(int64_t i) const override { return labels_[static_cast<size_t>(i)]; }
  std::string describe() const override {
    return fmt::format("Fashion-MNIST {} ({} images{})", split_, n_,
                       out_side_ != side_ ? fmt::format(", resized to {}x{}", out_side_, out_side_) : "");
  }

  Sample get(int64_t i, bool train, Rng& rng) const override {
    const uint8_t* src = pixels_.data() + static_cast<size_t>(i) * side_ * side_;
    const float mean = t_.mean[0], inv_std = 1.f / t_.std[0];
    Sample s;
    s.label = labels_[static_cast<size_t>(i)];
    int dx = 0, dy = 0;
    bool flip = false;
    if (train) {
      const int pad = t_.random_crop_padding;
      dy = static_cast<int>(rng.below(static_cast<uint64_t>(2 * pad + 1))) - pad;
      dx = static_cast<int>(rng.below(static_cast<uint64_t>(2 * pad + 1))) - pad;
      flip = t_.hflip && rng.uniform() < 0.5f;
    }
    // The augmented pixel (y, x) in [0, 1], at the file's resolution.
    auto pixel = [&](int y, int x) {
      const int sy = y + dy, sx0 = x + dx;
      const int sx = flip ? side_ - 1 - sx0 : sx0;
      const bool inside = sy >= 0 && sy < side_ && sx >= 0 && sx < side_;
      return inside ? src[sy * side_ + sx] / 255.f : 0.f;
    };
    s.image = Tensor::empty({out_side_, out_side_, 1});
    float* dst = s.image.data();
    if (out_side_ == side_) {  // written straight into the sample
      for (int y = 0; y < side_; ++y)
        for (int x = 0; x < side_; ++x) dst[y * side_ + x] = (pixel(y, x) - mean) * inv_std;
      return s;
    }
    std::vector<float> pixels(static_cast<size_t>(side_) * side_);
    for (int y = 0; y < side_; ++y)
      for (int x = 0; x < side_; ++x) pixels[static_cast<size_t>(y) * side_ + x] = pixel(y, x);
    // Bilinear, half-pixel centres, the source coordinate clamped at 0 (PyTorch's upsample_bilinear2d).
    const float ratio = static_cast<float>(side_) / static_cast<float>(out_side_);
    auto source = [&](int o, int& i0, int& i1, float& w1) {
      const float f = std::max(0.f, (static_cast<float>(o) + 0.5f) * ratio - 0.5f);
      i0 = std::min(static_cast<int>(f), side_ - 1);
      i1 = std::min(i0 + 1, side_ - 1);
      w1 = f - static_cast<float>(i0);
    };
    for (int y = 0; y < out_side_; ++y) {
      int y0, y1;
      float wy;
      source(y, y0, y1, wy);
      for (int x = 0; x < out_side_; ++x) {
        int x0, x1;
        float wx;
        source(x, x0, x1, wx);
        const float* r0 = pixels.data() + static_cast<size_t>(y0) * side_;
        const float* r1 = pixels.data() + static_cast<size_t>(y1) * side_;
        const float top = (1.f - wx) * r0[x0] + wx * r0[x1], bottom = (1.f - wx) * r1[x0] + wx * r1[x1];
        dst[static_cast<size_t>(y) * out_side_ + x] = ((1.f - wy) * top + wy * bottom - mean) * inv_std;
      }
    }
    return s;
  }

 private:
  DataTransform t_;
  std::string split_;
  int64_t n_ = 0;
  int side_ = 0, out_side_ = 0;
  std::vector<uint8_t> pixels_, labels_;
};

}  // namespace

std::unique_ptr<Dataset> open_fashion_mnist(const std::string& dir, const std::string& split,
                                            const DataTransform& transform) {
  return std::make_unique<FashionMnist>(dir, split, transform);
}

}  // namespace mf
