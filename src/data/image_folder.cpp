// An image folder: DIR/<class>/<image>, classes in sorted order, JPEG/PNG/BMP files. Training
// augmentation is torchvision's RandomResizedCrop (scale [min_scale, 1], ratio [3/4, 4/3]) with
// Pillow-exact bicubic resampling and a random horizontal flip; evaluation is timm's eval transform.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "data/dataset.h"
#include "data/device_crops.h"
#include "io/resample.h"

namespace mf {

namespace {

bool is_image_file(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

// Why `path` (an entry with an image extension) cannot be a training image, or "" when it looks
// like one: it must resolve (no dangling or looping symlink) to a regular, readable file that
// starts like a PNG, JPEG or BMP. Only the first bytes are read; decoding happens when it is used.
std::string unreadable_reason(const std::filesystem::directory_entry& e) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(e.path(), ec);  // follows symlinks
  std::error_code lec;
  if (st.type() == fs::file_type::not_found && fs::is_symlink(fs::symlink_status(e.path(), lec)))
    return "dangling symbolic link";
  if (ec) return ec.message();  // e.g. "Too many levels of symbolic links"
  if (!fs::exists(st)) return "vanished while listed";
  if (!fs::is_regular_file(st)) return "not a regular file";
  const int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::strerror(errno);
  uint8_t head[4] = {};
  ssize_t n;
  do n = ::pread(fd, head, sizeof head, 0);
  while (n < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (n < 0) return std::strerror(err);
  if (n == 0) return "empty file";
  const bool png = n >= 4 && head[0] == 0x89 && head[1] == 'P' && head[2] == 'N' && head[3] == 'G';
  const bool jpeg = n >= 2 && head[0] == 0xFF && head[1] == 0xD8;
  const bool bmp = n >= 2 && head[0] == 'B' && head[1] == 'M';
  if (!png && !jpeg && !bmp) return "not a PNG, JPEG or BMP file";
  return "";
}

// ITU-R 601-2 luma, as PIL's convert('L') computes it (fixed point, rounded).
uint8_t luma(const uint8_t* rgb) {
  return static_cast<uint8_t>((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

class ImageFolder : public Dataset {
 public:
  ImageFolder(const std::string& dir, const DataTransform& t) : dir_(dir), t_(t) {
    namespace fs = std::filesystem;
    MF_CHECK(fs::is_directory(dir), "{}: not a folder", dir);
    std::vector<fs::path> classes;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code dec;
      if (it->is_directory(dec)) classes.push_back(it->path());  // a looping link is no class
    }
    MF_CHECK(!ec, "{}: cannot list the folder: {}", dir, ec.message());
    std::sort(classes.begin(), classes.end());
    MF_CHECK(!classes.empty(), "{}: no class folders (expected DIR/<class>/<image>)", dir);
    for (size_t c = 0; c < classes.size(); ++c) {
      const std::string cls = classes[c].filename().string();
      std::vector<std::string> files;
      size_t skipped_here = 0;
      std::error_code ec;
      for (fs::directory_iterator it(classes[c], ec), end; !ec && it != end; it.increment(ec)) {
        if (!is_image_file(it->path())) continue;
        const std::string reason = unreadable_reason(*it);
        if (reason.empty()) {
          files.push_back(it->path().string());
        } else {
          skipped_.push_back(fmt::format("{}: {}", it->path().string(), reason));
          ++skipped_here;
        }
      }
      MF_CHECK(!ec, "{}: cannot list class folder '{}': {}", dir, cls, ec.message());
      MF_CHECK(skipped_here == 0 || !files.empty(), "{}: class folder '{}' has no readable image ({} skipped; the first: {})",
               dir, cls, skipped_here, skipped_[skipped_.size() - skipped_here]);
      MF_CHECK(!files.empty(), "{}: class folder '{}' has no images (.jpg, .jpeg, .png, .bmp)", dir, cls);
      std::sort(files.begin(), files.end());
      for (auto& f : files) items_.push_back({std::move(f), static_cast<int64_t>(c)});
      names_.push_back(cls);
    }
    MF_CHECK(t_.channels == 1 || t_.channels == 3, "image folders give 1 (grey) or 3 (RGB) channels, not {}",
             t_.channels);
    MF_CHECK(t_.mean.size() == static_cast<size_t>(t_.channels) && t_.std.size() == static_cast<size_t>(t_.channels),
             "image folders with {} channel(s) need {} means and stds", t_.channels, t_.channels);
    interpolation_ = parse_interpolation(t_.interpolation);
    // Every 8-bit value's normalised float, computed by the same expression as per pixel before
    // (so the same floats), once instead of a division per pixel and channel.
    for (int c = 0; c < t_.channels; ++c)
      for (int v = 0; v < 256; ++v)
        normalised_[c][v] = (static_cast<float>(v) / 255.f - t_.mean[static_cast<size_t>(c)]) / t_.std[static_cast<size_t>(c)];
  }

  int64_t size() const override { return static_cast<int64_t>(items_.size()); }
  int num_classes() const override { return static_cast<int>(names_.size()); }
  int channels() const override { return t_.channels; }
  std::vector<std::string> skipped_files() const override { return skipped_; }
  int image_size() const override { return t_.size; }
  std::vector<std::string> class_names() const override { return names_; }
  int64_t label(int64_t i) const override { return items_[static_cast<size_t>(i)].label; }
  std::string describe() const override {
    return fmt::format("image folder {} ({} images, {} classes)", dir_, items_.size(), names_.size());
  }

  Sample get(int64_t i, bool train, Rng& rng) const override {
    const auto& item = items_[static_cast<size_t>(i)];
    Image img = load_image(item.path, t_.max_pixels);
    Sample s;
    s.label = item.label;
    if (!train) {
      EvalTransform et;
      et.size = t_.size;
      et.crop_pct = t_.crop_pct;
      et.interpolation = parse_interpolation(t_.interpolation);
      if (t_.channels == 3) {
        std::copy_n(t_.mean.begin(), 3, et.mean.begin());
        std::copy_n(t_.std.begin(), 3, et.std.begin());
        s.image = eval_transform(img, et);
        return s;
      }
      // Grey: the RGB transform without normalisation, then luma, then the one mean and std.
      et.mean = {0.f, 0.f, 0.f};
      et.std = {1.f, 1.f, 1.f};
      const Tensor rgb = eval_transform(img, et);
      s.image = to_grey(rgb);
      return s;
    }
    const Box box = draw_box(img, rng);
    const bool flip = t_.hflip && rng.uniform() < 0.5f;
    return finish_training(img, box, flip, item.label);
  }

  bool supports_crops() const override { return t_.channels == 3; }

  bool get_packed(int64_t i, Rng& rng, float* row, int64_t row_floats, int32_t* header,
                  Sample& finished) const override {
    MF_CHECK(supports_crops(), "{}: grey images are not augmented by the backend", describe());
    const auto& item = items_[static_cast<size_t>(i)];
    const Image img = load_image(item.path, t_.max_pixels);
    const Box box = draw_box(img, rng);  // the same draws, in the same order, as get(i, true, rng)
    const bool flip = t_.hflip && rng.uniform() < 0.5f;
    if (crops::pack(img, box.x0, box.y0, box.w, box.h, flip, t_.size, interpolation_, row, row_floats, header))
      return true;
    finished = finish_training(img, box, flip, item.label);
    return false;
  }

  std::vector<float> byte_normalisation() const override {
    std::vector<float> t;
    for (int c = 0; c < t_.channels; ++c) t.insert(t.end(), normalised_[c], normalised_[c] + 256);
    return t;
  }

 private:
  struct Box {
    int x0, y0, w, h;
  };

  // torchvision RandomResizedCrop.get_params: ten tries at a random area and aspect ratio, then
  // a center crop clamped to the ratio range.
  Box draw_box(const Image& img, Rng& rng) const {
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
    return Box{x0, y0, w, h};
  }

  // The training transform of the box: Pillow-exact resize, the flip, normalisation.
  Sample finish_training(const Image& img, const Box& b, bool flip, int64_t label) const {
    Sample s;
    s.label = label;
    const Image out = resize_region(img, b.x0, b.y0, b.w, b.h, t_.size, t_.size, interpolation_);
    const int C = t_.channels;
    s.image = Tensor::empty({t_.size, t_.size, C});
    float* dst = s.image.data();
    for (int y = 0; y < t_.size; ++y) {
      const uint8_t* row = out.rgb.data() + static_cast<size_t>(y) * t_.size * 3;
      float* o = dst + static_cast<size_t>(y) * t_.size * C;
      for (int x = 0; x < t_.size; ++x, o += C) {
        const uint8_t* px = row + static_cast<size_t>(flip ? t_.size - 1 - x : x) * 3;
        if (C == 1) {
          o[0] = normalised_[0][luma(px)];
        } else {
          o[0] = normalised_[0][px[0]];
          o[1] = normalised_[1][px[1]];
          o[2] = normalised_[2][px[2]];
        }
      }
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
  Interpolation interpolation_ = Interpolation::Bicubic;
  float normalised_[3][256] = {};
  // [H, W, 3] in [0, 1] -> [H, W, 1] luma, normalised. The RGB values are quantised back to
  // 8 bits first so that grey images give the same numbers as PIL's convert('L').
  Tensor to_grey(const Tensor& rgb) const {
    const int64_t H = rgb.dim(0), W = rgb.dim(1);
    Tensor out = Tensor::empty({H, W, 1});
    const float* p = rgb.data();
    for (int64_t i = 0; i < H * W; ++i) {
      uint8_t px[3];
      for (int c = 0; c < 3; ++c)
        px[c] = static_cast<uint8_t>(std::clamp(std::lround(p[i * 3 + c] * 255.f), 0L, 255L));
      out.data()[i] = (static_cast<float>(luma(px)) / 255.f - t_.mean[0]) / t_.std[0];
    }
    return out;
  }

  std::vector<Item> items_;
  std::vector<std::string> names_;
  std::vector<std::string> skipped_;
};

}  // namespace

std::pair<float, float> grey_statistics(const Dataset& data, int64_t max_samples) {
  MF_CHECK(data.channels() == 1, "grey statistics need 1-channel data");
  const int64_t n = std::min(data.size(), max_samples);
  double sum = 0, sum_sq = 0;
  int64_t count = 0;
  Rng rng(0);
  for (int64_t k = 0; k < n; ++k) {
    try {
      const Sample s = data.get(k * data.size() / n, /*train=*/false, rng);
      for (int64_t i = 0; i < s.image.numel(); ++i) {
        const double v = s.image.data()[i];
        sum += v;
        sum_sq += v * v;
      }
      count += s.image.numel();
    } catch (const Error&) {
      // An unreadable sample is left out here as in training.
    }
  }
  MF_CHECK(count > 0, "{}: no readable image to compute its statistics from", data.describe());
  const double mean = sum / static_cast<double>(count);
  const double var = std::max(0.0, sum_sq / static_cast<double>(count) - mean * mean);
  // A constant image set has no spread; 1 then leaves the values as they are.
  return {static_cast<float>(mean), var > 1e-12 ? static_cast<float>(std::sqrt(var)) : 1.f};
}

std::unique_ptr<Dataset> open_image_folder(const std::string& dir, const DataTransform& transform) {
  return std::make_unique<ImageFolder>(dir, transform);
}

std::pair<std::string, int> split_idx_upscale(const std::string& spec) {
  namespace fs = std::filesystem;
  const size_t colon = spec.rfind(':');
  if (colon == std::string::npos || colon + 1 == spec.size()) return {spec, 0};
  const std::string base = spec.substr(0, colon), side = spec.substr(colon + 1);
  const bool idx = base == "fashion-mnist" || fs::exists(base + "/train-images-idx3-ubyte") ||
                   fs::exists(base + "/train-images-idx3-ubyte.gz");
  if (!idx) return {spec, 0};
  MF_CHECK(side.size() <= 4 && side.find_first_not_of("0123456789") == std::string::npos,
           "{}: the size after ':' must be a number of pixels, like {}:64", spec, base);
  const int n = std::stoi(side);
  MF_CHECK(n >= 8 && n <= 1024, "{}: the image side must be between 8 and 1024 pixels", spec);
  return {base, n};
}

DataSplits open_dataset(const std::string& spec, const DataTransform& transform) {
  namespace fs = std::filesystem;
  if (spec == kLongRange) return open_long_range();
  if (is_listops_spec(spec)) return open_listops(parse_listops_spec(spec));
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
