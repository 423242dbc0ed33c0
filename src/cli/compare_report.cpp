#include "cli/compare_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "io/file.h"
#include "report/svg_plot.h"

namespace mf::cli {

namespace {

using nlohmann::json;

// A mixer's mean score under `key` ("top1", "mse"); NaN where a diverged run left null (JSON has no NaN).
double mean_of(const json& mixer, const std::string& key) {
  const json& v = mixer[key + "_mean"];
  return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
}

// Best mean score first (highest top-1, lowest MSE); ties go to the cheaper mixer first. A NaN score
// (a diverged run) ranks last.
std::vector<const json*> ranked(const std::vector<json>& per_mixer, const CompareMetric& metric) {
  std::vector<const json*> order;
  for (auto& m : per_mixer) order.push_back(&m);
  std::stable_sort(order.begin(), order.end(), [&](auto* a, auto* b) {
    const double ta = mean_of(*a, metric.key), tb = mean_of(*b, metric.key);
    if (std::isnan(ta) != std::isnan(tb)) return std::isnan(tb);
    if (ta != tb && !std::isnan(ta)) return metric.higher_is_better ? ta > tb : ta < tb;
    return (*a)["macs"].template get<double>() < (*b)["macs"].template get<double>();
  });
  return order;
}

std::string steps_text(const CompareBudget& b) {
  return b.steps_min == b.steps_max ? fmt::format("{}", b.steps_min) : fmt::format("{}–{}", b.steps_min, b.steps_max);
}

std::string images_text(int64_t used, int64_t available) {
  return used < available ? fmt::format("{} of {}", used, available) : fmt::format("{}", used);
}

}  // namespace

json CompareBudget::to_json() const {
  json j{{"steps_per_run_min", steps_min}, {"steps_per_run_max", steps_max}, {"epochs", epochs},
         {"max_steps", max_steps},         {"batch", batch},                 {"seeds", seeds},
         {"train_images", train_images},   {"train_images_available", train_images_available},
         {"eval_images", eval_images},     {"eval_images_available", eval_images_available}};
  if (metric != "top-1") {
    j["metric"] = metric;
    j["samples"] = samples;
  }
  return j;
}

std::string budget_sentence(const CompareBudget& b) {
  return fmt::format("Budget: {} optimizer steps per run (batch {}; {} epoch{} over {} training {}{}), {} seed{} "
                     "per mixer, {} on {} test {}.",
                     steps_text(b), b.batch, b.epochs, b.epochs == 1 ? "" : "s",
                     images_text(b.train_images, b.train_images_available), b.samples,
                     b.max_steps > 0 ? fmt::format(", cut at --max-steps {}", b.max_steps) : "", b.seeds,
                     b.seeds == 1 ? "" : "s", b.metric, images_text(b.eval_images, b.eval_images_available), b.samples);
}

std::string caveat_sentence(const CompareBudget& b) {
  const bool one_seed = b.seeds < 2, few_steps = b.steps_min < kFewStepsPerRun;
  if (one_seed && few_steps)
    return fmt::format("Caveat: one seed per mixer and only {} steps per run, so the seed noise is neither measured "
                       "nor small: the ranking cannot show differences smaller than the seed noise. Use --seeds 2 or "
                       "more and a longer schedule before reading anything into the order.",
                       steps_text(b));
  if (one_seed)
    return "Caveat: one seed per mixer, so the seed noise is not measured: the ranking cannot show differences "
           "smaller than the seed noise, and no neighbours can be marked as overlapping (use --seeds 2 or more).";
  if (few_steps)
    return fmt::format("Caveat: only {} steps per run, early in training where seeds scatter widely: the ranking "
                       "cannot show differences smaller than the seed noise, which {} seeds measure only roughly "
                       "(\"≈\" marks the neighbours they do not separate).",
                       steps_text(b), b.seeds);
  return "";
}

std::string mean_pm(const std::vector<double>& v, int digits) {
  double m = 0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  double lo = *std::min_element(v.begin(), v.end()), hi = *std::max_element(v.begin(), v.end());
  return v.size() > 1 ? fmt::format("{:.{}f} ± {:.{}f}", m, digits, (hi - lo) / 2, digits) : fmt::format("{:.{}f}", m, digits);
}

std::string compare_table_text(const CompareBudget& budget, const std::vector<json>& per_mixer,
                               const CompareMetric& metric) {
  const bool second = !metric.second_key.empty();
  std::string t = fmt::format("{:>4}  {:<28} {:>10} {:>10} {:>15}{} {:>5} {:>12} {:>9}\n", "rank", "mixer",
                              "params (M)", "MACs (M)", metric.column,
                              second ? fmt::format(" {:>15}", metric.second_column) : "", "seeds", "latency (ms)",
                              budget.samples + "/s");
  // "±" is one column wide but two bytes: widen the field by the extra byte.
  auto cell = [](const std::string& text) {
    return fmt::format("{:>{}}", text, 15 + (text.find("±") != std::string::npos ? 1 : 0));
  };
  int rank = 0;
  for (auto* m : ranked(per_mixer, metric)) {
    t += fmt::format("{:>4}  {:<28} {:>10.3f} {:>10.1f} {}{} {:>5} {:>12.2f} {:>9.1f}\n", ++rank,
                     (*m)["mixer"].get<std::string>(), (*m)["params"].get<double>() / 1e6,
                     (*m)["macs"].get<double>() / 1e6, cell((*m)[metric.key + "_text"].get<std::string>()),
                     second ? fmt::format(" {}", cell((*m)[metric.second_key + "_text"].get<std::string>())) : std::string(),
                     (*m)["seeds"].get<int>(), (*m)["latency_ms"].get<double>(), (*m)["images_per_s"].get<double>());
  }
  t += budget_sentence(budget) + "\n";
  const std::string caveat = caveat_sentence(budget);
  if (!caveat.empty()) t += caveat + "\n";
  return t;
}

void write_compare_report(const std::string& out, const std::string& command, const std::string& data,
                          const CompareBudget& budget, const std::vector<json>& per_mixer,
                          const std::vector<json>& runs, const CompareMetric& metric) {
  const std::vector<const json*> order = ranked(per_mixer, metric);
  const std::string K = metric.key;
  const bool second = !metric.second_key.empty();
  const auto text = [](const json& m, const std::string& key) { return m[key + "_text"].get<std::string>(); };
  const int digits = metric.digits;

  std::string md = "# Token-mixer comparison\n\n";
  md += fmt::format("Data: `{}`. Every run trains the same MetaFormer with only the token mixer changed, with the "
                    "same data order, schedule and augmentation per seed. {} is the mean over seeds ± half the "
                    "range (min to max){}; latency is batch 1 and throughput batch 8, measured on this machine "
                    "(backend {}).\n\n",
                    data, metric.higher_is_better ? "Top-1" : "The test MSE (and MAE)",
                    metric.higher_is_better ? "" : ", in the units of the series standardised with its training part",
                    per_mixer.empty() ? std::string("cpu fp32") : per_mixer.front().value("timing", std::string("cpu fp32")));
  md += fmt::format("Command:\n\n```\n{}\n```\n\n", command);
  md += fmt::format("| rank | mixer | params (M) | MACs (M) | {} |{} seeds | latency (ms) | {}/s | training time (s) |\n",
                    metric.column, second ? fmt::format(" {} |", metric.second_column) : std::string(), budget.samples);
  md += fmt::format("| ---: | --- | ---: | ---: | ---: |{} ---: | ---: | ---: | ---: |\n", second ? " ---: |" : "");
  int rank = 0;
  for (auto* m : order) {
    md += fmt::format("| {} | {} | {:.3f} | {:.1f} | {} |{} {} | {:.2f} | {:.1f} | {:.0f} |\n", ++rank,
                      (*m)["mixer"].get<std::string>(), (*m)["params"].get<double>() / 1e6,
                      (*m)["macs"].get<double>() / 1e6, text(*m, K),
                      second ? fmt::format(" {} |", text(*m, metric.second_key)) : std::string(), (*m)["seeds"].get<int>(), (*m)["latency_ms"].get<double>(), (*m)["images_per_s"].get<double>(),
                      (*m)["train_seconds_mean"].get<double>());
  }
  // The budget and what it cannot show stand right under the table, before anyone reads the ranking.
  std::string budget_md = budget_sentence(budget);
  budget_md.replace(0, std::string("Budget:").size(), "**Budget:**");
  md += "\n" + budget_md + "\n";
  std::string caveat = caveat_sentence(budget);
  if (!caveat.empty()) {
    caveat.replace(0, std::string("Caveat:").size(), "**Caveat:**");
    md += "\n" + caveat + "\n";
  }
  // A short automatic summary: the ranking, and which neighbours are within each other's spread.
  md += "\n## Summary\n\n";
  // With two or more seeds, "≈" between neighbours whose seed ranges overlap (this experiment does not
  // separate them) and ">" where the better one's worst seed beats the other's best. One seed gives
  // no range, so nothing is claimed between neighbours: they are only listed in order.
  const bool one_seed = budget.seeds < 2;
  std::string ranking;
  for (size_t i = 0; i < order.size(); ++i) {
    if (i) {
      const json &a = *order[i - 1], &b = *order[i];
      // The better one's worst seed against the other's best: overlapping ranges are not separated.
      const bool overlap = metric.higher_is_better ? a[K + "_min"].get<double>() <= b[K + "_max"].get<double>()
                                                   : a[K + "_max"].get<double>() >= b[K + "_min"].get<double>();
      ranking += one_seed ? ", " : overlap ? " ≈ " : metric.higher_is_better ? " > " : " < ";
    }
    ranking += fmt::format("{} ({:.{}f})", (*order[i])["mixer"].get<std::string>(), mean_of(*order[i], K), digits);
  }
  md += fmt::format("Ranking by mean {}{}: {}.", metric.name, metric.higher_is_better ? " (%)" : " (lowest first)",
                    ranking);
  md += one_seed ? " With one seed per mixer the order is not tested against the seed noise (see the caveat)."
                 : " \"≈\" joins neighbours whose seed ranges overlap, which this experiment does not separate.";
  const json& best = *order.front();
  const json* cheapest = order.front();
  for (auto* m : order)
    if ((*m)["macs"].get<double>() < (*cheapest)["macs"].get<double>()) cheapest = m;
  const std::string unit = metric.higher_is_better ? "%" : "";
  md += fmt::format(" Best: {} ({:.{}f}{}); cheapest in MACs: {} ({:.1f} M MACs, {:.{}f}{}).\n",
                    best["mixer"].get<std::string>(), mean_of(best, K), digits, unit,
                    (*cheapest)["mixer"].get<std::string>(), (*cheapest)["macs"].get<double>() / 1e6,
                    mean_of(*cheapest, K), digits, unit);
  const std::string what = metric.higher_is_better ? "accuracy" : "test MSE";
  md += fmt::format("\nPlots: [{0} against MACs]({1}_vs_macs.svg), [{0} against latency]({1}_vs_latency.svg), "
                    "[training curves](curves.svg). Every number: `results.json`; every run: `runs/<mixer>/seed<k>/`.\n",
                    what, metric.file_stem);
  write_text(out + "/report.md", md);
  json results{{"data", data}, {"command", command}, {"budget", budget.to_json()}, {"mixers", per_mixer}, {"runs", runs}};
  if (!caveat.empty()) results["caveat"] = caveat_sentence(budget);
  write_text(out + "/results.json", results.dump(2) + "\n");

  // Plots: one point per mixer (mean over seeds), labelled.
  auto scatter = [&](const char* key, const std::string& title, const std::string& x_label, bool log_x) {
    Plot p{title, x_label, metric.axis, {}, log_x, 640, 420};
    for (auto* m : order) {
      const std::string name = (*m)["mixer"].get<std::string>();
      Series s{name, {(*m)[key].get<double>() / (std::string(key) == "macs" ? 1e6 : 1.0)},
               {mean_of(*m, K)}, false, true, {name}};
      s.style = static_cast<int>(&*m - &per_mixer[0]);  // the same style for a mixer in every plot
      p.series.push_back(s);
    }
    return p;
  };
  const std::string title = metric.higher_is_better ? "Accuracy" : "Test MSE";
  write_svg(out + "/" + metric.file_stem + "_vs_macs.svg",
            render_svg(scatter("macs", title + " against cost", fmt::format("MACs per {} (millions)",
                               budget.samples == "images" ? "image" : "sample"), true)));
  write_svg(out + "/" + metric.file_stem + "_vs_latency.svg",
            render_svg(scatter("latency_ms", title + " against latency", "batch-1 latency on this machine (ms)", true)));
  Plot curves{"Training curves (every run and seed; one style per mixer)", "epoch", metric.axis, {}, false, 760, 520};
  std::map<std::string, int> style;
  for (size_t i = 0; i < per_mixer.size(); ++i) style[per_mixer[i]["mixer"].get<std::string>()] = static_cast<int>(i);
  for (auto& r : runs) {
    const std::string name = r["mixer"].get<std::string>();
    Series s{r["seed"].get<int>() == 0 ? name : "", {}, {}, true, false, {}};
    s.style = style[name];
    for (auto& e : r["curve"]) {
      if (!e[K].is_number()) continue;  // a diverged epoch (NaN is stored as null)
      s.x.push_back(e["epoch"].get<double>());
      s.y.push_back(e[K].get<double>());
    }
    curves.series.push_back(s);
  }
  write_svg(out + "/curves.svg", render_svg(curves));
}

}  // namespace mf::cli
