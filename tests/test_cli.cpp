// The command line: bad input gets one clear line on stderr and a non-zero exit; good input works.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "io/file.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "model/loader.h"
#include "model/config.h"
#include "model/metaformer.h"
#include "model/zoo.h"
#include "core/error.h"
#include "cli_expect.h"
#include "test_util.h"

namespace mf::test {
namespace {

std::string golden(const std::string& family, const std::string& file) {
  return data_path("golden/" + family + "/" + file);
}

TEST(Cli, RunMatchesTimmOnTheGoldenModel) {
  TempDir dir;
  SafeTensors io = SafeTensors::open(golden("caformer", "io.safetensors"));
  write_npy(dir.file("x.npy"), io.load("input"));
  CliResult r = run_cli({"run", "--config", golden("caformer", "config.json"), "--weights",
                         golden("caformer", "weights.safetensors"), "--input", dir.file("x.npy"), "--output",
                         dir.file("y.npy"), "--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LE(rel_error(read_npy(dir.file("y.npy")), io.load("logits")), 2e-5);
}

TEST(Cli, UnknownModel) {
  expect_clean_failure(run_cli({"info", "--model", "resnet50"}), "unknown model 'resnet50'");
}

TEST(Cli, MissingWeightsFile) {
  TempDir dir;
  write_npy(dir.file("x.npy"), Tensor::zeros({1, 3, 64, 64}));
  expect_clean_failure(run_cli({"run", "--model", "poolformer_s12", "--weights", dir.file("nope.safetensors"),
                                "--input", dir.file("x.npy"), "--output", dir.file("y.npy")}),
                       "cannot open");
}

TEST(Cli, BadSafetensorsFiles) {
  TempDir dir;
  write_npy(dir.file("x.npy"), Tensor::zeros({1, 3, 64, 64}));
  auto run_with = [&](const std::vector<uint8_t>& bytes) {
    write_bytes(dir.file("w.safetensors"), bytes);
    return run_cli({"run", "--model", "poolformer_s12", "--weights", dir.file("w.safetensors"), "--input",
                    dir.file("x.npy"), "--output", dir.file("y.npy")});
  };
  // Truncated: a valid file cut in the middle of its data.
  std::vector<uint8_t> good = encode_safetensors({{"a", Tensor::zeros({64}), {}, {}}});
  expect_clean_failure(run_with({good.begin(), good.end() - 10}), "w.safetensors");
  expect_clean_failure(run_with({1, 2, 3}), "w.safetensors");
  // A header whose offsets point past the end.
  auto with_header = [](const std::string& h) {
    std::vector<uint8_t> b;
    const uint64_t n = h.size();
    for (int i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(n >> (8 * i)));
    for (char c : h) b.push_back(static_cast<uint8_t>(c));
    b.resize(b.size() + 16, 0);
    return b;
  };
  expect_clean_failure(run_with(with_header(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,400]}})")),
                       "w.safetensors");
  expect_clean_failure(run_with(with_header(R"({"a":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}})")),
                       "unknown dtype");
}

TEST(Cli, MissingAndMisShapedTensors) {
  TempDir dir;
  write_npy(dir.file("x.npy"), Tensor::zeros({1, 3, 64, 64}));
  MetaFormer m(zoo_config("poolformerv2_s12"));
  std::vector<SafeTensorEntry> entries;
  for (auto& [name, p] : m.named_parameters())
    if (name != "stem.conv.bias") entries.push_back({name, name == "head.fc.bias" ? Tensor::zeros({7}) : p->value, {}, {}});
  save_safetensors(dir.file("w.safetensors"), entries);
  CliResult r = run_cli({"run", "--model", "poolformerv2_s12", "--weights", dir.file("w.safetensors"), "--input",
                         dir.file("x.npy"), "--output", dir.file("y.npy")});
  expect_clean_failure(r, "missing (stem.conv.bias [64])");
  EXPECT_NE(r.err.find("head.fc.bias (model [1000], file [7])"), std::string::npos) << r.err;
}

TEST(Cli, InputOfTheWrongRankOrChannels) {
  TempDir dir;
  write_npy(dir.file("x3.npy"), Tensor::zeros({3, 64, 64}));
  expect_clean_failure(run_cli({"run", "--model", "poolformer_s12", "--input", dir.file("x3.npy"), "--output",
                                dir.file("y.npy")}),
                       "[B, C, H, W]");
  write_npy(dir.file("x1.npy"), Tensor::zeros({1, 1, 64, 64}));
  expect_clean_failure(run_cli({"run", "--model", "poolformer_s12", "--input", dir.file("x1.npy"), "--output",
                                dir.file("y.npy")}),
                       "input channels");
  write_bytes(dir.file("bad.npy"), {0x93, 'N', 'U', 'M'});
  expect_clean_failure(run_cli({"run", "--model", "poolformer_s12", "--input", dir.file("bad.npy"), "--output",
                                dir.file("y.npy")}),
                       "bad.npy");
}

TEST(Cli, CorruptImage) {
  TempDir dir;
  write_bytes(dir.file("cat.jpg"), {0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, 'J', 'F', 'I', 'F', 0, 1});
  MetaFormer m(zoo_config("poolformer_s12"));
  save_weights(m, dir.file("w.safetensors"));
  expect_clean_failure(run_cli({"classify", "--model", "poolformer_s12", "--weights", dir.file("w.safetensors"),
                                dir.file("cat.jpg")}),
                       "cannot decode image");
}

TEST(Cli, BadConfigAndFlags) {
  TempDir dir;
  write_bytes(dir.file("c.json"), {'{', '"', 'd'});
  expect_clean_failure(run_cli({"info", "--config", dir.file("c.json")}), "not valid JSON");
  CliResult r = run_cli({"bench", "--model", "poolformer_s12", "--batch", "x"});
  expect_clean_failure(r, "not a number");
  EXPECT_NE(run_cli({"frobnicate"}).exit_code, 0);
  EXPECT_NE(run_cli({"run", "--model", "a", "--config", "b", "-i", "x", "-o", "y"}).exit_code, 0);
}

TEST(Cli, InfoCountsParametersAndMacs) {
  CliResult r = run_cli({"info", "--model", "convformer_s18", "--depth", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("parameters: 26774448"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("MACs:"), std::string::npos) << r.out;
  CliResult list = run_cli({"info", "--list"});
  ASSERT_EQ(list.exit_code, 0);
  for (const char* name : {"caformer_b36", "poolformer_m48", "randformer_s12", "sepconv", "attention"})
    EXPECT_NE(list.out.find(name), std::string::npos) << name;
}

TEST(Cli, BadDtypeIsOneClearError) {
  expect_clean_failure(run_cli({"bench", "--model", "poolformer_s12", "--dtype", "fp8"}), "unknown precision 'fp8'");
  expect_clean_failure(run_cli({"verify", "--backend", "ref", "--dtype", "bf16", golden("caformer", "")}),
                       "fp32 only");
}

TEST(Cli, BenchTakesWeightsInputAndWritesJson) {
  TempDir dir;
  MetaFormer m(zoo_config("poolformer_s12"));
  save_weights(m, dir.file("w.safetensors"));
  CliResult r = run_cli({"bench", "--model", "poolformer_s12", "--weights", dir.file("w.safetensors"), "--batch", "1",
                         "--runs", "1", "--warmup", "0", "--threads", "1", "--dtype", "bf16", "--json",
                         dir.file("out.json")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| poolformer_s12 | 1 | 1 | cpu bf16 |"), std::string::npos) << r.out;
  std::ifstream f(dir.file("out.json"));
  std::string json((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(json.find("\"median_ms\""), std::string::npos) << json;
  // An input with too few images for the batch is one clear line.
  Tensor few = Tensor::full({1, 3, 32, 32}, 0.1f);
  write_npy(dir.file("x.npy"), few);
  expect_clean_failure(run_cli({"bench", "--model", "poolformer_s12", "--input", dir.file("x.npy"), "--batch", "2",
                                "--runs", "1", "--warmup", "0"}),
                       "holds 1 images");
}

TEST(Cli, BenchPrintsAMarkdownTable) {
  CliResult r = run_cli({"bench", "--model", "poolformer_s12", "--batch", "1", "--runs", "2", "--warmup", "1",
                         "--resolution", "64", "--threads", "1", "--profile"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| poolformer_s12 | 1 | 1 | cpu |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pooling"), std::string::npos) << r.out;
}

// The tiny CAFormer of the golden tests, as a model description file with the given changes.
std::string write_tiny_config(const TempDir& dir, const std::string& name, int in_chans, int num_classes) {
  MetaFormerConfig c = load_config(golden("caformer", "config.json"));
  c.in_chans = in_chans;
  c.num_classes = num_classes;
  c.input.mean.assign(static_cast<size_t>(in_chans), 0.f);  // one value per input channel
  c.input.std.assign(static_cast<size_t>(in_chans), 1.f);
  write_text(dir.file(name), config_to_json(c).dump(2));
  return dir.file(name);
}

TEST(Cli, EvalRefusesAClassifierThatDoesNotFitTheData) {
  TempDir dir;
  // long-range: 2 classes, 1 channel. Weights with a 1000-class head used to be evaluated 1000-way.
  const std::string config = write_tiny_config(dir, "c.json", 1, 2);
  MetaFormerConfig wide = load_config(config);
  wide.num_classes = 1000;
  MetaFormer imagenet_head(wide);
  save_weights(imagenet_head, dir.file("w1000.safetensors"));
  CliResult r = run_cli({"eval", "--config", config, "--weights", dir.file("w1000.safetensors"), "--data",
                         "long-range", "--threads", "1"});
  expect_clean_failure(r, "1000 classes");
  EXPECT_NE(r.err.find("long-range has 2"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("top-1"), std::string::npos) << r.out;
  // Weights whose classifier fits the data are evaluated.
  MetaFormer fits(load_config(config));
  save_weights(fits, dir.file("w2.safetensors"));
  CliResult ok = run_cli({"eval", "--config", config, "--weights", dir.file("w2.safetensors"), "--data", "long-range",
                          "--threads", "1", "--batch", "500"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("top-1"), std::string::npos) << ok.out;
}

TEST(Cli, ClassifyAndRunWithoutWeightsSayTheWeightsAreRandom) {
  TempDir dir;
  const std::string config = golden("caformer", "config.json");
  CliResult c = run_cli({"classify", "--config", config, "--threads", "1", data_path("image/photo.jpg")});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.out.find("1. "), std::string::npos) << c.out;
  EXPECT_NE(c.err.find("weights are random"), std::string::npos) << c.err;
  EXPECT_NE(c.err.find("meaningless"), std::string::npos) << c.err;

  write_npy(dir.file("x.npy"), Tensor::full({2, 3, 64, 64}, 0.3f));
  auto run_seed = [&](const std::string& seed, const std::string& out) {
    CliResult r = run_cli({"run", "--config", config, "--seed", seed, "--threads", "1", "--input", dir.file("x.npy"),
                           "--output", dir.file(out)});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("weights are random (seed " + seed + ")"), std::string::npos) << r.err;
    return read_npy(dir.file(out));
  };
  const Tensor a = run_seed("7", "a.npy"), again = run_seed("7", "b.npy"), other = run_seed("8", "c.npy");
  ASSERT_EQ(a.numel(), 20);
  EXPECT_EQ(rel_error(again, a), 0.0);  // the seed fixes the weights
  EXPECT_GT(rel_error(other, a), 1e-3);
  // With weights, no note.
  MetaFormer m(load_config(config));
  save_weights(m, dir.file("w.safetensors"));
  CliResult w = run_cli({"run", "--config", config, "--weights", dir.file("w.safetensors"), "--threads", "1",
                         "--input", dir.file("x.npy"), "--output", dir.file("d.npy")});
  ASSERT_EQ(w.exit_code, 0) << w.err;
  EXPECT_EQ(w.err.find("random"), std::string::npos) << w.err;
}

TEST(Cli, InitWritesTheSeededRandomInitialisation) {
  TempDir dir;
  const std::string config = golden("caformer", "config.json");
  auto init = [&](const std::string& seed, const std::string& out) {
    CliResult r = run_cli({"init", "--config", config, "--seed", seed, "--out", dir.file(out)});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return read_bytes(dir.file(out));
  };
  const auto a = init("3", "a.safetensors");
  EXPECT_EQ(init("3", "b.safetensors"), a);
  EXPECT_NE(init("4", "c.safetensors"), a);
  // Written through a temporary file and a rename: nothing else is left in the folder.
  int files = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 3);
  // The same initialisation as `train --seed 3`, under timm's key names.
  MetaFormer expected(load_config(config));
  initialize_parameters(expected, 3);
  MetaFormer loaded(load_config(config));
  load_weights(loaded, SafeTensors::open(dir.file("a.safetensors")));
  auto want = expected.named_parameters();
  auto got = loaded.named_parameters();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_EQ(rel_error(got[i].second->value, want[i].second->value), 0.0) << want[i].first;
  }
  // `run --weights` takes the file.
  write_npy(dir.file("x.npy"), Tensor::full({1, 3, 64, 64}, 0.3f));
  CliResult r = run_cli({"run", "--config", config, "--weights", dir.file("a.safetensors"), "--threads", "1",
                         "--input", dir.file("x.npy"), "--output", dir.file("y.npy")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_clean_failure(run_cli({"init", "--model", "nosuchmodel", "--out", dir.file("n.safetensors")}),
                       "unknown model");
}

// True when every array in `j` holds only objects: no value is known by its position alone.
bool every_field_is_named(const nlohmann::json& j) {
  if (j.is_array())
    return std::all_of(j.begin(), j.end(), [](const nlohmann::json& e) { return e.is_object() && every_field_is_named(e); });
  if (j.is_object())
    return std::all_of(j.begin(), j.end(), [](const nlohmann::json& e) { return every_field_is_named(e); });
  return true;
}

TEST(Cli, BenchTakesAConfigAndLabelsEveryJsonField) {
  TempDir dir;
  CliResult r = run_cli({"bench", "--config", golden("caformer", "config.json"), "--batch", "1", "--runs", "1",
                         "--warmup", "0", "--resolution", "64", "--threads", "1", "--profile", "--json",
                         dir.file("out.json")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| golden_caformer | 1 | 1 | cpu |"), std::string::npos) << r.out;
  const auto bytes = read_bytes(dir.file("out.json"));
  const auto j = nlohmann::json::parse(bytes.begin(), bytes.end());
  ASSERT_TRUE(j.is_array() && j.size() == 1) << j.dump();
  EXPECT_TRUE(every_field_is_named(j)) << j.dump(2);
  const auto& p = j[0];
  EXPECT_EQ(p.at("model"), "golden_caformer");
  EXPECT_GT(p.at("gmacs_per_image").get<double>(), 0.0);
  EXPECT_GT(p.at("peak_rss_mb").get<double>(), 0.0);
  EXPECT_GT(p.at("images_per_s").get<double>(), 0.0);
  ASSERT_TRUE(p.contains("ops")) << p.dump(2);
  bool attention = false;
  for (const auto& op : p.at("ops")) {
    EXPECT_GT(op.at("calls").get<int64_t>(), 0);
    EXPECT_GE(op.at("ms").get<double>(), 0.0);
    attention |= op.at("op") == "attention";
  }
  EXPECT_TRUE(attention) << p.dump(2);
  expect_clean_failure(run_cli({"bench", "--config", dir.file("none.json"), "--runs", "1"}), "none.json");
}

// One line on stderr and exit status 1, whatever the argument error.
void expect_argument_error(const std::vector<std::string>& args, const std::string& phrase) {
  CliResult r = run_cli(args);
  EXPECT_EQ(r.exit_code, 1) << args[0] << ": " << r.err;
  expect_clean_failure(r, phrase);
}

TEST(Cli, ArgumentErrorsAreOneLineAndExitOne) {
  expect_argument_error({"info", "--model", "poolformer_s12", "--frobnicate"}, "--frobnicate");  // unknown option
  expect_argument_error({"info", "--model"}, "--model");                                          // missing value
  expect_argument_error({"info", "--model", "poolformer_s12", "--depth", "x"}, "x");               // not a number
  expect_argument_error({"frobnicate"}, "frobnicate");                                             // no such command
  expect_argument_error({"run", "--model", "a", "--config", "b", "-i", "x", "-o", "y"}, "--config");  // excluded
  expect_argument_error({"run", "--model", "poolformer_s12"}, "--input");                       // required
  // --help and --version are not errors.
  CliResult help = run_cli({"info", "--help"});
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_NE(help.out.find("--resolution"), std::string::npos) << help.out;
  EXPECT_EQ(run_cli({"--version"}).exit_code, 0);
}

TEST(Cli, VerifyChecksEveryFolderFirst) {
  TempDir dir;
  CliResult missing = run_cli({"verify", golden("caformer", ""), "/nonexistent"});
  expect_clean_failure(missing, "/nonexistent");
  EXPECT_EQ(missing.out, "") << "nothing is printed before every folder is checked";
  CliResult empty = run_cli({"verify", golden("caformer", ""), dir.path()});
  expect_clean_failure(empty, "needs config.json or model.txt");
  EXPECT_EQ(empty.out, "");
  write_text(dir.file("model.txt"), "poolformer_s12\n");
  CliResult no_weights = run_cli({"verify", golden("caformer", ""), dir.path()});
  expect_clean_failure(no_weights, "weights.safetensors is missing");
  EXPECT_EQ(no_weights.out, "");
}

TEST(Cli, InfoRejectsNonsenseValues) {
  // --resolution 0 used to report the MACs at 224 without a word.
  expect_argument_error({"info", "--model", "poolformer_s12", "--resolution", "0"}, "--resolution");
  expect_argument_error({"info", "--model", "poolformer_s12", "--resolution", "-64"}, "--resolution");
  expect_argument_error({"info", "--model", "poolformer_s12", "--depth", "-1"}, "--depth");
  expect_argument_error({"info", "--model", "poolformer_s12", "--threads", "-2"}, "--threads");
  expect_argument_error({"info", "--model", "poolformer_s12", "--num-classes", "0"}, "--num-classes");
  CliResult ok = run_cli({"info", "--model", "poolformer_s12", "--resolution", "64", "--depth", "0"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("at 64x64"), std::string::npos) << ok.out;
}

TEST(Cli, TrainAndEvalHelpListTheLongRangeData) {
  for (const char* command : {"train", "eval"}) {
    CliResult r = run_cli({command, "--help"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("long-range"), std::string::npos) << command << ":\n" << r.out;
  }
}

}  // namespace
}  // namespace mf::test
