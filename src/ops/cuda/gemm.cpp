#include "ops/cuda/gemm.h"

#include <map>
#include <memory>
#include <tuple>

#include "core/env_switch.h"
#include "ops/cuda/cuda_context.h"

namespace mf::cuda {
namespace {

// Everything cuBLASLt needs for one problem shape, made once: the descriptors and the algorithm its
// heuristic chose (the heuristic is slow next to a small GEMM).
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (op) cublasLtMatmulDescDestroy(op);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
  }
};

using Key = std::tuple<int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int, int>;

// Of the operands A and B, and of C, D and the bias.
cudaDataType_t operand_type(GemmType t) { return t == GemmType::f32 ? CUDA_R_32F : CUDA_R_16BF; }
cudaDataType_t output_type(GemmType t) { return t == GemmType::bf16 ? CUDA_R_16BF : CUDA_R_32F; }
int64_t operand_bytes(GemmType t) { return t == GemmType::f32 ? 4 : 2; }
int64_t output_bytes(GemmType t) { return t == GemmType::bf16 ? 2 : 4; }
const char* type_name(GemmType t) {
  return t == GemmType::f32 ? "fp32" : t == GemmType::bf16 ? "bf16" : "bf16 (fp32 output)";
}

uint32_t alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 2 && v % a) a /= 2;
  return a;
}

