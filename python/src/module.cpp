// metaformer._core: the engine for Python (docs/python.md). A model built as the CLI and the C API
// build it (mf::build_model), run on float32 batches read in place from numpy, the buffer protocol
// or DLPack with the GIL released; timm's evaluation preprocessing done by the engine's own code (so
// logits equal `metaformer classify`'s); and `train` running the CLI's own subcommand in-process.
// The package around it (python/metaformer/__init__.py) gives it timm's names.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "cli/common.h"
#include "core/error.h"
#include "core/threading.h"
#include "hub/hub.h"
#include "input.h"
#include "io/image.h"
#include "io/imagenet_classes.h"
#include "io/resample.h"
#include "model/config.h"
#include "model/loader.h"
#include "model/metaformer.h"
#include "model/zoo.h"
#include "ops/backend.h"

namespace py = pybind11;

namespace mf::python {

namespace {

// Runs (and training) share the engine's OpenMP pool, oneDNN's stream and the kernels' scratch
// buffers, as in the C API: one at a time, whichever Python thread asks.
std::mutex g_run_mu;

// The thread counts the C API accepts; 0 (all hardware threads) is spelled None in Python.
constexpr int kMaxThreads = 1024;

// Mixers whose weights are tied to the token grid of the model's nominal input size: a model with
// one of them runs only at that size (RandFormer, the MLP-Mixer family, GFNet-style filters).
bool fixes_input_size(const MetaFormerConfig& c) {
  static const std::set<std::string> tied = {"axial_mlp",      "global_filter", "random_mixing",
                                             "spatial_gating", "spatial_mlp",   "token_mlp"};
  return std::any_of(c.mixers.begin(), c.mixers.end(), [](const MixerSpec& m) { return tied.count(m.type) > 0; });
}

class Model {
 public:
  // `spec`: a zoo name, or a JSON description's path when `is_config`. `weights` empty: seeded
  // random weights (seed 0). `threads` 0: all hardware threads. `num_classes` 0: the weights'.
  Model(const std::string& spec, bool is_config, const std::string& weights, const std::string& backend,
        const std::string& dtype, int threads, int num_classes)
      : backend_name_(backend), dtype_(dtype), threads_(threads), weights_(weights) {
    if (threads < 0 || threads > kMaxThreads)
      throw py::value_error(fmt::format("threads must be 1..{} (or None for all cores), got {}", kMaxThreads, threads));
    if (num_classes < 0 || num_classes > 1000000)
      throw py::value_error(fmt::format("num_classes must be 1..1000000, got {}", num_classes));
    if (backend != "cpu" && backend != "ref" && backend != "cuda")
      throw py::value_error(fmt::format("unknown backend '{}' (cpu, ref or cuda)", backend));
    if (dtype != "fp32" && dtype != "bf16")
      throw py::value_error(fmt::format("unknown dtype '{}' (float32 or bfloat16)", dtype));
    py::gil_scoped_release nogil;  // reading a large checkpoint takes a while
    MetaFormerConfig c = is_config ? load_config(spec) : zoo_config(spec);
    if (num_classes > 0) c.num_classes = num_classes;
    if (backend == "cuda") select_device("", backend);
    backend_ = &get_backend(backend, parse_precision(dtype));
    net_ = build_model(c, weights, /*seed=*/0, /*keep_num_classes=*/num_classes > 0);
    net_->check_backend(*backend_);
    fixed_input_size_ = fixes_input_size(net_->config());
  }

  const MetaFormerConfig& config() const { return net_->config(); }

