// Augmentation by the backend (data/device_crops.h, METAFORMER_BACKEND_AUGMENT=1): the rows the
// loader packs, finished by a backend's augment_crops, must be the loader's own training samples
// bit for bit, and a training run must end with the same weights either way. (The CUDA kernels run
// the same functions; tests/test_cuda.cpp checks them on a GPU.)
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/dataset.h"
#include "data/device_crops.h"
#include "data/loader.h"
#include "ops/ops.h"
#include "test_util.h"

namespace mf {
namespace {

namespace fs = std::filesystem;
using test::data_path;

// Two classes of the RGB fixtures: a baseline, a progressive and a 4:4:4 JPEG and a PNG, 97x71.
void write_rgb_folder(const std::string& dir) {
  const char* files[] = {"photo.jpg", "photo_progressive.jpg", "photo_444.jpg", "photo.png"};
  for (const char* cls : {"a", "b"}) {
    fs::create_directories(dir + "/" + cls);
    for (const char* f : files) test::write_bytes(dir + "/" + cls + "/" + f, test::read_bytes(data_path(std::string("image/") + f)));
  }
}

Tensor table_of(const Dataset& d) {
  const std::vector<float> t = d.byte_normalisation();
  Tensor out = Tensor::empty({3, 256});
  std::copy(t.begin(), t.end(), out.data());
  return out;
}

// Every sample, packed and finished by the ref and cpu backends, against get(i, true): sizes where
// the box always fits its row (224), where it never does (16: the worker finishes it), and both
// filters the packing takes; nearest is always finished by the worker.
TEST(DeviceCrops, PackedRowsFinishToTheLoadersOwnSamples) {
  test::TempDir dir;
  write_rgb_folder(dir.path());
  for (const auto& [size, interp] : {std::pair{224, "bicubic"}, {16, "bicubic"}, {40, "bilinear"}, {64, "nearest"}}) {
    DataTransform t;
    t.size = size;
    t.interpolation = interp;
    const auto data = open_image_folder(dir.path(), t);
    ASSERT_TRUE(data->supports_crops());
    const Tensor table = table_of(*data);
    const int64_t per = int64_t{size} * size * 3;
    int packed = 0;
    for (int64_t i = 0; i < data->size(); ++i)
      for (uint64_t seed = 0; seed < 3; ++seed) {
        Rng a(seed * 100 + static_cast<uint64_t>(i)), b(seed * 100 + static_cast<uint64_t>(i));
        const Sample expected = data->get(i, /*train=*/true, a);
        Tensor row = Tensor::zeros({1, size, size, 3});
        Tensor header = Tensor::zeros({1, crops::kHeaderInts});
        int32_t h[crops::kHeaderInts] = {};
        Sample finished;
        if (data->get_packed(i, b, row.data(), per, h, finished)) {
          ++packed;
        } else {
          ASSERT_EQ(finished.image.numel(), per);
          std::copy_n(finished.image.data(), per, row.data());
          h[crops::kMode] = crops::kFinished;
        }
        EXPECT_EQ(a.next(), b.next()) << "get_packed draws what get draws";
        std::memcpy(header.data(), h, sizeof h);
        for (const char* backend : {"ref", "cpu"}) {
          Exec e{&get_backend(backend), nullptr};
          const Tensor got = op::augment_crops(e, row, header, table);
          ASSERT_EQ(std::memcmp(got.data(), expected.image.data(), static_cast<size_t>(per) * sizeof(float)), 0)
              << backend << ", size " << size << " " << interp << ", sample " << i << ", seed " << seed;
        }
      }
    if (size == 224) {
      EXPECT_EQ(packed, data->size() * 3) << "every 97x71 box fits a 224x224 row";
    }
    if (size == 16 || std::string(interp) == "nearest") {
      EXPECT_EQ(packed, 0);
    }
    if (size == 40) {
      EXPECT_GT(packed, 0);
    }
  }
}

// The loader with packed crops: the same labels, and rows that finish to the same images, as the
// loader without (so whatever the number of workers, and with a sample it cannot read).
TEST(DeviceCrops, LoaderBatchesFinishToTheSameImages) {
  test::TempDir dir;
  write_rgb_folder(dir.path());
  test::write_bytes(dir.path() + "/b/broken.jpg", {0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F'});
  DataTransform t;
  t.size = 64;
  const auto data = open_image_folder(dir.path(), t);
  const Tensor table = table_of(*data);
  Exec cpu{&get_backend("cpu"), nullptr};
  for (int workers : {0, 3}) {
    LoaderOptions o;
    o.batch = 3;
    o.seed = 5;
    o.workers = workers;
    DataLoader plain(*data, o);
    o.packed_crops = true;
    DataLoader packed(*data, o);
    int batches = 0;
    while (auto p = plain.next()) {
      auto q = packed.next();
      ASSERT_TRUE(q.has_value());
      EXPECT_EQ(p->labels, q->labels);
      ASSERT_TRUE(q->crop_headers.defined());
      const Tensor images = op::augment_crops(cpu, q->images, q->crop_headers, table);
      ASSERT_EQ(images.shape(), p->images.shape());
      EXPECT_EQ(std::memcmp(images.data(), p->images.data(), static_cast<size_t>(images.numel()) * sizeof(float)), 0)
          << "batch " << batches << ", " << workers << " workers";
      ++batches;
    }
    EXPECT_FALSE(packed.next().has_value());
    EXPECT_EQ(plain.skipped(), packed.skipped());
    EXPECT_EQ(batches, 3);
  }
}

TEST(DeviceCrops, GreyFoldersAndBadRequestsAreRefusedClearly) {
  test::TempDir dir;
  write_rgb_folder(dir.path());
  DataTransform grey;
  grey.channels = 1;
  grey.mean = {0.5f};
  grey.std = {0.25f};
  const auto data = open_image_folder(dir.path(), grey);
  EXPECT_FALSE(data->supports_crops());
  LoaderOptions o;
  o.packed_crops = true;
  const std::string msg = test::error_of([&] { DataLoader l(*data, o); });
  EXPECT_NE(msg.find("cannot be packed for augmentation by the backend"), std::string::npos) << msg;
}

// A whole training run on the CPU with the backend augmenting: the same weights, bit for bit.
TEST(DeviceCrops, TrainingEndsWithTheSameWeights) {
  test::TempDir dir;
  write_rgb_folder(dir.file("imgs"));
  const std::string config = dir.file("rgb.json");
  const std::vector<uint8_t> base = test::read_bytes(test::source_path("configs/fmnist_convformer.json"));
  std::string json(base.begin(), base.end());
  auto replace = [&](const std::string& from, const std::string& to) {
    const size_t at = json.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    json.replace(at, from.size(), to);
  };
  replace("\"in_chans\": 1", "\"in_chans\": 3");
  replace("\"mean\": [0.2860], \"std\": [0.3530]", "\"mean\": [0.485, 0.456, 0.406], \"std\": [0.229, 0.224, 0.225]");
  replace("\"size\": 28", "\"size\": 32");
  test::write_bytes(config, std::vector<uint8_t>(json.begin(), json.end()));
  auto run = [&](const char* augment, const std::string& out, std::vector<std::string> more = {}) {
    setenv("METAFORMER_BACKEND_AUGMENT", augment, 1);
    std::vector<std::string> a{"train", "--config", config, "--data", dir.file("imgs"), "--epochs", "2", "--batch",
                               "4", "--out", out, "--threads", "1", "--workers", "2", "--no-progress"};
    a.insert(a.end(), more.begin(), more.end());
    const test::CliResult r = test::run_cli(a);
    unsetenv("METAFORMER_BACKEND_AUGMENT");
    return r;
  };
  const test::CliResult off = run("0", dir.file("off")), on = run("1", dir.file("on"));
  ASSERT_EQ(off.exit_code, 0) << off.err;
  ASSERT_EQ(on.exit_code, 0) << on.err;
  EXPECT_NE(on.out.find("augmentation: resized, flipped and normalised by the backend (cpu)"), std::string::npos)
      << on.out;
  EXPECT_EQ(off.out.find("augmentation:"), std::string::npos) << off.out;
  EXPECT_EQ(test::read_bytes(dir.file("off/model.safetensors")), test::read_bytes(dir.file("on/model.safetensors")));
  const test::CliResult mixed = run("1", dir.file("mixed"), {"--mixup", "0.8"});
  ASSERT_EQ(mixed.exit_code, 0) << mixed.err;
  EXPECT_NE(mixed.err.find("METAFORMER_BACKEND_AUGMENT=1 is ignored: Mixup and CutMix"), std::string::npos) << mixed.err;
  // --trace records the images the model received: it keeps the loader's, never packed rows
  const test::CliResult traced = run("1", dir.file("traced"), {"--trace", dir.file("trace"), "--drop-path", "0"});
  ASSERT_EQ(traced.exit_code, 0) << traced.err;
  EXPECT_NE(traced.err.find("METAFORMER_BACKEND_AUGMENT=1 is ignored: --trace records the loader's images"),
            std::string::npos)
      << traced.err;
  EXPECT_EQ(traced.out.find("augmentation:"), std::string::npos) << traced.out;
}

}  // namespace
}  // namespace mf
