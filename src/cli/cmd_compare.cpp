// metaformer compare: the MetaFormer experiment as one command. Trains the same MetaFormer with only
// the token mixer changed (identical data order, schedule and augmentation for a given seed),
// evaluates each run, counts parameters and MACs, times inference on this machine, and writes
// OUT/report.md (table + ranking), OUT/results.json (every number) and three plots. Every run is its
// own run folder OUT/runs/<mixer>/seed<k>; a finished run holds result.json and is skipped when the
// command is repeated, an interrupted one is resumed from its last checkpoint.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "cli/common.h"
#include "core/error.h"
#include "core/threading.h"
#include "io/file.h"
#include "model/metaformer.h"
#include "report/svg_plot.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace mf::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Inference cost of a description on this machine: MACs per image, batch-1 latency (median of
// `runs1`) and batch-8 throughput (median of `runs8`), random weights (the cost does not depend on them).
json measure_inference(const MetaFormerConfig& config, int runs1, int runs8) {
  MetaFormer model(config);
  initialize_parameters(model, 0);
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  model.check_backend(*ctx.exec.backend);
  const int s = config.input.size;
  auto time_batch = [&](int batch, int runs) {
    Tensor x = Tensor::full({batch, s, s, config.in_chans}, 0.5f);
    for (int i = 0; i < 2; ++i) model.run(ctx, x);
    std::vector<double> ms;
    for (int i = 0; i < runs; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      model.run(ctx, x);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return median(ms);
  };
  OpProfile profile;
  ctx.exec.profile = &profile;
  model.run(ctx, Tensor::full({1, s, s, config.in_chans}, 0.5f));
  ctx.exec.profile = nullptr;
  const double latency = time_batch(1, runs1);
  const double batch8 = time_batch(8, runs8);
  return {{"params", model.num_parameters()},
          {"macs", profile.total_macs()},
          {"latency_ms", latency},
          {"images_per_s", 8000.0 / batch8}};
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> rows;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

struct Candidate {
  std::string label;              // as given: "pooling" or "sepconv+sepconv+attention"
  std::vector<MixerSpec> mixers;  // one per stage
};

Candidate parse_candidate(const std::string& text, size_t stages) {
  Candidate c{text, {}};
  auto names = split_list(text, '+');
  MF_CHECK(names.size() == 1 || names.size() == stages,
           "--mixers: '{}' names {} mixers; give one (for every stage) or one per stage ({}), joined by '+'", text,
           names.size(), stages);
  for (size_t s = 0; s < stages; ++s) c.mixers.push_back({names[names.size() == 1 ? 0 : s], json::object()});
  return c;
}

std::string mean_pm(const std::vector<double>& v, int digits) {
  double m = 0;
  for (double x : v) m += x;
  m /= static_cast<double>(v.size());
  double lo = *std::min_element(v.begin(), v.end()), hi = *std::max_element(v.begin(), v.end());
  return v.size() > 1 ? fmt::format("{:.{}f} ± {:.{}f}", m, digits, (hi - lo) / 2, digits) : fmt::format("{:.{}f}", m, digits);
}

void write_report(const std::string& out, const std::string& command, const std::string& data,
                  const std::vector<json>& per_mixer, const std::vector<json>& runs) {
  // Ranking by mean top-1.
  std::vector<const json*> order;
  for (auto& m : per_mixer) order.push_back(&m);
  // Ties (equal mean accuracy) go to the cheaper mixer first.
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    const double ta = (*a)["top1_mean"], tb = (*b)["top1_mean"];
    if (ta != tb) return ta > tb;
    return (*a)["macs"].template get<double>() < (*b)["macs"].template get<double>();
  });

  std::string md = "# Token-mixer comparison\n\n";
  md += fmt::format("Data: `{}`. Every run trains the same MetaFormer with only the token mixer changed, with the "
                    "same data order, schedule and augmentation per seed. Top-1 is the mean over seeds ± half the "
                    "range (min to max); latency is batch 1 and throughput batch 8, measured on this machine.\n\n",
                    data);
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
  // A short automatic summary: the ranking, and which neighbours are within each other's spread.
  md += "\n## Summary\n\n";
  // "≈" between neighbours whose seed ranges overlap (this experiment does not separate them), ">"
  // where the better one's worst seed beats the other's best.
  std::string ranking;
  for (size_t i = 0; i < order.size(); ++i) {
    if (i) {
      const json &a = *order[i - 1], &b = *order[i];
      ranking += a["top1_min"].get<double>() <= b["top1_max"].get<double>() ? " ≈ " : " > ";
    }
    ranking += fmt::format("{} ({:.2f})", (*order[i])["mixer"].get<std::string>(), (*order[i])["top1_mean"].get<double>());
  }
  md += fmt::format("Ranking by mean top-1 (%): {}. \"≈\" joins neighbours whose seed ranges overlap, which this "
                    "experiment does not separate.", ranking);
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
  write_text(out + "/results.json", json{{"data", data}, {"command", command}, {"mixers", per_mixer}, {"runs", runs}}.dump(2) + "\n");

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

}  // namespace

