// cuBLASLt's algorithms for the training step's matrix products, timed against each other in one
// process (llm.c's dev/ practice) before the engine's choice of algorithm changes. gemm.cpp takes
// the heuristic's first answer. In poolformer_s12's bf16 training that answer for the MLP's dx with
// the GELU derivative in the epilogue (CUBLASLT_EPILOGUE_DGELU) is an sm90_xmma kernel that moves
// about 1.8 TB/s where fc1's GELU_AUX product moves 2.5 (11.7 % of the kernel time, H100,
// 2026-12-07). For each product this asks the heuristic for up to --algos answers, times each (CUDA
// events, median of --reps after a warm-up) and says whether its output has the first answer's bits.
// Measured on an H100 on 2026-12-07 (docs/cuda-log-2.md): every DGELU answer is that kernel family
// (algorithm id 39), the first is the fastest or within 1 % of it at all four shapes, and
// DGELU_BGRAD has no fp32 bias gradient and is 3–4× slower with a bf16 one; so no choice among the
// answers speeds these products up, and gemm.cpp keeps the first.
//
// The products are those of a MetaFormer MLP at every stage of a model (--dims, --tokens, --batch;
// poolformer_s12's by default), laid out as the engine lays them out (gemm.cpp, cuda_backward.cpp):
//   fwd    fc1 with GELU_AUX_BIAS (hidden = 4C): D[4C, BT] = W1ᵀ·x, aux = the pre-activation
//   dgelu  fc2's dx with DGELU: D[4C, BT] = W2·dyᵀ ⊙ GELU'(aux)
//   dgelu_bgrad  the same with fc1's bias gradient in the epilogue (DGELU_BGRAD; fp32, then bf16)
//   dx1    fc1's dx, plain: D[C, BT] = W1·dpreᵀ
//   dw2    fc2's weight gradient into fp32: D[C, 4C] = dyᵀ·h (bf16 operands, fp32 output)
//
//   build/bench/mf_cuda_gemm_algos [--batch 128] [--dims 64,128,320,512] [--tokens 3136,784,196,49]
//                                  [--algos 16] [--reps 20] [--only dgelu,fwd]
// Needs only the CUDA runtime and cuBLASLt (tools/device/gemm_algos.sh: nvcc -Isrc ... -lcublasLt).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ops/cuda/kernels/event_timing.h"

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "mf_cuda_gemm_algos: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}
void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "mf_cuda_gemm_algos: %s: cuBLAS status %d\n", what, static_cast<int>(s));
    std::exit(1);
  }
}

// A positive integer, or one line on stderr and exit code 2.
long positive(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE || n < 1 || n > (1L << 24)) {
    std::fprintf(stderr, "mf_cuda_gemm_algos: %s wants a positive integer up to 16777216, not '%s'\n", flag.c_str(),
                 v.c_str());
    std::exit(1);
  }
  return n;
}

std::vector<long> numbers(const std::string& flag, const std::string& s) {
  std::vector<long> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(positive(flag, item));
  if (out.empty()) positive(flag, s);  // says so
  return out;
}

struct Problem {
  std::string name;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  bool trans_a = false;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldd = 0;
  bool f32_out = false;  // bf16 operands, fp32 output (a weight gradient)
  bool bias = false;
  cudaDataType_t bias_type = CUDA_R_16BF;  // DGELU_BGRAD writes the bias gradient there: fp32 asked first
};

// Device buffers large enough for every problem, filled once with small random bf16 values.
struct Buffers {
  void *a = nullptr, *b = nullptr, *d = nullptr, *aux = nullptr, *bias = nullptr, *work = nullptr;
  size_t work_bytes = 64u << 20;
};

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

void fill(void* p, size_t elems, uint32_t seed) {
  std::vector<uint16_t> h(elems);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& v : h) v = to_bf16(u(rng));
  check(cudaMemcpy(p, h.data(), elems * 2, cudaMemcpyHostToDevice), "upload");
}

int config(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
  int v = 0;
  size_t written = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof(v), &written);
  return v;
}

