// Whole forward passes recorded once as CUDA graphs and replayed (docs/cuda.md, "Graphs").
#pragma once

#include <functional>

#include "core/tensor.h"

namespace mf::cuda {

// pass(x) for one model (`owner`) and one input shape and dtype: the first call runs eagerly (it
// fills the weight caches), the second records the pass into a graph reading a private copy of the
// input, and every call from then on copies x in, replays the graph and returns a copy of its
// output. A pass that cannot be recorded runs eagerly from then on. METAFORMER_CUDA_GRAPHS=0 turns
// recording off.
Tensor run_recorded(const void* owner, const Tensor& x, const std::function<Tensor(const Tensor&)>& pass);

}  // namespace mf::cuda
