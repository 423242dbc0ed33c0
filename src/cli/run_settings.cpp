#include "cli/run_settings.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "io/file.h"

namespace mf::cli {

namespace {

using nlohmann::json;

// Training options that change only the speed or the bookkeeping, never the weights or the metrics:
// data loading is deterministic for any number of workers, and how many checkpoints are kept does
// not touch training. (The thread count is compared: kernels reduce in an order fixed per thread
// count, so another count gives other last bits, docs/training.md.)
const char* const kSpeedOnlyOptions[] = {"workers", "keep_checkpoints"};

// The order in which differences are looked for, so that the one reported is the one a user most
// likely changed; options not listed here (added later) follow in alphabetical order.
const char* const kTrainingOrder[] = {"data",       "subset",        "eval_subset",     "epochs",    "max_steps",
                                      "batch",      "lr",            "min_lr",          "warmup_lr", "warmup_epochs",
                                      "weight_decay", "label_smoothing", "drop_path",   "clip_grad", "mixup",
                                      "cutmix",     "mix_prob",      "mix_switch_prob", "ema_decay", "seed",
                                      "eval_batch", "backend",       "matmul",          "dtype",     "allreduce",
                                      "threads"};

json normalised_training(const json& j) {
  json t = TrainOptions::from_json(j).to_json();
  for (const char* key : kSpeedOnlyOptions) t.erase(key);
  return t;
}

json normalised_model(const json& j, const std::string& what) {
  json m = config_to_json(parse_config(j.dump(), what));
  m.erase("name");  // a label (the base's name and the mixer), not part of what is trained
  return m;
}

std::string value_text(const json* v) {
  if (v == nullptr) return "(none)";
  return v->is_string() ? v->get<std::string>() : v->dump();
}

// The first path at which `a` and `b` differ, depth first: object keys in order, array items by index.
std::optional<SettingDifference> first_json_difference(const json* a, const json* b, const std::string& path) {
  if (a && b && *a == *b) return std::nullopt;
  if (a && b && a->is_object() && b->is_object()) {
    std::vector<std::string> keys;
    for (auto& [k, v] : a->items()) keys.push_back(k);
    for (auto& [k, v] : b->items())
      if (!a->contains(k)) keys.push_back(k);
    std::sort(keys.begin(), keys.end());
    for (const auto& k : keys) {
      const json* x = a->contains(k) ? &a->at(k) : nullptr;
      const json* y = b->contains(k) ? &b->at(k) : nullptr;
      if (auto d = first_json_difference(x, y, path + "." + k)) return d;
    }
  }
  if (a && b && a->is_array() && b->is_array() && a->size() == b->size()) {
    for (size_t i = 0; i < a->size(); ++i)
      if (auto d = first_json_difference(&a->at(i), &b->at(i), fmt::format("{}[{}]", path, i))) return d;
  }
  return SettingDifference{path, value_text(a), value_text(b)};
}

}  // namespace

RunSettings requested_settings(MetaFormerConfig config, const TrainOptions& options) {
  // The trainer applies --drop-path to the description before writing config.json; so does this.
  if (options.drop_path >= 0) config.drop_path_rate = options.drop_path;
  return {normalised_model(config_to_json(config), config.name), normalised_training(options.to_json())};
}

std::optional<RunSettings> recorded_settings(const std::string& run_dir) {
  const std::string config_path = run_dir + "/config.json", args_path = run_dir + "/train_args.json";
  if (!std::filesystem::exists(config_path) || !std::filesystem::exists(args_path)) return std::nullopt;
  try {
    const auto config_bytes = read_file(config_path), args_bytes = read_file(args_path);
    const json config = json::parse(config_bytes.begin(), config_bytes.end());
    const json args = json::parse(args_bytes.begin(), args_bytes.end());
    return RunSettings{normalised_model(config, config_path), normalised_training(args)};
  } catch (const std::exception&) {
    return std::nullopt;  // a damaged record cannot vouch for the run
  }
}

std::optional<SettingDifference> first_difference(const RunSettings& recorded, const RunSettings& requested) {
  std::vector<std::string> keys(std::begin(kTrainingOrder), std::end(kTrainingOrder));
  for (const json* side : {&recorded.training, &requested.training})
    for (auto& [k, v] : side->items())
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  for (const auto& k : keys) {
    const json* a = recorded.training.contains(k) ? &recorded.training.at(k) : nullptr;
    const json* b = requested.training.contains(k) ? &requested.training.at(k) : nullptr;
    if (!a && !b) continue;
    if (auto d = first_json_difference(a, b, k)) {
      // drop_path < 0 means "the base's rate", which a bare -1 would not tell the reader.
      for (std::string* text : {&d->recorded, &d->requested})
        if (k == "drop_path" && text->rfind('-', 0) == 0) *text += " (the base's)";
      return d;
    }
  }
  return first_json_difference(&recorded.model, &requested.model, "model");
}

}  // namespace mf::cli
