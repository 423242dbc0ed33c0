// A synthetic task that only a token mixer with a long reach can solve at low depth.
//
// Each 64×64 grey image holds four small marks: two in a column near the left edge (one in the upper
// half, one in the lower half) and two in a column near the right edge, at the same two rows. The
// left marks are two different shapes A (top) and B (bottom). Class 1 ("mirrored"): the right
// column repeats them in order (A top, B bottom). Class 0 ("swapped"): it holds them the other way
// round (B top, A bottom). Both classes contain exactly the same marks, so a model that computes
// local features and then pools them globally sees the same bag in both; telling them apart needs
// comparing a mark with the one about 40 pixels to its right — a pooling or 3×3 mixer on a 16×16
// token grid reaches that far only after several blocks, a global mixer (attention, spatial MLP,
// frequency filters) in one. Marks sit away from the borders, so zero padding cannot leak position.
// Samples are a pure function of (split, index): no augmentation, identical for every run.
#include <fmt/format.h>

#include <array>

#include "core/error.h"
#include "data/dataset.h"

namespace mf {

namespace {

constexpr int kSize = 64, kMark = 6;
// Six 6×6 binary shapes, distinct under any placement: bar, cross, ring, diagonal, corner, checks.
constexpr std::array<const char*, 6> kShapes{
    "......"
    "######"
    "######"
    "......"
    "......"
    "......",
    "..##.."
    "..##.."
    "######"
    "######"
    "..##.."
    "..##..",
    "######"
    "#....#"
    "#....#"
    "#....#"
    "#....#"
    "######",
    "##...."
    "###..."
    ".###.."
    "..###."
    "...###"
    "....##",
    "######"
    "######"
    "##...."
    "##...."
    "##...."
    "##....",
    "##..##"
    "##..##"
    "..##.."
    "..##.."
    "##..##"
    "##..##"};

class LongRange : public Dataset {
 public:
  LongRange(std::string split, int64_t size, uint64_t seed) : split_(std::move(split)), size_(size), seed_(seed) {}
  int64_t size() const override { return size_; }
  int num_classes() const override { return 2; }
  int channels() const override { return 1; }
  int image_size() const override { return kSize; }
  std::vector<std::string> class_names() const override { return {"swapped", "mirrored"}; }
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
    const int a = l.shape_a, b = l.shape_b;
    stamp(s.image, l.top, l.left, a);
    stamp(s.image, l.bottom, l.left, b);
    stamp(s.image, l.top, l.right, l.label ? a : b);
    stamp(s.image, l.bottom, l.right, l.label ? b : a);
    return s;
  }

 private:
  struct Layout {
    int64_t label;
    int shape_a, shape_b, top, bottom, left, right;
  };

  Layout draw(int64_t index) const {
    Rng r(seed_ + static_cast<uint64_t>(index) * 0x2545F4914F6CDD1DULL);
    Layout l;
    l.label = static_cast<int64_t>(r.below(2));
    l.shape_a = static_cast<int>(r.below(kShapes.size()));
    l.shape_b = static_cast<int>((l.shape_a + 1 + r.below(kShapes.size() - 1)) % kShapes.size());
    l.top = 4 + static_cast<int>(r.below(kSize / 2 - kMark - 6));         // rows 4 .. 23
    l.bottom = kSize / 2 + 2 + static_cast<int>(r.below(kSize / 2 - kMark - 6));  // rows 34 .. 53
    l.left = 4 + static_cast<int>(r.below(6));                            // columns 4 .. 9
    l.right = kSize - 4 - kMark - static_cast<int>(r.below(6));           // columns 49 .. 54
    return l;
  }

  static void stamp(Tensor& img, int top, int left, int shape) {
    const char* p = kShapes[static_cast<size_t>(shape)];
    for (int y = 0; y < kMark; ++y)
      for (int x = 0; x < kMark; ++x)
        if (p[y * kMark + x] == '#') img.data()[(top + y) * kSize + left + x] += 1.f;
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
