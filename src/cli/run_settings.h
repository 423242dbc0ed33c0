// The settings that decide a training run's result, read back from a run folder and compared with a
// request: `metaformer compare` reuses (or resumes) a run only when the two are equal, so a report
// never mixes runs trained under another budget or model with the command it prints.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "model/config.h"
#include "train/trainer.h"

namespace mf::cli {

// What a run is trained with: the model description as trained (fitted to the data, the drop-path
// override applied, exactly as the trainer writes RUN_DIR/config.json) and every training option
// that changes the weights or the metrics (RUN_DIR/train_args.json without the speed-only ones).
// Both are normalised (parsed and written again) so that files from older versions, which lack
// options added since, compare equal to a request that leaves those options at their defaults.
struct RunSettings {
  nlohmann::json model;
  nlohmann::json training;
};

// The settings a request would train `config` with under `options`.
RunSettings requested_settings(MetaFormerConfig config, const TrainOptions& options);

// The settings RUN_DIR was trained with, read from the config.json and train_args.json that the
// trainer writes when a run starts; nullopt when either is missing or unreadable.
std::optional<RunSettings> recorded_settings(const std::string& run_dir);

struct SettingDifference {
  std::string key;        // "epochs", "model.mixers[1].type", ...
  std::string recorded;   // the value as text ("1", "fashion-mnist"); "(none)" when absent
  std::string requested;
};

// The first setting that differs: training options first (in the order a user thinks of them: data,
// subset, schedule, seed, ...), then the model description. nullopt when they are equal.
std::optional<SettingDifference> first_difference(const RunSettings& recorded, const RunSettings& requested);

}  // namespace mf::cli
