#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/ref/ref_backend.h"

namespace mf {

void RefBackend::attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) {
  const int64_t B = qkv.dim(0), N = qkv.dim(1), A = static_cast<int64_t>(heads) * head_dim;
  const float* QKV = qkv.data();
  float* Y = y.data();
  std::vector<double> logits(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b)
    for (int h = 0; h < heads; ++h)
      for (int64_t i = 0; i < N; ++i) {
        const float* q = QKV + (b * N + i) * 3 * A + h * head_dim;
        double mx = -INFINITY;
        for (int64_t j = 0; j < N; ++j) {
          const float* k = QKV + (b * N + j) * 3 * A + A + h * head_dim;
          double s = 0;
          for (int d = 0; d < head_dim; ++d) s += static_cast<double>(q[d]) * k[d];
          logits[static_cast<size_t>(j)] = s * scale;
          mx = std::max(mx, logits[static_cast<size_t>(j)]);
        }
        double denom = 0;
        for (int64_t j = 0; j < N; ++j) denom += (logits[static_cast<size_t>(j)] = std::exp(logits[static_cast<size_t>(j)] - mx));
        for (int d = 0; d < head_dim; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < N; ++j)
            acc += logits[static_cast<size_t>(j)] * QKV[(b * N + j) * 3 * A + 2 * A + h * head_dim + d];
          Y[(b * N + i) * A + h * head_dim + d] = static_cast<float>(acc / denom);
        }
      }
}


// Recomputes the attention probabilities P = softmax(q kᵀ · scale) and back-propagates:
// dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP - rowsum(P ⊙ dP)), dQ = dS K · scale, dK = dSᵀ Q · scale.
void RefBackend::attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                    Tensor& dqkv) {
  const int64_t B = qkv.dim(0), N = qkv.dim(1), A = static_cast<int64_t>(heads) * head_dim, d = head_dim;
  const float* QKV = qkv.data();
  const float* G = dy.data();
  float* D = dqkv.data();
  auto at = [&](int64_t b, int64_t i, int part, int64_t h, int64_t c) { return (b * N + i) * 3 * A + part * A + h * d + c; };
  std::vector<double> P(static_cast<size_t>(N * N)), dP(static_cast<size_t>(N * N));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < N; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t c = 0; c < d; ++c) s += static_cast<double>(QKV[at(b, i, 0, h, c)]) * QKV[at(b, j, 1, h, c)];
          P[static_cast<size_t>(i * N + j)] = s * scale;
          mx = std::max(mx, s * scale);
        }
        double sum = 0;
        for (int64_t j = 0; j < N; ++j) sum += (P[static_cast<size_t>(i * N + j)] = std::exp(P[static_cast<size_t>(i * N + j)] - mx));
        for (int64_t j = 0; j < N; ++j) P[static_cast<size_t>(i * N + j)] /= sum;
      }
      for (int64_t i = 0; i < N; ++i) {
        double row = 0;
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t c = 0; c < d; ++c) s += static_cast<double>(G[(b * N + i) * A + h * d + c]) * QKV[at(b, j, 2, h, c)];
          dP[static_cast<size_t>(i * N + j)] = s;
          row += s * P[static_cast<size_t>(i * N + j)];
        }
        for (int64_t j = 0; j < N; ++j)
          dP[static_cast<size_t>(i * N + j)] = P[static_cast<size_t>(i * N + j)] * (dP[static_cast<size_t>(i * N + j)] - row);  // now dS
      }
      for (int64_t i = 0; i < N; ++i)
        for (int64_t c = 0; c < d; ++c) {
          double dq = 0, dk = 0, dv = 0;
          for (int64_t j = 0; j < N; ++j) {
            dq += dP[static_cast<size_t>(i * N + j)] * QKV[at(b, j, 1, h, c)];
            dk += dP[static_cast<size_t>(j * N + i)] * QKV[at(b, j, 0, h, c)];
            dv += P[static_cast<size_t>(j * N + i)] * G[(b * N + j) * A + h * d + c];
          }
          D[at(b, i, 0, h, c)] = static_cast<float>(dq * scale);
          D[at(b, i, 1, h, c)] = static_cast<float>(dk * scale);
          D[at(b, i, 2, h, c)] = static_cast<float>(dv);
        }
    }
}

}  // namespace mf