cublasLtMatrixLayout_t layout(cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t l;
  MF_CUBLAS(cublasLtMatrixLayoutCreate(&l, t, rows, cols, ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    MF_CUBLAS(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    MF_CUBLAS(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return l;
}

Fp32Math g_fp32_math = Fp32Math::exact;

std::unique_ptr<Plan> make_plan(const Gemm& g, uint32_t align) {
  Context& c = context();
  auto p = std::make_unique<Plan>();
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;  // exact fp32 products by default: parity
  if (g.type == GemmType::f32 && g_fp32_math == Fp32Math::tf32) compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  if (g.type == GemmType::f32 && g_fp32_math == Fp32Math::bf16) compute = CUBLAS_COMPUTE_32F_FAST_16BF;
  MF_CUBLAS(cublasLtMatmulDescCreate(&p->op, compute, CUDA_R_32F));
  const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  MF_CUBLAS(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  MF_CUBLAS(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  switch (g.epilogue) {
    case Epilogue::none: break;
    case Epilogue::bias: epi = g.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT; break;
    case Epilogue::relu_bias: epi = g.bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU; break;
    case Epilogue::gelu_bias: epi = g.bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU; break;
    case Epilogue::gelu_aux_bias: epi = g.bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX; break;
    case Epilogue::dgelu: epi = CUBLASLT_EPILOGUE_DGELU; break;
  }
  MF_CUBLAS(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  if (g.epilogue == Epilogue::gelu_aux_bias || g.epilogue == Epilogue::dgelu) {
    // The aux matrix (the pre-activation) has D's layout. Its pointer is set here, before the
    // heuristic (which reads its alignment; the plan's key holds that), and again per call.
    MF_CUBLAS(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &g.ldd, sizeof(g.ldd)));
    MF_CUBLAS(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g.aux, sizeof(g.aux)));
  }
  if (g.bias) {
    const cudaDataType_t bias_type = output_type(g.type);
    MF_CUBLAS(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
  }
  const cudaDataType_t t = operand_type(g.type);
  p->la = g.trans_a ? layout(t, g.k, g.m, g.lda, g.batch, g.stride_a) : layout(t, g.m, g.k, g.lda, g.batch, g.stride_a);
  p->lb = g.trans_b ? layout(t, g.n, g.k, g.ldb, g.batch, g.stride_b) : layout(t, g.k, g.n, g.ldb, g.batch, g.stride_b);
  p->ld = layout(output_type(g.type), g.m, g.n, g.ldd, g.batch, g.stride_d);

  cublasLtMatmulPreference_t pref;
  MF_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
  MF_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c.workspace_bytes,
                                                 sizeof(c.workspace_bytes)));
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    MF_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof(align)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(c.lt, p->op, p->la, p->lb, p->ld, p->ld, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  MF_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0,
           "cuBLASLt has no algorithm for a {}x{}x{} {} product (batch {}, status {})", g.m, g.n, g.k,
           type_name(g.type), g.batch, static_cast<int>(st));
  p->algo = result.algo;
  return p;
}

}  // namespace

bool gelu_epilogue_in_training(bool bf16_activations, int64_t hidden) {
  static const bool on = env_choice("METAFORMER_CUDA_GELU_EPILOGUE", {"1", "0"}) != 1;  // "0": off
  return on && bf16_activations && hidden % 8 == 0;
}

void set_fp32_math(Fp32Math m) { g_fp32_math = m; }
Fp32Math fp32_math() { return g_fp32_math; }

void run_gemm(const Gemm& g) {
  if (g.m == 0 || g.n == 0) return;
  Context& c = context();
  const int64_t asize = operand_bytes(g.type), dsize = output_bytes(g.type);
  uint32_t align = std::min(std::min(alignment(g.a), alignment(g.b)), alignment(g.d));
  if (g.bias) align = std::min(align, alignment(g.bias));
  const bool aux = g.epilogue == Epilogue::gelu_aux_bias || g.epilogue == Epilogue::dgelu;
  MF_CHECK(!aux || (g.aux != nullptr && g.type == GemmType::bf16 && g.batch == 1),
           "a GELU epilogue with its pre-activation needs bf16, one product and the aux matrix");
  if (aux) align = std::min(align, alignment(g.aux));
  if (g.c) align = std::min(align, alignment(g.c));
  for (int64_t ld : {g.lda, g.ldb})
    while (align > asize && (ld * asize) % align) align /= 2;
  while (align > dsize && (g.ldd * dsize) % align) align /= 2;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  const Key key{static_cast<int>(g.type) + 3 * static_cast<int>(g_fp32_math), g.trans_a, g.trans_b, g.m, g.n, g.k, g.lda, g.ldb, g.ldd, g.stride_a, g.stride_b, g.stride_d, g.batch,
                static_cast<int>(g.epilogue) * 4 + (g.bias != nullptr) * 2 + (g.c != nullptr), static_cast<int>(align)};
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(g, align)).first;
  Plan& p = *it->second;
  if (g.bias) MF_CUBLAS(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)));
  if (aux) MF_CUBLAS(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g.aux, sizeof(g.aux)));
  const float one = 1.f, zero = 0.f;
  if (g.k == 0) {  // an empty sum: cuBLASLt would not write D
    MF_CHECK(g.bias == nullptr && g.c == nullptr, "an empty product with a bias or residual is not supported on the GPU");
    MF_CUDA(cudaMemsetAsync(g.d, 0, static_cast<size_t>(dsize * g.ldd * g.n * g.batch), c.stream));
    return;
  }
  MF_CUBLAS(cublasLtMatmul(c.lt, p.op, &one, g.a, p.la, g.b, p.lb, g.c ? &one : &zero, g.c ? g.c : g.d, p.ld, g.d,
                           p.ld, &p.algo, c.workspace, c.workspace_bytes, c.stream));
}

void linear_rows(GemmType type, const void* x, const void* w, const void* bias, void* y, int64_t M, int64_t N,
                 int64_t K, Epilogue epilogue, const void* residual) {
  Gemm g;
  g.type = type;
  g.trans_a = true;  // W [N, K] row-major is Wᵀ column-major (K×N); op(A) = W, N×K
  g.m = N, g.n = M, g.k = K;
  g.a = w, g.lda = K;
  g.b = x, g.ldb = K;
  g.d = y, g.ldd = N;
  g.bias = bias;
  g.epilogue = epilogue;
  g.c = residual;
  run_gemm(g);
}

}  // namespace mf::cuda
