// Whole forward passes recorded once as CUDA graphs and replayed (docs/cuda.md, "Graphs").
#pragma once

#include <functional>

#include "core/tensor.h"

namespace mf::cuda {

// pass(x) for one model (`owner`) and one input shape and dtype: the first call runs eagerly (it
// fills the weight caches), the second runs eagerly and is timed, the third records the pass into a
// graph reading a private copy of the input and replays it, timed. If the replay was faster, every
// later call copies x in (nothing when x is the same unchanged host tensor as last time), replays
// the graph and returns a copy of its output; otherwise (and when the pass cannot be recorded) the
// graph is dropped and the calls run eagerly. A host x's cached upload and bf16 copy, made by the
// eager passes, are dropped when the graph takes its input: the graph's copy replaces them.
// METAFORMER_CUDA_GRAPHS=0 turns recording off.
Tensor run_recorded(const void* owner, const Tensor& x, const std::function<Tensor(const Tensor&)>& pass);
// Destroys every recording of `owner` (its graphs and their memory).
void release_recorded(const void* owner);

}  // namespace mf::cuda
