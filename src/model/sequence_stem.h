// The stem of a 1-D MetaFormer (docs/sequences.md): a batch of sequences [B, 1, L, C] (channels-last,
// height 1) becomes tokens [B, 1, N, dim]:
//   tokens: stem.embed.weight [vocab, dim] looks up each id (C = 1, the ids as exact integers);
//   series: stem.proj, a linear map of each patch of patch_size steps × C channels, patches
//           patch_stride steps apart (a 1 × patch_size convolution), as PatchTST embeds a series;
//   series with independent channels (PatchTST, PatchTSMixer): each channel's patches are a sequence of
//           their own, [B·C, 1, N, dim], through stem.proj, a Linear [dim, patch_size] shared by the
//           channels; the patches end at the series' last step (PatchTSMixer drops the first
//           (L - patch_size) % patch_stride steps);
//   series with std scaling: each channel of each sample standardised first (loc(), scale());
// then, optionally, positions: stem.pos_embed [tokens, dim] (learned) or the fixed sinusoids of
// "Attention is all you need" (pe[n, 2i] = sin(n / 10000^(2i/dim)), pe[n, 2i+1] = cos(...)).
#pragma once

#include "model/config.h"
#include "nn/conv.h"
#include "nn/linear.h"

namespace mf {

// nn.Embedding: weight [num, dim].
class Embedding : public Module {
 public:
  Embedding(int64_t num, int64_t dim);
  std::string kind() const override { return "Embedding"; }
  std::string describe() const override;
  void collect_ops(std::set<OpKind>& ops) const override { ops.insert(OpKind::Embedding); }
  // ids [B, N] -> [B, N, dim]
  Tensor forward(Ctx& ctx, const Tensor& ids) override;
  // Accumulates the table's gradient; returns nothing (ids have no gradient).
  Tensor backward(Ctx& ctx, const Tensor& dy) override;

 private:
  Parameter* weight_;
  Tensor saved_ids_;
};

class SequenceStem : public Module {
 public:
  SequenceStem(const MetaFormerConfig& c);
  std::string kind() const override { return "SequenceStem"; }
  std::string describe() const override;
  void collect_ops(std::set<OpKind>& ops) const override;
  // x [B, 1, L, C] -> [B, 1, N, dim]; checks the data (NaN in a series; ids, by op::embedding).
  Tensor forward(Ctx& ctx, const Tensor& x) override;
  Tensor backward(Ctx& ctx, const Tensor& dy) override;
  // Checks a batch shape [B, 1, L, C] against the stem: one clear error for a series shorter than a
  // patch or a sequence longer than the position table.
  void check_input(const Shape& s) const;
  // Sequences per sample in the tokens: in_chans with independent channels, else 1.
  int64_t rows_per_sample() const { return spec_.independent_channels() ? in_chans_ : 1; }
  // std scaling: the last forward's per-sample, per-channel mean and scale, [B · in_chans].
  const std::vector<float>& loc() const { return loc_; }
  const std::vector<float>& scale() const { return scale_; }

 private:
  const Tensor& sinusoids(int64_t tokens, int64_t dim);
  SequenceSpec spec_;
  int in_chans_;
  int64_t dim_;
  Embedding* embed_ = nullptr;
  Conv2d* proj_ = nullptr;
  Linear* patch_proj_ = nullptr;  // independent channels
  std::vector<float> loc_, scale_;
  // The series standardised per sample and channel (std scaling), or x itself.
  Tensor scaled(const Tensor& x);
  // [B, 1, L, C] -> [B·C·N, patch_size]: each channel's patches, aligned to the last step.
  Tensor channel_patches(const Tensor& x) const;
  Parameter* pos_embed_ = nullptr;
  Tensor sinusoids_;  // cached table, grown on demand
  bool has_positions_ = false;
};

}  // namespace mf
