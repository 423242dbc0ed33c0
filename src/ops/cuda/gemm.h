// Matrix products on the GPU through cuBLASLt, fp32 in and out with fp32 accumulation (TF32 off:
// parity with float64 references needs full fp32 products).
#pragma once

#include <cstdint>

namespace mf::cuda {

enum class Epilogue { none, bias, relu_bias };

// Column-major D[m, n] = op(A) · op(B) (+ bias[m] per row with Epilogue::bias), `batch` products
// with the given element strides (0: the same matrix for every product). Row-major callers swap
// the operands: y = x · Wᵀ is yᵀ = W · xᵀ.
struct Gemm {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const float* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  float* d = nullptr;
  int64_t ldd = 0, stride_d = 0;
  int64_t batch = 1;
  const float* bias = nullptr;
  Epilogue epilogue = Epilogue::none;
};
void run_gemm(const Gemm& g);

// Row-major y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N]), optionally ReLU: the Linear layer.
void linear_rows(const float* x, const float* w, const float* bias, float* y, int64_t M, int64_t N, int64_t K,
                 bool relu = false);

}  // namespace mf::cuda
