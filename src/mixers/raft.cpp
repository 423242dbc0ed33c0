// The `raft` token mixer: RaftMLP's vertical then horizontal raft token MLPs (mixers/raft.h). In a
// MetaFormer block it replaces the authors' two token-mixing sub-blocks by one branch: mixer(x) =
// horizontal(vertical(x)), without the LayerNorm and residual the authors put around each MLP (the
// block's norm1 and residual play that role). Keys vertical.{0,3}.*, horizontal.{0,3}.*. Tied to the
// stage's token grid at the model's nominal input size, as every token MLP is.
#include "mixers/raft.h"

#include <fmt/format.h>

#include "mixers/mixer.h"

namespace mf {

TorchSeqMlp::TorchSeqMlp(int64_t in, int64_t hidden) {
  fc1_ = add_child("0", std::make_unique<Linear>(in, hidden, true));
  act_ = add_child("1", make_activation("gelu"));
  fc2_ = add_child("3", std::make_unique<Linear>(hidden, in, true));
}

Tensor TorchSeqMlp::forward(Ctx& ctx, const Tensor& x) { return fc2_->run(ctx, fc1_->run_then(ctx, x, *act_)); }

Tensor TorchSeqMlp::backward(Ctx& ctx, const Tensor& dy) {
  return fc1_->backward(ctx, act_->backward(ctx, fc2_->backward(ctx, dy)));
}

RaftAxisMlp::RaftAxisMlp(Axis axis, int64_t raft, int64_t channels, int64_t height, int64_t width, int64_t expansion)
    : axis_(axis), raft_(raft), channels_(channels), height_(height), width_(width) {
  MF_CHECK(raft >= 1 && channels % raft == 0, "a raft token MLP needs channels ({}) divisible by the raft size ({})",
           channels, raft);
  const int64_t n = raft * (axis == Axis::vertical ? height : width);
  mlp_ = add_child("", std::make_unique<TorchSeqMlp>(n, n * expansion));
}

std::string RaftAxisMlp::describe() const {
  return fmt::format("{}, rafts of {} over {}x{} tokens", axis_ == Axis::vertical ? "vertical" : "horizontal", raft_,
                     height_, width_);
}

// The input seen as [B, H, W, r, C/r] (natural) or [B, H, W, C/r, r] (raft-minor), permuted to
// [B, W, C/r, r, H] (vertical) or [B, H, C/r, r, W] (horizontal): each row one MLP input.
std::vector<int> RaftAxisMlp::in_perm(bool raft_minor) const {
  if (axis_ == Axis::vertical) return raft_minor ? std::vector<int>{0, 2, 3, 4, 1} : std::vector<int>{0, 2, 4, 3, 1};
  return raft_minor ? std::vector<int>{0, 1, 3, 4, 2} : std::vector<int>{0, 1, 4, 3, 2};
}

// Back from the MLP layout to [B, H, W, r, C/r].
std::vector<int> RaftAxisMlp::out_perm() const {
  return axis_ == Axis::vertical ? std::vector<int>{0, 4, 1, 3, 2} : std::vector<int>{0, 1, 4, 3, 2};
}

Tensor RaftAxisMlp::mix(Ctx& ctx, const Tensor& x, bool raft_minor_input) {
  MF_CHECK(x.ndim() == 4 && x.dim(3) == channels_, "{}: expected [B, H, W, {}], got {}", path(), channels_,
           x.shape().str());
  MF_CHECK(x.dim(1) == height_ && x.dim(2) == width_,
           "{}: RaftMLP's token MLPs were built for a {}x{} token grid and cannot mix {}x{}", path(), height_, width_,
           x.dim(1), x.dim(2));
  const int64_t B = x.dim(0), k = channels_ / raft_;
  const Shape five = raft_minor_input ? Shape{B, height_, width_, k, raft_} : Shape{B, height_, width_, raft_, k};
  Tensor t = op::permute(ctx.exec, x.reshape(five), in_perm(raft_minor_input));
  const Shape mixed = t.shape();
  t = mlp_->run(ctx, t.reshape({mixed.numel() / (mixed[3] * mixed[4]), mixed[3] * mixed[4]}));
  if (ctx.training) {
    saved_raft_minor_ = raft_minor_input;
    saved_shape_ = mixed;
  }
  return op::permute(ctx.exec, t.reshape(mixed), out_perm()).reshape(x.shape());
}

Tensor RaftAxisMlp::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_shape_.ndim() == 5, "{}: backward without a training forward", path());
  const int64_t B = dy.dim(0), k = channels_ / raft_;
  Tensor d = op::permute(ctx.exec, dy.reshape({B, height_, width_, raft_, k}), op::inverse_permutation(out_perm()));
  const Shape mixed = saved_shape_;
  d = mlp_->backward(ctx, d.reshape({mixed.numel() / (mixed[3] * mixed[4]), mixed[3] * mixed[4]}));
  d = op::permute(ctx.exec, d.reshape(mixed), op::inverse_permutation(in_perm(saved_raft_minor_)));
  saved_shape_ = Shape();
  return d.reshape(dy.shape());
}

namespace {
class RaftMixer : public TokenMixer {
 public:
  RaftMixer(int64_t dim, int64_t height, int64_t width, int64_t raft, int64_t expansion) {
    vertical_ = add_child("vertical", std::make_unique<RaftAxisMlp>(RaftAxisMlp::Axis::vertical, raft, dim, height,
                                                                    width, expansion));
    horizontal_ = add_child("horizontal", std::make_unique<RaftAxisMlp>(RaftAxisMlp::Axis::horizontal, raft, dim,
                                                                        height, width, expansion));
  }
  std::string kind() const override { return "RaftTokenMixer"; }
  Tensor forward(Ctx& ctx, const Tensor& x) override { return horizontal_->run(ctx, vertical_->run(ctx, x)); }
  Tensor backward(Ctx& ctx, const Tensor& dy) override {
    return vertical_->backward(ctx, horizontal_->backward(ctx, dy));
  }

 private:
  RaftAxisMlp* vertical_;
  RaftAxisMlp* horizontal_;
};
}  // namespace

void register_raft_mixer(MixerRegistry& r) {
  r.add({"raft", "RaftMLP's raft token MLPs: channels in rafts of raft_size mixed jointly along columns, then rows",
         [](const MixerContext& ctx) {
           MixerOptions o("raft", ctx.options);
           const int64_t raft = o.get_int("raft_size", 2), expansion = o.get_int("expansion", 2);
           o.finish();
           MF_CHECK(ctx.height > 0 && ctx.width > 0, "raft needs the model's input size");
           MF_CHECK(raft >= 1 && ctx.dim % raft == 0, "raft: raft_size {} must divide the stage's {} channels", raft,
                    ctx.dim);
           MF_CHECK(expansion >= 1 && expansion <= 16, "raft: expansion {} is out of range [1, 16]", expansion);
           return std::make_unique<RaftMixer>(ctx.dim, ctx.height, ctx.width, raft, expansion);
         }});
}

}  // namespace mf
