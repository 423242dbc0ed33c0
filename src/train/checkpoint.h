// Training checkpoints, written so that a kill at any instant leaves the last complete one intact.
//
// RUN_DIR/checkpoints/epoch-NNNN/ holds
//   model.safetensors        the weights, timm's key names only (loads into timm with strict=True)
//   model_ema.safetensors    the EMA weights, when EMA is on
//   train_state.safetensors  AdamW moments and step, epochs done, global step, elapsed time, seed
// Each checkpoint is written into epoch-NNNN.tmp/, every file fsync'ed, the folder renamed, and only
// then RUN_DIR/checkpoints/latest (a one-line file, itself replaced atomically) names it. Older
// checkpoints beyond the newest `keep` are deleted afterwards.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace mf {

struct CheckpointFiles {
  std::vector<SafeTensorEntry> model;
  std::vector<SafeTensorEntry> model_ema;  // empty: none
  std::vector<SafeTensorEntry> state;
  std::map<std::string, std::string> metadata;
};

// Writes checkpoint `epoch` and makes it the latest. Returns its folder.
std::string write_checkpoint(const std::string& run_dir, int epoch, const CheckpointFiles& files, int keep);

// The folder of the latest complete checkpoint, if any.
std::optional<std::string> latest_checkpoint(const std::string& run_dir);

}  // namespace mf