void register_compare(CLI::App& app) {
  struct Args {
    ModelArgs base;
    std::string mixers, data, out;
    int seeds = 2;
    int runs1 = 20, runs8 = 5;
    bool no_progress = false;
    bool remeasure = false;
    TrainOptions o;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("compare", "train one MetaFormer per token mixer under identical settings and report");
  auto* base = sub->add_option("--base", a->base.config, "JSON model description (docs/config.md) whose mixers are swapped");
  auto* model = sub->add_option("--model,-m", a->base.model, "or a zoo model as the base");
  base->excludes(model);
  sub->add_option("--mixers", a->mixers, "mixers to compare, comma-separated; per stage joined by '+' "
                                          "(pooling,sepconv+sepconv+attention)")->required();
  sub->add_option("--data,-d", a->data, "fashion-mnist, long-range (synthetic), or a data folder")->required();
  sub->add_option("--out,-o", a->out, "output folder (report.md, results.json, plots, runs/)")->required();
  sub->add_option("--seeds", a->seeds, "seeds per mixer (0, 1, ...)")->capture_default_str()->check(CLI::Range(1, 100));
  TrainOptions& o = a->o;
  sub->add_option("--epochs,-e", o.epochs, "epochs per run")->capture_default_str()->check(CLI::Range(1, 100000));
  sub->add_option("--batch,-b", o.batch, "batch size")->capture_default_str()->check(CLI::Range(1, 65536));
  sub->add_option("--lr", o.lr, "peak learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--warmup-epochs", o.warmup_epochs, "linear warm-up length")->capture_default_str();
  sub->add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->capture_default_str();
  sub->add_option("--drop-path", o.drop_path, "stochastic depth rate (default: the base's)");
  sub->add_option("--subset", o.subset, "train on only this many samples (0: all)")->capture_default_str();
  sub->add_option("--eval-subset", o.eval_subset, "evaluate on only this many samples (0: all)")->capture_default_str();
  sub->add_option("--max-steps", o.max_steps, "stop each run after this many steps (0: all epochs)")->capture_default_str();
  sub->add_option("--threads,-t", o.threads, "compute threads (default: all cores)");
  sub->add_option("--workers", o.workers, "data-loading threads")->capture_default_str();
  sub->add_option("--latency-runs", a->runs1, "timed batch-1 passes per mixer")->capture_default_str();
  sub->add_option("--throughput-runs", a->runs8, "timed batch-8 passes per mixer")->capture_default_str();
  sub->add_flag("--no-progress", a->no_progress, "no progress bars");
  sub->add_flag("--remeasure", a->remeasure, "time inference again for finished runs too (e.g. on a quiet machine)");
  sub->callback([a] {
    MF_CHECK(!a->base.model.empty() || !a->base.config.empty(), "give the base model: --base FILE or --model NAME");
    TrainOptions o = a->o;
    o.progress = !a->no_progress;
    o.data = a->data;
    if (o.threads > 0) set_num_threads(o.threads);
    const MetaFormerConfig base = resolve_config(a->base);
    std::vector<Candidate> candidates;
    for (const auto& text : split_list(a->mixers, ',')) candidates.push_back(parse_candidate(text, base.num_stages()));
    MF_CHECK(!candidates.empty(), "--mixers names no mixer");
    fs::create_directories(a->out);
    std::string command = "metaformer compare";
    command += a->base.config.empty() ? " --model " + a->base.model : " --base " + a->base.config;
    command += fmt::format(" --mixers {} --data {} --epochs {} --batch {} --lr {} --seeds {}", a->mixers, a->data,
                           o.epochs, o.batch, o.lr, a->seeds);
    if (o.subset) command += fmt::format(" --subset {}", o.subset);
    if (o.eval_subset) command += fmt::format(" --eval-subset {}", o.eval_subset);
    if (o.max_steps) command += fmt::format(" --max-steps {}", o.max_steps);
    if (o.threads) command += fmt::format(" --threads {}", o.threads);
    command += " --out " + a->out;

    std::vector<json> runs, per_mixer;
    for (const Candidate& cand : candidates) {
      MetaFormerConfig config = base;
      config.mixers = cand.mixers;
      config.name = base.name + "_" + cand.label;
      json cost;
      if (a->remeasure) {
        MetaFormerConfig c = config;
        open_data_for(a->data, c);  // fits channels, classes and resolution to the data
        cost = measure_inference(c, a->runs1, a->runs8);
      }
      std::vector<double> top1, seconds;
      for (int seed = 0; seed < a->seeds; ++seed) {
        const std::string dir = fmt::format("{}/runs/{}/seed{}", a->out, cand.label, seed);
        const std::string result_path = dir + "/result.json";
        if (!fs::exists(result_path)) {
          MetaFormerConfig c = config;
          DataSplits splits = open_data_for(a->data, c);
          TrainOptions ro = o;
          ro.seed = static_cast<uint64_t>(seed);
          const bool resume = latest_checkpoint(dir).has_value();
          fmt::print("== {} seed {}{}\n", cand.label, seed, resume ? " (resuming)" : "");
          if (!resume && fs::exists(dir)) fs::remove_all(dir);  // started but no checkpoint yet: redo
          const TrainSummary s = train(c, ro, splits, dir, resume);
          if (cost.is_null()) cost = measure_inference(c, a->runs1, a->runs8);
          json curve = json::array();
          for (auto& r : read_jsonl(dir + "/metrics.jsonl"))
            curve.push_back({{"epoch", r["epoch"]}, {"top1", r["top1"]}, {"train_loss", r["train_loss"]}});
          json result{{"mixer", cand.label},     {"seed", seed},         {"top1", 100.0 * s.last_top1},
                      {"top5", 100.0 * s.last_top5}, {"best_top1", 100.0 * s.best_top1}, {"epochs", s.epochs_done},
                      {"steps", s.steps},        {"train_seconds", s.seconds}, {"curve", curve}};
          for (auto& [k, v] : cost.items()) result[k] = v;
          write_text(result_path, result.dump(2) + "\n");
        } else {
          fmt::print("== {} seed {}: done earlier, skipped\n", cand.label, seed);
        }
        const auto bytes = read_file(result_path);
        json r = json::parse(bytes.begin(), bytes.end());
        if (a->remeasure) {
          for (auto& [k, v] : cost.items()) r[k] = v;
          write_text(result_path, r.dump(2) + "\n");
        }
        if (cost.is_null()) cost = json{{"params", r["params"]}, {"macs", r["macs"]}, {"latency_ms", r["latency_ms"]},
                                        {"images_per_s", r["images_per_s"]}};
        top1.push_back(r["top1"].get<double>());
        seconds.push_back(r["train_seconds"].get<double>());
        runs.push_back(r);
      }
      double mean = 0, secs = 0;
      for (double t : top1) mean += t;
      for (double t : seconds) secs += t;
      json m{{"mixer", cand.label},
             {"seeds", static_cast<int>(top1.size())},
             {"top1", top1},
             {"top1_mean", mean / static_cast<double>(top1.size())},
             {"top1_min", *std::min_element(top1.begin(), top1.end())},
             {"top1_max", *std::max_element(top1.begin(), top1.end())},
             {"top1_text", mean_pm(top1, 2)},
             {"train_seconds_mean", secs / static_cast<double>(seconds.size())}};
      for (auto& [k, v] : cost.items()) m[k] = v;
      per_mixer.push_back(m);
    }
    write_report(a->out, command, a->data, per_mixer, runs);
    fmt::print("wrote {0}/report.md, {0}/results.json, {0}/accuracy_vs_macs.svg, {0}/accuracy_vs_latency.svg, "
               "{0}/curves.svg\n", a->out);
  });
}

}  // namespace mf::cli
