// Run folders that cannot be corrupted (issue 19): the run-folder lock, resume state that is checked
// before it is trusted (checksums, the run's record, ranges, finite values) with a fallback to the
// previous intact checkpoint, weights loading that survives a concurrent truncation, bench's worker
// dying with bench, image folders with broken links and unreadable classes, and no leftovers after a
// failed checkpoint. Also issue 18's resume-of-a-finished-run and --subset header.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/run_lock.h"
#include "train_fixtures.h"

namespace mf::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string text_of(const std::string& path) {
  const auto b = read_bytes(path);
  return {b.begin(), b.end()};
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A small, quick run: 64 IDX images in batches of 16 (4 steps per epoch), with EMA on so that every
// checkpoint file is present.
std::vector<std::string> small_run(const std::string& data, const std::string& out, int epochs) {
  return {"train", "--config", kConfig, "--data", data, "--epochs", std::to_string(epochs), "--batch", "16",
          "--out", out, "--threads", "1", "--workers", "1", "--no-progress", "--seed", "7", "--ema", "0.9",
          "--eval-subset", "16"};
}

std::vector<std::string> resume_args(const std::string& run, const std::vector<std::string>& more = {}) {
  std::vector<std::string> a{"train", "--resume", run, "--threads", "1", "--no-progress"};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

TempDir& template_dir() {
  static TempDir dir;
  return dir;
}

// The data of the template runs.
std::string template_data() {
  const std::string data = template_dir().file("data");
  if (!fs::exists(data)) write_idx_dataset(data, 64, 32);
  return data;
}

// One trained run of `epochs` epochs, made once per test binary and copied for each test.
const std::string& template_run(int epochs) {
  TempDir& dir = template_dir();
  static std::map<int, std::string> made;
  if (!made.count(epochs)) {
    template_data();
    const std::string run = dir.file(fmt::format("run{}", epochs));
    CliResult r = run_cli(small_run(dir.file("data"), run, epochs));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    made[epochs] = run;
  }
  return made[epochs];
}

std::string copy_run(const TempDir& tmp, int epochs) {
  const std::string to = tmp.file("run");
  fs::copy(template_run(epochs), to, fs::copy_options::recursive);
  return to;
}

// Rewrites one checkpoint file through `edit` and, with `resign`, updates the manifest's size and
// CRC-32 so that only the value checks can catch the edit (a consistent forgery).
void edit_checkpoint_file(const std::string& ckpt, const std::string& file,
                          const std::function<void(std::vector<SafeTensorEntry>&)>& edit, bool resign) {
  const std::string path = ckpt + "/" + file;
  const SafeTensors st = SafeTensors::open(path);
  std::vector<SafeTensorEntry> entries;
  for (const auto& name : st.names()) {
    const auto& dtype = st.info(name).dtype;
    if (dtype == "I64")
      entries.push_back({name, Tensor(), st.load_int(name), st.info(name).shape});
    else
      entries.push_back({name, st.load(name), {}, {}});
  }
  edit(entries);
  const auto bytes = encode_safetensors(entries, st.metadata());
  write_bytes(path, bytes);
  if (!resign) return;
  json m = json::parse(text_of(ckpt + "/manifest.json"));
  m["files"][file] = {{"bytes", bytes.size()}, {"crc32", crc32_of(bytes)}};
  write_bytes(ckpt + "/manifest.json", [&] {
    const std::string t = m.dump(1);
    return std::vector<uint8_t>(t.begin(), t.end());
  }());
}

void set_state_int(const std::string& ckpt, const std::string& key, int64_t value, bool resign = true) {
  edit_checkpoint_file(ckpt, "train_state.safetensors", [&](std::vector<SafeTensorEntry>& es) {
    for (auto& e : es)
      if (e.name == key) e.ints = {value};
  }, resign);
}

// ---- 1. the run-folder lock --------------------------------------------------------------------

TEST(RunLock, SecondTrainIntoALockedFolderIsRefusedNamingTheHolder) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 32);
  const RunLock held(tmp.file("run"));  // a first training run, mid-epoch
  CliResult r = run_cli(small_run(tmp.file("data"), tmp.file("run"), 1));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, fmt::format("is in use by another training run (PID {})", getpid()))) << r.err;
  // It wrote nothing: no description, options or metrics of its own next to the first run's.
  EXPECT_FALSE(fs::exists(tmp.file("run/config.json")));
  EXPECT_FALSE(fs::exists(tmp.file("run/metrics.jsonl")));
}

