// Training checkpoints, written so that a kill at any instant leaves the last complete one intact,
// and read back only after they are shown to be intact.
//
// RUN_DIR/checkpoints/epoch-NNNN/ holds
//   model.safetensors        the weights, timm's key names only (loads into timm with strict=True)
//   model_ema.safetensors    the EMA weights, when EMA is on
//   train_state.safetensors  AdamW moments and step, epochs done, global step, elapsed time, seed
//   manifest.json            the size and CRC-32 of each file above, and the run's record: the model
//                            description and the training options that must not change on resume
// Each checkpoint is written into epoch-NNNN.tmp/, every file fsync'ed, the folder renamed, and only
// then RUN_DIR/checkpoints/latest (a one-line file, itself replaced atomically) names it. Older
// checkpoints beyond the newest `keep` are deleted afterwards. A failed write removes the .tmp folder.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace mf {

struct CheckpointFiles {
  std::vector<SafeTensorEntry> model;
  std::vector<SafeTensorEntry> model_ema;  // empty: none
  std::vector<SafeTensorEntry> state;
  std::map<std::string, std::string> metadata;
  nlohmann::json record = nlohmann::json::object();  // copied into manifest.json as "record"
  nlohmann::json metrics_row;                         // the epoch's metrics.jsonl row, kept in the manifest
};

// Writes checkpoint `epoch` and makes it the latest. Returns its folder.
std::string write_checkpoint(const std::string& run_dir, int epoch, const CheckpointFiles& files, int keep);

// The folder of the latest complete checkpoint, if any.
std::optional<std::string> latest_checkpoint(const std::string& run_dir);

// Every complete checkpoint folder, newest first: the one `latest` names, then the other epoch-NNNN
// folders by descending epoch. Empty when there is none.
std::vector<std::string> checkpoint_candidates(const std::string& run_dir);

// The epoch a checkpoint folder's name says (epoch-0004 -> 4), or -1.
int checkpoint_folder_epoch(const std::string& dir);

// Checks `dir`'s files against its manifest.json (present, sizes, CRC-32). Returns the manifest, or
// nothing when the checkpoint predates manifests (written by an older version: unverifiable).
// mf::Error naming the first damaged file otherwise.
std::optional<nlohmann::json> verify_checkpoint_files(const std::string& dir);

// mf::Error naming the first tensor of `file` holding a NaN or an infinity.
void check_all_finite(const SafeTensors& file);

// The first difference between two JSON values, as "KEY: A recorded, B now" ("" when equal); `path` prefixes
// the key. Used to name what changed between a checkpoint's record and the run's files.
std::string first_json_difference(const nlohmann::json& recorded, const nlohmann::json& now,
                                  const std::string& path = "");

uint32_t crc32_of(const std::vector<uint8_t>& bytes);

}  // namespace mf
