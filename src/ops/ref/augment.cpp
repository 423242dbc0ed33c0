// augment_crops, the reference: data/device_crops.h's finish, sample by sample; and mix_images,
// data/batch_mix.h's host function.
#include <cstring>

#include "data/batch_mix.h"
#include "data/device_crops.h"
#include "ops/ref/ref_backend.h"

namespace mf {

void RefBackend::augment_crops(const Tensor& rows, const Tensor& headers, const Tensor& table, Tensor& y) {
  const int64_t B = rows.dim(0), S = rows.dim(1), per = S * S * 3;
  for (int64_t b = 0; b < B; ++b) {
    int32_t header[crops::kHeaderInts];
    std::memcpy(header, headers.data() + b * crops::kHeaderInts, sizeof header);
    crops::finish(rows.data() + b * per, header, static_cast<int>(S), table.data(), y.data() + b * per);
  }
}

void RefBackend::mix_images(const Tensor& x, const MixPlan& plan, Tensor& y) {
  mix_images_into(x.data(), x.dim(0), x.dim(1), x.dim(2), x.dim(3), plan, y.data());
}

}  // namespace mf