TEST(RunLock, SecondResumeOfALockedRunIsRefused) {
  TempDir tmp;
  const std::string run = copy_run(tmp, 1);
  {
    const RunLock held(run);  // a first --resume, still running
    CliResult r = run_cli(resume_args(run, {"--epochs", "2"}));
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_TRUE(contains(r.err, fmt::format("(PID {})", getpid()))) << r.err;
    EXPECT_EQ(metrics(run).size(), 1u) << "the refused resume must not touch metrics.jsonl";
  }
  CliResult r = run_cli(resume_args(run, {"--epochs", "2"}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(metrics(run).size(), 2u);
}

TEST(RunLock, LockOfAKilledProcessDoesNotBlock) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 32);
  setenv("MF_DEBUG_KILL_AT_STEP", "2", 1);
  CliResult killed = run_cli(small_run(tmp.file("data"), tmp.file("run"), 2));
  unsetenv("MF_DEBUG_KILL_AT_STEP");
  ASSERT_EQ(killed.exit_code, 128 + SIGKILL);
  ASSERT_FALSE(text_of(tmp.file("run/.lock")).empty()) << "the killed run's PID stays in the lock file";
  // The killed run had no checkpoint yet: a fresh run into the folder goes ahead.
  CliResult again = run_cli(small_run(tmp.file("data"), tmp.file("run"), 1));
  EXPECT_EQ(again.exit_code, 0) << again.err;
}

// ---- 2. validated resume state -----------------------------------------------------------------

struct Tamper {
  const char* what;
  std::function<void(const std::string& run)> apply;
  const char* phrase;  // in the one-line error
};

class ResumeRefuses : public ::testing::TestWithParam<Tamper> {};

TEST_P(ResumeRefuses, ATamperedValueWithAConsistentManifest) {
  TempDir tmp;
  const std::string run = copy_run(tmp, 1);  // one checkpoint: nothing to fall back to
  GetParam().apply(run);
  CliResult r = run_cli(resume_args(run, {"--epochs", "2"}));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, GetParam().phrase)) << r.err;
  EXPECT_EQ(metrics(run).size(), 1u);
}

const std::string kCkpt = "/checkpoints/epoch-0001";

INSTANTIATE_TEST_SUITE_P(
    Values, ResumeRefuses,
    ::testing::Values(
        Tamper{"Epoch99", [](const std::string& run) { set_state_int(run + kCkpt, "epoch", 99); },
               "the state says epoch 99, the folder is epoch 1"},
        Tamper{"EpochMinus5", [](const std::string& run) { set_state_int(run + kCkpt, "epoch", -5); },
               "the state says epoch -5, the folder is epoch 1"},
        Tamper{"Step1e12", [](const std::string& run) { set_state_int(run + kCkpt, "step", 1'000'000'000'000); },
               "step 1000000000000 is outside epoch 1's steps 1 to 4"},
        Tamper{"OtherSeed", [](const std::string& run) { set_state_int(run + kCkpt, "seed", 8); },
               "the state's seed is 8, the run's is 7"},
        Tamper{"NaNInAnAdamWMoment",
               [](const std::string& run) {
                 edit_checkpoint_file(run + kCkpt, "train_state.safetensors", [](std::vector<SafeTensorEntry>& es) {
                   for (auto& e : es)
                     if (e.name.find(".exp_avg_sq") != std::string::npos) {
                       e.tensor.data()[0] = std::numeric_limits<float>::quiet_NaN();
                       return;
                     }
                 }, true);
               },
               "exp_avg_sq' holds nan"},
        Tamper{"InfInAWeight",
               [](const std::string& run) {
                 edit_checkpoint_file(run + kCkpt, "model.safetensors", [](std::vector<SafeTensorEntry>& es) {
                   es.back().tensor.data()[0] = std::numeric_limits<float>::infinity();
                 }, true);
               },
               "holds inf"},
        Tamper{"NormTypeInConfig",
               [](const std::string& run) {
                 json c = json::parse(text_of(run + "/config.json"));
                 ASSERT_TRUE(c.contains("norms"));
                 c["norms"] = "group_norm1";
                 const std::string t = c.dump(2);
                 write_bytes(run + "/config.json", {t.begin(), t.end()});
               },
               "config.json differs from what checkpoint"},
        Tamper{"SeedInTrainArgs",
               [](const std::string& run) {
                 json a = json::parse(text_of(run + "/train_args.json"));
                 a["seed"] = 8;
                 const std::string t = a.dump(2);
                 write_bytes(run + "/train_args.json", {t.begin(), t.end()});
               },
               "train_args.json differs from what checkpoint"},
        Tamper{"EditedWithoutManifest", [](const std::string& run) { set_state_int(run + kCkpt, "step", 3, false); },
               "is damaged or was edited: its CRC-32"},
        Tamper{"TruncatedFile",
               [](const std::string& run) { fs::resize_file(run + kCkpt + "/model.safetensors", 1000); },
               "model.safetensors is damaged: 1000 bytes"}),
    [](const ::testing::TestParamInfo<Tamper>& i) { return std::string(i.param.what); });

