// The output of `metaformer compare`: OUT/report.md (table, budget, ranking, caveat), OUT/results.json
// (every number), three plots, and the same table, budget and caveat printed on stdout.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace mf::cli {

// What the ranking was bought with. A ranking is only as good as its budget: a reader has to see
// how many steps and seeds stand behind it to know which differences it can show.
struct CompareBudget {
  int64_t steps_min = 0, steps_max = 0;  // optimizer steps per run (equal unless runs differ)
  int epochs = 0;                         // epochs requested per run
  int64_t max_steps = 0;                  // --max-steps (0: none)
  int64_t batch = 0;
  int seeds = 0;                          // seeds per mixer
  int64_t train_images = 0, train_images_available = 0;  // after --subset, and in the data
  int64_t eval_images = 0, eval_images_available = 0;    // after --eval-subset, and in the data
  nlohmann::json to_json() const;
};

// Below this many optimizer steps per run a model is still early in training: its accuracy moves by
// points from one dozen steps to the next and between seeds, so the seed noise is larger than most
// differences between mixers. (The published experiments, docs/experiments, use 188 and 625 steps.)
constexpr int64_t kFewStepsPerRun = 100;

// One sentence each, without markup: "Budget: ..." and, when the budget is too small to separate
// close mixers (one seed, or fewer than kFewStepsPerRun steps), "Caveat: ..."; otherwise "".
std::string budget_sentence(const CompareBudget& budget);
std::string caveat_sentence(const CompareBudget& budget);

// `per_mixer`: one object per mixer (mixer, seeds, top1_mean, top1_min, top1_max, top1_text, params,
// macs, latency_ms, images_per_s, train_seconds_mean); `runs`: every run's result.json.
void write_compare_report(const std::string& out, const std::string& command, const std::string& data,
                          const CompareBudget& budget, const std::vector<nlohmann::json>& per_mixer,
                          const std::vector<nlohmann::json>& runs);

// The ranked table with the budget and caveat below it, for the terminal.
std::string compare_table_text(const CompareBudget& budget, const std::vector<nlohmann::json>& per_mixer);

// "m ± h" (mean ± half the range) over seeds, or just "m" for one seed.
std::string mean_pm(const std::vector<double>& v, int digits);

}  // namespace mf::cli
