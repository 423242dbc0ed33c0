// An image folder: DIR/<class>/<image>, classes in sorted order, JPEG/PNG/BMP files. Training
// augmentation is torchvision's RandomResizedCrop (scale [min_scale, 1], ratio [3/4, 4/3]) with
// Pillow-exact bicubic resampling and a random horizontal flip; evaluation is timm's eval transform.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "data/dataset.h"
#include "io/resample.h"

namespace mf {

namespace {

bool is_image_file(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

Image crop(const Image& img, int x0, int y0, int w, int h) {
  Image out;
  out.width = w;
  out.height = h;
  out.rgb.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    std::copy_n(img.rgb.data() + (static_cast<size_t>(y0 + y) * img.width + x0) * 3, static_cast<size_t>(w) * 3,
                out.rgb.data() + static_cast<size_t>(y) * w * 3);
  return out;
}

class ImageFolder : public Dataset {
 public:
  ImageFolder(const std::string& dir, const DataTransform& t) : dir_(dir), t_(t) {
    namespace fs = std::filesystem;
    MF_CHECK(fs::is_directory(dir), "{}: not a folder", dir);
    std::vector<fs::path> classes;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_directory()) classes.push_back(e.path());
    std::sort(classes.begin(), classes.end());
    MF_CHECK(!classes.empty(), "{}: no class folders (expected DIR/<class>/<image>)", dir);
    for (size_t c = 0; c < classes.size(); ++c) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(classes[c]))
        if (e.is_regular_file() && is_image_file(e.path())) files.push_back(e.path().string());
      MF_CHECK(!files.empty(), "{}: class folder '{}' has no images (.jpg, .jpeg, .png, .bmp)", dir,
               classes[c].filename().string());
      std::sort(files.begin(), files.end());
      for (auto& f : files) items_.push_back({std::move(f), static_cast<int64_t>(c)});
      names_.push_back(classes[c].filename().string());
    }
    MF_CHECK(t_.mean.size() == 3 && t_.std.size() == 3, "image folders are RGB: give three means and three stds");
  }

  int64_t size() const override { return static_cast<int64_t>(items_.size()); }
  int num_classes() const override { return static_cast<int>(names_.size()); }
  int channels() const override { return 3; }
  int image_size() const override { return t_.size; }
  std::vector<std::string> class_names() const override { return names_; }
  int64_t label(int64_t i) const override { return items_[static_cast<size_t>(i)].label; }
  std::string describe() const override {
    return fmt::format("image folder {} ({} images, {} classes)", dir_, items_.size(), names_.size());
  }

  Sample get(int64_t i, bool train, Rng& rng) const override {
    const auto& item = items_[static_cast<size_t>(i)];
    Image img = load_image(item.path);
    Sample s;
    s.label = item.label;
    if (!train) {
      EvalTransform et;
      et.size = t_.size;
      et.crop_pct = t_.crop_pct;
      et.interpolation = parse_interpolation(t_.interpolation);
      std::copy_n(t_.mean.begin(), 3, et.mean.begin());
      std::copy_n(t_.std.begin(), 3, et.std.begin());
      s.image = eval_transform(img, et);
      return s;
    }
    // torchvision RandomResizedCrop.get_params: ten tries at a random area and aspect ratio, then
    // a center crop clamped to the ratio range.
    const double area = static_cast<double>(img.width) * img.height;
    int w = 0, h = 0, x0 = 0, y0 = 0;
    bool found = false;
    for (int attempt = 0; attempt < 10 && !found; ++attempt) {
      const double target = area * (t_.min_scale + (1.0 - t_.min_scale) * rng.uniform());
      const double log_ratio = std::log(3.0 / 4.0) + (std::log(4.0 / 3.0) - std::log(3.0 / 4.0)) * rng.uniform();
      const double ratio = std::exp(log_ratio);
      w = static_cast<int>(std::lround(std::sqrt(target * ratio)));
      h = static_cast<int>(std::lround(std::sqrt(target / ratio)));
      if (w > 0 && h > 0 && w <= img.width && h <= img.height) {
        y0 = static_cast<int>(rng.below(static_cast<uint64_t>(img.height - h + 1)));
        x0 = static_cast<int>(rng.below(static_cast<uint64_t>(img.width - w + 1)));
        found = true;
      }
    }
    if (!found) {
      const double in_ratio = static_cast<double>(img.width) / img.height;
      if (in_ratio < 3.0 / 4.0) {
        w = img.width;
        h = static_cast<int>(std::lround(w / (3.0 / 4.0)));
      } else if (in_ratio > 4.0 / 3.0) {
        h = img.height;
        w = static_cast<int>(std::lround(h * (4.0 / 3.0)));
      } else {
        w = img.width;
        h = img.height;
      }
      w = std::min(w, img.width);
      h = std::min(h, img.height);
      y0 = (img.height - h) / 2;
      x0 = (img.width - w) / 2;
    }
    Image out = resize(crop(img, x0, y0, w, h), t_.size, t_.size, parse_interpolation(t_.interpolation));
    const bool flip = t_.hflip && rng.uniform() < 0.5f;
    s.image = Tensor::empty({t_.size, t_.size, 3});
    float* dst = s.image.data();
    for (int y = 0; y < t_.size; ++y)
      for (int x = 0; x < t_.size; ++x)
        for (int c = 0; c < 3; ++c) {
          const int sx = flip ? t_.size - 1 - x : x;
          const float v = static_cast<float>(out.rgb[(static_cast<size_t>(y) * t_.size + sx) * 3 + c]) / 255.f;
          dst[(y * t_.size + x) * 3 + c] = (v - t_.mean[static_cast<size_t>(c)]) / t_.std[static_cast<size_t>(c)];
        }
    return s;
  }

 private:
  struct Item {
    std::string path;
    int64_t label;
  };
  std::string dir_;
  DataTransform t_;
  std::vector<Item> items_;
  std::vector<std::string> names_;
};

}  // namespace

std::unique_ptr<Dataset> open_image_folder(const std::string& dir, const DataTransform& transform) {
  return std::make_unique<ImageFolder>(dir, transform);
}

DataSplits open_dataset(const std::string& spec, const DataTransform& transform) {
  namespace fs = std::filesystem;
  if (spec == kLongRange) return open_long_range();
  DataSplits s;
  const std::string dir = spec == "fashion-mnist" ? kDebianFashionMnistDir : spec;
  MF_CHECK(fs::is_directory(dir), "{}: no such data folder{}", dir,
           spec == "fashion-mnist" ? " (install Debian's dataset-fashion-mnist)" : "");
  if (fs::exists(dir + "/train-images-idx3-ubyte") || fs::exists(dir + "/train-images-idx3-ubyte.gz")) {
    s.train = open_fashion_mnist(dir, "train", transform);
    s.eval = open_fashion_mnist(dir, "test", transform);
  } else if (fs::is_directory(dir + "/train") && (fs::is_directory(dir + "/val") || fs::is_directory(dir + "/test"))) {
    s.train = open_image_folder(dir + "/train", transform);
    s.eval = open_image_folder(fs::is_directory(dir + "/val") ? dir + "/val" : dir + "/test", transform);
    MF_CHECK(s.eval->class_names() == s.train->class_names(), "{}: train and validation classes differ", dir);
  } else {
    s.train = open_image_folder(dir, transform);
    s.eval = open_image_folder(dir, transform);
  }
  return s;
}

}  // namespace mf