TEST(ResumeState, TheDifferenceInTheRecordIsNamed) {
  TempDir tmp;
  const std::string run = copy_run(tmp, 1);
  json c = json::parse(text_of(run + "/config.json"));
  c["norms"] = "group_norm1";
  const std::string t = c.dump(2);
  write_bytes(run + "/config.json", {t.begin(), t.end()});
  CliResult r = run_cli(resume_args(run, {"--epochs", "2"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "norms[0]")) << r.err;
  EXPECT_TRUE(contains(r.err, "recorded,")) << r.err;
}

TEST(ResumeState, ADamagedNewestCheckpointFallsBackToThePreviousIntactOne) {
  TempDir tmp;
  const std::string run = copy_run(tmp, 2);  // checkpoints epoch-0001 and epoch-0002
  auto bytes = read_bytes(run + "/checkpoints/epoch-0002/model.safetensors");
  bytes[bytes.size() / 2] ^= 0x40;  // one flipped bit, as a bad disk sector would leave
  write_bytes(run + "/checkpoints/epoch-0002/model.safetensors", bytes);
  CliResult r = run_cli(resume_args(run, {"--epochs", "3"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "epoch-0002 cannot be used")) << r.err;
  EXPECT_TRUE(contains(r.err, "resuming from the previous intact one")) << r.err;
  EXPECT_TRUE(contains(r.out, "epoch-0001 (epoch 1, step 4)")) << r.out;
  const auto rows = metrics(run);
  ASSERT_EQ(rows.size(), 3u);
  for (int e = 0; e < 3; ++e) EXPECT_EQ(rows[static_cast<size_t>(e)]["epoch"].get<int>(), e + 1);
}

TEST(ResumeState, NoIntactCheckpointIsOneLine) {
  TempDir tmp;
  const std::string run = copy_run(tmp, 1);
  fs::resize_file(run + kCkpt + "/train_state.safetensors", 10);
  CliResult r = run_cli(resume_args(run, {"--epochs", "2"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "no intact checkpoint to resume from")) << r.err;
}

TEST(ResumeState, ACheckpointWithoutManifestResumesWithAWarning) {
  TempDir tmp;
  const std::string run = copy_run(tmp, 1);
  fs::remove(run + kCkpt + "/manifest.json");  // as written before manifests existed
  CliResult r = run_cli(resume_args(run, {"--epochs", "2"}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "has no manifest.json")) << r.err;
  EXPECT_EQ(metrics(run).size(), 2u);
}

TEST(ResumeState, FinishedRunReportsItsLastMetrics) {
  TempDir tmp;
  const std::string run = copy_run(tmp, 1);
  const double top1 = metrics(run).back()["top1"].get<double>();
  CliResult r = run_cli(resume_args(run));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "all 1 epochs are done")) << r.out;
  EXPECT_TRUE(contains(r.out, fmt::format("top-1 {:.2f}%", top1))) << r.out << " expected " << top1;
}

TEST(ResumeState, AMetricsRowLostBetweenCheckpointAndMetricsIsRestored) {
  TempDir tmp;
  const std::string run = copy_run(tmp, 1);
  write_bytes(run + "/metrics.jsonl", {});  // killed after the checkpoint, before the row
  CliResult r = run_cli(resume_args(run, {"--epochs", "2"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = metrics(run);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["epoch"].get<int>(), 1);
}

// ---- 3. loading cannot crash ------------------------------------------------------------------

TEST(SafeTensorsLoad, TruncationAfterTheHeaderIsAnErrorNotSIGBUS) {
  TempDir tmp;
  const std::string path = tmp.file("w.safetensors");
  save_safetensors(path, {{"a", random_tensor(Shape{64, 1024}, 1), {}, {}}, {"b", random_tensor(Shape{8}, 2), {}, {}}});
  const SafeTensors st = SafeTensors::open(path);
  fs::resize_file(path, 1000);  // another process truncates the file while it loads
  try {
    st.load("a");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "the file ended while reading tensor 'a'")) << e.what();
  }
}

TEST(SafeTensorsLoad, TruncationDuringACliLoadIsOneLine) {
  TempDir tmp;
  const std::string run = copy_run(tmp, 1);
  const std::string w = tmp.file("w.safetensors");
  fs::copy_file(run + "/model.safetensors", w);
  setenv("MF_DEBUG_TRUNCATE_AFTER_HEADER", "1000", 1);
  // Fine-tuning opens the weights once, then reads them: the hook truncates in between.
  CliResult r = run_cli({"train", "--config", kConfig, "--weights", w, "--data", template_data(), "--out",
                         tmp.file("ft"), "--batch", "16", "--threads", "1", "--no-progress"});
  unsetenv("MF_DEBUG_TRUNCATE_AFTER_HEADER");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "truncated while loading")) << r.err;
}

