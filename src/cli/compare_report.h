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
  std::string metric = "top-1";    // what the test data measures, and what its samples are
  std::string samples = "images";
  nlohmann::json to_json() const;
};

// What the comparison ranks by: test top-1 accuracy for classifiers (higher is better), the test MSE
// for forecasters (lower is better, with the MAE beside it). per_mixer holds <key>_mean, <key>_min,
// <key>_max and <key>_text for the key and the second key; every run's curve holds <key> per epoch.
struct CompareMetric {
  std::string key = "top1";
  std::string name = "top-1";              // in sentences
  std::string column = "top-1 (%)";        // table heading
  std::string axis = "test top-1 accuracy (%)";
  std::string file_stem = "accuracy";      // OUT/<stem>_vs_macs.svg, <stem>_vs_latency.svg
  bool higher_is_better = true;
  std::string second_key, second_column;   // an extra column (forecasting: the MAE)
  int digits = 2;                          // decimals of the means in the table and the text
  static CompareMetric accuracy() { return {}; }
  static CompareMetric forecast_mse() {
    return {"mse", "test MSE", "MSE", "test MSE (standardised)", "mse", false, "mae", "MAE", 4};
  }
};

// Below this many optimizer steps per run a model is still early in training: its accuracy moves by
// points from one dozen steps to the next and between seeds, so the seed noise is larger than most
// differences between mixers. (The published experiments, docs/experiments, use 188 and 625 steps.)
constexpr int64_t kFewStepsPerRun = 100;

// One sentence each, without markup: "Budget: ..." and, when the budget is too small to separate
// close mixers (one seed, or fewer than kFewStepsPerRun steps), "Caveat: ..."; otherwise "".
std::string budget_sentence(const CompareBudget& budget);
std::string caveat_sentence(const CompareBudget& budget);

// `per_mixer`: one object per mixer (mixer, seeds, top1_mean, top1_min, top1_max, top1_text (or the
// metric's keys), params,
// macs, latency_ms, images_per_s, train_seconds_mean); `runs`: every run's result.json.
void write_compare_report(const std::string& out, const std::string& command, const std::string& data,
                          const CompareBudget& budget, const std::vector<nlohmann::json>& per_mixer,
                          const std::vector<nlohmann::json>& runs, const CompareMetric& metric = {});

// The ranked table with the budget and caveat below it, for the terminal.
std::string compare_table_text(const CompareBudget& budget, const std::vector<nlohmann::json>& per_mixer,
                               const CompareMetric& metric = {});

// "m ± h" (mean ± half the range) over seeds, or just "m" for one seed.
std::string mean_pm(const std::vector<double>& v, int digits);

}  // namespace mf::cli