void run(cublasLtHandle_t lt, const Problem& p, Buffers& buf, int algos, int reps) {
  cublasLtMatmulDesc_t op;
  check(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
  const cublasOperation_t ta = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "transa");
  check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "transb");
  check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &p.epilogue, sizeof(p.epilogue)), "epi");
  const bool aux = p.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || p.epilogue == CUBLASLT_EPILOGUE_DGELU ||
                   p.epilogue == CUBLASLT_EPILOGUE_DGELU_BGRAD;
  if (aux) {
    check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &p.ldd, sizeof(p.ldd)), "aux ld");
    check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &buf.aux, sizeof(buf.aux)),
          "aux");
  }
  if (p.bias) {
    check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &p.bias_type, sizeof(p.bias_type)),
          "bias type");
    check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &buf.bias, sizeof(buf.bias)), "bias");
  }
  cublasLtMatrixLayout_t la, lb, ld;
  check(p.trans_a ? cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, p.k, p.m, p.lda)
                  : cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, p.m, p.k, p.lda),
        "layout a");
  check(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, p.k, p.n, p.ldb), "layout b");
  check(cublasLtMatrixLayoutCreate(&ld, p.f32_out ? CUDA_R_32F : CUDA_R_16BF, p.m, p.n, p.ldd), "layout d");
  cublasLtMatmulPreference_t pref;
  check(cublasLtMatmulPreferenceCreate(&pref), "pref");
  check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &buf.work_bytes,
                                             sizeof(buf.work_bytes)),
        "workspace");
  std::vector<cublasLtMatmulHeuristicResult_t> results(algos);
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, algos, results.data(), &found);
  if (st != CUBLAS_STATUS_SUCCESS) found = 0;  // not supported (an epilogue with this bias type): said below
  const size_t d_bytes = static_cast<size_t>(p.ldd) * p.n * (p.f32_out ? 4 : 2);
  const double bytes = 2.0 * (p.m * p.k + p.k * p.n) + static_cast<double>(d_bytes) * (aux ? 2 : 1);
  std::printf("\n%s: m %ld n %ld k %ld, %d answers (status %d); the product's least traffic %.1f MB\n",
              p.name.c_str(), static_cast<long>(p.m), static_cast<long>(p.n), static_cast<long>(p.k), found,
              static_cast<int>(st), bytes / 1e6);
  std::printf("| rank | ms | GB/s | TFLOP/s | algo id | tile | stages | split-K | swizzle | same bits as rank 0 |\n");
  std::printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
  std::vector<unsigned char> first(d_bytes), mine(d_bytes);
  const float one = 1.f, zero = 0.f;
  for (int i = 0; i < found; ++i) {
    const cublasLtMatmulAlgo_t& algo = results[i].algo;
    auto launch = [&] {
      check(cublasLtMatmul(lt, op, &one, buf.a, la, buf.b, lb, &zero, buf.d, ld, buf.d, ld, &algo, buf.work,
                           buf.work_bytes, nullptr),
            "matmul");
    };
    // The output first, from a cleared D (the aux of GELU_AUX_BIAS is written too; DGELU's is read).
    check(cudaMemset(buf.d, 0, d_bytes), "clear");
    launch();
    check(cudaDeviceSynchronize(), "sync");
    check(cudaMemcpy(i == 0 ? first.data() : mine.data(), buf.d, d_bytes, cudaMemcpyDeviceToHost), "download");
    const bool same = i == 0 || std::memcmp(first.data(), mine.data(), d_bytes) == 0;
    auto on_error = [](cudaError_t e, const char* what) { check(e, what); };
    const double ms = mf::cuda::kernels::median_event_ms(3, reps, launch, on_error);
    std::printf("| %d | %.4f | %.0f | %.1f | %d | %d | %d | %d | %d | %s |\n", i, ms, bytes / ms / 1e6,
                2.0 * p.m * p.n * p.k / ms / 1e9, config(algo, CUBLASLT_ALGO_CONFIG_ID),
                config(algo, CUBLASLT_ALGO_CONFIG_TILE_ID), config(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                config(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM), config(algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING),
                same ? "yes" : "no");
  }
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtMatmulDescDestroy(op);
}

}  // namespace

