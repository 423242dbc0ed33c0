// The Hugging Face hub client (src/hub, docs/hub.md) against a local server that answers like the hub
// (hub_server.h): the cache layout shared with huggingface_hub, resumed and corrupted downloads, the
// errors, offline mode; SHA-256 against the FIPS 180-4 vectors; timm's tags and pretrained_cfg; and
// `metaformer classify --pretrained` end to end. No internet needed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "hub/hub.h"
#include "hub/sha256.h"
#include "hub_server.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "model/pretrained.h"
#include "model/zoo.h"
#include "test_util.h"

namespace mf {
namespace {

namespace fs = std::filesystem;
using test::HubTestServer;
using test::TempDir;
using test::error_of;

const char* kCommit = "0123456789abcdef0123456789abcdef01234567";

// Sets the hub's environment variables for one test and restores them afterwards.
class HubEnv {
 public:
  HubEnv() {
    for (const char* name : kNames) {
      const char* v = std::getenv(name);
      saved_.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
      ::unsetenv(name);
    }
    ::setenv("no_proxy", "127.0.0.1,localhost", 1);  // a proxy in the environment must not see the test server
    ::setenv("NO_PROXY", "127.0.0.1,localhost", 1);
  }
  ~HubEnv() {
    for (auto& [name, value] : saved_) {
      if (value)
        ::setenv(name, value->c_str(), 1);
      else
        ::unsetenv(name);
    }
  }
  void set(const char* name, const std::string& value) { ::setenv(name, value.c_str(), 1); }
  void unset(const char* name) { ::unsetenv(name); }

 private:
  static constexpr const char* kNames[] = {"HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN",
                                           "no_proxy", "NO_PROXY"};
  std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(gen() & 0xff);
  return s;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Any file of the repository's cache folder still named *.incomplete (or any blob at all).
bool has_incomplete(const fs::path& repo_dir) {
  if (!fs::exists(repo_dir)) return false;
  for (auto& e : fs::recursive_directory_iterator(repo_dir))
    if (e.path().string().find(".incomplete") != std::string::npos) return true;
  return false;
}

class Hub : public ::testing::Test {
 protected:
  void SetUp() override {
    env.set("HF_ENDPOINT", server.endpoint());
    env.set("HF_HUB_CACHE", cache_dir());
  }
  std::string cache_dir() const { return dir.file("cache"); }
  fs::path repo_dir(const std::string& repo) const { return fs::path(cache_dir()) / ("models--timm--" + repo); }
  hub::FetchOptions quiet() const {
    hub::FetchOptions o;
    o.progress = false;
    return o;
  }