  py::array_t<float> run(py::handle x) {
    InputBatch in(x);
    const auto [n, c, h, w] = in.shape();
    const MetaFormerConfig& cfg = config();
    const int64_t dims[4] = {n, c, h, w};
    if (c != cfg.in_chans)
      throw py::value_error(fmt::format("model {} takes {} input channel(s); got shape {} (N, C, H, W expected)",
                                        cfg.name, cfg.in_chans, shape_str(dims, 4)));
    if (n < 1) throw py::value_error(fmt::format("empty batch: shape {}", shape_str(dims, 4)));
    if (h < 1 || w < 1 || h > 16384 || w > 16384)
      throw py::value_error(fmt::format("height and width must be 1..16384; got shape {}", shape_str(dims, 4)));
    if (fixed_input_size_ && (h != cfg.input.size || w != cfg.input.size))
      throw py::value_error(
          fmt::format("model {} runs only at {}x{} (its token-mixing weights fix the size); got "
                      "shape {}",
                      cfg.name, cfg.input.size, cfg.input.size, shape_str(dims, 4)));
    const ConvSpec& stem = cfg.stem;
    if (h + 2 * stem.padding < stem.kernel_size || w + 2 * stem.padding < stem.kernel_size)
      throw py::value_error(
          fmt::format("input {}x{} is smaller than the stem's {}x{} kernel", h, w, stem.kernel_size, stem.kernel_size));
    py::array_t<float> logits({n, static_cast<int64_t>(cfg.num_classes)});
    float* out = logits.mutable_data();
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(g_run_mu);
      set_num_threads(threads_);
      // Read in place (the forward pass first writes its own channels-last copy; the input is not
      // modified).
      Tensor input = Tensor::borrow(const_cast<float*>(in.data()), Shape({n, c, h, w}), nullptr);
      Ctx ctx;
      ctx.exec.backend = backend_;
      Tensor y = net_->forward_nchw(ctx, input).to(Device::CPU);
      MF_ASSERT(y.numel() == n * cfg.num_classes);
      std::memcpy(out, y.data(), sizeof(float) * static_cast<size_t>(y.numel()));
    }
    return logits;
  }

  // timm's evaluation transform of the model, by the engine's code: [1, 3, size, size] float32.
  py::array_t<float> preprocess_file(const std::string& path) const {
    const EvalTransform t = transform();
    Tensor hwc;
    {
      py::gil_scoped_release nogil;
      hwc = eval_transform(load_image(path), t);
    }
    return to_nchw_batch(hwc, t.size);
  }

  // The same from decoded 8-bit RGB pixels [H, W, 3] (C-contiguous uint8).
  py::array_t<float> preprocess_rgb(py::array_t<uint8_t, py::array::c_style> rgb) const {
    if (rgb.ndim() != 3 || rgb.shape(2) != 3 || rgb.shape(0) < 1 || rgb.shape(1) < 1)
      throw py::value_error("preprocess_rgb: expected uint8 pixels [H, W, 3]");
    const EvalTransform t = transform();
    Image img;
    img.height = static_cast<int>(rgb.shape(0));
    img.width = static_cast<int>(rgb.shape(1));
    img.rgb.assign(rgb.data(), rgb.data() + rgb.size());
    Tensor hwc;
    {
      py::gil_scoped_release nogil;
      hwc = eval_transform(img, t);
    }
    return to_nchw_batch(hwc, t.size);
  }

  std::string config_json() const { return config_to_json(config()).dump(); }
  int64_t num_parameters() const { return net_->num_parameters(); }
  bool fixed_input_size() const { return fixed_input_size_; }
  const std::string& backend() const { return backend_name_; }
  const std::string& dtype() const { return dtype_; }
  int threads() const { return threads_; }
  const std::string& weights() const { return weights_; }

 private:
  EvalTransform transform() const {
    const MetaFormerConfig& c = config();
    if (c.in_chans != 3)
      throw py::value_error(
          fmt::format("the preprocessing transform makes RGB batches; model {} takes {} input "
                      "channel(s)",
                      c.name, c.in_chans));
    EvalTransform t;  // as `metaformer classify` builds it
    t.size = c.input.size;
    t.crop_pct = c.input.crop_pct;
    t.interpolation = parse_interpolation(c.input.interpolation);
    t.crop_mode = c.input.crop_mode;
    std::copy_n(c.input.mean.begin(), 3, t.mean.begin());
    std::copy_n(c.input.std.begin(), 3, t.std.begin());
    return t;
  }

