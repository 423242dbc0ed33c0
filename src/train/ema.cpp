#include "train/ema.h"

#include "core/error.h"
#include "ops/ops.h"

namespace mf {

ModelEma::ModelEma(Module& model, double decay) : decay_(decay) {
  MF_CHECK(decay > 0 && decay < 1, "EMA decay must be in (0, 1), got {}", decay);
  for (auto& [name, p] : model.named_parameters()) {
    params_.emplace_back(name, p);
    shadow_.push_back(p->value.clone());  // on the parameter's device
  }
}

void ModelEma::update() {
  std::vector<Tensor*> avg;
  std::vector<const Tensor*> w;
  std::vector<bool> copy;
  for (size_t k = 0; k < params_.size(); ++k) {
    avg.push_back(&shadow_[k]);
    w.push_back(&params_[k].second->value);
    copy.push_back(params_[k].second->integer);  // a counter (num_batches_tracked) is copied, as timm's EMA does
  }
  const Device d = params_.empty() ? Device::CPU : params_.front().second->value.device();
  op::ema_update(Exec{&get_backend(d == Device::CUDA ? "cuda" : "cpu"), nullptr}, avg, w, copy, decay_);
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
  for (size_t k = 0; k < params_.size(); ++k) out.push_back({params_[k].first, shadow_[k].to(Device::CPU), {}, {}});
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
