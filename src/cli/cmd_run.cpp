// metaformer run: a float32 NCHW batch in (.npy, as timm takes it), logits out (.npy).
#include <fmt/format.h>

#include "cli/common.h"
#include "core/error.h"
#include "io/npy.h"
#include "ops/ops.h"

namespace mf::cli {

void register_run(CLI::App& app) {
  struct Args {
    ModelArgs model;
    std::string input, output;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("run", "run a batch of images (NCHW float32 .npy) and write the logits (.npy)");
  add_model_options(sub, args->model, /*weights_required=*/false);
  sub->add_option("--seed", args->model.seed, "seed of the random weights used without --weights")->capture_default_str();
  sub->add_option("--input,-i", args->input, "input batch [B, C, H, W], float32 .npy")->required();
  sub->add_option("--output,-o", args->output, "output logits [B, classes] (a forecasting model: the forecast [B, horizon, C]), float32 .npy")->required();
  sub->callback([args] {
    Tensor x = read_npy(args->input);
    LoadedModel lm = load_model(args->model);
    MF_CHECK(x.ndim() == 4, "{}: expected a batch of images [B, C, H, W], got shape {}", args->input, x.shape().str());
    Ctx ctx = lm.ctx();
    Tensor y = lm.model->forward_nchw(ctx, x).to(Device::CPU);
    write_npy(args->output, y);
    const bool forecast = lm.model->config().head.type == "forecast";  // [B, horizon, C] (docs/sequences.md)
    fmt::print("{}: {} {} from input {}\n", args->output, forecast ? "forecast" : "logits", y.shape().str(),
               x.shape().str());
    // After the results, so that a failure above stays one line.
    note_if_weights_are_random(args->model);
  });
}

}  // namespace mf::cli