  static py::array_t<float> to_nchw_batch(const Tensor& hwc, int64_t size) {
    py::array_t<float> out({int64_t{1}, int64_t{3}, size, size});
    float* dst = out.mutable_data();
    const float* src = hwc.data();
    const int64_t plane = size * size;
    for (int64_t p = 0; p < plane; ++p)
      for (int64_t ch = 0; ch < 3; ++ch) dst[ch * plane + p] = src[p * 3 + ch];
    return out;
  }

  std::unique_ptr<MetaFormer> net_;
  Backend* backend_ = nullptr;
  std::string backend_name_, dtype_;
  int threads_ = 0;
  std::string weights_;
  bool fixed_input_size_ = false;
};

// The CLI commands the package runs in-process (metaformer.train, metaformer.compare), by name.
void register_command(CLI::App& app, const std::string& command) {
  if (command == "train") {
    cli::register_train(app);
  } else if (command == "compare") {
    cli::register_compare(app);
  } else {
    throw py::value_error("no in-process command '" + command + "' (train or compare)");
  }
}

// The long options of `metaformer COMMAND` and whether each takes a value (flags do not).
std::vector<std::pair<std::string, bool>> command_options(const std::string& command) {
  CLI::App app;
  register_command(app, command);
  std::vector<std::pair<std::string, bool>> out;
  for (const CLI::Option* o : app.get_subcommand(command)->get_options()) {
    if (o->get_lnames().empty() || o->get_lnames()[0] == "help") continue;
    out.emplace_back(o->get_lnames()[0], o->get_expected_max() != 0);
  }
  return out;
}

// `metaformer COMMAND ARGS...`, in this process, with the CLI's parser and code.
void run_command(const std::string& command, const std::vector<std::string>& args) {
  CLI::App app{"metaformer"};
  app.require_subcommand(1);
  register_command(app, command);
  std::vector<std::string> words = {"metaformer", command};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  std::string parse_error;
  {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(g_run_mu);
    try {
      app.parse(static_cast<int>(argv.size()), argv.data());
    } catch (const CLI::ParseError& e) {
      parse_error = e.what();
    }
    std::fflush(stdout);  // the run's report, before Python prints anything more
  }
  if (!parse_error.empty()) throw py::value_error(command + ": " + parse_error);
}

}  // namespace

}  // namespace mf::python

PYBIND11_MODULE(_core, m) {
  using mf::python::Model;
  m.doc() = "metaformer.cpp engine (use the metaformer package, not this module)";
  m.attr("__version__") = "0.1.0";
  py::register_exception<mf::Error>(m, "Error", PyExc_RuntimeError);

  py::class_<Model>(m, "Model")
      .def(py::init<const std::string&, bool, const std::string&, const std::string&, const std::string&, int, int>(),
           py::arg("spec"), py::arg("is_config"), py::arg("weights"), py::arg("backend"), py::arg("dtype"),
           py::arg("threads"), py::arg("num_classes"))
      .def("run", &Model::run, py::arg("x"))
      .def("preprocess_file", &Model::preprocess_file, py::arg("path"))
      .def("preprocess_rgb", &Model::preprocess_rgb, py::arg("rgb"))
      .def("config_json", &Model::config_json)
      .def_property_readonly("num_parameters", &Model::num_parameters)
      .def_property_readonly("fixed_input_size", &Model::fixed_input_size)
      .def_property_readonly("backend", &Model::backend)
      .def_property_readonly("dtype", &Model::dtype)
      .def_property_readonly("threads", &Model::threads)
      .def_property_readonly("weights", &Model::weights);

  m.def("list_models", &mf::zoo_names, "the zoo's model names");
  m.def("has_model", &mf::zoo_has, py::arg("name"));
  m.def("class_label", &mf::class_label, py::arg("index"), py::arg("num_classes"));
  m.def("pretrained_repo", &mf::hub::pretrained_repo, py::arg("name"));
  m.def(
      "fetch_pretrained",
      [](const std::string& name) {
        py::gil_scoped_release nogil;
        return mf::hub::fetch_pretrained(name).string();
      },
      py::arg("name"));
  m.def("command_options", &mf::python::command_options, py::arg("command"));
  m.def("run_command", &mf::python::run_command, py::arg("command"), py::arg("args"));
}
