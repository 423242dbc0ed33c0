// The C API (include/metaformer.h) over the engine. Every entry point catches every exception and
// turns it into a status plus a per-thread message, so nothing C++ crosses the boundary.
#include "metaformer.h"

#include <fmt/format.h>

#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_set>

#include "core/error.h"
#include "core/threading.h"
#include "io/safetensors.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "model/zoo.h"
#include "ops/backend.h"

struct mf_model {
  std::unique_ptr<mf::MetaFormer> net;
  mf::Backend* backend = nullptr;
  int threads = 0;
  std::string name;  // storage for mf_model_info's strings
};

namespace {

thread_local std::string g_last_error;

// Live handles, so that a freed or foreign pointer is refused instead of dereferenced.
std::mutex g_handles_mu;
std::unordered_set<const mf_model*> g_handles;

// Runs share the OpenMP pool, oneDNN's stream and the kernels' scratch buffers: one at a time.
std::mutex g_run_mu;

mf_status fail(mf_status s, const std::string& message) {
  g_last_error = message;
  return s;
}

bool live(const mf_model* m) {
  std::lock_guard<std::mutex> lock(g_handles_mu);
  return m != nullptr && g_handles.count(m) > 0;
}

// Maps the engine's exceptions to statuses. mf::Error is the engine's own refusal of bad input.
template <class F>
mf_status guarded(mf_status on_engine_error, F&& body) {
  try {
    g_last_error.clear();
    return body();
  } catch (const std::bad_alloc&) {
    return fail(MF_ERROR_RUNTIME, "out of memory");
  } catch (const mf::Error& e) {
    return fail(on_engine_error, e.what());
  } catch (const std::exception& e) {
    return fail(MF_ERROR_RUNTIME, e.what());
  } catch (...) {
    return fail(MF_ERROR_RUNTIME, "unknown error");
  }
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

extern "C" {

int mf_api_version(void) { return METAFORMER_API_VERSION; }
const char* mf_version(void) { return "0.1.0"; }
const char* mf_last_error(void) { return g_last_error.c_str(); }

mf_options mf_default_options(void) {
  mf_options o;
  std::memset(&o, 0, sizeof o);
  return o;
}

mf_status mf_model_create(const char* model, const char* weights, const mf_options* options, mf_model** out) {
  if (out == nullptr) return fail(MF_ERROR_INVALID_ARGUMENT, "mf_model_create: out is NULL");
  *out = nullptr;
  if (model == nullptr || *model == '\0')
    return fail(MF_ERROR_INVALID_ARGUMENT, "mf_model_create: give a zoo name or a .json description");
  const mf_options o = options ? *options : mf_default_options();
  if (o.threads < 0 || o.threads > 1024)
    return fail(MF_ERROR_INVALID_ARGUMENT, fmt::format("mf_model_create: threads must be 0..1024, got {}", o.threads));
  if (o.num_classes < 0 || o.num_classes > 1000000)
    return fail(MF_ERROR_INVALID_ARGUMENT,
                fmt::format("mf_model_create: num_classes must be 0..1000000, got {}", o.num_classes));
  const std::string backend = o.backend ? o.backend : "cpu";
  const std::string dtype = o.dtype ? o.dtype : "fp32";
  if (backend != "cpu" && backend != "ref" && backend != "cuda")
    return fail(MF_ERROR_UNSUPPORTED, fmt::format("mf_model_create: unknown backend '{}' (cpu, ref or cuda)", backend));
  if (backend == "cuda" && (!mf::built_with_cuda() || mf::gpu_count() == 0))
    return fail(MF_ERROR_UNSUPPORTED, mf::built_with_cuda()
                                          ? "mf_model_create: backend cuda needs a GPU, and none is available"
                                          : "mf_model_create: backend cuda: this library was built without CUDA");
  if (dtype != "fp32" && dtype != "bf16")
    return fail(MF_ERROR_UNSUPPORTED, fmt::format("mf_model_create: unknown dtype '{}' (fp32 or bf16)", dtype));

  auto m = std::make_unique<mf_model>();
  const mf_status s = guarded(MF_ERROR_INVALID_ARGUMENT, [&] {
    const std::string spec = model;
    const bool is_file = ends_with(spec, ".json");
    mf::MetaFormerConfig c = is_file ? mf::load_config(spec) : mf::zoo_config(spec);
    if (o.num_classes > 0) c.num_classes = o.num_classes;
    m->backend = &mf::get_backend(backend, mf::parse_precision(dtype));
    m->net = mf::build_model(c, weights ? weights : "", /*seed=*/0, /*keep_num_classes=*/o.num_classes > 0);
    m->net->check_backend(*m->backend);
    m->threads = o.threads;
    m->name = c.name;
    return MF_OK;
  });
  if (s != MF_OK) return s;
  mf_model* handle = m.release();
  {
    std::lock_guard<std::mutex> lock(g_handles_mu);
    g_handles.insert(handle);
  }
  *out = handle;
  return MF_OK;
}

void mf_model_free(mf_model* model) {
  if (model == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(g_handles_mu);
    if (g_handles.erase(model) == 0) return;  // freed already, or not ours: leave it alone
  }
  std::lock_guard<std::mutex> run_lock(g_run_mu);  // never free under a running forward pass
  delete model;
}

mf_status mf_model_get_info(const mf_model* model, mf_model_info* out) {
  if (out == nullptr) return fail(MF_ERROR_INVALID_ARGUMENT, "mf_model_get_info: out is NULL");
  if (!live(model)) return fail(MF_ERROR_INVALID_HANDLE, "mf_model_get_info: not a live model (freed, or never created)");
  return guarded(MF_ERROR_RUNTIME, [&] {
    const mf::MetaFormerConfig& c = model->net->config();
    mf_model_info i;
    std::memset(&i, 0, sizeof i);
    i.name = model->name.c_str();
    i.in_chans = c.in_chans;
    i.input_size = c.input.size;
    i.num_classes = c.num_classes;
    i.crop_pct = c.input.crop_pct;
    i.interpolation = c.input.interpolation.c_str();
    i.crop_mode = c.input.crop_mode.c_str();
    for (size_t k = 0; k < 4 && k < c.input.mean.size(); ++k) i.mean[k] = c.input.mean[k];
    for (size_t k = 0; k < 4 && k < c.input.std.size(); ++k) i.std[k] = c.input.std[k];
    i.num_parameters = model->net->num_parameters();
    *out = i;
    return MF_OK;
  });
}

mf_status mf_model_run(mf_model* model, const float* input, int64_t batch, int64_t channels, int64_t height,
                       int64_t width, float* logits, int64_t logits_capacity) {
  if (!live(model)) return fail(MF_ERROR_INVALID_HANDLE, "mf_model_run: not a live model (freed, or never created)");
  if (input == nullptr || logits == nullptr)
    return fail(MF_ERROR_INVALID_ARGUMENT, "mf_model_run: input and logits must not be NULL");
  const mf::MetaFormerConfig& c = model->net->config();
  if (batch < 1 || batch > (1 << 20))
    return fail(MF_ERROR_INVALID_ARGUMENT, fmt::format("mf_model_run: batch must be 1..{}, got {}", 1 << 20, batch));
  if (channels != c.in_chans)
    return fail(MF_ERROR_INVALID_ARGUMENT,
                fmt::format("mf_model_run: the model takes {} input channel(s), got {}", c.in_chans, channels));
  if (height < 1 || width < 1 || height > 16384 || width > 16384)
    return fail(MF_ERROR_INVALID_ARGUMENT,
                fmt::format("mf_model_run: height and width must be 1..16384, got {}x{}", height, width));
  if (logits_capacity < batch * c.num_classes)
    return fail(MF_ERROR_INVALID_ARGUMENT,
                fmt::format("mf_model_run: logits holds {} floats, the batch needs {} ({} x {})", logits_capacity,
                            batch * c.num_classes, batch, c.num_classes));
  return guarded(MF_ERROR_INVALID_ARGUMENT, [&] {
    std::lock_guard<std::mutex> lock(g_run_mu);
    mf::set_num_threads(model->threads);
    // The caller's buffer is read in place (the forward pass first writes a channels-last copy).
    mf::Tensor x = mf::Tensor::borrow(const_cast<float*>(input), mf::Shape({batch, channels, height, width}), nullptr);
    mf::Ctx ctx;
    ctx.exec.backend = model->backend;
    mf::Tensor y = model->net->forward_nchw(ctx, x);
    MF_CHECK(y.numel() == batch * c.num_classes, "mf_model_run: unexpected output shape {}", y.shape().str());
    const mf::Tensor host = y.to(mf::Device::CPU);  // the cuda backend's logits (bf16 ones widened)
    std::memcpy(logits, host.data(), sizeof(float) * static_cast<size_t>(host.numel()));
    return MF_OK;
  });
}

}  // extern "C"
