// Datasets for training and evaluation. A dataset returns one sample at a time, already transformed
// (augmented for training, or the evaluation transform) and normalised, channels-last, so that the
// loader can decode on worker threads and the model only ever sees ready batches.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace mf {

struct Sample {
  Tensor image;  // [H, W, C], normalised
  int64_t label = 0;
  Tensor target;  // forecasting: the future steps [horizon, C] (undefined for classification)
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual int num_classes() const = 0;
  virtual int channels() const = 0;
  virtual int image_size() const = 0;  // samples are image_size × image_size
  virtual std::vector<std::string> class_names() const = 0;
  // Sample i with the training augmentation (`train`) drawn from `rng`, or the evaluation
  // transform. May throw mf::Error for an unreadable sample; the loader then skips and counts it.
  virtual Sample get(int64_t index, bool train, Rng& rng) const = 0;
  virtual int64_t label(int64_t index) const = 0;  // without loading the image
  virtual std::string describe() const = 0;
  // Files left out when the dataset was listed (a dangling or looping symlink, an unreadable or
  // empty file, one that is not an image), one line each naming the file and the reason.
  virtual std::vector<std::string> skipped_files() const { return {}; }
  // Sequence tasks (docs/sequences.md): samples are [1, L, C] with this L; 0 for images.
  virtual int64_t sequence_length() const { return 0; }
  // Token tasks: ids are in [0, vocab_size); 0 for images and real-valued series.
  virtual int vocab_size() const { return 0; }
  // Forecasting tasks: each sample's target holds this many future steps; 0 for classification.
  virtual int64_t horizon() const { return 0; }

  // Augmentation by the backend (data/device_crops.h): whether get_packed works.
  virtual bool supports_crops() const { return false; }
  // Training sample i, drawing from `rng` exactly what get(i, true, rng) draws: packed into `row`
  // (room for row_floats fp32 values) and `header` (crops::kHeaderInts) and true; or false, with
  // `finished` the sample get() gives, when it does not fit its row. May throw as get() does.
  virtual bool get_packed(int64_t index, Rng& rng, float* row, int64_t row_floats, int32_t* header,
                          Sample& finished) const;
  // Each byte's normalised value per channel ([channels][256]), as the training transform computes it.
  virtual std::vector<float> byte_normalisation() const { return {}; }
};

// How images are turned into model inputs (resolution and normalisation come from the model).
struct DataTransform {
  int size = 224;
  double crop_pct = 1.0;
  std::string interpolation = "bicubic";
  std::vector<float> mean{0.485f, 0.456f, 0.406f};
  std::vector<float> std{0.229f, 0.224f, 0.225f};
  bool hflip = true;            // random horizontal flip when training
  int random_crop_padding = 2;  // Fashion-MNIST: random crop of the image padded by this many pixels
  int upscale = 0;              // Fashion-MNIST: resize the (augmented) image to this side, bilinear (0: keep)
  double min_scale = 0.08;      // image folders: RandomResizedCrop scale range [min_scale, 1]
  int channels = 3;             // image folders: 3 (RGB) or 1 (grey: luma, as PIL's convert('L'))
  int64_t max_pixels = int64_t{1} << 28;  // image folders: larger images are skipped (--max-image-pixels)
};

// Mean and standard deviation of the 1-channel pixel values (in [0, 1]) of up to `max_samples`
// evaluation-transformed samples spread evenly over `data`, which must be opened with mean 0 and
// std 1: the data's own statistics, for a grey image folder.
std::pair<float, float> grey_statistics(const Dataset& data, int64_t max_samples = 256);

// Fashion-MNIST (or MNIST) in IDX format from `dir` (Debian's dataset-fashion-mnist installs it in
// /usr/share/datasets/fashion-mnist); split "train" (60 000) or "test" (10 000).
std::unique_ptr<Dataset> open_fashion_mnist(const std::string& dir, const std::string& split,
                                            const DataTransform& transform);

// One subfolder per class with JPEG/PNG images; classes are the sorted folder names.
std::unique_ptr<Dataset> open_image_folder(const std::string& dir, const DataTransform& transform);

// The keyword "fashion-mnist", a folder of IDX files, or an image folder (with train/ and val/
// subfolders, or a single folder used for both: then evaluation uses the same images).
struct DataSplits {
  std::unique_ptr<Dataset> train;
  std::unique_ptr<Dataset> eval;
};
DataSplits open_dataset(const std::string& spec, const DataTransform& transform);

// "fashion-mnist:64" (or "<IDX folder>:64"): Fashion-MNIST resized to 64×64 (bilinear, as PyTorch's
// interpolate with align_corners=False), for models that need more tokens than 28×28 gives. Returns
// the spec without the suffix and the side, or the spec unchanged and 0 when it has no such suffix.
std::pair<std::string, int> split_idx_upscale(const std::string& spec);

extern const char* const kDebianFashionMnistDir;

// The synthetic long-range task (data/long_range.cpp): 32×32 grey images, 2 classes, generated on
// the fly; the keyword "long-range" of --data (20 000 training and 4 000 test images).
DataSplits open_long_range(int64_t train_size = 20000, int64_t eval_size = 4000);
constexpr const char* kLongRange = "long-range";

// Random images for throughput measurements (data/synthetic.cpp): "synthetic" (50 000 training
// images) or "synthetic:N", of the model's input size, channels and classes, 1 024 test images.
constexpr const char* kSynthetic = "synthetic";
bool is_synthetic_spec(const std::string& spec);
DataSplits open_synthetic(const std::string& spec, int image_size, int channels, int classes);

// ListOps (data/listops.cpp): LRA's nested MAX/MIN/MED/SUM_MOD expressions as token ids, 10 classes.
// "listops": LRA's sizes (500 to 2000 tokens, 96 000 training and 2 000 test sequences);
// "listops-N": N/4 to N tokens, 2 000 training and 500 test sequences (quick runs, tests).
struct ListOpsSpec {
  int max_depth = 10, max_args = 10;
  int64_t min_length = 500, max_length = 2000;
  int64_t train_size = 96000, eval_size = 2000;
};
constexpr const char* kListOps = "listops";
bool is_listops_spec(const std::string& spec);
ListOpsSpec parse_listops_spec(const std::string& spec);  // throws for a malformed "listops-N"
DataSplits open_listops(const ListOpsSpec& spec);

// Forecasting (data/series.cpp, docs/sequences.md): "co2" or "sunspots" (CSV series of Debian's
// python3-statsmodels, in kStatsmodelsDatasetsDir or $METAFORMER_STATSMODELS_DATASETS), or "csv:PATH"
// (a header line, a time column, then one column per channel), optionally followed by ":val" to
// evaluate on the validation part instead of the test part. Split by time 70/10/20 %, standardised
// with the training part's statistics, cut into windows of `context` steps ([1, context, C]) and
// their next `horizon` steps (Sample::target, [horizon, C]). co2's 59 empty weeks are interpolated
// linearly; a gap or NaN anywhere else is an error naming its line.
extern const char* const kStatsmodelsDatasetsDir;
bool is_forecast_spec(const std::string& spec);
DataSplits open_forecast(const std::string& spec, int64_t context, int64_t horizon);
struct SeriesSplit {
  int64_t train = 0, val = 0, test = 0;  // steps in each part, in time order
};
SeriesSplit forecast_split(int64_t steps);

}  // namespace mf
