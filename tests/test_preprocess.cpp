// timm's own evaluation transform (timm.data.create_transform, run by tools/golden/make_golden.py on
// tests/data/image/photo.png) against ours. timm's float output was turned back into the exact 8-bit
// pixels it came from (every value was within 2e-5 of an integer) and stored as PNG in
// tests/data/preprocess/; here the pixels must be identical and the normalised values equal to 1e-6.
#include <gtest/gtest.h>

#include <cmath>

#include "io/image.h"
#include "io/resample.h"
#include "test_util.h"

namespace mf::test {
namespace {

struct Setting {
  const char* name;
  int size;
  double crop_pct;
  Interpolation interp;
  const char* crop_mode;
};

TEST(TimmPreprocessing, EvalTransformMatchesTimmExactly) {
  const Image photo = load_image(data_path("image/photo.png"));
  for (const Setting& s : {Setting{"crop100_bicubic", 224, 1.0, Interpolation::Bicubic, "center"},
                           Setting{"crop090_bicubic", 224, 0.9, Interpolation::Bicubic, "center"},
                           Setting{"crop095_bilinear_160", 160, 0.95, Interpolation::Bilinear, "center"},
                           Setting{"squash_100_bicubic", 192, 1.0, Interpolation::Bicubic, "squash"}}) {
    EvalTransform t;
    t.size = s.size;
    t.crop_pct = s.crop_pct;
    t.interpolation = s.interp;
    t.crop_mode = s.crop_mode;
    const Tensor ours = eval_transform(photo, t);
    const Image ref = load_image(data_path(std::string("preprocess/photo_") + s.name + ".png"));
    ASSERT_EQ(ref.width, s.size);
    ASSERT_EQ(ref.height, s.size);
    ASSERT_EQ(ours.shape(), (Shape{s.size, s.size, 3}));
    double worst = 0;
    for (size_t i = 0; i < ref.rgb.size(); ++i) {
      const size_t c = i % 3;
      const float expected = (static_cast<float>(ref.rgb[i]) / 255.f - t.mean[c]) / t.std[c];
      worst = std::max(worst, std::fabs(static_cast<double>(ours.data()[i]) - expected));
    }
    EXPECT_LE(worst, 1e-6) << s.name;
  }
}

}  // namespace
}  // namespace mf::test
