// metaformer init: writes a model's seeded random initial weights (.safetensors, timm's key names),
// the same initialisation `train` starts from with that seed. For trying `run`, `classify`, `eval`
// or `bench --weights` without a trained checkpoint, and for starting points shared between tools.
#include <fmt/format.h>

#include "cli/common.h"
#include "core/error.h"
#include "model/loader.h"
#include "model/metaformer.h"

namespace mf::cli {

void register_init(CLI::App& app) {
  struct Args {
    ModelArgs model;
    std::string out;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("init", "write a model's seeded random initial weights (.safetensors)");
  add_model_choice(sub, a->model);
  sub->add_option("--out,-o", a->out, "weights file to write (.safetensors)")->required();
  sub->add_option("--seed", a->model.seed, "seed of the initialisation (as `train --seed`)")->capture_default_str();
  sub->add_option("--num-classes", a->model.num_classes, "classifier size (default: the config's)")
      ->check(CLI::Range(1, 1000000));
  sub->callback([a] {
    const MetaFormerConfig c = resolve_config(a->model);
    MetaFormer m(c);
    initialize_parameters(m, a->model.seed);
    // save_weights writes a temporary file and renames it: an interrupted init leaves no partial file.
    save_weights(m, a->out);
    fmt::print("{}: random initial weights of {} ({} parameters, {} classes, seed {})\n", a->out, c.name,
               m.num_parameters(), c.num_classes, a->model.seed);
  });
}

}  // namespace mf::cli
