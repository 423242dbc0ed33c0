// metaformer info: the layer tree, parameter count and MACs of a model; --list shows the zoo and
// the registered token mixers; --json prints the model's description as a config file.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <functional>

#include "cli/common.h"
#include "core/error.h"
#include "mixers/mixer.h"
#include "model/zoo.h"

namespace mf::cli {

namespace {

void print_tree(const Module& m, const std::string& name, int depth, int max_depth) {
  const int64_t params = m.num_parameters();
  std::string line = fmt::format("{:{}}{}{}{}", "", depth * 2, name.empty() ? "" : name + ": ", m.kind(),
                                 m.describe().empty() ? "" : " (" + m.describe() + ")");
  if (params) line += fmt::format("  [{} params]", params);
  fmt::print("{}\n", line);
  if (depth >= max_depth) return;
  for (auto& [child_name, child] : m.children()) print_tree(*child, child_name, depth + 1, max_depth);
}

// Multiply-accumulates of one forward pass at batch 1, counted by the op dispatcher.
OpProfile count_ops(MetaFormer& model, const Backend& backend, int height, int width) {
  OpProfile profile;
  Ctx ctx;
  ctx.exec.backend = const_cast<Backend*>(&backend);
  ctx.exec.profile = &profile;
  Tensor x = Tensor::zeros({1, height, width, model.config().in_chans});
  model.run(ctx, x);
  return profile;
}

}  // namespace

void register_info(CLI::App& app) {
  struct Args {
    ModelArgs model;
    bool list = false, json = false;
    int resolution = 0, depth = 3;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("info", "show a model's layers, parameters and MACs; --list shows all models");
  add_model_options(sub, args->model, /*weights_required=*/false);
  sub->add_flag("--list", args->list, "list the zoo models and the token mixers");
  sub->add_flag("--json", args->json, "print the model description as a JSON config");
  // Out-of-range values are argument errors: --resolution 0 used to fall back to the model's size silently.
  sub->add_option("--resolution,-r", args->resolution, "input size for MACs (default: the model's)")
      ->check(CLI::Range(1, 4096));
  sub->add_option("--depth", args->depth, "levels of the layer tree to print")->capture_default_str()->check(
      CLI::Range(0, 100));
  sub->callback([args] {
    if (args->list) {
      fmt::print("models:\n");
      for (auto& name : zoo_names()) {
        MetaFormer m(zoo_config(name));
        fmt::print("  {:<20} {:>7.2f} M params\n", name, static_cast<double>(m.num_parameters()) / 1e6);
      }
      fmt::print("token mixers:\n");
      for (auto* info : MixerRegistry::get().all()) fmt::print("  {:<15} {}\n", info->name, info->summary);
      return;
    }
    const MetaFormerConfig c = resolve_config(args->model);
    if (args->json) {
      fmt::print("{}\n", config_to_json(c).dump(2));
      return;
    }
    LoadedModel lm = load_model(args->model);
    print_tree(*lm.model, "", 0, args->depth);
    const int res = args->resolution > 0 ? args->resolution : c.input.size;
    // A sequence model's nominal input: one row of sequence.length steps (ids 0).
    const OpProfile p = c.is_sequence() ? count_ops(*lm.model, *lm.backend, 1, c.sequence.length)
                                        : count_ops(*lm.model, *lm.backend, res, res);
    fmt::print("\nmodel:      {}\n", c.name);
    fmt::print("parameters: {} ({:.2f} M)\n", lm.model->num_parameters(),
               static_cast<double>(lm.model->num_parameters()) / 1e6);
    if (c.is_sequence()) {  // the image preprocessing does not apply
      const SequenceSpec& q = c.sequence;
      fmt::print("MACs:       {:.3f} G at length {} (batch 1; linear layers, attention, token matrices, scans)\n",
                 static_cast<double>(p.total_macs()) / 1e9, q.length);
      fmt::print("input:      {} of {} {} ({} tokens), {} channel(s), positions: {}\n",
                 q.input == "tokens" ? "token ids" : "series", q.length, q.input == "tokens" ? "ids" : "steps",
                 q.tokens(q.length), c.in_chans, q.position);
      return;
    }
    fmt::print("MACs:       {:.3f} G at {}x{} (batch 1; convolutions, linear layers, attention and token "
               "matrices)\n",
               static_cast<double>(p.total_macs()) / 1e9, res, res);
    fmt::print("input:      {}x{}, {} channel(s), crop_pct {:g}, {}, mean ({:g}), std ({:g})\n", c.input.size,
               c.input.size, c.in_chans, c.input.crop_pct, c.input.interpolation, fmt::join(c.input.mean, ", "),
               fmt::join(c.input.std, ", "));
  });
}

}  // namespace mf::cli
