// Google Benchmark microbenchmarks of the training input pipeline, one worker thread: how long a
// worker takes to turn a JPEG into a training sample, and where the time goes.
//   build/bench/mf_microbench --benchmark_filter=Jpeg|Resize|Sample
// The decoders side by side (libjpeg-turbo, which the engine uses for JPEGs, against stb_image,
// which it used before and still uses for PNG and BMP), the RandomResizedCrop-sized resize, and a
// whole training sample with the loader's transform or packed for the backend's augment_crops.
// Images: examples/cat.jpg (451x300) unless MF_BENCH_JPEG names another JPEG.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <omp.h>
#include <stb/stb_image.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/dataset.h"
#include "data/device_crops.h"
#include "io/file.h"
#include "io/image.h"
#include "io/resample.h"

namespace {

std::string jpeg_path() {
  const char* p = std::getenv("MF_BENCH_JPEG");
  return p ? p : std::string(MF_SOURCE_DIR) + "/examples/cat.jpg";
}

const std::vector<uint8_t>& jpeg_bytes() {
  static const std::vector<uint8_t> b = mf::read_file(jpeg_path());
  return b;
}

void JpegLibjpegTurbo(benchmark::State& st) {
  omp_set_num_threads(1);
  for (auto _ : st) benchmark::DoNotOptimize(mf::decode_image(jpeg_bytes(), "bench").rgb.data());
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(JpegLibjpegTurbo);

void JpegStb(benchmark::State& st) {
  const auto& b = jpeg_bytes();
  for (auto _ : st) {
    int w = 0, h = 0, c = 0;
    stbi_uc* p = stbi_load_from_memory(b.data(), static_cast<int>(b.size()), &w, &h, &c, 3);
    benchmark::DoNotOptimize(p);
    stbi_image_free(p);
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(JpegStb);

// Boxes of the sizes RandomResizedCrop draws on a 451x300 image, to 224x224 bicubic.
void ResizeRandomResizedCropBoxes(benchmark::State& st) {
  omp_set_num_threads(1);
  const mf::Image img = mf::decode_image(jpeg_bytes(), "bench");
  const int boxes[4][2] = {{300, 250}, {180, 200}, {420, 290}, {120, 90}};
  int i = 0;
  for (auto _ : st) {
    const auto& b = boxes[i++ % 4];
    const int w = std::min(b[0], img.width), h = std::min(b[1], img.height);
    benchmark::DoNotOptimize(mf::resize_region(img, 0, 0, w, h, 224, 224, mf::Interpolation::Bicubic).rgb.data());
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(ResizeRandomResizedCropBoxes);

// An image folder of copies of the JPEG, made once. The allocator is set as the data loader sets
// it when it starts its workers (src/data/loader.cpp: decoding buffers stay in the arenas), so
// that a sample costs here what it costs a worker.
const mf::Dataset& folder() {
  static std::unique_ptr<mf::Dataset> d = [] {
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 16 << 20);
    const std::string dir = (std::filesystem::temp_directory_path() / "mf_microbench_folder").string();
    for (const char* cls : {"a", "b"}) {
      std::filesystem::create_directories(dir + "/" + cls);
      for (int i = 0; i < 4; ++i)
        std::filesystem::copy_file(jpeg_path(), dir + "/" + cls + "/" + std::to_string(i) + ".jpg",
                                   std::filesystem::copy_options::overwrite_existing);
    }
    return mf::open_image_folder(dir, mf::DataTransform{});
  }();
  return *d;
}

// A whole training sample as the loader's worker makes it: decode, draw, resize, flip, normalise.
void SampleLoaderTransform(benchmark::State& st) {
  omp_set_num_threads(1);
  const mf::Dataset& d = folder();
  uint64_t seed = 0;
  for (auto _ : st) {
    mf::Rng rng(seed++);
    benchmark::DoNotOptimize(d.get(static_cast<int64_t>(seed % 8), true, rng).image.data());
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(SampleLoaderTransform);

// The worker's part with METAFORMER_BACKEND_AUGMENT=1: decode, draw, pack the box into its row.
void SamplePackedForTheBackend(benchmark::State& st) {
  omp_set_num_threads(1);
  const mf::Dataset& d = folder();
  std::vector<float> row(224 * 224 * 3);
  int32_t header[mf::crops::kHeaderInts];
  uint64_t seed = 0;
  for (auto _ : st) {
    mf::Rng rng(seed++);
    mf::Sample finished;
    benchmark::DoNotOptimize(d.get_packed(static_cast<int64_t>(seed % 8), rng, row.data(),
                                          static_cast<int64_t>(row.size()), header, finished));
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(SamplePackedForTheBackend);

}  // namespace
