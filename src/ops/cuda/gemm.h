// Matrix products on the GPU through cuBLASLt, always with fp32 accumulation: fp32 operands (TF32
// off: parity with float64 references needs full fp32 products), or bf16 operands and output (the
// bf16 mode; the tensor cores' rate).
#pragma once

#include <cstdint>

namespace mf::cuda {

// gelu_bias is cuBLASLt's GELU, the tanh approximation; the backend uses it only in bf16, where its
// difference from the erf GELU (≤ 4.8e-4) is far below the bf16 rounding of the stored result.
// gelu_aux_bias is gelu_bias that also writes its input, the pre-activation, to Gemm::aux (a training
// step's fc1: linear_act_train); dgelu multiplies the product by that GELU's derivative at aux, laid
// out as D (fc2's dx in the backward: linear_act_backward). Both are bf16 only, as gelu_bias.
enum class Epilogue { none, bias, relu_bias, gelu_bias, gelu_aux_bias, dgelu };
// The element types: f32 and bf16 are those of A, B, C, D and the bias; bf16_f32out multiplies bf16
// A and B into an fp32 C and D (a weight gradient of bf16 activations, added into its fp32 buffer).
enum class GemmType { f32, bf16, bf16_f32out };

// How the fp32 products (GemmType::f32) multiply: exactly (CUBLAS_COMPUTE_32F, the default: parity
// with float64 references), or on the tensor cores with the operands rounded inside cuBLASLt to
// TF32 (10-bit mantissa) or to bf16 (7-bit) and fp32 accumulation (CUBLAS_COMPUTE_32F_FAST_TF32,
// _FAST_16BF). Storage stays fp32 either way: what `train --matmul` chooses (docs/cuda.md).
enum class Fp32Math { exact, tf32, bf16 };
void set_fp32_math(Fp32Math m);
Fp32Math fp32_math();

// Column-major D[m, n] = op(A) · op(B) (+ bias[m] per row with Epilogue::bias) (+ C, laid out as
// D, when c is given: a residual added in the epilogue, rounded once with the product), `batch`
// products with the given element strides (0: the same matrix for every product). Row-major callers
// swap the operands: y = x · Wᵀ is yᵀ = W · xᵀ.
struct Gemm {
  GemmType type = GemmType::f32;
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* d = nullptr;
  int64_t ldd = 0, stride_d = 0;
  const void* c = nullptr;  // added to the product (beta = 1); same type and layout as D
  int64_t batch = 1;
  const void* bias = nullptr;
  Epilogue epilogue = Epilogue::none;
  void* aux = nullptr;  // gelu_aux_bias (written) and dgelu (read): laid out as D, ld = ldd
};
void run_gemm(const Gemm& g);

// Whether a training step's Linear → GELU → Linear (the MetaFormer MLP) runs the GELU in the GEMMs'
// epilogues: gelu_aux_bias forward, dgelu backward, so the activation kernel and its backward kernel
// drop out. Only with bf16 activations (the tanh form, as at inference: its values and derivative
// within bf16 rounding of the erf form's, docs/cuda.md), a hidden width of a multiple of 8 (the aux
// matrix's leading dimension), unless METAFORMER_CUDA_GELU_EPILOGUE=0. The default since the H100 A/B
// of 2026-12-05 (cuda_check.sh geluepi: poolformer_s12 trained 4 % faster). linear_act_train and
// linear_act_backward ask the same question, so a pass never pairs the tanh form's forward with the
// erf form's backward.
bool gelu_epilogue_in_training(bool bf16_activations, int64_t hidden);

// Row-major y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N]) (+ residual[M, N]) with an epilogue: the
// Linear layer, and a block's last Linear with the block's residual add.
void linear_rows(GemmType type, const void* x, const void* w, const void* bias, void* y, int64_t M, int64_t N,
                 int64_t K, Epilogue epilogue = Epilogue::bias, const void* residual = nullptr);

}  // namespace mf::cuda
