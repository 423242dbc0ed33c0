// WaveMix's block (pranavphoenix/WaveMix, the `wavemix` package's Level{1,2,3,4}Waveblock), shared by
// the `wavemix` mixer and the WaveMix network (model/wavemix.cpp; docs/wavemix-and-iformer.md).
#pragma once

#include <vector>

#include "mixers/mixer.h"

namespace mf {

class Linear;
class WaveFeedForward;

// x [B, H, W, C] -> [B, H, W, C]; C a multiple of 4, H and W multiples of 2^levels.
//   reduction (1×1 conv, C -> C/4); then for each level j = 1..L, the Haar DWT of the previous level's
//   LL band (the multi-level 2-D DWT, db1, zero padding; exact on these even maps): the LL band
//   (C/4 channels) and the three detail bands, channel 3c + k for band k of channel c, as the authors'
//   reshape of pytorch_wavelets' [B, C/4, 3, h, w] orders them: C channels at H/2^j.
//   feedforward{L} maps the deepest level to H/2^(L-1); each level above concatenates its C channels
//   with the result of the one below (C + C/2) and maps them up again; feedforward1 returns to H × W
//   with C channels. Each feedforward{j} is 1×1 conv (-> mult·C), GELU, dropout, 1×1 conv (-> ff
//   channels), ConvTranspose2d 4×4 stride 2 padding 1 (-> C/2, or C for j = 1), BatchNorm. With one
//   level its key is "feedforward" (Level1Waveblock's). Keys: reduction.{weight, bias},
//   feedforward{j}.{0,3,4}.{weight, bias}, feedforward{j}.5.{weight, bias, running_mean, running_var,
//   num_batches_tracked}.
// The residual (x + block(x)) is the caller's: WaveMix's network adds it; in a MetaFormer block the
// block's own residual does.
class WaveMixBlock : public TokenMixer {
 public:
  WaveMixBlock(int64_t dim, int levels, int64_t mult, int64_t ff_channels);
  std::string kind() const override { return "Level" + std::to_string(levels_) + "Waveblock"; }
  std::string describe() const override;
  void collect_ops(std::set<OpKind>& ops) const override;
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  int64_t dim_;
  int levels_;
  Linear* reduction_;
  std::vector<WaveFeedForward*> feedforward_;  // [j - 1] = feedforward{j}
  std::vector<Shape> level_shapes_;            // training: the input of each level's DWT
};

}  // namespace mf