  HubEnv env;
  TempDir dir;
  HubTestServer server;
};

TEST(Sha256, MatchesTheFipsVectorsInOneOrManyPieces) {
  EXPECT_EQ(hub::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hub::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";  // 56 bytes: padding spills
  EXPECT_EQ(hub::sha256_hex(two_blocks), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(hub::sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Fed in uneven pieces that straddle block boundaries: the same digest.
  const std::string data = random_bytes(1000, 7);
  hub::Sha256 pieces;
  for (size_t pos = 0, step = 1; pos < data.size(); pos += step, step = step * 3 % 97 + 1)
    pieces.update(data.data() + pos, std::min(step, data.size() - pos));
  EXPECT_EQ(pieces.hex_digest(), hub::sha256_hex(data));
}

TEST(Pretrained, DefaultTagsAndTheirCfgAreTimms) {
  EXPECT_EQ(hub::pretrained_repo("caformer_s18"), "timm/caformer_s18.sail_in1k");
  EXPECT_EQ(hub::pretrained_repo("caformer_s18.sail_in22k_ft_in1k_384"), "timm/caformer_s18.sail_in22k_ft_in1k_384");
  EXPECT_EQ(hub::pretrained_repo("poolformerv2_m48"), "timm/poolformerv2_m48.sail_in1k");
  EXPECT_EQ(hub::pretrained_repo("mambaout_femto"), "timm/mambaout_femto.in1k");
  EXPECT_EQ(hub::pretrained_repo("mambaout_small_rw"), "timm/mambaout_small_rw.sw_e450_in1k");
  EXPECT_EQ(hub::pretrained_repo("mambaout_base_wide_rw"), "timm/mambaout_base_wide_rw.sw_e500_in1k");
  EXPECT_EQ(hub::pretrained_repo("mambaout_base_plus_rw"), "timm/mambaout_base_plus_rw.sw_e150_in12k_ft_in1k");
  EXPECT_EQ(hub::pretrained_repo("mixer_b16_224"), "timm/mixer_b16_224.goog_in21k_ft_in1k");
  EXPECT_EQ(hub::pretrained_repo("resmlp_12_224"), "timm/resmlp_12_224.fb_in1k");
  EXPECT_NE(error_of([] { hub::pretrained_repo("caformer_s18.nosuchtag"); }).find("timm/caformer_s18.nosuchtag"),
            std::string::npos);
  EXPECT_NE(error_of([] { hub::pretrained_repo("identityformer_s12"); }).find("no pretrained weights"),
            std::string::npos);
  EXPECT_NE(error_of([] { hub::pretrained_repo("caformer_s19"); }).find("unknown model"), std::string::npos);

  // A tag's checkpoint decides the preprocessing and classifier size; the plain name is the default tag's.
  EXPECT_EQ(zoo_config("caformer_s18.sail_in1k"), zoo_config("caformer_s18"));
  EXPECT_EQ(zoo_config("caformer_s18.sail_in1k_384").input.size, 384);
  EXPECT_EQ(zoo_config("caformer_s18.sail_in22k").num_classes, 21841);
  EXPECT_EQ(zoo_config("caformer_s18.sail_in22k").name, "caformer_s18");
  EXPECT_EQ(zoo_config("mambaout_base_plus_rw.sw_e150_r384_in12k_ft_in1k").input.crop_mode, "squash");
  EXPECT_EQ(zoo_config("mambaout_base_plus_rw.sw_e150_in12k").num_classes, 11821);
  const MetaFormerConfig miil = zoo_config("mixer_b16_224.miil_in21k_ft_in1k");
  EXPECT_EQ(miil.input.interpolation, "bilinear");
  EXPECT_EQ(miil.input.mean, std::vector<float>(3, 0.f));
  EXPECT_EQ(miil.input.std, std::vector<float>(3, 1.f));
  EXPECT_DOUBLE_EQ(zoo_config("poolformer_m36").input.crop_pct, 0.95);
}

TEST_F(Hub, DownloadsIntoHuggingfaceHubsLayoutAndThenReadsOnlyTheCache) {
  const std::string content = random_bytes(200000, 1);
  const std::string sha = server.add("timm/poolformer_s12.sail_in1k", content);
  const fs::path path = hub::fetch_pretrained("poolformer_s12", quiet());

  const fs::path root = repo_dir("poolformer_s12.sail_in1k");
  EXPECT_EQ(path, root / "snapshots" / kCommit / "model.safetensors");
  ASSERT_TRUE(fs::is_symlink(path));
  EXPECT_EQ(fs::read_symlink(path), fs::path("../../blobs") / sha);
  EXPECT_EQ(read_text(root / "refs" / "main"), kCommit);
  EXPECT_EQ(read_text(path), content);
  EXPECT_FALSE(has_incomplete(root));
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].method, "HEAD");
  EXPECT_EQ(requests[0].path, "/timm/poolformer_s12.sail_in1k/resolve/main/model.safetensors");
  EXPECT_EQ(requests[1].method, "GET");
  EXPECT_EQ(requests[1].path, "/cdn/" + sha);
  EXPECT_EQ(requests[1].header("range"), "");

  // Cached: the same path, without a single request.
  server.clear_requests();
  EXPECT_EQ(hub::fetch_pretrained("poolformer_s12.sail_in1k", quiet()), path);
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(Hub, ADroppedConnectionResumesWithARangeRequest) {
  const std::string content = random_bytes(300000, 2);
  const std::string sha = server.add("timm/poolformer_s12.sail_in1k", content);
  HubTestServer::Faults faults;
  faults.drop_after = 100000;
  faults.drops = 2;  // dropped at 100000, then at 200000: the third transfer completes
  server.set_faults(faults);
  const fs::path path = hub::fetch_pretrained("poolformer_s12", quiet());
  EXPECT_EQ(read_text(path), content);
  std::vector<std::string> ranges;
  for (auto& r : server.requests())
    if (r.method == "GET") ranges.push_back(r.header("range"));
  EXPECT_EQ(ranges, (std::vector<std::string>{"", "bytes=100000-", "bytes=200000-"}));
  EXPECT_FALSE(has_incomplete(repo_dir("poolformer_s12.sail_in1k")));
}

TEST_F(Hub, AnIncompleteFileFromAnEarlierRunIsResumed) {
  const std::string content = random_bytes(250000, 3);
  const std::string sha = server.add("timm/poolformer_s12.sail_in1k", content);
  const fs::path blobs = repo_dir("poolformer_s12.sail_in1k") / "blobs";
  fs::create_directories(blobs);
  std::ofstream(blobs / (sha + ".incomplete"), std::ios::binary) << content.substr(0, 123456);
  const fs::path path = hub::fetch_pretrained("poolformer_s12", quiet());
  EXPECT_EQ(read_text(path), content);
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].header("range"), "bytes=123456-");
  EXPECT_FALSE(fs::exists(blobs / (sha + ".incomplete")));
}

TEST_F(Hub, AServerThatIgnoresRangeRestartsTheFileFromZero) {
  const std::string content = random_bytes(50000, 9);
  const std::string sha = server.add("timm/poolformer_s12.sail_in1k", content);
  const fs::path blobs = repo_dir("poolformer_s12.sail_in1k") / "blobs";
  fs::create_directories(blobs);
  std::ofstream(blobs / (sha + ".incomplete"), std::ios::binary) << content.substr(0, 20000);
  HubTestServer::Faults faults;
  faults.ignore_range = true;
  server.set_faults(faults);
  // The whole file arrives (200) after a Range request: appended, it would be corrupt; it is rewritten.
  EXPECT_EQ(read_text(hub::fetch_pretrained("poolformer_s12", quiet())), content);
  EXPECT_EQ(server.requests().at(1).header("range"), "bytes=20000-");
}

TEST_F(Hub, ACompleteIncompleteFileIsVerifiedAndKept) {
  // An earlier run received every byte but stopped before the rename: the Range request is answered
  // 416, and the file is verified and moved into place.
  const std::string content = random_bytes(30000, 10);
  const std::string sha = server.add("timm/poolformer_s12.sail_in1k", content);
  const fs::path blobs = repo_dir("poolformer_s12.sail_in1k") / "blobs";
  fs::create_directories(blobs);
  std::ofstream(blobs / (sha + ".incomplete"), std::ios::binary) << content;
  EXPECT_EQ(read_text(hub::fetch_pretrained("poolformer_s12", quiet())), content);
  EXPECT_EQ(server.requests().at(1).header("range"), "bytes=30000-");
  EXPECT_FALSE(has_incomplete(repo_dir("poolformer_s12.sail_in1k")));
}

TEST_F(Hub, ADownloadThatKeepsFailingLeavesOnlyItsIncompleteFileForTheNextRun) {
  const std::string content = random_bytes(40000, 11);
  const std::string sha = server.add("timm/poolformer_s12.sail_in1k", content);
  HubTestServer::Faults faults;
  faults.drop_after = 1000;
  faults.drops = 1000;  // every transfer stops after 1000 bytes: the resumes run out
  server.set_faults(faults);
  const std::string e = error_of([&] { hub::fetch_pretrained("poolformer_s12", quiet()); });
  EXPECT_NE(e.find("timm/poolformer_s12.sail_in1k: the download stopped after"), std::string::npos) << e;
  EXPECT_NE(e.find("run the command again to resume"), std::string::npos) << e;
  const fs::path root = repo_dir("poolformer_s12.sail_in1k");
  EXPECT_FALSE(fs::exists(root / "blobs" / sha));
  EXPECT_FALSE(fs::exists(root / "snapshots"));
  EXPECT_FALSE(fs::exists(root / "refs"));
  const int64_t kept = static_cast<int64_t>(fs::file_size(root / "blobs" / (sha + ".incomplete")));
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, static_cast<int64_t>(content.size()));

