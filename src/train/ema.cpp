#include "train/ema.h"

#include "core/error.h"

namespace mf {

ModelEma::ModelEma(Module& model, double decay) : decay_(decay) {
  MF_CHECK(decay > 0 && decay < 1, "EMA decay must be in (0, 1), got {}", decay);
  for (auto& [name, p] : model.named_parameters()) {
    params_.emplace_back(name, p);
    shadow_.push_back(p->value.clone());
  }
}

void ModelEma::update() {
  const auto d = static_cast<float>(decay_), r = static_cast<float>(1.0 - decay_);
  for (size_t k = 0; k < params_.size(); ++k) {
    const float* w = params_[k].second->value.data();
    float* s = shadow_[k].data();
    const int64_t n = shadow_[k].numel();
    if (params_[k].second->integer) {  // a counter (num_batches_tracked) is copied, as timm's EMA does
      for (int64_t i = 0; i < n; ++i) s[i] = w[i];
      continue;
    }
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) s[i] = s[i] * d + w[i] * r;
  }
}

void ModelEma::copy_to(Module& other) const {
  auto targets = other.named_parameters();
  MF_CHECK(targets.size() == params_.size(), "EMA: models differ");
  for (size_t k = 0; k < params_.size(); ++k) {
    MF_CHECK(targets[k].first == params_[k].first, "EMA: models differ at {}", params_[k].first);
    targets[k].second->value.copy_from(shadow_[k]);
    targets[k].second->value.bump_version();
  }
}

std::vector<SafeTensorEntry> ModelEma::entries() const {
  std::vector<SafeTensorEntry> out;
  for (size_t k = 0; k < params_.size(); ++k) out.push_back({params_[k].first, shadow_[k], {}, {}});
  return out;
}

void ModelEma::load(const SafeTensors& file) {
  for (size_t k = 0; k < params_.size(); ++k) {
    const Tensor t = file.load(params_[k].first);
    MF_CHECK(t.shape() == shadow_[k].shape(), "{}: EMA tensor {} has shape {}, expected {}", file.what(),
             params_[k].first, t.shape().str(), shadow_[k].shape().str());
    shadow_[k].copy_from(t);
  }
}

}  // namespace mf