// ---- 4. bench's worker dies with bench ---------------------------------------------------------

// The PIDs of `parent`'s children, from /proc.
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "stat");
    std::string stat;
    std::getline(f, stat);
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state;
    pid_t ppid;
    rest >> state >> ppid;
    if (ppid == parent) out.push_back(static_cast<pid_t>(std::stoi(name)));
  }
  return out;
}

bool alive(pid_t pid) {
  std::ifstream f(fmt::format("/proc/{}/stat", pid));
  std::string stat;
  if (!std::getline(f, stat)) return false;
  const auto close = stat.rfind(')');
  return close != std::string::npos && stat.size() > close + 2 && stat[close + 2] != 'Z';
}

TEST(BenchWorker, DiesWithBench) {
  const pid_t bench = fork();
  ASSERT_GE(bench, 0);
  if (bench == 0) {
    const std::string exe = MF_CLI_PATH;
    freopen("/dev/null", "w", stdout);
    execl(exe.c_str(), exe.c_str(), "bench", "--model", "poolformer_s12", "--batch", "1", "--runs", "10000",
          "--threads", "1", static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait (on a condition, not a clock) for bench to fork its worker; the loop gives up after a minute.
  std::vector<pid_t> workers;
  for (int i = 0; i < 600 && workers.empty(); ++i) {
    workers = children_of(bench);
    if (workers.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(workers.size(), 1u) << "bench started no worker";
  kill(bench, SIGTERM);
  int status = 0;
  waitpid(bench, &status, 0);
  bool gone = false;
  for (int i = 0; i < 300 && !gone; ++i) {
    gone = !alive(workers[0]);
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!gone) kill(workers[0], SIGKILL);  // do not leave it running after the test
  EXPECT_TRUE(gone) << "bench's worker " << workers[0] << " outlived bench";
}

// ---- 5. image folders --------------------------------------------------------------------------

std::vector<std::string> image_run(const std::string& data, const std::string& out,
                                   const std::vector<std::string>& more = {}) {
  std::vector<std::string> a{"train", "--config", kConfig, "--data", data, "--epochs", "1", "--batch", "2",
                             "--out", out, "--threads", "1", "--no-progress"};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

TEST(ImageFolderSafety, LoopingAndDanglingSymlinksAreSkippedCountedAndNamed) {
  TempDir tmp;
  write_image_folder(tmp.file("imgs"), 3);
  fs::create_symlink("loop.png", tmp.file("imgs/cats/loop.png"));  // points at itself
  fs::create_symlink("gone.png", tmp.file("imgs/dogs/dangling.png"));
  CliResult r = run_cli(image_run(tmp.file("imgs"), tmp.file("run")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "skipped 2 unreadable files while listing the training data")) << r.err;
  const std::string log = text_of(tmp.file("run/skipped.txt"));
  EXPECT_TRUE(contains(log, "cats/loop.png: Too many levels of symbolic links")) << log;
  EXPECT_TRUE(contains(log, "dogs/dangling.png: dangling symbolic link")) << log;
}

TEST(ImageFolderSafety, AClassWithNoReadableImageStops) {
  TempDir tmp;
  write_image_folder(tmp.file("imgs"), 3);
  fs::create_directories(tmp.file("imgs/birds"));
  write_bytes(tmp.file("imgs/birds/0.png"), {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'});
  fs::create_symlink("missing.jpg", tmp.file("imgs/birds/1.jpg"));
  CliResult r = run_cli(image_run(tmp.file("imgs"), tmp.file("run")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "class folder 'birds' has no readable image (2 skipped")) << r.err;
}

TEST(ImageFolderSafety, SkippedValidationImagesAreNamed) {
  TempDir tmp;
  write_image_folder(tmp.file("imgs/train"), 2);
  write_image_folder(tmp.file("imgs/val"), 2);
  // Starts like a PNG, so it is only found unreadable when evaluation decodes it.
  write_bytes(tmp.file("imgs/val/dogs/1.png"), {0x89, 'P', 'N', 'G', 1, 2, 3});
  CliResult r = run_cli(image_run(tmp.file("imgs"), tmp.file("run")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "skipped 1 unreadable file in the evaluation after epoch 1")) << r.err;
  EXPECT_TRUE(contains(text_of(tmp.file("run/skipped.txt")), "val/dogs/1.png")) << text_of(tmp.file("run/skipped.txt"));
}

std::vector<uint8_t> png_claiming(uint32_t w, uint32_t h) {
  std::vector<uint8_t> b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  for (uint32_t v : {w, h})
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
  b.insert(b.end(), {8, 2, 0, 0, 0, 0, 0, 0, 0});
  return b;
}

TEST(ImageFolderSafety, AnOversizedImageGetsItsOwnMessage) {
  // 60000 x 60000 is past stb_image's own limits: it used to be "unknown image format".
  try {
    decode_image(png_claiming(60000, 60000), "huge.png");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "huge.png: 60000x60000 pixels is more than the limit of 268435456")) << e.what();
    EXPECT_TRUE(contains(e.what(), "--max-image-pixels")) << e.what();
  }
  // In training it is skipped, named, and the limit is an option.
  TempDir tmp;
  write_image_folder(tmp.file("imgs"), 3);
  write_bytes(tmp.file("imgs/cats/huge.png"), png_claiming(60000, 60000));
  CliResult r = run_cli(image_run(tmp.file("imgs"), tmp.file("run"), {"--max-image-pixels", "1000000"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(text_of(tmp.file("run/skipped.txt")), "60000x60000 pixels is more than the limit of 1000000"));
}

TEST(ImageFolderSafety, GreyImagesForAGreyModelStayOneChannelWithTheirOwnStatistics) {
  TempDir tmp;
  const auto grey = read_bytes(data_path("image/grey.png"));
  for (const char* cls : {"a", "b"}) {
    fs::create_directories(tmp.file(std::string("imgs/") + cls));
    for (int i = 0; i < 3; ++i) write_bytes(tmp.file(fmt::format("imgs/{}/{}.png", cls, i)), grey);
  }
  CliResult r = run_cli(image_run(tmp.file("imgs"), tmp.file("run")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "is read as grey (1 channel, as the model takes), normalised with the data's own mean"))
      << r.out;
  const json c = json::parse(text_of(tmp.file("run/config.json")));
  EXPECT_EQ(c["in_chans"].get<int>(), 1);
  ASSERT_EQ(c["input"]["mean"].size(), 1u);
  EXPECT_NE(c["input"]["mean"][0].get<double>(), 0.2860) << "the data's own mean, not Fashion-MNIST's";
}

// ---- 6. failures leave nothing behind ----------------------------------------------------------

TEST(CheckpointFailure, LeavesNoTmpFolderAndNoMetricsRow) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 32);
  setenv("MF_DEBUG_FAIL_IN_CHECKPOINT", "2", 1);
  CliResult r = run_cli(small_run(tmp.file("data"), tmp.file("run"), 2));
  unsetenv("MF_DEBUG_FAIL_IN_CHECKPOINT");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "No space left on device")) << r.err;
  EXPECT_FALSE(fs::exists(tmp.file("run/checkpoints/epoch-0002.tmp")));
  EXPECT_EQ(metrics(tmp.file("run")).size(), 1u) << "a row for the epoch whose checkpoint failed";
  CliResult resumed = run_cli(resume_args(tmp.file("run")));
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(metrics(tmp.file("run")).size(), 2u);
}

// ---- issue 18, item 10: the header counts the images used --------------------------------------

TEST(TrainHeader, SaysHowManyImagesASubsetUses) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 32);
  auto args = small_run(tmp.file("data"), tmp.file("run"), 1);
  args.insert(args.end(), {"--subset", "32"});
  CliResult r = run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "32 of them used (--subset)")) << r.out;
  EXPECT_TRUE(contains(r.out, "1 epochs x 2 steps of 16")) << r.out;
}

}  // namespace
}  // namespace mf::test