  server.set_faults({});
  server.clear_requests();
  EXPECT_EQ(read_text(hub::fetch_pretrained("poolformer_s12", quiet())), content);
  EXPECT_EQ(server.requests().at(1).header("range"), "bytes=" + std::to_string(kept) + "-");
}

TEST_F(Hub, ACorruptedDownloadIsRejectedAndNothingOfItStays) {
  const std::string content = random_bytes(100000, 4);
  const std::string sha = server.add("timm/poolformer_s12.sail_in1k", content);
  HubTestServer::Faults faults;
  faults.corrupt = true;
  server.set_faults(faults);
  const std::string e = error_of([&] { hub::fetch_pretrained("poolformer_s12", quiet()); });
  EXPECT_NE(e.find("timm/poolformer_s12.sail_in1k"), std::string::npos) << e;
  EXPECT_NE(e.find("corrupted"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  const fs::path root = repo_dir("poolformer_s12.sail_in1k");
  EXPECT_FALSE(fs::exists(root / "blobs" / sha));
  EXPECT_FALSE(has_incomplete(root));
  EXPECT_FALSE(fs::exists(root / "snapshots" / kCommit));
  EXPECT_FALSE(fs::exists(root / "refs" / "main"));

  // The next attempt downloads from scratch (no Range on a deleted partial file) and succeeds.
  server.set_faults({});
  server.clear_requests();
  EXPECT_EQ(read_text(hub::fetch_pretrained("poolformer_s12", quiet())), content);
  for (auto& r : server.requests()) EXPECT_EQ(r.header("range"), "");
}

TEST_F(Hub, AnUnknownRepositoryIsOneErrorNamingIt) {
  // poolformer_s24.sail_in1k is a real tag, but this hub does not have it: HTTP 404, RepoNotFound.
  const std::string e = error_of([&] { hub::fetch_pretrained("poolformer_s24", quiet()); });
  EXPECT_NE(e.find("timm/poolformer_s24.sail_in1k: not found"), std::string::npos) << e;
  EXPECT_NE(e.find("404"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(repo_dir("poolformer_s24.sail_in1k") / "snapshots"));
}

TEST_F(Hub, AnUnreachableHubIsOneErrorNamingTheRepository) {
  // A port that was listening and is now closed: connection refused.
  std::string endpoint;
  { HubTestServer gone; endpoint = gone.endpoint(); }
  env.set("HF_ENDPOINT", endpoint);
  const std::string e = error_of([&] { hub::fetch_pretrained("poolformer_s12", quiet()); });
  EXPECT_NE(e.find("timm/poolformer_s12.sail_in1k: cannot reach " + endpoint), std::string::npos) << e;
  EXPECT_NE(e.find("HF_HUB_OFFLINE"), std::string::npos) << e;
}

TEST_F(Hub, AGatedRepositoryAsksForHfTokenAndSendsIt) {
  const std::string content = random_bytes(1000, 5);
  server.add("timm/poolformer_s12.sail_in1k", content);
  HubTestServer::Faults faults;
  faults.token = "hf_secret";
  server.set_faults(faults);
  const std::string e = error_of([&] { hub::fetch_pretrained("poolformer_s12", quiet()); });
  EXPECT_NE(e.find("timm/poolformer_s12.sail_in1k: access denied"), std::string::npos) << e;
  EXPECT_NE(e.find("HF_TOKEN"), std::string::npos) << e;
  env.set("HF_TOKEN", "hf_secret");
  server.clear_requests();
  EXPECT_EQ(read_text(hub::fetch_pretrained("poolformer_s12", quiet())), content);
  EXPECT_EQ(server.requests().at(0).header("authorization"), "Bearer hf_secret");
}

TEST_F(Hub, OfflineUsesOnlyTheCache) {
  const std::string content = random_bytes(5000, 6);
  server.add("timm/poolformer_s12.sail_in1k", content);
  env.set("HF_HUB_OFFLINE", "1");
  const std::string e = error_of([&] { hub::fetch_pretrained("poolformer_s12", quiet()); });
  EXPECT_NE(e.find("timm/poolformer_s12.sail_in1k: not in the cache"), std::string::npos) << e;
  EXPECT_NE(e.find("HF_HUB_OFFLINE"), std::string::npos) << e;
  EXPECT_TRUE(server.requests().empty());

  env.unset("HF_HUB_OFFLINE");
  const fs::path path = hub::fetch_pretrained("poolformer_s12", quiet());
  env.set("HF_HUB_OFFLINE", "true");
  server.clear_requests();
  EXPECT_EQ(hub::fetch_pretrained("poolformer_s12", quiet()), path);
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(Hub, FindsAFileHuggingfaceHubDownloadedUnderHfHome) {
  // The tree huggingface_hub writes, built by hand under $HF_HOME/hub.
  env.unset("HF_HUB_CACHE");
  env.set("HF_HOME", dir.file("hf_home"));
  env.set("HF_HUB_OFFLINE", "1");
  const std::string content = random_bytes(4096, 8);
  const std::string sha = hub::sha256_hex(content);
  const std::string commit = "fedcba9876543210fedcba9876543210fedcba98";
  const fs::path root = fs::path(dir.file("hf_home")) / "hub" / "models--timm--caformer_s18.sail_in1k";
  fs::create_directories(root / "blobs");
  fs::create_directories(root / "refs");
  fs::create_directories(root / "snapshots" / commit);
  std::ofstream(root / "blobs" / sha, std::ios::binary) << content;
  std::ofstream(root / "refs" / "main") << commit;
  fs::create_symlink(fs::path("../../blobs") / sha, root / "snapshots" / commit / "model.safetensors");

  const fs::path path = hub::fetch_pretrained("caformer_s18", quiet());
  EXPECT_EQ(path, root / "snapshots" / commit / "model.safetensors");
  EXPECT_EQ(read_text(path), content);
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(Hub, ClassifyPretrainedDownloadsTheModelAndNeedsNothingElse) {
  // A small zoo model's (random) weights, served as its default tag's checkpoint.
  const std::string weights = dir.file("femto.safetensors");
  save_weights(*build_model(zoo_config("mambaout_femto"), "", 1, false), weights);
  server.add("timm/mambaout_femto.in1k", read_text(weights));
  const test::CliResult r =
      test::run_cli({"classify", "--model", "mambaout_femto", "--pretrained", "--threads", "2",
                     test::data_path("image/photo.jpg")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1. "), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");  // no random-weights note, and no progress bar when stderr is not a terminal
  EXPECT_TRUE(fs::exists(repo_dir("mambaout_femto.in1k") / "refs" / "main"));
  EXPECT_EQ(server.requests().at(0).path, "/timm/mambaout_femto.in1k/resolve/main/model.safetensors");

  const test::CliResult both = test::run_cli({"classify", "--model", "mambaout_femto", "--pretrained", "--weights",
                                              weights, test::data_path("image/photo.jpg")});
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_NE(both.err.find("excludes"), std::string::npos) << both.err;
}

}  // namespace
}  // namespace mf

namespace mf {
namespace {

TEST(HubCli, PretrainedNeedsAZooModelAndNoOtherWeights) {
  auto fails_with = [](const std::vector<std::string>& args, const std::string& phrase) {
    const test::CliResult r = test::run_cli(args);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find(phrase), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  };
  fails_with({"classify", "--config", "c.json", "--pretrained", "x.jpg"}, "--config excludes --pretrained");
  fails_with({"run", "--pretrained", "-i", "x.npy", "-o", "y.npy"}, "--pretrained requires --model");
  fails_with({"eval", "--model", "poolformer_s12", "--data", "fashion-mnist"}, "--weights FILE, or --pretrained");
  fails_with({"info", "--model", "caformer_s18.sail_in2k", "--json"}, "timm has no timm/caformer_s18.sail_in2k");
  fails_with({"classify", "--model", "randformer_s12", "--pretrained", "x.jpg"}, "no pretrained weights");
}

TEST(HubCli, AModelNameWithATagTakesTheTagsPretrainedCfg) {
  const test::CliResult r = test::run_cli({"info", "--model", "caformer_s18.sail_in22k_ft_in1k_384", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["name"], "caformer_s18");
  EXPECT_EQ(j["input"]["size"], 384);
  EXPECT_EQ(j["num_classes"], 1000);
  const test::CliResult in22k = test::run_cli({"info", "--model", "convformer_s18.sail_in22k", "--json"});
  ASSERT_EQ(in22k.exit_code, 0) << in22k.err;
  EXPECT_EQ(nlohmann::json::parse(in22k.out)["num_classes"], 21841);
}

}  // namespace
}  // namespace mf
