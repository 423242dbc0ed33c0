// MS-MLP's mix-and-shift token mixer (JegZheng/MS-MLP; docs/raft-and-shift-mlps.md), shared by the
// `mix_shift` mixer and the MS-MLP networks (model/msmlp.cpp).
#pragma once

#include <vector>

#include "mixers/mixer.h"

namespace mf {

// The channels are split into groups as torch.chunk(x, len(shifts)) splits them (ceil(C/n) wide, the
// last narrower, fewer groups when C is small). Group g is rolled cyclically by shifts[g] along W,
// then mixed by a depthwise kernels[g]×kernels[g] convolution (dwconv_lr.g); the same again along H
// (dwconv_td.g); the output is the sum of the two. Keys dwconv_lr.{g}.{weight, bias},
// dwconv_td.{g}.{weight, bias}, as the authors'.
//
// The groups' convolutions run as one depthwise convolution with the largest kernel, each group's
// smaller kernel zero-embedded in its centre: a k×k kernel with padding k/2 reads exactly the centre
// of the K×K window that padding K/2 gives, so the outputs agree (the extra terms are exact zeros).
class MixShift : public TokenMixer {
 public:
  MixShift(int64_t channels, std::vector<int> shifts, std::vector<int> kernels);
  std::string kind() const override { return "MixShift"; }
  std::string describe() const override;
  void collect_ops(std::set<OpKind>& ops) const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  struct Direction {
    int axis;                         // 2: along W (dwconv_lr), 1: along H (dwconv_td)
    std::vector<Parameter*> weights;  // [c_g, 1, k_g, k_g]
    std::vector<Parameter*> biases;   // [c_g]
  };
  // The groups' kernels as one [C, 1, K, K] kernel and [C] bias.
  std::pair<Tensor, Tensor> combined(const Direction& d) const;
  void scatter_grads(Direction& d, const Tensor& dw, const Tensor& db);
  int64_t channels_, group_width_;
  std::vector<int> shifts_, kernels_;
  int max_kernel_;
  Direction lr_, td_;
  Tensor saved_x_;
};

}  // namespace mf
