// Training on the GPU (issue 13): `train --backend cuda` keeps the weights, gradients, AdamW's moments
// and the EMA on the device. Deterministic there too: a run repeated, or killed with SIGKILL and
// resumed, ends with the same bytes; checkpoints are the CPU's files, so a run moves between the GPU
// and the CPU on --resume. Each test skips itself where the build has no CUDA or the machine no GPU.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/metaformer.h"
#include "ops/backend.h"
#include "ops/ref/ref_backend.h"
#include "train/trainer.h"
#include "cli_expect.h"
#include "gpu_skip.h"
#include "test_util.h"
#include "train_fixtures.h"

namespace mf::test {
namespace {

namespace fs = std::filesystem;

// The CPU resume test's run (tests/test_train.cpp): every random part of the recipe on (drop path,
// Mixup, CutMix, EMA, clipping), on the GPU.
std::vector<std::string> gpu_train_args(const std::string& data, const std::string& out, int epochs) {
  return {"train", "--config", kConfig, "--data", data, "--epochs", std::to_string(epochs), "--batch", "32",
          "--lr", "3e-3", "--out", out, "--threads", "2", "--workers", "2", "--no-progress", "--seed", "7",
          "--drop-path", "0.1", "--mixup", "0.2", "--cutmix", "1.0", "--mix-prob", "0.5", "--ema", "0.99",
          "--clip-grad", "5", "--backend", "cuda"};
}

TEST(CudaTraining, SameSeedSameWeightsAndResumeAfterKillIsBitExact) {
  MF_REQUIRE_GPU();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  const std::string data = tmp.file("data");
  CliResult a = run_cli(gpu_train_args(data, tmp.file("a"), 3));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const auto reference = read_bytes(tmp.file("a/model.safetensors"));
  const auto reference_ema = read_bytes(tmp.file("a/model_ema.safetensors"));
  const auto rows = metrics(tmp.file("a"));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_LT(rows.back()["train_loss"].get<double>(), rows.front()["train_loss"].get<double>());
  EXPECT_GT(rows.back()["peak_gpu_mb"].get<double>(), 0.0);

  CliResult b = run_cli(gpu_train_args(data, tmp.file("b"), 3));
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_TRUE(read_bytes(tmp.file("b/model.safetensors")) == reference) << "two GPU runs with one seed differ";

  CliResult resumed = kill_at_step_then_resume(gpu_train_args(data, tmp.file("c"), 3), tmp.file("c"), 15);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_TRUE(read_bytes(tmp.file("c/model.safetensors")) == reference) << "resumed GPU run differs";
  EXPECT_TRUE(read_bytes(tmp.file("c/model_ema.safetensors")) == reference_ema) << "resumed EMA differs";
}

// A GPU run's checkpoint continues on the CPU, and a CPU run's on the GPU: the same files, the same
// keys (timm's), and --backend may change on --resume.
TEST(CudaTraining, RunsMoveBetweenTheGpuAndTheCpu) {
  MF_REQUIRE_GPU();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  const std::string data = tmp.file("data");
  for (const auto& [first, second] : {std::pair{"cuda", "cpu"}, std::pair{"cpu", "cuda"}}) {
    const std::string run = tmp.file(std::string("run-") + first);
    auto args = gpu_train_args(data, run, 1);
    args.back() = first;
    CliResult r = run_cli(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    CliResult more = run_cli({"train", "--resume", run, "--epochs", "2", "--backend", second, "--no-progress"});
    ASSERT_EQ(more.exit_code, 0) << more.err;
    const auto rows = metrics(run);
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_TRUE(std::isfinite(rows.back()["train_loss"].get<double>()));
    EXPECT_EQ(rows.back().contains("peak_gpu_mb"), std::string(second) == "cuda");
  }
  const SafeTensors gpu = SafeTensors::open(tmp.file("run-cuda/model.safetensors"));
  const SafeTensors cpu = SafeTensors::open(tmp.file("run-cpu/model.safetensors"));
  EXPECT_EQ(gpu.names(), cpu.names());
}

// A model the GPU cannot train is refused before anything is written. Today every op with a CUDA
// forward pass has a CUDA backward pass, so a model with an op the GPU lacks altogether (MS-MLP's
// spatial shift) stands in; the backward check itself is BackwardCheckNamesTheOp.
TEST(CudaTraining, ModelWithoutGpuBackwardIsRefusedUpFront) {
  MF_REQUIRE_GPU();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 32);
  auto config = nlohmann::json::parse(read_bytes(source_path("configs/compare_fmnist.json")));
  config["mixers"] = "mix_shift";
  const std::string text = config.dump();
  write_bytes(tmp.file("ms.json"), std::vector<uint8_t>(text.begin(), text.end()));
  // Every op has a GPU backward; METAFORMER_CUDA_FAMILY_OPS=0 (read by the child process) withdraws
  // MS-MLP's spatial shift, which makes a model without one.
  setenv("METAFORMER_CUDA_FAMILY_OPS", "0", 1);
  CliResult r = run_cli({"train", "--config", tmp.file("ms.json"), "--data", tmp.file("data"), "--out",
                         tmp.file("run"), "--backend", "cuda", "--batch", "16", "--no-progress"});
  unsetenv("METAFORMER_CUDA_FAMILY_OPS");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("spatial_shift"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp.file("run/config.json")));
}

// The check train() and compare make before anything is written: a backend that has an op's forward
// pass but not its backward is refused in one line naming the model, the backend and the op.
TEST(CudaTraining, BackwardCheckNamesTheOp) {
  class NoPoolingBackward : public RefBackend {
   public:
    bool supports_backward(OpKind op) const override { return op != OpKind::PoolMinusInput; }
  } backend;
  const auto bytes = read_bytes(source_path("configs/compare_fmnist.json"));
  MetaFormer model(parse_config(std::string(bytes.begin(), bytes.end()), "compare_fmnist.json"));
  const std::string err = error_of([&] { check_backward_ops(model, backend); });
  EXPECT_NE(err.find("model 'cmp_fmnist' cannot train on the ref backend: pool_minus_input has no backward pass "
                     "there yet"), std::string::npos) << err;
}

// The NCCL path of multi-GPU data parallelism, on the one GPU a single-GPU machine has: a communicator
// of one rank (its id still drawn by rank 0 and NCCL's all-reduce run on the backend's stream); the
// mean over one rank is the tensor itself, bit for bit. Several GPUs: docs/distributed.md.
TEST(CudaTraining, NcclAllReduceRunsOnOneGpu) {
  MF_REQUIRE_GPU();
  Backend& b = get_backend("cuda");
  if (!b.supports_allreduce()) GTEST_SKIP() << "this build has no NCCL";
  const Tensor ha = random_tensor({3, 1000}, 1), hc = random_tensor({5}, 2);
  Tensor a = ha.to(Device::CUDA), c = hc.to(Device::CUDA);
  b.allreduce_mean({&a, &c}, RankGroup{0, 1, nullptr});
  b.allreduce_mean({&c}, RankGroup{0, 1, nullptr});  // the communicator is made once and reused
  EXPECT_EQ(max_abs_diff(a.to(Device::CPU), ha), 0.0);
  EXPECT_EQ(max_abs_diff(c.to(Device::CPU), hc), 0.0);
  // The bucketed path (trainer: --bucket-mb): a range started on the communication stream, waited
  // for by the compute stream.
  Tensor range = a.slice0(1, 3);
  b.allreduce_mean_start(range, RankGroup{0, 1, nullptr});
  b.allreduce_wait();
  EXPECT_EQ(max_abs_diff(a.to(Device::CPU), ha), 0.0);
  // --allreduce bf16: through bf16 copies, so each value comes back rounded to bf16.
  b.allreduce_mean({&c}, RankGroup{0, 1, nullptr, true});
  const Tensor back = c.to(Device::CPU);
  for (int64_t i = 0; i < hc.numel(); ++i) EXPECT_NEAR(back.data()[i], hc.data()[i], 1e-2 * std::abs(hc.data()[i]) + 1e-6);
  EXPECT_THROW(b.allreduce_mean({&a}, RankGroup{0, 2, nullptr}), Error);  // another job: refused, not hung
}

// The GPU path of data parallelism inside training, on a machine with one GPU
// (METAFORMER_ALLREDUCE_ONE_RANK=1: a world of one averages its gradients through NCCL anyway). The
// buckets (several a step at 0.01 MiB, each started on the communication stream as the backward pass
// reports its modules, then waited for by the compute stream) and the single call after the backward
// pass both leave an fp32 run's bytes as they were: the mean over one rank is the rank's own
// gradients, and a missing wait or a bucket averaged before its gradients were written would show.
// The bf16 all-reduce rounds the gradients to bf16, so that run only has to learn.
TEST(CudaTraining, DataParallelGpuPathOfOneRankChangesNoBit) {
  MF_REQUIRE_GPU();
  if (!get_backend("cuda").supports_allreduce()) GTEST_SKIP() << "this build has no NCCL";
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  auto run = [&](const std::string& out, const std::vector<std::string>& extra, bool reduce) {
    auto args = gpu_train_args(tmp.file("data"), tmp.file(out), 2);
    args.insert(args.end(), extra.begin(), extra.end());
    if (reduce) setenv("METAFORMER_ALLREDUCE_ONE_RANK", "1", 1);
    CliResult r = run_cli(args);
    unsetenv("METAFORMER_ALLREDUCE_ONE_RANK");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (reduce) {
      EXPECT_NE(r.out.find("gradients averaged through NCCL anyway"), std::string::npos) << r.out;
    }
  };
  run("plain", {}, false);
  run("buckets", {"--bucket-mb", "0.01"}, true);
  run("flat", {"--bucket-mb", "0"}, true);
  run("bf16", {"--allreduce", "bf16"}, true);
  if (HasFailure()) return;
  const auto reference = read_bytes(tmp.file("plain/model.safetensors"));
  EXPECT_TRUE(read_bytes(tmp.file("buckets/model.safetensors")) == reference) << "bucketed NCCL averaging changed the run";
  EXPECT_TRUE(read_bytes(tmp.file("flat/model.safetensors")) == reference) << "NCCL averaging after backward changed the run";
  const auto rows = metrics(tmp.file("bf16"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_LT(rows.back()["train_loss"].get<double>(), rows.front()["train_loss"].get<double>());
}

// A GPU-only option given to a CPU run, and an unknown value of it: each one clear line, before anything
// is written (no GPU needed).
void expect_gpu_option(const std::string& flag, const std::string& value, const std::string& refusal) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 32);
  expect_clean_failure(run_cli({"train", "--config", kConfig, "--data", tmp.file("data"), "--out", tmp.file("run"),
                                flag, value, "--no-progress"}),
                       refusal);
  EXPECT_FALSE(fs::exists(tmp.file("run/config.json")));
  expect_clean_failure(run_cli({"train", "--config", kConfig, "--data", tmp.file("data"), "--out", tmp.file("run"),
                                flag, "fp16", "--no-progress"}),
                       flag);
}

// --matmul chooses how the GPU's fp32 products multiply.
TEST(CudaTraining, MatmulIsAGpuOption) {
  expect_gpu_option("--matmul", "bf16", "--matmul bf16 applies to --backend cuda");
}

// --dtype bf16 (bf16 activations) is the GPU's mixed precision.
TEST(CudaTraining, Bf16ActivationsAreAGpuOption) {
  expect_gpu_option("--dtype", "bf16", "--dtype bf16 trains with bf16 activations on --backend cuda");
}

// A run's recorded dtype (train_args.json, read on --resume) is checked like the flag: a hand-edited
// value is one clear line, and nothing of the run is touched (no GPU needed).
TEST(CudaTraining, UnknownDtypeInARunsRecordIsOneClearLine) {
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 64, 32);
  CliResult r = run_cli({"train", "--config", kConfig, "--data", tmp.file("data"), "--out", tmp.file("run"),
                         "--epochs", "1", "--batch", "32", "--threads", "2", "--no-progress"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string args_path = tmp.file("run/train_args.json");
  const auto bytes = read_bytes(args_path);
  auto args = nlohmann::json::parse(bytes.begin(), bytes.end());
  EXPECT_EQ(args["dtype"], "fp32");
  args["dtype"] = "fp16";
  write_text(args_path, args.dump(2));
  const auto weights = read_bytes(tmp.file("run/model.safetensors"));
  expect_clean_failure(run_cli({"train", "--resume", tmp.file("run"), "--epochs", "2", "--no-progress"}),
                       "--dtype is fp32 or bf16, not 'fp16'");
  EXPECT_TRUE(read_bytes(tmp.file("run/model.safetensors")) == weights);
}

// --data synthetic:N takes a positive count; anything else is one clear line (no GPU needed).
TEST(CudaTraining, MalformedSyntheticDataIsOneClearLine) {
  TempDir tmp;
  for (const char* bad : {"synthetic:", "synthetic:abc", "synthetic:0", "synthetic:12x"})
    expect_clean_failure(run_cli({"train", "--config", kConfig, "--data", bad, "--out", tmp.file("run"), "--no-progress"}),
                         "synthetic:N");
  EXPECT_FALSE(fs::exists(tmp.file("run/config.json")));
}

// Two GPU runs of the same job with `extra` arguments (2 epochs, folders a and b): the same bytes, and
// a falling loss.
void expect_deterministic_learning(const TempDir& tmp, const std::vector<std::string>& extra) {
  write_idx_dataset(tmp.file("data"), 320, 64);
  for (const char* run : {"a", "b"}) {
    auto args = gpu_train_args(tmp.file("data"), tmp.file(run), 2);
    args.insert(args.end(), extra.begin(), extra.end());
    CliResult r = run_cli(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  EXPECT_TRUE(read_bytes(tmp.file("a/model.safetensors")) == read_bytes(tmp.file("b/model.safetensors")));
  const auto rows = metrics(tmp.file("a"));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_LT(rows.back()["train_loss"].get<double>(), rows.front()["train_loss"].get<double>());
}

// With bf16 tensor-core products the GPU run still learns, and stays deterministic.
TEST(CudaTraining, Bf16MatmulTrainsDeterministically) {
  MF_REQUIRE_GPU();
  TempDir tmp;
  expect_deterministic_learning(tmp, {"--matmul", "bf16"});
}

// The AdamW step rewrites each weight's bf16 copy for the GEMMs as it updates the weight, instead of a
// cast per weight in the next forward: the same bits (METAFORMER_CUDA_ADAMW_COPIES=0 runs the casts).
TEST(CudaTraining, AdamWRefreshesTheBf16CopiesBitForBit) {
  MF_REQUIRE_GPU();
  TempDir tmp;
  write_idx_dataset(tmp.file("data"), 320, 64);
  auto run = [&](const std::string& out, bool copies) {
    auto args = gpu_train_args(tmp.file("data"), tmp.file(out), 2);
    args.insert(args.end(), {"--dtype", "bf16"});
    if (!copies) setenv("METAFORMER_CUDA_ADAMW_COPIES", "0", 1);
    CliResult r = run_cli(args);
    unsetenv("METAFORMER_CUDA_ADAMW_COPIES");
    EXPECT_EQ(r.exit_code, 0) << r.err;
  };
  run("copies", true);
  run("casts", false);
  if (HasFailure()) return;
  for (const char* file : {"model.safetensors", "model_ema.safetensors"})
    EXPECT_TRUE(read_bytes(tmp.file(std::string("copies/") + file)) == read_bytes(tmp.file(std::string("casts/") + file)))
        << file;
}

// With bf16 activations (autocast's mixed precision: fp32 masters, bf16 activations and products) the
// GPU run learns, stays deterministic, and writes the same fp32 checkpoints: a run moves from bf16 to
// fp32 on --resume.
TEST(CudaTraining, Bf16ActivationsTrainDeterministically) {
  MF_REQUIRE_GPU();
  TempDir tmp;
  expect_deterministic_learning(tmp, {"--dtype", "bf16"});
  if (HasFatalFailure()) return;
  CliResult r = run_cli({"train", "--resume", tmp.file("a"), "--epochs", "3", "--dtype", "fp32", "--no-progress"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(metrics(tmp.file("a")).size(), 3u);
}

// MambaOut's gated CNN with its conv channels convolved and differentiated where fc1's output holds
// them (METAFORMER_CUDA_SLICE_DW=1) runs the separate ops' kernels in their order: the same bits.
TEST(CudaTraining, GatedConvOnChannelSlicesTrainsBitForBit) {
  MF_REQUIRE_GPU();
  TempDir tmp;
  auto run = [&](const std::string& out, const char* sliced) {
    setenv("METAFORMER_CUDA_SLICE_DW", sliced, 1);
    CliResult r = run_cli({"train", "-m", "mambaout_femto", "--data", "synthetic:16", "--batch", "8", "--epochs", "1",
                           "--max-steps", "2", "--eval-subset", "8", "--backend", "cuda", "--dtype", "bf16",
                           "--workers", "1", "--seed", "3", "--no-progress", "--out", tmp.file(out)});
    unsetenv("METAFORMER_CUDA_SLICE_DW");
    EXPECT_EQ(r.exit_code, 0) << r.err;
  };
  run("copies", "0");
  run("sliced", "1");
  if (HasFailure()) return;
  EXPECT_TRUE(read_bytes(tmp.file("copies/model.safetensors")) == read_bytes(tmp.file("sliced/model.safetensors")));
}

}  // namespace
}  // namespace mf::test
