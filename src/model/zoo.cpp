#include "model/zoo.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "core/error.h"
#include "model/pretrained.h"

namespace mf {

namespace {

struct Size {
  std::vector<int> depths;
  std::vector<int> dims;
};

const std::vector<int> kS{64, 128, 320, 512};      // PoolFormer / ConvFormer / CAFormer "s"
const std::vector<int> kPoolM{96, 192, 384, 768};  // PoolFormer "m"
const std::vector<int> kM{96, 192, 384, 576};      // ConvFormer / CAFormer "m"
const std::vector<int> kB{128, 256, 512, 768};     // ConvFormer / CAFormer "b"

std::vector<MixerSpec> mixers(std::initializer_list<const char*> names) {
  std::vector<MixerSpec> out;
  for (const char* n : names) out.push_back({n, nlohmann::json::object()});
  return out;
}

// Defaults of timm's MetaFormer class (PoolFormerV2 / ConvFormer / CAFormer / the Baselines paper).
MetaFormerConfig baseline(const std::string& name, const Size& size) {
  MetaFormerConfig c;
  c.name = name;
  c.depths = size.depths;
  c.dims = size.dims;
  c.norms.assign(4, norm_from_name("layer_norm_nobias"));
  c.mlp_act = "starrelu";
  c.mlp_bias = false;
  c.layer_scale_init.assign(4, std::nullopt);
  c.res_scale_init = {std::nullopt, std::nullopt, 1.0, 1.0};
  c.stem = {7, 4, 2, norm_from_name("layer_norm_nobias")};
  c.downsample = {3, 2, 1, norm_from_name("layer_norm_nobias")};
  c.head.type = "mlp";
  return c;
}

MetaFormerConfig poolformer_v1(const std::string& name, const Size& size, double ls, double crop) {
  MetaFormerConfig c = baseline(name, size);
  c.mixers = mixers({"pooling", "pooling", "pooling", "pooling"});
  c.norms.assign(4, norm_from_name("group_norm1"));
  c.mlp_act = "gelu";
  c.mlp_bias = true;
  c.layer_scale_init.assign(4, ls);
  c.res_scale_init.assign(4, std::nullopt);
  c.stem.norm.reset();
  c.downsample.norm.reset();
  c.head.type = "linear";
  c.input.crop_pct = crop;
  return c;
}

MetaFormerConfig with_group_norm_linear_head(MetaFormerConfig c, std::vector<MixerSpec> m) {
  c.mixers = std::move(m);
  c.norms.assign(4, norm_from_name("group_norm1_nobias"));
  c.head.type = "linear";
  return c;
}

// timm's mambaout.py (spec section 7): one residual branch per block, the gated CNN; a two-conv stem;
// LayerNorms with bias everywhere. rw = Ross Wightman's variants: no stem mid-norm, downsampling that
// normalises its input, layer scale, and the norm_mlp head.
MetaFormerConfig mambaout(const std::string& name, std::vector<int> depths, std::vector<int> dims, double ratio,
                          double conv_ratio, const std::string& act, bool rw, double crop = 1.0) {
  MetaFormerConfig c;
  c.name = name;
  c.depths = std::move(depths);
  c.dims = std::move(dims);
  c.block = "mambaout";
  nlohmann::json options = nlohmann::json::object();
  if (ratio != 8.0 / 3.0) options["expansion_ratio"] = ratio;
  if (conv_ratio != 1.0) options["conv_ratio"] = conv_ratio;
  if (act != "gelu") options["act"] = act;
  c.mixers.assign(4, MixerSpec{"gated_cnn", options});
  c.norms.assign(4, norm_from_name("layer_norm"));
  c.mlp_act = "gelu";  // unused: no channel-MLP branch
  c.mlp_bias = true;
  c.layer_scale_init.assign(4, rw ? std::optional<double>(1e-5) : std::nullopt);  // timm's LayerScale default
  c.res_scale_init.assign(4, std::nullopt);
  c.stem = ConvSpec{3, 2, 1, norm_from_name("layer_norm")};
  c.stem.type = "two_conv";
  c.stem.mid_norm = !rw;
  c.stem.act = act;
  c.downsample = ConvSpec{3, 2, 1, norm_from_name("layer_norm")};
  c.downsample.norm_after = !rw;
  c.head.type = rw ? "norm_mlp" : "mambaout_mlp";
  c.head.norm = norm_from_name("layer_norm");
  c.head.act = "gelu";  // also for the SiLU models: the head keeps its own default
  c.head.mlp_norm = norm_from_name("layer_norm");
  c.input.crop_pct = crop;
  return c;
}

// timm's mlp_mixer.py (spec section 12): isotropic, fixed 224×224 input, patch-embedding stem, all
// tokens normalised before pooling, a plain linear head.
MetaFormerConfig isotropic(const std::string& name, int patch, int depth, int dim, const std::string& block,
                           MixerSpec mixer, const std::string& norm) {
  MetaFormerConfig c;
  c.name = name;
  c.layout = "isotropic";
  c.block = block;
  c.depths = {depth};
  c.dims = {dim};
  c.mixers = {std::move(mixer)};
  c.norms = {norm_from_name(norm)};
  c.mlp_act = "gelu";
  c.mlp_bias = true;
  c.layer_scale_init = {std::nullopt};
  c.res_scale_init = {std::nullopt};
  c.stem = ConvSpec{patch, patch, 0, std::nullopt};
  c.stem.type = "patch";
  c.downsample = ConvSpec{3, 2, 1, std::nullopt};  // unused
  c.head.type = "token_norm_linear";
  c.head.norm = norm_from_name(norm);
  c.input.crop_pct = 0.875;
  return c;
}

// RaftMLP-S/M/L (okojoalg/raft-mlp, configs/settings/imagenet-raft-mlp-cross-mlp-emb-{s,m,l}.yaml):
// serial-permuted raft token mixing, rafts of 2, cross-scale embeddings, no shortcut heads; the
// authors' nn.LayerNorm (eps 1e-5) and evaluation transform (resize 256, crop 224, bilinear).
MetaFormerConfig raftmlp(const std::string& name, std::vector<int> dims) {
  MetaFormerConfig c;
  c.name = name;
  c.layout = "raftmlp";
  c.depths = {2, 2, 6, 2};
  c.dims = std::move(dims);
  c.mixers.assign(4, MixerSpec{"raft", {{"raft_size", 2}, {"expansion", 2}}});
  c.embed_kernels = {{4, 8}, {2, 4}, {2, 4}, {2}};
  c.norms.assign(4, NormSpec{"layer_norm", 1e-5, true});
  c.mlp_act = "gelu";
  c.mlp_bias = true;
  c.layer_scale_init.assign(4, std::nullopt);
  c.res_scale_init.assign(4, std::nullopt);
  c.head.type = "linear";
  c.head.norm = NormSpec{"layer_norm", 1e-5, true};
  c.input.crop_pct = 0.875;
  c.input.interpolation = "bilinear";
  return c;
}

// MS-MLP-T (JegZheng/MS-MLP, configs/msmlp_tiny_patch4_shift5_224.yaml): five channel groups shifted
// by -2..2, the per-stage kernel sizes of the config, LayerNorms with eps 1e-6, gamma initialised to
// 1e-6; the Swin-style evaluation transform (resize 256, crop 224, bicubic).
MetaFormerConfig msmlp(const std::string& name, int dim, std::vector<int> depths,
                       const std::vector<std::vector<int>>& kernels) {
  MetaFormerConfig c;
  c.name = name;
  c.layout = "msmlp";
  c.depths = std::move(depths);
  c.dims = {dim, 2 * dim, 4 * dim, 8 * dim};
  for (const auto& k : kernels) c.mixers.push_back(MixerSpec{"mix_shift", {{"shifts", {-2, -1, 0, 1, 2}}, {"kernels", k}}});
  c.norms.assign(4, norm_from_name("layer_norm"));
  c.mlp_act = "gelu";
  c.mlp_bias = true;
  c.layer_scale_init.assign(4, 1e-6);
  c.res_scale_init.assign(4, std::nullopt);
  c.stem = ConvSpec{4, 4, 0, norm_from_name("layer_norm")};
  c.downsample = ConvSpec{2, 2, 0, norm_from_name("layer_norm")};
  c.downsample.norm_after = true;
  c.head.type = "linear";
  c.head.norm = norm_from_name("layer_norm");
  c.input.crop_pct = 0.875;
  return c;
}

// Strip-MLP-T (Med-Process/Strip_MLP, configs/smlp_tiny_alpha3_patch4_224_imagenet1k.yaml): embed dim 80,
// layers 2, 2, 12, 2, alpha 3; the channel mixing's nn.LayerNorm (eps 1e-5), the final BatchNorm2d; the
// Swin-style evaluation transform of the authors' code base (resize 256, crop 224, bicubic).
MetaFormerConfig stripmlp(const std::string& name, int dim, std::vector<int> depths) {
  MetaFormerConfig c;
  c.name = name;
  c.layout = "stripmlp";
  c.depths = std::move(depths);
  c.dims = {dim, 2 * dim, 4 * dim, 8 * dim};
  c.mixers.assign(4, MixerSpec{"strip", nlohmann::json::object()});
  c.norms.assign(4, NormSpec{"layer_norm", 1e-5, true});
  c.mlp_act = "gelu";
  c.mlp_bias = true;
  c.mlp_ratio = 3;
  c.layer_scale_init.assign(4, std::nullopt);
  c.res_scale_init.assign(4, std::nullopt);
  c.stem = ConvSpec{4, 4, 0, std::nullopt};
  c.downsample = ConvSpec{2, 2, 0, std::nullopt};
  c.head.type = "linear";
  c.head.norm = norm_from_name("batch_norm");
  c.input.crop_pct = 0.875;
  return c;
}

// CAS-ViT XS/S/M/T (Tianfang-Zhang/CAS-ViT, classification/model/rcvit.py: rcvit_xs, _s, _m, _t): BatchNorm
// (eps 1e-5) everywhere, GELU, MLP ratio 4, the distillation head kept (logits are the two heads'
// mean); the authors' evaluation transform (resize 256, crop 224, bicubic).
MetaFormerConfig casvit(const std::string& name, std::vector<int> depths, std::vector<int> dims) {
  MetaFormerConfig c;
  c.name = name;
  c.layout = "casvit";
  c.depths = std::move(depths);
  c.dims = std::move(dims);
  c.mixers.assign(4, MixerSpec{"additive", nlohmann::json::object()});
  c.norms.assign(4, norm_from_name("batch_norm"));
  c.mlp_act = "gelu";
  c.mlp_bias = true;
  c.mlp_ratio = 4;
  c.layer_scale_init.assign(4, std::nullopt);
  c.res_scale_init.assign(4, std::nullopt);
  c.stem = ConvSpec{3, 2, 1, norm_from_name("batch_norm")};
  c.stem.type = "two_conv";
  c.stem.act = "relu";
  c.downsample = ConvSpec{3, 2, 1, norm_from_name("batch_norm")};
  c.downsample.norm_after = true;
  c.head.type = "linear";
  c.head.norm = norm_from_name("batch_norm");
  c.input.crop_pct = 0.875;
  return c;
}

// WaveMix-192/16 for ImageNet (pranavphoenix/WaveMix, Saved_weights/ImageNet/wavemix_28M_75.06.py at
// level 3, wavemix_12M_71.18.py at level 1; Image_Classification/timm.py's wavemix and wavemix_lite):
// 16 blocks of width 192, ff_channel 192, mult 2, 4×4 patches ('pachify'); timm.py's evaluation
// transform (crop 1.0, bicubic, ImageNet mean and std).
MetaFormerConfig wavemix(const std::string& name, int level) {
  MetaFormerConfig c;
  c.name = name;
  c.layout = "wavemix";
  c.depths = {16};
  c.dims = {192};
  c.mixers = {MixerSpec{"wavemix", {{"level", level}, {"ff_channel", 192}, {"mult", 2}}}};
  c.norms = {NormSpec{"batch_norm", 1e-5, true, 0.1}};
  c.mlp_act = "gelu";
  c.mlp_bias = true;
  c.layer_scale_init = {std::nullopt};
  c.res_scale_init = {std::nullopt};
  c.stem = ConvSpec{4, 4, 0, NormSpec{"batch_norm", 1e-5, true, 0.1}};
  c.stem.type = "patch";
  c.head.type = "linear";
  return c;
}

// iFormer-S/B/L (sail-sg/iFormer, models/inception_transformer.py's iformer_small, _base, _large): the
// heads per stage, the attention heads of each block (the flat list of the authors' functions), pooling
// in the low-frequency mixers of stages 1-2, layer scale (1e-6) in stages 3-4; their evaluation
// transform (crop 0.9, bicubic, ImageNet mean and std).
MetaFormerConfig iformer(const std::string& name, std::vector<int> depths, std::vector<int> dims,
                         const std::vector<int>& heads, const std::vector<int>& attention_heads) {
  MetaFormerConfig c;
  c.name = name;
  c.layout = "iformer";
  c.depths = std::move(depths);
  c.dims = std::move(dims);
  size_t block = 0;
  for (size_t s = 0; s < 4; ++s) {
    const std::vector<int> att(attention_heads.begin() + static_cast<std::ptrdiff_t>(block),
                               attention_heads.begin() + static_cast<std::ptrdiff_t>(block + c.depths[s]));
    block += static_cast<size_t>(c.depths[s]);
    c.mixers.push_back(MixerSpec{"inception", {{"heads", heads[s]}, {"attention_heads", att}, {"pool_size", s < 2 ? 2 : 1}}});
  }
  c.norms.assign(4, norm_from_name("layer_norm"));
  c.mlp_act = "gelu";
  c.mlp_bias = true;
  c.layer_scale_init = {std::nullopt, std::nullopt, 1e-6, 1e-6};
  c.res_scale_init.assign(4, std::nullopt);
  const NormSpec bn{"batch_norm", 1e-5, true, 0.1};
  c.stem = ConvSpec{3, 2, 1, bn};
  c.stem.type = "two_conv";
  c.stem.mid_norm = true;
  c.downsample = ConvSpec{3, 2, 1, bn};
  c.downsample.norm_after = true;
  c.head.type = "linear";
  c.head.norm = norm_from_name("layer_norm");
  c.input.crop_pct = 0.9;
  return c;
}

std::vector<int> repeat(std::initializer_list<std::pair<int, int>> runs) {  // {{value, count}, ...}
  std::vector<int> v;
  for (auto [value, count] : runs) v.insert(v.end(), static_cast<size_t>(count), value);
  return v;
}

const std::map<std::string, MetaFormerConfig>& zoo() {
  static const std::map<std::string, MetaFormerConfig> z = [] {
    std::map<std::string, MetaFormerConfig> m;
    auto add = [&](MetaFormerConfig c) { m.emplace(c.name, std::move(c)); };
    const std::vector<std::pair<std::string, Size>> pool_sizes{{"s12", {{2, 2, 6, 2}, kS}},
                                                               {"s24", {{4, 4, 12, 4}, kS}},
                                                               {"s36", {{6, 6, 18, 6}, kS}},
                                                               {"m36", {{6, 6, 18, 6}, kPoolM}},
                                                               {"m48", {{8, 8, 24, 8}, kPoolM}}};
    for (auto& [tag, size] : pool_sizes) {
      const bool small = tag[0] == 's';
      const double ls = (tag == "s12" || tag == "s24") ? 1e-5 : 1e-6;
      add(poolformer_v1("poolformer_" + tag, size, ls, small ? 0.9 : 0.95));
      add(with_group_norm_linear_head(baseline("poolformerv2_" + tag, size),
                                      mixers({"pooling", "pooling", "pooling", "pooling"})));
      add(with_group_norm_linear_head(baseline("identityformer_" + tag, size),
                                      mixers({"identity", "identity", "identity", "identity"})));
      add(with_group_norm_linear_head(baseline("randformer_" + tag, size),
                                      mixers({"identity", "identity", "random", "random"})));
    }
    const std::vector<std::pair<std::string, Size>> conv_sizes{{"s18", {{3, 3, 9, 3}, kS}},
                                                               {"s36", {{3, 12, 18, 3}, kS}},
                                                               {"m36", {{3, 12, 18, 3}, kM}},
                                                               {"b36", {{3, 12, 18, 3}, kB}}};
    for (auto& [tag, size] : conv_sizes) {
      MetaFormerConfig conv = baseline("convformer_" + tag, size);
      conv.mixers = mixers({"sepconv", "sepconv", "sepconv", "sepconv"});
      add(conv);
      MetaFormerConfig ca = baseline("caformer_" + tag, size);
      ca.mixers = mixers({"sepconv", "sepconv", "attention", "attention"});
      add(ca);
    }
    // MambaOut.
    const std::vector<int> kMambaS{96, 192, 384, 576}, kMambaB{128, 256, 512, 768};
    add(mambaout("mambaout_femto", {3, 3, 9, 3}, {48, 96, 192, 288}, 8.0 / 3.0, 1.0, "gelu", false));
    add(mambaout("mambaout_kobe", {3, 3, 15, 3}, {48, 96, 192, 288}, 8.0 / 3.0, 1.0, "gelu", false));
    add(mambaout("mambaout_tiny", {3, 3, 9, 3}, kMambaS, 8.0 / 3.0, 1.0, "gelu", false));
    add(mambaout("mambaout_small", {3, 4, 27, 3}, kMambaS, 8.0 / 3.0, 1.0, "gelu", false));
    add(mambaout("mambaout_base", {3, 4, 27, 3}, kMambaB, 8.0 / 3.0, 1.0, "gelu", false));
    add(mambaout("mambaout_small_rw", {3, 4, 27, 3}, kMambaS, 8.0 / 3.0, 1.0, "gelu", true));
    add(mambaout("mambaout_base_short_rw", {3, 3, 25, 3}, kMambaB, 3.0, 1.25, "gelu", true, 0.95));
    add(mambaout("mambaout_base_tall_rw", {3, 4, 30, 3}, kMambaB, 2.5, 1.25, "gelu", true, 0.95));
    add(mambaout("mambaout_base_wide_rw", {3, 4, 27, 3}, kMambaB, 3.0, 1.5, "silu", true, 0.95));
    add(mambaout("mambaout_base_plus_rw", {3, 4, 30, 3}, kMambaB, 3.0, 1.5, "silu", true));

    // MLP-Mixer family.
    const std::vector<float> kHalf{0.5f, 0.5f, 0.5f};
    for (auto [tag, patch, depth, dim] : std::vector<std::tuple<std::string, int, int, int>>{
             {"s32", 32, 8, 512}, {"s16", 16, 8, 512}, {"b32", 32, 12, 768}, {"b16", 16, 12, 768},
             {"l32", 32, 24, 1024}, {"l16", 16, 24, 1024}}) {
      MetaFormerConfig c = isotropic("mixer_" + tag + "_224", patch, depth, dim, "mlp_mixer",
                                     MixerSpec{"token_mlp", nlohmann::json::object()}, "layer_norm");
      c.input.mean = c.input.std = kHalf;
      add(c);
    }
    for (int depth : {12, 24}) {
      MetaFormerConfig c = isotropic("gmixer_" + std::to_string(depth) + "_224", 16, depth, 384, "mlp_mixer",
                                     MixerSpec{"token_mlp", {{"ratio", 1.0}, {"glu", true}}}, "layer_norm");
      c.mlp_act = "silu";
      c.mlp_glu = true;
      add(c);
    }
    for (auto [name, patch, depth, dim, ls] : std::vector<std::tuple<std::string, int, int, int, double>>{
             {"resmlp_12_224", 16, 12, 384, 1e-4}, {"resmlp_24_224", 16, 24, 384, 1e-5},
             {"resmlp_36_224", 16, 36, 384, 1e-6}, {"resmlp_big_24_224", 8, 24, 768, 1e-6}}) {
      MetaFormerConfig c = isotropic(name, patch, depth, dim, "resmlp", MixerSpec{"spatial_mlp", nlohmann::json::object()},
                                     "affine");
      c.layer_scale_init = {ls};
      add(c);
    }
    for (auto [tag, dim] : std::vector<std::pair<std::string, int>>{{"ti16", 128}, {"s16", 256}, {"b16", 512}}) {
      MetaFormerConfig c = isotropic("gmlp_" + tag + "_224", 16, 30, dim, "gmlp",
                                     MixerSpec{"spatial_gating", nlohmann::json::object()}, "layer_norm");
      c.input.mean = c.input.std = kHalf;
      add(c);
    }
    // AFFNet (microsoft/TokenMixers): the authors' modes under the paper's names (model/affnet.h).
    for (auto [name, mode] : std::vector<std::pair<std::string, std::string>>{
             {"affnet_et", "xx_small"}, {"affnet_t", "x_small"}, {"affnet", "small"}})
      add(affnet_description(name, mode));
    // RaftMLP and MS-MLP (the authors' module trees and key names).
    add(raftmlp("raftmlp_s", {64, 128, 256, 512}));
    add(raftmlp("raftmlp_m", {96, 192, 384, 768}));
    add(raftmlp("raftmlp_l", {128, 192, 512, 1024}));
    add(stripmlp("stripmlp_tiny", 80, {2, 2, 12, 2}));
    add(casvit("casvit_xs", {2, 2, 4, 2}, {48, 56, 112, 220}));
    add(casvit("casvit_s", {3, 3, 6, 3}, {48, 64, 128, 256}));
    add(casvit("casvit_m", {3, 3, 6, 3}, {64, 96, 192, 384}));
    add(casvit("casvit_t", {3, 3, 6, 3}, {96, 128, 256, 512}));
    add(msmlp("msmlp_tiny", 96, {3, 3, 9, 3}, {{1, 1, 3, 5, 7}, {1, 3, 3, 5, 7}, {1, 5, 5, 5, 7}, {1, 7, 7, 7, 7}}));
    // WaveMix (the authors' module tree and keys; model/wavemix.cpp).
    add(wavemix("wavemix", 3));
    add(wavemix("wavemix_lite", 1));
    // iFormer (the authors' module tree and keys; model/iformer.cpp).
    add(iformer("iformer_small", {3, 3, 9, 3}, {96, 192, 320, 384}, {3, 6, 10, 12},
                repeat({{1, 3}, {3, 3}, {7, 4}, {9, 5}, {11, 3}})));
    add(iformer("iformer_base", {4, 6, 14, 6}, {96, 192, 384, 512}, {3, 6, 12, 16},
                repeat({{1, 4}, {3, 6}, {8, 7}, {10, 7}, {15, 6}})));
    add(iformer("iformer_large", {4, 6, 18, 8}, {96, 192, 448, 640}, {3, 6, 14, 20},
                repeat({{1, 4}, {3, 6}, {10, 9}, {12, 9}, {19, 8}})));
    return m;
  }();
  return z;
}

}  // namespace

std::vector<std::string> zoo_names() {
  std::vector<std::string> names;
  for (auto& [name, c] : zoo()) names.push_back(name);
  return names;
}

bool zoo_has(const std::string& name) { return zoo().count(name) != 0; }

MetaFormerConfig zoo_config(const std::string& name_or_tag) {
  // "caformer_s18.sail_in1k_384": the architecture, with the preprocessing and classifier size of that
  // pretrained tag's checkpoint.
  const auto [name, tag] = split_model_tag(name_or_tag);
  auto it = zoo().find(name);
  if (it != zoo().end()) {
    MetaFormerConfig c = it->second;
    if (!tag.empty()) apply_pretrained_cfg(c, name, tag);
    return c;
  }
  // Suggest names sharing the family prefix ("convformer_s19" -> convformer_*).
  const std::string family = name.substr(0, name.find('_'));
  std::string similar;
  for (auto& [n, c] : zoo())
    if (n.rfind(family, 0) == 0) similar += (similar.empty() ? "" : ", ") + n;
  if (similar.empty())
    fail("unknown model '{}' (see `metaformer info --list`)", name);
  fail("unknown model '{}' (did you mean one of: {}?)", name, similar);
}

}  // namespace mf