int main(int argc, char** argv) {
  long batch = 128;
  int algos = 16, reps = 20;
  std::vector<long> dims{64, 128, 320, 512}, tokens{3136, 784, 196, 49};
  std::string only = "fwd,dgelu,dgelu_bgrad,dx1,dw2";
  const std::string known = ",fwd,dgelu,dgelu_bgrad,dx1,dw2,";
  for (int i = 1; i < argc; i += 2) {
    const std::string a = argv[i];
    if (i + 1 == argc) {
      std::fprintf(stderr, "mf_cuda_gemm_algos: %s needs a value\n", a.c_str());
      return 1;
    }
    const std::string v = argv[i + 1];
    if (a == "--batch") batch = positive(a, v);
    else if (a == "--dims") dims = numbers(a, v);
    else if (a == "--tokens") tokens = numbers(a, v);
    else if (a == "--algos") algos = static_cast<int>(std::min(positive(a, v), 64L));
    else if (a == "--reps") reps = static_cast<int>(std::min(positive(a, v), 10000L));
    else if (a == "--only") only = v;
    else {
      std::fprintf(stderr, "mf_cuda_gemm_algos: unknown option %s\n", a.c_str());
      return 1;
    }
  }
  only = "," + only + ",";
  {
    std::stringstream in(only.substr(1));
    for (std::string item; std::getline(in, item, ',');)
      if (!item.empty() && known.find("," + item + ",") == std::string::npos) {
        std::fprintf(stderr, "mf_cuda_gemm_algos: --only names %s; the products are %s\n", item.c_str(),
                     "fwd, dgelu, dgelu_bgrad, dx1, dw2");
        return 1;
      }
  }
  if (dims.size() != tokens.size()) {
    std::fprintf(stderr, "mf_cuda_gemm_algos: --dims and --tokens need as many entries\n");
    return 1;
  }
  std::vector<Problem> problems;
  for (size_t s = 0; s < dims.size(); ++s) {
    const int64_t C = dims[s], H = 4 * C, BT = batch * tokens[s];
    const std::string at = " (C " + std::to_string(C) + ", " + std::to_string(tokens[s]) + " tokens)";
    if (only.find(",fwd,") != std::string::npos)
      problems.push_back({"fwd" + at, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, true, H, BT, C, C, C, H, false, true});
    if (only.find(",dgelu,") != std::string::npos)
      problems.push_back({"dgelu" + at, CUBLASLT_EPILOGUE_DGELU, false, H, BT, C, H, C, H, false, false});
    // The same with fc1's bias gradient (Σ over the rows of dpre) in the epilogue, fp32 and bf16.
    if (only.find(",dgelu_bgrad,") != std::string::npos)
      for (cudaDataType_t bt : {CUDA_R_32F, CUDA_R_16BF}) {
        Problem p{"dgelu_bgrad" + std::string(bt == CUDA_R_32F ? " fp32" : " bf16") + at,
                  CUBLASLT_EPILOGUE_DGELU_BGRAD, false, H, BT, C, H, C, H, false, true};
        p.bias_type = bt;
        problems.push_back(p);
      }
    if (only.find(",dx1,") != std::string::npos)
      problems.push_back({"dx1" + at, CUBLASLT_EPILOGUE_DEFAULT, false, C, BT, H, C, H, C, false, false});
    // D[C, H] = dyᵀ · h: A = dy, column-major C × BT (ld C); B = h read as a column-major BT × H (ld
    // BT) where the engine reads h [BT, H] transposed: the same shape and bytes, every B untransposed.
    if (only.find(",dw2,") != std::string::npos)
      problems.push_back({"dw2" + at, CUBLASLT_EPILOGUE_DEFAULT, false, C, H, BT, C, BT, C, true, false});
  }
  size_t a_max = 0, b_max = 0, d_max = 0;
  for (const Problem& p : problems) {
    a_max = std::max<size_t>(a_max, static_cast<size_t>(p.lda) * (p.trans_a ? p.m : p.k));
    b_max = std::max<size_t>(b_max, static_cast<size_t>(p.ldb) * p.n);
    d_max = std::max<size_t>(d_max, static_cast<size_t>(p.ldd) * p.n * (p.f32_out ? 2 : 1));
  }
  Buffers buf;
  check(cudaMalloc(&buf.a, a_max * 2), "a");
  check(cudaMalloc(&buf.b, b_max * 2), "b");
  check(cudaMalloc(&buf.d, d_max * 2), "d");
  check(cudaMalloc(&buf.aux, d_max * 2), "aux");
  check(cudaMalloc(&buf.bias, 8192 * 4), "bias");
  check(cudaMalloc(&buf.work, buf.work_bytes), "workspace");
  fill(buf.a, a_max, 1);
  fill(buf.b, b_max, 2);
  fill(buf.aux, d_max, 3);
  fill(buf.bias, 8192, 4);
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "device");
  cublasLtHandle_t lt;
  check(cublasLtCreate(&lt), "cublasLt");
  std::printf("%s, cuBLASLt %zu, batch %ld, bf16 operands, fp32 accumulation\n", prop.name, cublasLtGetVersion(),
              batch);
  for (const Problem& p : problems) run(lt, p, buf, algos, reps);
  cublasLtDestroy(lt);
  return 0;
}
