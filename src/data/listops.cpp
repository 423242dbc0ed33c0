// ListOps, the Long Range Arena's hierarchical-reasoning task, generated here deterministically.
//
// The grammar of LRA's generator (Tay et al. 2020, after Nangia & Bowman 2018): an expression is a
// digit 0-9, or an operator over 2 .. max_args sub-expressions closed by "]":
//   [MAX a b ... ]   [MIN ...]   [MED ...] (the median, rounded down: int(np.median))
//   [SM ...] (the sum modulo 10)
// At depth < max_depth a node is an operator with probability 0.25 (else a digit); at max_depth
// always a digit. Trees whose token count falls outside [min_length, max_length] are drawn again.
// The label is the expression's value (10 classes). LRA's text also writes the tree's pairing
// parentheses "( ... )", which carry no information; they are left out here.
//
// Token ids (vocabulary 16): 0 padding, 1..10 the digits 0..9, 11 [MIN, 12 [MAX, 13 [MED, 14 [SM,
// 15 ]. Each sample is [1, max_length, 1] (the ids as floats, padded with 0 at the end), the layout
// of a sequence model's input (docs/sequences.md). Sample i of a split is a pure function of (split
// seed, i): the same for every run, machine and thread count.
#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "data/dataset.h"

namespace mf {

namespace {

enum Token : int { kPad = 0, kDigit0 = 1, kMin = 11, kMax = 12, kMed = 13, kSumMod = 14, kClose = 15, kVocab = 16 };

class ListOps : public Dataset {
 public:
  ListOps(std::string split, const ListOpsSpec& spec, int64_t size, uint64_t seed)
      : split_(std::move(split)), spec_(spec), size_(size), seed_(seed) {}
  int64_t size() const override { return size_; }
  int num_classes() const override { return 10; }
  int channels() const override { return 1; }
  int image_size() const override { return spec_.max_length; }
  int64_t sequence_length() const override { return spec_.max_length; }
  int vocab_size() const override { return kVocab; }
  std::vector<std::string> class_names() const override {
    std::vector<std::string> n;
    for (int i = 0; i < 10; ++i) n.push_back(std::to_string(i));
    return n;
  }
  int64_t label(int64_t index) const override { return draw(index).second; }
  std::string describe() const override {
    return fmt::format("listops {} ({} sequences of {} to {} tokens, padded to {}, 10 classes)", split_, size_,
                       spec_.min_length, spec_.max_length, spec_.max_length);
  }

  Sample get(int64_t index, bool, Rng&) const override {
    MF_CHECK(index >= 0 && index < size_, "listops: sample {} of {}", index, size_);
    auto [tokens, value] = draw(index);
    Sample s;
    s.label = value;
    s.image = Tensor::zeros({1, spec_.max_length, 1});
    std::copy(tokens.begin(), tokens.end(), s.image.data());
    return s;
  }

  // The tokens and value of sample `index`.
  std::pair<std::vector<float>, int64_t> draw(int64_t index) const {
    Rng r(seed_ ^ (static_cast<uint64_t>(index) * 0x9E3779B97F4A7C15ULL + 0x4C15));
    for (;;) {
      std::vector<float> tokens;
      const int value = expression(r, 1, tokens);
      const auto n = static_cast<int64_t>(tokens.size());
      if (n >= spec_.min_length && n <= spec_.max_length) return {std::move(tokens), value};
    }
  }

 private:
  // Appends one expression drawn at `depth` and returns its value. A tree that has grown past
  // max_length is cut short (its draw is rejected anyway): this bounds the work per attempt.
  int expression(Rng& r, int depth, std::vector<float>& out) const {
    const bool op = depth < spec_.max_depth && r.uniform() < 0.25f &&
                    static_cast<int64_t>(out.size()) <= spec_.max_length;
    if (!op) {
      const int digit = static_cast<int>(r.below(10));
      out.push_back(static_cast<float>(kDigit0 + digit));
      return digit;
    }
    const int kind = kMin + static_cast<int>(r.below(4));
    out.push_back(static_cast<float>(kind));
    const int args = 2 + static_cast<int>(r.below(static_cast<uint64_t>(spec_.max_args - 1)));
    std::vector<int> values;
    for (int i = 0; i < args; ++i) values.push_back(expression(r, depth + 1, out));
    out.push_back(static_cast<float>(kClose));
    return apply(kind, values);
  }

  static int apply(int kind, std::vector<int>& v) {
    switch (kind) {
      case kMin: return *std::min_element(v.begin(), v.end());
      case kMax: return *std::max_element(v.begin(), v.end());
      case kMed: {  // int(np.median(v)): the middle value, or the mean of the two middle ones, rounded down
        std::sort(v.begin(), v.end());
        const size_t n = v.size();
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
      }
      default: {
        int s = 0;
        for (int x : v) s += x;
        return s % 10;
      }
    }
  }

  std::string split_;
  ListOpsSpec spec_;
  int64_t size_;
  uint64_t seed_;
};

}  // namespace

ListOpsSpec parse_listops_spec(const std::string& spec) {
  ListOpsSpec s;
  if (spec == kListOps) return s;
  // "listops-N": sequences of N/4 .. N tokens (a short variant for quick runs and tests).
  const std::string prefix = std::string(kListOps) + "-";
  MF_CHECK(spec.rfind(prefix, 0) == 0 && spec.size() > prefix.size() &&
               spec.find_first_not_of("0123456789", prefix.size()) == std::string::npos && spec.size() - prefix.size() <= 6,
           "unknown data '{}' (listops takes 'listops' or 'listops-N', N the longest sequence, 16 to 100000)", spec);
  const int n = std::stoi(spec.substr(prefix.size()));
  MF_CHECK(n >= 16 && n <= 100000, "{}: the longest sequence must be 16 to 100000 tokens, not {}", spec, n);
  s.max_length = n;
  s.min_length = n / 4;
  s.train_size = 2000;
  s.eval_size = 500;
  return s;
}

bool is_listops_spec(const std::string& spec) {
  return spec.rfind(kListOps, 0) == 0 && !std::filesystem::exists(spec);  // a folder of that name is a folder
}

DataSplits open_listops(const ListOpsSpec& spec) {
  DataSplits s;
  s.train = std::make_unique<ListOps>("train", spec, spec.train_size, 0x7150);
  s.eval = std::make_unique<ListOps>("test", spec, spec.eval_size, 0x7151);
  return s;
}

}  // namespace mf
