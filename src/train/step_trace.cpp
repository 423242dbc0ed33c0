#include "train/step_trace.h"

#include <filesystem>

#include "core/error.h"
#include "model/loader.h"

namespace mf {

namespace {
template <typename T>
void put(std::ofstream& out, T v) {
  out.write(reinterpret_cast<const char*>(&v), sizeof(T));
}
}  // namespace

StepTrace::StepTrace(const std::string& dir, Module& model) : path_(dir + "/steps.bin") {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  MF_CHECK(!ec, "--trace {}: cannot create the folder: {}", dir, ec.message());
  MF_CHECK(!std::filesystem::exists(path_), "--trace {}: it already holds a trace ({}); choose another folder", dir,
           path_);
  save_weights(model, dir + "/init.safetensors", {{"format", "pt"}});  // host copies of a GPU run's weights
  out_.open(path_, std::ios::binary);
  MF_CHECK(out_.good(), "--trace: cannot write {}", path_);
  out_.write("MFTRACE1", 8);
}

void StepTrace::record(int64_t step, double lr, double loss, const Tensor& images, const std::vector<int64_t>& labels) {
  const Tensor host = images.to(Device::CPU);  // itself on the CPU
  MF_CHECK(host.dtype() == DType::f32 && host.shape().ndim() == 4, "--trace records fp32 [B, H, W, C] images");
  MF_CHECK(host.dim(0) == static_cast<int64_t>(labels.size()), "--trace: {} images but {} labels", host.dim(0),
           labels.size());
  put(out_, step);
  put(out_, lr);
  put(out_, loss);
  for (int d = 0; d < 4; ++d) put(out_, host.dim(d));
  out_.write(reinterpret_cast<const char*>(host.data()), static_cast<std::streamsize>(host.numel() * sizeof(float)));
  out_.write(reinterpret_cast<const char*>(labels.data()), static_cast<std::streamsize>(labels.size() * sizeof(int64_t)));
  out_.flush();
  MF_CHECK(out_.good(), "--trace: writing {} failed (disk full?)", path_);
}

}  // namespace mf
