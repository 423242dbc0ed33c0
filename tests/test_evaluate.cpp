// Accuracy as torch.topk and argmax count it: classes ranked by score, ties to the lower index, and
// a row with a NaN or infinite logit wrong at every k (a diverged model must not score 100 %).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "data/dataset.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/metaformer.h"
#include "train/evaluate.h"
#include "test_util.h"

namespace mf::test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

int64_t rank(std::vector<float> logits, int64_t target) { return target_rank(logits, target); }

TEST(Accuracy, RanksByScoreWithTiesToTheLowerIndex) {
  EXPECT_EQ(rank({0.1f, 0.9f, 0.3f}, 1), 0);
  EXPECT_EQ(rank({0.1f, 0.9f, 0.3f}, 2), 1);
  EXPECT_EQ(rank({0.1f, 0.9f, 0.3f}, 0), 2);
  // argmax of {3, 5, 5, 1} is class 1: class 2 ties with it and comes second.
  EXPECT_EQ(rank({3.f, 5.f, 5.f, 1.f}, 1), 0);
  EXPECT_EQ(rank({3.f, 5.f, 5.f, 1.f}, 2), 1);
}

TEST(Accuracy, AConstantHeadPredictsClassZero) {
  // All logits equal (an all-zero classifier): the ranking is the class order, so only class 0 is
  // a top-1 hit and only classes 0..4 are top-5 hits.
  const std::vector<float> flat(10, 0.f);
  EXPECT_EQ(rank(flat, 0), 0);
  EXPECT_EQ(rank(flat, 3), 3);
  EXPECT_EQ(rank(flat, 7), 7);
}

TEST(Accuracy, NonFiniteLogitsAreWrong) {
  EXPECT_EQ(rank({kNaN, 1.f, 0.f}, 1), -1);      // a NaN elsewhere
  EXPECT_EQ(rank({0.f, kNaN, 0.f}, 1), -1);      // the target's own logit
  EXPECT_EQ(rank({kNaN, kNaN, kNaN}, 0), -1);    // all NaN (compares false everywhere)
  EXPECT_EQ(rank({0.f, kInf, 0.f}, 1), -1);      // +Inf on the target
  EXPECT_EQ(rank({-kInf, 2.f, 0.f}, 1), -1);     // -Inf elsewhere
}

TEST(Accuracy, WarningNamesTheNonFiniteCount) {
  EvalResult ok;
  ok.count = 10;
  EXPECT_EQ(nonfinite_warning(ok), "");
  EvalResult bad = ok;
  bad.nonfinite = 3;
  bad.loss = kNaN;
  EXPECT_NE(nonfinite_warning(bad).find("3 of 10 samples"), std::string::npos);
  EvalResult inf_loss = ok;
  inf_loss.loss = kInf;
  EXPECT_NE(nonfinite_warning(inf_loss), "");
}

// The whole path through `metaformer eval`: a small model on the synthetic long-range data (2
// classes, 4000 test images), with its classifier made NaN, then all zero.
class EvalCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = source_path("configs/compare_long_range.json");
    model_ = std::make_unique<MetaFormer>(load_config(config_));
    initialize_parameters(*model_, 3);
  }
  CliResult eval_with_head(float weight_value) {
    std::vector<SafeTensorEntry> entries;
    for (auto& [name, p] : model_->named_parameters()) {
      Tensor t = p->value.clone();
      if (name.rfind("head.", 0) == 0 && name.find("norm") == std::string::npos) t.fill(weight_value);
      entries.push_back({name, t, {}, {}});
    }
    save_safetensors(dir_.file("w.safetensors"), entries);
    return run_cli({"eval", "--config", config_, "--weights", dir_.file("w.safetensors"), "--data", "long-range",
                    "--threads", "2"});
  }
  TempDir dir_;
  std::string config_;
  std::unique_ptr<MetaFormer> model_;
};

TEST_F(EvalCommand, NaNLogitsScoreZeroAndWarn) {
  const CliResult r = eval_with_head(kNaN);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("top-1 0.00%, top-5 0.00%"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("4000 of 4000 samples had non-finite logits"), std::string::npos) << r.err;
}

TEST_F(EvalCommand, AnAllZeroHeadScoresTheShareOfClassZero) {
  const CliResult r = eval_with_head(0.f);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // A constant prediction of class 0 is right exactly on the class-0 images (the old count, "no
  // class scores strictly higher", said 100 %); top-5 over two classes always holds the target.
  const DataSplits data = open_long_range();
  int64_t zeros = 0;
  for (int64_t i = 0; i < data.eval->size(); ++i) zeros += data.eval->label(i) == 0;
  const std::string expected = fmt::format("top-1 {:.2f}%, top-5 100.00%", 100.0 * zeros / data.eval->size());
  ASSERT_NE(expected, "top-1 100.00%, top-5 100.00%");
  EXPECT_NE(r.out.find(expected), std::string::npos) << r.out << " expected " << expected;
  EXPECT_EQ(r.err, "");
}

}  // namespace
}  // namespace mf::test
