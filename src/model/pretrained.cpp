// The tags and pretrained_cfg entries of timm's metaformer.py, mambaout.py and mlp_mixer.py for the
// models of the zoo (spec section 10 and 12). Only what differs from the zoo's own description is
// stored: the zoo's InputSpec already is each model's default-tag preprocessing.
#include "model/pretrained.h"

#include <optional>

#include "core/error.h"

namespace mf {

namespace {

struct TagCfg {
  std::string tag;
  int size = 0;                        // 0: the zoo's
  std::string crop_mode;               // empty: the zoo's
  std::string interpolation;           // empty: the zoo's
  std::optional<float> mean, std;      // the same for every channel (MIIL's 0 / 1)
  int num_classes = 1000;
};

TagCfg tag(std::string t, int num_classes = 1000, int size = 0) {
  TagCfg c;
  c.tag = std::move(t);
  c.num_classes = num_classes;
  c.size = size;
  return c;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// timm's default tag is the first listed for the architecture.
std::vector<TagCfg> tags_of(const std::string& m) {
  if (starts_with(m, "poolformer_") || starts_with(m, "poolformerv2_")) return {tag("sail_in1k")};
  if (starts_with(m, "convformer_") || starts_with(m, "caformer_"))
    return {tag("sail_in1k"), tag("sail_in1k_384", 1000, 384), tag("sail_in22k_ft_in1k"),
            tag("sail_in22k_ft_in1k_384", 1000, 384), tag("sail_in22k", 21841)};
  if (m == "mambaout_small_rw") return {tag("sw_e450_in1k")};
  if (m == "mambaout_base_short_rw" || m == "mambaout_base_tall_rw" || m == "mambaout_base_wide_rw")
    return {tag("sw_e500_in1k")};
  if (m == "mambaout_base_plus_rw") {
    TagCfg r384 = tag("sw_e150_r384_in12k_ft_in1k", 1000, 384);
    r384.crop_mode = "squash";
    return {tag("sw_e150_in12k_ft_in1k"), r384, tag("sw_e150_in12k", 11821)};
  }
  if (starts_with(m, "mambaout_") && !ends_with(m, "_rw")) return {tag("in1k")};
  if (m == "mixer_b16_224" || m == "mixer_l16_224") {
    std::vector<TagCfg> t{tag("goog_in21k_ft_in1k"), tag("goog_in21k", 21843)};
    if (m == "mixer_b16_224") {
      // Alibaba MIIL's ImageNet-21K-P weights: unnormalised input, bilinear resizing.
      for (TagCfg miil : {tag("miil_in21k_ft_in1k"), tag("miil_in21k", 11221)}) {
        miil.mean = 0.f;
        miil.std = 1.f;
        miil.interpolation = "bilinear";
        t.push_back(miil);
      }
    }
    return t;
  }
  if (m == "gmixer_24_224" || m == "gmlp_s16_224") return {tag("ra3_in1k")};
  if (m == "resmlp_12_224" || m == "resmlp_24_224" || m == "resmlp_36_224") return {tag("fb_in1k"), tag("fb_distilled_in1k")};
  if (m == "resmlp_big_24_224") return {tag("fb_in1k"), tag("fb_distilled_in1k"), tag("fb_in22k_ft_in1k")};
  return {};
}

std::string tag_list(const std::vector<TagCfg>& tags) {
  std::string s;
  for (auto& t : tags) s += (s.empty() ? "" : ", ") + t.tag;
  return s;
}

}  // namespace

std::pair<std::string, std::string> split_model_tag(const std::string& name_or_tag) {
  const size_t dot = name_or_tag.find('.');
  if (dot == std::string::npos) return {name_or_tag, ""};
  return {name_or_tag.substr(0, dot), name_or_tag.substr(dot + 1)};
}

std::vector<std::string> pretrained_tags(const std::string& model) {
  std::vector<std::string> out;
  for (auto& t : tags_of(model)) out.push_back(t.tag);
  return out;
}

std::string default_pretrained_tag(const std::string& model) {
  const auto tags = tags_of(model);
  MF_CHECK(!tags.empty(), "{}: timm publishes no pretrained weights for this model (use --weights FILE)", model);
  return tags.front().tag;
}

void apply_pretrained_cfg(MetaFormerConfig& c, const std::string& model, const std::string& tag_name) {
  const auto tags = tags_of(model);
  MF_CHECK(!tags.empty(), "{}.{}: timm publishes no pretrained weights for {}", model, tag_name, model);
  for (const TagCfg& t : tags) {
    if (t.tag != tag_name) continue;
    if (t.size) c.input.size = t.size;
    if (!t.crop_mode.empty()) c.input.crop_mode = t.crop_mode;
    if (!t.interpolation.empty()) c.input.interpolation = t.interpolation;
    if (t.mean) c.input.mean.assign(c.input.mean.size(), *t.mean);
    if (t.std) c.input.std.assign(c.input.std.size(), *t.std);
    c.num_classes = t.num_classes;
    return;
  }
  fail("unknown pretrained tag '{}' for {}: timm has no timm/{}.{} (tags: {})", tag_name, model, model, tag_name,
       tag_list(tags));
}

}  // namespace mf
