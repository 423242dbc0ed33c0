// augment_crops, the reference: data/device_crops.h's finish, sample by sample.
#include <cstring>

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

}  // namespace mf
