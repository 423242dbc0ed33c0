// The command line: bad input gets one clear line on stderr and a non-zero exit; good input works.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "io/npy.h"
#include "io/safetensors.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "model/zoo.h"
#include "core/error.h"
#include "test_util.h"

namespace mf::test {
namespace {

// One line of text on stderr that contains `phrase`, and a failing exit code.
void expect_clean_failure(const CliResult& r, const std::string& phrase) {
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_LT(r.exit_code, 128) << "killed by a signal: " << r.err;
  EXPECT_NE(r.err.find(phrase), std::string::npos) << "stderr: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr: " << r.err;
}

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

}  // namespace
}  // namespace mf::test
