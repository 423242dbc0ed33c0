#include "cli/common.h"

#include <fmt/format.h>

#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "core/threading.h"
#include "hub/hub.h"
#include "io/safetensors.h"
#include "model/loader.h"
#include "model/zoo.h"

namespace mf::cli {

std::vector<std::string> split_list(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

ModelChoice add_model_choice(CLI::App* app, ModelArgs& a, const std::string& model_help) {
  auto* model = app->add_option("--model,-m", a.model, model_help);
  auto* config = app->add_option("--config,-c", a.config, "JSON model description (docs/config.md)");
  model->excludes(config);
  config->excludes(model);
  return {model, config};
}

void add_pretrained_option(CLI::App* app, ModelArgs& a, CLI::Option* model, CLI::Option* config, CLI::Option* weights) {
  auto* p = app->add_flag("--pretrained", a.pretrained,
                          "timm's weights for --model NAME[.TAG] from the Hugging Face hub, cached (docs/hub.md)");
  p->needs(model)->excludes(config)->excludes(weights);
  weights->excludes(p);
}

std::string weights_file(const ModelArgs& a) {
  if (!a.pretrained) return a.weights;
  MF_CHECK(!a.model.empty(), "--pretrained needs --model NAME[.TAG]");
  return hub::fetch_pretrained(a.model).string();
}

void check_weights_given(const ModelArgs& a) {
  MF_CHECK(!a.weights.empty() || a.pretrained, "give the weights: --weights FILE, or --pretrained with --model NAME");
}

void add_model_options(CLI::App* app, ModelArgs& a, bool weights_required) {
  const ModelChoice choice = add_model_choice(app, a);
  auto* w = app->add_option("--weights,-w", a.weights,
                            weights_required ? "weights (.safetensors) with timm's key names (or --pretrained)"
                                             : "weights (.safetensors) with timm's key names");
  add_pretrained_option(app, a, choice.model, choice.config, w);
  app->add_option("--backend", a.backend,
                  "compute backend: cpu (fast), ref (plain reference loops) or cuda (NVIDIA GPU; docs/cuda.md)")
      ->capture_default_str();
  app->add_option("--device", a.device, "cuda or cuda:N with --backend cuda (default: cuda:0)");
  app->add_option("--threads,-t", a.threads, "threads (default: all cores)")->check(CLI::Range(0, 4096));
  app->add_option("--dtype", a.dtype, "fp32, or bf16: bf16 matrix products on cpu (docs/bf16.md), bf16 activations on cuda (docs/cuda.md)")
      ->capture_default_str();
  app->add_option("--num-classes", a.num_classes, "classifier size (default: the weights' or the config's)")
      ->check(CLI::Range(1, 1000000));
}

MetaFormerConfig resolve_config(const ModelArgs& a) {
  if (a.config_override) return *a.config_override;
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

namespace {
// A token-sequence task (ListOps) for a token model: the classifier, vocabulary and nominal length
// follow the data, with a note for each change (as the classes of image data do).
DataSplits open_sequence_data_for(const std::string& spec, MetaFormerConfig& config) {
  MF_CHECK(config.is_sequence() && config.sequence.input == "tokens",
           "{} is a token-sequence task: the model needs a \"sequence\": {{\"input\": \"tokens\", ...}} description "
           "(docs/sequences.md)", spec);
  DataSplits s = open_dataset(spec, DataTransform{});
  const Dataset& d = *s.train;
  if (config.num_classes != d.num_classes()) {
    fmt::print("note: {} classes in {}; the classifier gets {} outputs (was {})\n", d.num_classes(), spec,
               d.num_classes(), config.num_classes);
    config.num_classes = d.num_classes();
  }
  if (config.sequence.vocab_size < d.vocab_size()) {
    fmt::print("note: {} has {} token ids; the embedding gets {} rows (was {})\n", spec, d.vocab_size(),
               d.vocab_size(), config.sequence.vocab_size);
    config.sequence.vocab_size = d.vocab_size();
  }
  if (config.sequence.length != d.sequence_length()) {
    fmt::print("note: {} has sequences of {} tokens (padded); the model's nominal length is {} (was {})\n", spec,
               d.sequence_length(), d.sequence_length(), config.sequence.length);
    config.sequence.length = static_cast<int>(d.sequence_length());
  }
  config.validate();
  return s;
}
}  // namespace

LoadedModel load_model(const ModelArgs& a) {
  set_num_threads(a.threads);
  MetaFormerConfig c = resolve_config(a);
  LoadedModel lm;
  select_device(a.device, a.backend);
  lm.backend = &get_backend(a.backend, parse_precision(a.dtype));
  lm.model = build_model(c, weights_file(a), a.seed, /*keep_num_classes=*/a.num_classes > 0);
  lm.model->check_backend(*lm.backend);
  return lm;
}

void note_if_weights_are_random(const ModelArgs& a) {
  if (a.weights.empty() && !a.pretrained)
    fmt::print(stderr, "note: no --weights given: the weights are random (seed {}), so the outputs are meaningless\n",
               a.seed);
}

// A forecasting task for a forecaster: the windows are cut to the model's context (sequence.length)
// and horizon, and the stem takes the series' channels.
static DataSplits open_forecast_data_for(const std::string& spec, MetaFormerConfig& config) {
  MF_CHECK(config.is_sequence() && config.sequence.input == "series" && config.head.type == "forecast",
           "{} is a forecasting task: the model needs \"sequence\": {{\"input\": \"series\", ...}} and a "
           "\"forecast\" head (docs/sequences.md)", spec);
  DataSplits s = open_forecast(spec, config.sequence.length, config.head.horizon);
  if (config.in_chans != s.train->channels()) {
    fmt::print("note: {} has {} channel(s); the model takes {} (was {})\n", spec, s.train->channels(),
               s.train->channels(), config.in_chans);
    config.in_chans = s.train->channels();
  }
  config.validate();
  return s;
}

// Fashion-MNIST keeps its own resolution (unless "fashion-mnist:N" resizes it) and statistics;
// image folders use the model's.
static DataSplits open_image_data_for(const std::string& spec_text, MetaFormerConfig& config,
                                      int64_t max_image_pixels) {
  DataTransform t;
  const auto [spec, upscale] = split_idx_upscale(spec_text);
  t.upscale = upscale;
  t.size = config.input.size;
  t.crop_pct = config.input.crop_pct;
  t.interpolation = config.input.interpolation;
  t.mean = config.input.mean;
  t.std = config.input.std;
  t.max_pixels = max_image_pixels;
  const bool synthetic = spec == kLongRange;
  const bool grey = synthetic || spec == "fashion-mnist" || std::filesystem::exists(spec + "/train-images-idx3-ubyte") ||
                    std::filesystem::exists(spec + "/train-images-idx3-ubyte.gz");
  if (synthetic) {
    t.mean = {0.f};  // generated with zero-mean noise and unit marks: no normalisation
    t.std = {1.f};
  } else if (grey) {
    t.mean = {0.2860f};  // Fashion-MNIST's training-set statistics
    t.std = {0.3530f};
  } else if (config.in_chans == 1) {
    t.channels = 1;  // an image folder for a grey model: luma, normalised once the statistics are known
    t.mean = {0.f};
    t.std = {1.f};
  } else if (t.mean.size() != 3) {
    t.mean = {0.485f, 0.456f, 0.406f};  // image folders are RGB: ImageNet statistics
    t.std = {0.229f, 0.224f, 0.225f};
  }
  DataSplits s = open_dataset(spec, t);
  if (!grey && t.channels == 1) {
    const auto [mean, std] = grey_statistics(*s.train);
    t.mean = {mean};
    t.std = {std};
    s = open_dataset(spec, t);
    fmt::print("note: {} is read as grey (1 channel, as the model takes), normalised with the data's own mean {:.4f} "
               "and std {:.4f}\n", spec, mean, std);
  }
  if (config.num_classes != s.train->num_classes()) {
    fmt::print("note: {} classes in {}; the classifier gets {} outputs (was {})\n", s.train->num_classes(), spec,
               s.train->num_classes(), config.num_classes);
    config.num_classes = s.train->num_classes();
  }
  if (config.in_chans != s.train->channels()) {
    fmt::print("note: {} has {} input channel(s); the stem takes {} (was {})\n", spec, s.train->channels(),
               s.train->channels(), config.in_chans);
    config.in_chans = s.train->channels();
  }
  config.input.mean = t.mean;
  config.input.std = t.std;
  if (grey) {
    config.input.size = s.train->image_size();
    config.input.crop_pct = 1.0;
  }
  return s;
}

DataSplits open_data_for(const std::string& spec, MetaFormerConfig& config, int64_t max_image_pixels) {
  if (is_listops_spec(spec)) return open_sequence_data_for(spec, config);
  if (is_forecast_spec(spec)) return open_forecast_data_for(spec, config);
  MF_CHECK(!config.is_sequence(), "model '{}' takes sequences, and {} holds images (sequence data: listops, "
           "listops-N; series: co2, sunspots, csv:PATH; docs/sequences.md)", config.name, spec);
  if (is_synthetic_spec(spec)) {  // random images shaped as the model takes them (no normalisation)
    MF_CHECK(config.input.size > 0, "model '{}' has no input size for synthetic images", config.name);
    return open_synthetic(spec, config.input.size, config.in_chans, config.num_classes);
  }
  return open_image_data_for(spec, config, max_image_pixels);
}

}  // namespace mf::cli
