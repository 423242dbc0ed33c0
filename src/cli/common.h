// What the subcommands share: choosing a model (zoo name or JSON config), its weights, the backend
// and the thread count, and building the ready-to-run model from them.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <optional>
#include <string>

#include "data/dataset.h"
#include "model/metaformer.h"
#include "ops/backend.h"

namespace mf::cli {

struct ModelArgs {
  std::string model;    // zoo name
  std::string config;   // JSON file
  std::string weights;  // .safetensors
  bool pretrained = false;  // --pretrained: timm's weights for --model NAME[.TAG] from the Hugging Face hub
  std::string backend = "cpu";
  std::string device;  // --device: cpu, cuda or cuda:N (empty: the backend's default)
  std::string dtype = "fp32";  // precision of the matrix products: fp32 or bf16 (docs/bf16.md)
  int threads = 0;      // 0: all hardware threads
  int num_classes = 0;  // 0: the config's, or the checkpoint's classifier when weights are given
  uint64_t seed = 0;    // of the random initialisation, used when no weights are given
  std::optional<MetaFormerConfig> config_override;  // an already resolved description
};

// Adds --model/--config (exactly one required), --weights (or --pretrained), --backend, --threads,
// --num-classes. With `weights_required` the command needs --weights or --pretrained (check_weights_given).
void add_model_options(CLI::App* app, ModelArgs& args, bool weights_required);
// Adds --pretrained: needs --model, excludes --config and --weights (docs/hub.md).
void add_pretrained_option(CLI::App* app, ModelArgs& args, CLI::Option* model, CLI::Option* config,
                           CLI::Option* weights);
// The weights file to load: --weights, or with --pretrained the hub's model.safetensors for --model
// (downloaded into the hub's cache the first time, then read from it); empty for random weights.
std::string weights_file(const ModelArgs& args);
void check_weights_given(const ModelArgs& args);  // one error unless --weights or --pretrained

// Adds just the mutually exclusive --model/--config pair (commands whose other options differ).
struct ModelChoice {
  CLI::Option* model;
  CLI::Option* config;
};
ModelChoice add_model_choice(CLI::App* app, ModelArgs& args,
                             const std::string& model_help = "model name from the zoo (see `metaformer info --list`)");

struct LoadedModel {
  std::unique_ptr<MetaFormer> model;
  Backend* backend = nullptr;
  Ctx ctx() const;
};

// Resolves the config, builds the model, loads weights (or initialises randomly with args.seed when
// none are given), checks that the backend runs every op, and sets the thread count.
LoadedModel load_model(const ModelArgs& args);
// For commands whose output means something only with trained weights (run, classify): without
// --weights, a note on stderr that the weights are random and the outputs meaningless.
void note_if_weights_are_random(const ModelArgs& args);
MetaFormerConfig resolve_config(const ModelArgs& args);

// Opens --data and fits the description to it: its classes, input channels and, for Fashion-MNIST,
// resolution and normalisation. Prints what it changed. A 1-channel model reads an image folder as
// grey, normalised with the data's own statistics. Images over `max_image_pixels` are skipped.
DataSplits open_data_for(const std::string& spec, MetaFormerConfig& config,
                         int64_t max_image_pixels = int64_t{1} << 28);

// "a,b,,c" -> {"a", "b", "c"}: a list option's items, empty ones dropped.
std::vector<std::string> split_list(const std::string& s, char sep);

void register_run(CLI::App& app);
void register_classify(CLI::App& app);
void register_info(CLI::App& app);
void register_bench(CLI::App& app);
void register_verify(CLI::App& app);
void register_train(CLI::App& app);
void register_eval(CLI::App& app);
void register_compare(CLI::App& app);
void register_init(CLI::App& app);

}  // namespace mf::cli
