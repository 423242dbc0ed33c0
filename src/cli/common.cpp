#include "cli/common.h"

#include <fmt/format.h>

#include "core/error.h"
#include "core/threading.h"
#include "io/safetensors.h"
#include "model/loader.h"
#include "model/zoo.h"

namespace mf::cli {

void add_model_options(CLI::App* app, ModelArgs& a, bool weights_required) {
  auto* model = app->add_option("--model,-m", a.model, "model name from the zoo (see `metaformer info --list`)");
  auto* config = app->add_option("--config,-c", a.config, "JSON model description (docs/config.md)");
  model->excludes(config);
  config->excludes(model);
  auto* w = app->add_option("--weights,-w", a.weights, "weights (.safetensors) with timm's key names");
  if (weights_required) w->required();
  app->add_option("--backend", a.backend, "compute backend: cpu (fast) or ref (plain reference loops)")
      ->capture_default_str();
  app->add_option("--threads,-t", a.threads, "threads (default: all cores)");
  app->add_option("--num-classes", a.num_classes, "classifier size (default: the weights' or the config's)");
}

MetaFormerConfig resolve_config(const ModelArgs& a) {
  MF_CHECK(!a.model.empty() || !a.config.empty(), "give a model: --model NAME or --config FILE");
  MetaFormerConfig c = a.model.empty() ? load_config(a.config) : zoo_config(a.model);
  if (a.num_classes > 0) c.num_classes = a.num_classes;
  return c;
}

Ctx LoadedModel::ctx() const {
  Ctx c;
  c.exec.backend = backend;
  return c;
}

LoadedModel load_model(const ModelArgs& a, uint64_t seed) {
  set_num_threads(a.threads);
  MetaFormerConfig c = resolve_config(a);
  LoadedModel lm;
  lm.backend = &get_backend(a.backend);
  if (a.weights.empty()) {
    lm.model = std::make_unique<MetaFormer>(c);
    initialize_parameters(*lm.model, seed);
  } else {
    SafeTensors file = SafeTensors::open(a.weights);
    // A checkpoint with another classifier size (ImageNet-22k: 21841) builds the matching head.
    const int classes = checkpoint_num_classes(file);
    if (a.num_classes == 0 && classes > 0) c.num_classes = classes;
    lm.model = std::make_unique<MetaFormer>(c);
    load_weights(*lm.model, file);
  }
  lm.model->check_backend(*lm.backend);
  return lm;
}

}  // namespace mf::cli
