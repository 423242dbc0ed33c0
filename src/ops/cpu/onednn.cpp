#include "ops/cpu/onednn.h"

namespace mf::onednn {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& stream() {
  static dnnl::stream s(engine());
  return s;
}

dnnl::memory::desc plain(const dnnl::memory::dims& dims, const dnnl::memory::dims& strides) {
  return dnnl::memory::desc(dims, dnnl::memory::data_type::f32, strides);
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

}  // namespace mf::onednn
