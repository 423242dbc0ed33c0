#include "cli/compare_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "io/file.h"
#include "report/svg_plot.h"

namespace mf::cli {

namespace {

using nlohmann::json;

// Best mean top-1 first; ties (equal mean accuracy) go to the cheaper mixer first.
std::vector<const json*> ranked(const std::vector<json>& per_mixer) {
  std::vector<const json*> order;
  for (auto& m : per_mixer) order.push_back(&m);
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) {
    const double ta = (*a)["top1_mean"], tb = (*b)["top1_mean"];
    if (ta != tb) return ta > tb;
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
  return json{{"steps_per_run_min", steps_min}, {"steps_per_run_max", steps_max}, {"epochs", epochs},
              {"max_steps", max_steps},         {"batch", batch},                 {"seeds", seeds},
              {"train_images", train_images},   {"train_images_available", train_images_available},
              {"eval_images", eval_images},     {"eval_images_available", eval_images_available}};
}

std::string budget_sentence(const CompareBudget& b) {
  return fmt::format("Budget: {} optimizer steps per run (batch {}; {} epoch{} over {} training images{}), {} seed{} "
                     "per mixer, top-1 on {} test images.",
                     steps_text(b), b.batch, b.epochs, b.epochs == 1 ? "" : "s",
                     images_text(b.train_images, b.train_images_available),
                     b.max_steps > 0 ? fmt::format(", cut at --max-steps {}", b.max_steps) : "", b.seeds,
                     b.seeds == 1 ? "" : "s", images_text(b.eval_images, b.eval_images_available));
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

std::string compare_table_text(const CompareBudget& budget, const std::vector<json>& per_mixer) {
  std::string t = fmt::format("{:>4}  {:<28} {:>10} {:>10} {:>15} {:>5} {:>12} {:>9}\n", "rank", "mixer",
                              "params (M)", "MACs (M)", "top-1 (%)", "seeds", "latency (ms)", "images/s");
  int rank = 0;
  for (auto* m : ranked(per_mixer)) {
    // "±" is one column wide but three bytes: widen the field by the two extra bytes.
    const std::string top1 = (*m)["top1_text"].get<std::string>();
    const int top1_width = 15 + (top1.find("±") != std::string::npos ? 1 : 0);
    t += fmt::format("{:>4}  {:<28} {:>10.3f} {:>10.1f} {:>{}} {:>5} {:>12.2f} {:>9.1f}\n", ++rank,
                     (*m)["mixer"].get<std::string>(), (*m)["params"].get<double>() / 1e6,
                     (*m)["macs"].get<double>() / 1e6, top1, top1_width, (*m)["seeds"].get<int>(),
                     (*m)["latency_ms"].get<double>(), (*m)["images_per_s"].get<double>());
  }
  t += budget_sentence(budget) + "\n";
  const std::string caveat = caveat_sentence(budget);
  if (!caveat.empty()) t += caveat + "\n";
  return t;
}

void write_compare_report(const std::string& out, const std::string& command, const std::string& data,
                          const CompareBudget& budget, const std::vector<json>& per_mixer,
                          const std::vector<json>& runs) {
  const std::vector<const json*> order = ranked(per_mixer);

  std::string md = "# Token-mixer comparison\n\n";
  md += fmt::format("Data: `{}`. Every run trains the same MetaFormer with only the token mixer changed, with the "
                    "same data order, schedule and augmentation per seed. Top-1 is the mean over seeds ± half the "
                    "range (min to max); latency is batch 1 and throughput batch 8, measured on this machine "
                    "(backend {}).\n\n",
                    data, per_mixer.empty() ? std::string("cpu fp32") : per_mixer.front().value("timing", std::string("cpu fp32")));
  md += fmt::format("Command:\n\n```\n{}\n```\n\n", command);
  md += "| rank | mixer | params (M) | MACs (M) | top-1 (%) | seeds | latency (ms) | images/s | training time (s) |\n";
  md += "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  int rank = 0;
  for (auto* m : order) {
    md += fmt::format("| {} | {} | {:.3f} | {:.1f} | {} | {} | {:.2f} | {:.1f} | {:.0f} |\n", ++rank,
                      (*m)["mixer"].get<std::string>(), (*m)["params"].get<double>() / 1e6,
                      (*m)["macs"].get<double>() / 1e6, (*m)["top1_text"].get<std::string>(),
                      (*m)["seeds"].get<int>(), (*m)["latency_ms"].get<double>(), (*m)["images_per_s"].get<double>(),
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
      ranking += one_seed ? ", " : a["top1_min"].get<double>() <= b["top1_max"].get<double>() ? " ≈ " : " > ";
    }
    ranking += fmt::format("{} ({:.2f})", (*order[i])["mixer"].get<std::string>(), (*order[i])["top1_mean"].get<double>());
  }
  md += fmt::format("Ranking by mean top-1 (%): {}.", ranking);
  md += one_seed ? " With one seed per mixer the order is not tested against the seed noise (see the caveat)."
                 : " \"≈\" joins neighbours whose seed ranges overlap, which this experiment does not separate.";
  const json& best = *order.front();
  const json* cheapest = order.front();
  for (auto* m : order)
    if ((*m)["macs"].get<double>() < (*cheapest)["macs"].get<double>()) cheapest = m;
  md += fmt::format(" Best: {} ({:.2f}%); cheapest in MACs: {} ({:.1f} M MACs, {:.2f}%).\n",
                    best["mixer"].get<std::string>(), best["top1_mean"].get<double>(),
                    (*cheapest)["mixer"].get<std::string>(), (*cheapest)["macs"].get<double>() / 1e6,
                    (*cheapest)["top1_mean"].get<double>());
  md += "\nPlots: [accuracy against MACs](accuracy_vs_macs.svg), [accuracy against latency](accuracy_vs_latency.svg), "
        "[training curves](curves.svg). Every number: `results.json`; every run: `runs/<mixer>/seed<k>/`.\n";
  write_text(out + "/report.md", md);
  json results{{"data", data}, {"command", command}, {"budget", budget.to_json()}, {"mixers", per_mixer}, {"runs", runs}};
  if (!caveat.empty()) results["caveat"] = caveat_sentence(budget);
  write_text(out + "/results.json", results.dump(2) + "\n");

  // Plots: one point per mixer (mean over seeds), labelled.
  auto scatter = [&](const char* key, const std::string& title, const std::string& x_label, bool log_x) {
    Plot p{title, x_label, "test top-1 accuracy (%)", {}, log_x, 640, 420};
    for (auto* m : order) {
      const std::string name = (*m)["mixer"].get<std::string>();
      Series s{name, {(*m)[key].get<double>() / (std::string(key) == "macs" ? 1e6 : 1.0)},
               {(*m)["top1_mean"].get<double>()}, false, true, {name}};
      s.style = static_cast<int>(&*m - &per_mixer[0]);  // the same style for a mixer in every plot
      p.series.push_back(s);
    }
    return p;
  };
  write_svg(out + "/accuracy_vs_macs.svg", render_svg(scatter("macs", "Accuracy against cost", "MACs per image (millions)", true)));
  write_svg(out + "/accuracy_vs_latency.svg",
            render_svg(scatter("latency_ms", "Accuracy against latency", "batch-1 latency on this machine (ms)", true)));
  Plot curves{"Training curves (every run and seed; one style per mixer)", "epoch", "test top-1 accuracy (%)", {},
              false, 760, 520};
  std::map<std::string, int> style;
  for (size_t i = 0; i < per_mixer.size(); ++i) style[per_mixer[i]["mixer"].get<std::string>()] = static_cast<int>(i);
  for (auto& r : runs) {
    const std::string name = r["mixer"].get<std::string>();
    Series s{r["seed"].get<int>() == 0 ? name : "", {}, {}, true, false, {}};
    s.style = style[name];
    for (auto& e : r["curve"]) {
      s.x.push_back(e["epoch"].get<double>());
      s.y.push_back(e["top1"].get<double>());
    }
    curves.series.push_back(s);
  }
  write_svg(out + "/curves.svg", render_svg(curves));
}

}  // namespace mf::cli
