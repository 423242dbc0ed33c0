// CAS-ViT's convolutional additive token mixer (Zhang et al., "CAS-ViT: Convolutional Additive
// Self-attention Vision Transformers", 2024; Tianfang-Zhang/CAS-ViT), shared by the `additive` mixer
// and the CAS-ViT networks (model/casvit.cpp). Keys as the authors' AdditiveTokenMixer:
//   qkv                          1×1 conv to 3·dim (no bias), split into q, k, v
//   oper_q, oper_k               .0 SpatialOperation: x ⊙ σ(1×1 conv to 1 channel (ReLU(BN(dw 3×3 x))))
//                                .1 ChannelOperation: x ⊙ σ(1×1 conv (mean over positions of x))
//   dwc, proj                    depthwise 3×3 (bias): out = proj(dwc(q' + k') ⊙ v)
#pragma once

#include "mixers/mixer.h"

namespace mf {

class AdditiveTokenMixer : public TokenMixer {
 public:
  AdditiveTokenMixer(int64_t dim, bool qkv_bias);
  std::string kind() const override { return "AdditiveTokenMixer"; }
  std::string describe() const override;
  void collect_ops(std::set<OpKind>& ops) const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  int64_t dim_;
  Module* qkv_;
  Module* oper_q_;
  Module* oper_k_;
  Module* dwc_;
  Module* proj_;
  Tensor saved_v_, saved_mix_;
};

}  // namespace mf
