// metaformer classify: images in, top-5 classes out, with the model's timm evaluation preprocessing.
// Without --weights the model is seeded random (to try the command), and a note says so.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "cli/common.h"
#include "core/error.h"
#include "io/imagenet_classes.h"
#include "io/resample.h"

namespace mf::cli {

void register_classify(CLI::App& app) {
  struct Args {
    ModelArgs model;
    std::vector<std::string> images;
    int top = 5;
  };
  auto args = std::make_shared<Args>();
  auto* sub = app.add_subcommand("classify", "classify JPEG/PNG images and print the top classes");
  add_model_options(sub, args->model, /*weights_required=*/false);
  sub->add_option("--seed", args->model.seed, "seed of the random weights used without --weights")->capture_default_str();
  sub->add_option("images", args->images, "image files (JPEG, PNG)")->required();
  sub->add_option("--top", args->top, "how many classes to print")->capture_default_str()->check(CLI::Range(1, 100));
  sub->callback([args] {
    LoadedModel lm = load_model(args->model);
    const MetaFormerConfig& c = lm.model->config();
    EvalTransform t;
    t.size = c.input.size;
    t.crop_pct = c.input.crop_pct;
    t.interpolation = parse_interpolation(c.input.interpolation);
    t.crop_mode = c.input.crop_mode;
    MF_CHECK(c.in_chans == 3, "classify needs a model with 3 input channels (RGB); {} has {}", c.name, c.in_chans);
    std::copy_n(c.input.mean.begin(), 3, t.mean.begin());
    std::copy_n(c.input.std.begin(), 3, t.std.begin());

    // Decode everything first so that a bad file fails before any compute.
    const int64_t n = static_cast<int64_t>(args->images.size());
    Tensor batch = Tensor::empty({n, t.size, t.size, 3});
    for (int64_t i = 0; i < n; ++i) {
      Tensor img = eval_transform(load_image(args->images[static_cast<size_t>(i)]), t);
      std::copy(img.data(), img.data() + img.numel(), batch.data() + i * img.numel());
    }
    Ctx ctx = lm.ctx();
    Tensor logits = lm.model->run(ctx, batch).to(Device::CPU);
    const int64_t classes = logits.dim(1);
    const int top = static_cast<int>(std::min<int64_t>(args->top, classes));
    for (int64_t i = 0; i < n; ++i) {
      const float* l = logits.data() + i * classes;
      const float mx = *std::max_element(l, l + classes);
      std::vector<double> p(static_cast<size_t>(classes));
      double sum = 0;
      for (int64_t k = 0; k < classes; ++k) sum += (p[static_cast<size_t>(k)] = std::exp(static_cast<double>(l[k] - mx)));
      std::vector<int> order(static_cast<size_t>(classes));
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + top, order.end(),
                        [&](int a, int b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)]; });
      fmt::print("{}:\n", args->images[static_cast<size_t>(i)]);
      for (int r = 0; r < top; ++r) {
        const int k = order[static_cast<size_t>(r)];
        fmt::print("  {}. {:6.2f}%  {} ({})\n", r + 1, 100.0 * p[static_cast<size_t>(k)] / sum, class_label(k, classes),
                   k);
      }
    }
    // After the results, so that a failure above stays one line.
    note_if_weights_are_random(args->model);
  });
}

}  // namespace mf::cli
