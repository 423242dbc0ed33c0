#include "ops/cpu/onednn.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

namespace mf::onednn {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& stream() {
  static dnnl::stream s(engine());
  return s;
}

dnnl::memory::desc plain(const dnnl::memory::dims& dims, const dnnl::memory::dims& strides,
                         dnnl::memory::data_type type) {
  return dnnl::memory::desc(dims, type, strides);
}

dnnl::memory::data_type operand_type(bool bf16) {
  return bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

void round_to_bf16(const float* x, int64_t n, uint16_t* out) {
  constexpr int64_t kChunk = 16384;
#pragma omp parallel for schedule(static) if (n > 4 * kChunk)
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) round_to_bf16_serial(x + c0, std::min(kChunk, n - c0), out + c0);
}

void* scratch(Scratch slot, int64_t bytes) {
  static std::vector<uint64_t> buffers[static_cast<int>(Scratch::kCount)];
  auto& buf = buffers[static_cast<int>(slot)];
  const auto words = static_cast<size_t>((bytes + 7) / 8);
  if (buf.size() < words) buf.resize(words);
  return buf.data();
}

void* bf16_scratch(Scratch slot, const float* x, int64_t n) {
  auto* out = static_cast<uint16_t*>(scratch(slot, n * 2));
  round_to_bf16(x, n, out);
  return out;
}

dnnl::memory::desc tagged(const dnnl::memory::dims& dims, dnnl::memory::format_tag tag) {
  return dnnl::memory::desc(dims, dnnl::memory::data_type::f32, tag);
}

dnnl::memory wrap(const dnnl::memory::desc& md, const float* data) {
  return dnnl::memory(md, engine(), const_cast<float*>(data));
}

dnnl::memory reorder_if_needed(const dnnl::memory& src, const dnnl::memory::desc& want) {
  if (src.get_desc() == want) return src;
  dnnl::memory dst(want, engine());
  dnnl::reorder(src, dst).execute(stream(), const_cast<dnnl::memory&>(src), dst);
  stream().wait();
  return dst;
}

namespace {
// A weight in each oneDNN layout (and data type) that a primitive has asked for.
struct PreparedWeights {
  std::deque<dnnl::memory> copies;  // a deque: references to its elements stay valid as it grows
};
}  // namespace

const dnnl::memory& prepared_weights(const Tensor& w, const dnnl::memory& plain, const dnnl::memory::desc& want) {
  auto layouts = std::static_pointer_cast<PreparedWeights>(w.derived("onednn_weights"));
  if (!layouts) {
    layouts = std::make_shared<PreparedWeights>();
    w.set_derived("onednn_weights", layouts);
  }
  for (const auto& m : layouts->copies)
    if (m.get_desc() == want) return m;
  // A reorder that was not needed wraps the parameter's own memory; keeping that is fine because
  // the cache entry lives inside the parameter's storage and is dropped on its next update.
  layouts->copies.push_back(reorder_if_needed(plain, want));
  return layouts->copies.back();
}

dnnl::matmul& strided_matmul(int64_t M, int64_t K, int64_t N, dnnl::memory::dims a_strides, dnnl::memory::dims b_strides,
                             bool accumulate) {
  const std::string key = fmt::format("mmbw:{}:{}:{}:{}x{}:{}x{}:{}", M, K, N, a_strides[0], a_strides[1], b_strides[0],
                                      b_strides[1], accumulate);
  return cached<dnnl::matmul>(key, [&] {
    dnnl::primitive_attr attr;
    if (accumulate) {
      dnnl::post_ops po;
      po.append_sum(1.f);
      attr.set_post_ops(po);
    }
    return dnnl::matmul(dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(plain({M, K}, a_strides), plain({K, N}, b_strides),
                           plain({M, N}, {N, 1})),
        attr, engine()));
  });
}

void run_strided(dnnl::matmul& mm, int64_t M, int64_t K, int64_t N, dnnl::memory::dims as, dnnl::memory::dims bs, const float* a,
                 const float* b, float* c) {
  mm.execute(stream(), {{DNNL_ARG_SRC, wrap(plain({M, K}, as), a)},
                                {DNNL_ARG_WEIGHTS, wrap(plain({K, N}, bs), b)},
                                {DNNL_ARG_DST, wrap(plain({M, N}, {N, 1}), c)}});
  stream().wait();
}

}  // namespace mf::onednn
