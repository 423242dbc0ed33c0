#include "model/config.h"

#include <set>

#include "core/error.h"
#include "io/file.h"

namespace mf {

using nlohmann::json;

NormSpec norm_from_name(const std::string& name) {
  // eps: nn.GroupNorm's default 1e-5 for timm's GroupNorm1; timm's MetaFormer norms use 1e-6.
  if (name == "layer_norm") return {"layer_norm", 1e-6, true};
  if (name == "layer_norm_nobias") return {"layer_norm", 1e-6, false};
  if (name == "group_norm1") return {"group_norm1", 1e-5, true};
  if (name == "group_norm1_nobias") return {"group_norm1", 1e-6, false};
  if (name == "affine") return {"affine", 0.0, true};
  if (name == "rms_norm") return {"rms_norm", 1e-5, false};  // transformers' MambaConfig.layer_norm_epsilon
  if (name == "batch_norm") return {"batch_norm", 1e-5, true, 0.1};  // nn.BatchNorm2d's defaults
  fail("unknown norm '{}' (known: layer_norm, layer_norm_nobias, group_norm1, group_norm1_nobias, affine, rms_norm, "
       "batch_norm)",
       name);
}

namespace {

// A strict reader for one JSON object: typed getters with range checks, and an error for every key
// that nothing read (a misspelt key must not be silently ignored).
class Reader {
 public:
  Reader(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    MF_CHECK(j.is_object(), "{}: expected a JSON object", where_);
  }
  bool has(const std::string& key) const { return j_.contains(key); }
  const json* get(const std::string& key) {
    used_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }
  int integer(const std::string& key, int fallback, int lo, int hi) {
    const json* v = get(key);
    if (!v) return fallback;
    return to_int(*v, key, lo, hi);
  }
  int to_int(const json& v, const std::string& key, int lo, int hi) const {
    MF_CHECK(v.is_number_integer(), "{}: '{}' must be an integer", where_, key);
    const auto x = v.get<int64_t>();
    MF_CHECK(x >= lo && x <= hi, "{}: '{}' = {} is out of range [{}, {}]", where_, key, x, lo, hi);
    return static_cast<int>(x);
  }
  double number(const std::string& key, double fallback, double lo, double hi) {
    const json* v = get(key);
    if (!v) return fallback;
    MF_CHECK(v->is_number(), "{}: '{}' must be a number", where_, key);
    const double x = v->get<double>();
    MF_CHECK(x >= lo && x <= hi, "{}: '{}' = {} is out of range [{}, {}]", where_, key, x, lo, hi);
    return x;
  }
  bool boolean(const std::string& key, bool fallback) {
    const json* v = get(key);
    if (!v) return fallback;
    MF_CHECK(v->is_boolean(), "{}: '{}' must be true or false", where_, key);
    return v->get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) {
    const json* v = get(key);
    if (!v) return fallback;
    MF_CHECK(v->is_string(), "{}: '{}' must be a string", where_, key);
    return v->get<std::string>();
  }
  void finish() const {
    for (auto& [key, value] : j_.items())
      MF_CHECK(used_.count(key), "{}: unknown key '{}'", where_, key);
  }
  const std::string& where() const { return where_; }

 private:
  const json& j_;
  std::string where_;
  std::set<std::string> used_;
};

NormSpec parse_norm(const json& v, const std::string& where) {
  if (v.is_string()) return norm_from_name(v.get<std::string>());
  Reader r(v, where);
  NormSpec n = norm_from_name(r.string("type", "layer_norm"));
  n.bias = r.boolean("bias", n.bias);
  n.eps = r.number("eps", n.eps, 0.0, 1.0);
  if (n.type == "batch_norm") {
    n.momentum = r.number("momentum", n.momentum, -1.0, 1.0);
    MF_CHECK(n.bias, "{}: batch_norm always has a bias", where);
  }
  r.finish();
  return n;
}

std::optional<NormSpec> parse_optional_norm(const json* v, const std::string& where) {
  if (!v || v->is_null()) return std::nullopt;
  return parse_norm(*v, where);
}

json norm_to_json(const NormSpec& n) {
  json j{{"type", n.type}, {"bias", n.bias}, {"eps", n.eps}};
  if (n.type == "batch_norm") j["momentum"] = n.momentum;
  return j;
}

// A per-stage list given either as one value for all stages or as an array of one per stage.
template <typename T, typename F>
std::vector<T> per_stage(const json* v, size_t stages, const std::string& what, F parse_one) {
  std::vector<T> out;
  if (!v) return out;
  if (v->is_array()) {
    MF_CHECK(v->size() == stages, "{}: has {} entries but the model has {} stages", what, v->size(), stages);
    for (size_t i = 0; i < stages; ++i) out.push_back(parse_one((*v)[i], what + "[" + std::to_string(i) + "]"));
  } else {
    for (size_t i = 0; i < stages; ++i) out.push_back(parse_one(*v, what));
  }
  return out;
}

ConvSpec parse_conv(const json* v, ConvSpec spec, const std::string& where) {
  if (!v) return spec;
  Reader r(*v, where);
  spec.kernel_size = r.integer("kernel_size", spec.kernel_size, 1, 64);
  spec.stride = r.integer("stride", spec.stride, 1, 64);
  spec.padding = r.integer("padding", spec.padding, 0, 31);
  if (r.has("norm")) spec.norm = parse_optional_norm(r.get("norm"), where + ".norm");
  spec.type = r.string("type", spec.type);
  spec.mid_norm = r.boolean("mid_norm", spec.mid_norm);
  spec.act = r.string("act", spec.act);
  spec.norm_after = r.boolean("norm_after", spec.norm_after);
  r.finish();
  return spec;
}

json conv_to_json(const ConvSpec& c) {
  return json{{"kernel_size", c.kernel_size},
              {"stride", c.stride},
              {"padding", c.padding},
              {"norm", c.norm ? norm_to_json(*c.norm) : json(nullptr)},
              {"type", c.type},
              {"mid_norm", c.mid_norm},
              {"act", c.act},
              {"norm_after", c.norm_after}};
}

}  // namespace

namespace {
void validate_sequence(const MetaFormerConfig& c) {
  const SequenceSpec& q = c.sequence;
  const std::string& name = c.name;
  MF_CHECK(q.input == "tokens" || q.input == "series", "model '{}': sequence.input must be 'tokens' or 'series', not "
           "'{}'", name, q.input);
  MF_CHECK(c.isotropic() || c.layout == "hierarchical", "model '{}': a sequence model is isotropic or hierarchical, "
           "not '{}'", name, c.layout);
  MF_CHECK(q.length >= 1 && q.length <= (1 << 22), "model '{}': sequence.length {} is out of range [1, 4194304]", name,
           q.length);
  MF_CHECK(q.position == "none" || q.position == "learned" || q.position == "sinusoidal",
           "model '{}': sequence.position must be 'none', 'learned' or 'sinusoidal', not '{}'", name, q.position);
  if (q.input == "tokens") {
    MF_CHECK(q.vocab_size >= 1 && q.vocab_size <= (1 << 24), "model '{}': tokens need sequence.vocab_size in [1, "
             "16777216], have {}", name, q.vocab_size);
    MF_CHECK(c.in_chans == 1, "model '{}': a token model takes one input channel (the ids), not in_chans {}", name,
             c.in_chans);
    MF_CHECK(q.patch_size == 1 && q.patch_stride == 1, "model '{}': patches are for series, not tokens", name);
  } else {
    MF_CHECK(q.vocab_size == 0, "model '{}': vocab_size is for tokens, not series", name);
    MF_CHECK(q.patch_size >= 1 && q.patch_size <= q.length, "model '{}': sequence.patch_size {} must be in [1, length "
             "{}]", name, q.patch_size, q.length);
    MF_CHECK(q.patch_stride >= 1 && q.patch_stride <= 4096, "model '{}': sequence.patch_stride {} is out of range", name,
             q.patch_stride);
  }
  MF_CHECK(q.channels == "mixed" || (q.channels == "independent" && q.input == "series"), "model '{}': "
           "sequence.channels must be 'mixed' or (for series) 'independent', not '{}'", name, q.channels);
  MF_CHECK(q.scaling == "none" || (q.scaling == "std" && q.input == "series"), "model '{}': sequence.scaling must be "
           "'none' or (for series) 'std', not '{}'", name, q.scaling);
  MF_CHECK(c.dims[0] % 2 == 0 || q.position != "sinusoidal", "model '{}': sinusoidal positions need an even dim", name);
}
}  // namespace

void MetaFormerConfig::validate() const {
  if (is_affnet()) {  // the structure is the authors' mode table (model/affnet.h); depths etc. describe it
    MF_CHECK(affnet.mode == "xx_small" || affnet.mode == "x_small" || affnet.mode == "small" ||
                 affnet.mode == "custom",
             "model '{}': unknown AFFNet mode '{}' (known: xx_small, x_small, small, custom)", name, affnet.mode);
    MF_CHECK((affnet.mode == "custom") == !affnet.layers.empty(),
             "model '{}': AFFNet layers are given with (and only with) mode 'custom'", name);
    if (affnet.mode == "custom") {
      MF_CHECK(affnet.layers.size() == 5, "model '{}': AFFNet has 5 layers, not {}", name, affnet.layers.size());
      MF_CHECK(affnet.expand_ratio > 0 && affnet.expand_ratio <= 16, "model '{}': expand_ratio {} is out of range",
               name, affnet.expand_ratio);
      for (const AffNetLayer& l : affnet.layers) {
        MF_CHECK(l.out >= 8 && l.out <= 4096 && (!l.aff || l.out % 8 == 0),
                 "model '{}': AFFNet layer width {} (an AFF layer's must be a multiple of the filter's 8 blocks)",
                 name, l.out);
        MF_CHECK(l.blocks >= 1 && l.blocks <= 64 && (l.stride == 1 || l.stride == 2) &&
                     (!l.aff || (l.ffn >= 1 && l.ffn <= 16384 && l.stride == 2)),
                 "model '{}': an AFFNet layer needs 1 to 64 blocks, stride 1 or 2 (an AFF layer: 2), and (AFF) an "
                 "ffn width", name);
      }
    }
    MF_CHECK(affnet.attn_norm.type == "group_norm1" || affnet.attn_norm.type == "batch_norm",
             "model '{}': AFFNet's attn_norm must be group_norm1 (cvnets' layer_norm_2d) or batch_norm", name);
    MF_CHECK(in_chans >= 1 && in_chans <= 64, "model '{}': in_chans {} is out of range", name, in_chans);
    MF_CHECK(num_classes >= 1 && num_classes <= 1000000, "model '{}': num_classes {} is out of range", name,
             num_classes);
    MF_CHECK(input.size >= 32 && input.size <= 8192, "model '{}': input size {} is out of range", name, input.size);
    MF_CHECK(drop_path_rate == 0, "model '{}': AFFNet here has no drop path", name);
    return;
  }
  const size_t n = depths.size();
  MF_CHECK(n >= 1 && n <= 8, "model '{}': needs 1 to 8 stages, has {}", name, n);
  MF_CHECK(dims.size() == n, "model '{}': {} depths but {} dims", name, n, dims.size());
  MF_CHECK(mixers.size() == n, "model '{}': {} stages but {} mixers", name, n, mixers.size());
  MF_CHECK(norms.size() == n, "model '{}': {} stages but {} norms", name, n, norms.size());
  MF_CHECK(layer_scale_init.size() == n && res_scale_init.size() == n, "model '{}': scale lists need {} entries",
           name, n);
  for (size_t i = 0; i < n; ++i) {
    MF_CHECK(depths[i] >= 0 && depths[i] <= 1000, "model '{}': depth of stage {} is {}", name, i, depths[i]);
    MF_CHECK(dims[i] >= 1 && dims[i] <= 65536, "model '{}': dim of stage {} is {}", name, i, dims[i]);
    MF_CHECK(!mixers[i].type.empty(), "model '{}': stage {} has no mixer", name, i);
  }
  MF_CHECK(in_chans >= 1 && in_chans <= 64, "model '{}': in_chans {} is out of range", name, in_chans);
  MF_CHECK(num_classes >= 1 && num_classes <= 1000000, "model '{}': num_classes {} is out of range", name,
           num_classes);
  MF_CHECK(mlp_ratio > 0 && mlp_ratio <= 64, "model '{}': mlp_ratio {} is out of range", name, mlp_ratio);
  MF_CHECK(mlp_mixer.type.empty() || has_mlp_branch(), "model '{}': mlp.mixer replaces the MLP, but the '{}' block "
           "has none", name, block);
  const std::set<std::string> heads{"linear", "mlp", "mambaout_mlp", "norm_mlp", "token_norm_linear", "forecast",
                                    "channel_mean_linear"};
  MF_CHECK(heads.count(head.type), "model '{}': unknown head type '{}' (known: linear, mlp, mambaout_mlp, norm_mlp, "
           "token_norm_linear, forecast, channel_mean_linear)", name, head.type);
  const std::set<std::string> blocks{"metaformer", "mambaout", "mlp_mixer", "resmlp", "gmlp", "mamba"};
  MF_CHECK(blocks.count(block), "model '{}': unknown block '{}' (known: metaformer, mambaout, mlp_mixer, resmlp, gmlp, "
           "mamba)", name, block);
  MF_CHECK(layout == "hierarchical" || layout == "isotropic" || custom_layout(),
           "model '{}': layout must be 'hierarchical' or 'isotropic' (or the authors' 'raftmlp', 'msmlp', 'stripmlp', "
           "'casvit', 'wavemix' or 'iformer'), not '{}'", name, layout);
  if (layout == "raftmlp") {
    MF_CHECK(embed_kernels.size() == n, "model '{}': a raftmlp model needs embed_kernels for each of its {} stages",
             name, n);
    for (size_t i = 0; i < n; ++i) {
      MF_CHECK(mixers[i].type == "raft", "model '{}': every stage of a raftmlp model mixes with 'raft', not '{}'",
               name, mixers[i].type);
      const auto& k = embed_kernels[i];
      MF_CHECK(!k.empty(), "model '{}': embed_kernels[{}] is empty", name, i);
      for (int x : k)
        MF_CHECK(x >= k[0] && x <= 64 && (x - k[0]) % 2 == 0, "model '{}': embed_kernels[{}] has {}: each kernel must "
                 "be at least the patch size {} (the first), at most 64, and differ from it by an even number", name, i,
                 x, k[0]);
    }
  } else {
    MF_CHECK(embed_kernels.empty(), "model '{}': embed_kernels belongs to the raftmlp layout only", name);
  }
  if (layout == "stripmlp")
    for (size_t i = 0; i < n; ++i)
      MF_CHECK(mixers[i].type == "strip", "model '{}': every stage of a stripmlp model mixes with 'strip', not '{}'",
               name, mixers[i].type);
  if (layout == "casvit")
    for (size_t i = 0; i < n; ++i)
      MF_CHECK(mixers[i].type == "additive", "model '{}': every stage of a casvit model mixes with 'additive', not "
               "'{}'", name, mixers[i].type);
  if (layout == "wavemix") {  // model/wavemix.cpp
    MF_CHECK(n == 1 && mixers[0].type == "wavemix", "model '{}': a wavemix model is one stage of 'wavemix' blocks", name);
    MF_CHECK(dims[0] % 4 == 0, "model '{}': WaveMix's width {} must be a multiple of 4", name, dims[0]);
    MF_CHECK((stem.type == "patch" && stem.kernel_size == stem.stride && stem.norm && stem.norm->type == "batch_norm") ||
                 (stem.type == "two_conv" && !stem.norm),
             "model '{}': WaveMix's stem is 'patch' (the authors' 'pachify': kernel = stride, then GELU and "
             "batch_norm) or 'two_conv' (their 'strided', no norm)", name);
  }
  if (layout == "iformer") {  // model/iformer.cpp
    for (size_t i = 0; i < n; ++i)
      MF_CHECK(mixers[i].type == "inception", "model '{}': every stage of an iformer model mixes with 'inception', "
               "not '{}'", name, mixers[i].type);
    MF_CHECK(stem.type == "two_conv" && stem.norm && downsample.norm && dims[0] % 2 == 0 && input.size % 4 == 0 &&
                 (input.size >> (n + 1)) >= 1,
             "model '{}': iFormer's stem is 'two_conv' with a norm (its FirstPatchEmbed), its downsampling has a norm, "
             "and its input size is a multiple of 4 that halves once per stage", name);
  }
  if (layout == "msmlp")
    for (size_t i = 0; i < n; ++i)
      MF_CHECK(mixers[i].type == "mix_shift", "model '{}': every stage of an msmlp model mixes with 'mix_shift', not "
               "'{}'", name, mixers[i].type);
  MF_CHECK(!isotropic() || n == 1, "model '{}': an isotropic model has exactly one stage, not {}", name, n);
  MF_CHECK(isotropic() == (head.type == "token_norm_linear" || head.series_head()),
           "model '{}': the isotropic layout goes with (and only with) the 'token_norm_linear' head (or, for series, "
           "'forecast' or 'channel_mean_linear'); here layout '{}' and head '{}'", name, layout, head.type);
  MF_CHECK(!head.series_head() || sequence.input == "series", "model '{}': the '{}' head is for series models "
           "(sequence.input 'series')", name, head.type);
  MF_CHECK(!sequence.independent_channels() || head.series_head(), "model '{}': independent channels need a series "
           "head ('forecast' or 'channel_mean_linear'), which gathers each sample's channels", name);
  MF_CHECK((head.type == "forecast") == (head.horizon > 0), "model '{}': head.horizon (the steps to forecast) goes "
           "with (and only with) the 'forecast' head", name);
  MF_CHECK(stem.type == "conv" || stem.type == "two_conv" || stem.type == "patch",
           "model '{}': stem type must be 'conv', 'two_conv' or 'patch', not '{}'", name, stem.type);
  MF_CHECK(downsample.type == "conv", "model '{}': downsample type must be 'conv'", name);
  MF_CHECK(stem.type != "two_conv" || dims[0] % 2 == 0, "model '{}': a two_conv stem needs an even first dim", name);
  MF_CHECK(input.size >= 1 && input.size <= 8192, "model '{}': input size {} is out of range", name, input.size);
  MF_CHECK(input.crop_pct > 0 && input.crop_pct <= 1.0, "model '{}': crop_pct must be in (0, 1]", name);
  MF_CHECK(drop_path_rate >= 0 && drop_path_rate < 1, "model '{}': drop_path_rate must be in [0, 1)", name);
  if (is_sequence()) {
    validate_sequence(*this);
    return;  // the image preprocessing (input.*) does not apply
  }
  MF_CHECK(input.mean.size() == static_cast<size_t>(in_chans) && input.std.size() == static_cast<size_t>(in_chans),
           "model '{}': input mean and std need {} values (one per input channel), have {} and {}", name, in_chans,
           input.mean.size(), input.std.size());
}

namespace {
void parse_input(Reader& r, MetaFormerConfig& c, const std::string& what) {
  if (const json* in = r.get("input")) {
    Reader ir(*in, what + ": input");
    c.input.size = ir.integer("size", c.input.size, 1, 8192);
    c.input.crop_pct = ir.number("crop_pct", c.input.crop_pct, 1e-3, 1.0);
    c.input.interpolation = ir.string("interpolation", c.input.interpolation);
    c.input.crop_mode = ir.string("crop_mode", c.input.crop_mode);
    for (const char* key : {"mean", "std"}) {
      const json* v = ir.get(key);
      if (!v) continue;
      MF_CHECK(v->is_array() && !v->empty() && v->size() <= 64, "{}: input.{} must be an array of numbers, one per "
               "input channel", what, key);
      auto& dst = std::string(key) == "mean" ? c.input.mean : c.input.std;
      dst.clear();
      for (size_t i = 0; i < v->size(); ++i) {
        MF_CHECK((*v)[i].is_number(), "{}: input.{} must be an array of numbers", what, key);
        const double x = (*v)[i].get<double>();
        const bool ok = std::string(key) == "std" ? (x > 0 && x <= 1e4) : (x >= -1e4 && x <= 1e4);
        MF_CHECK(ok, "{}: input.{}[{}] = {} is out of range", what, key, i, x);
        dst.push_back(static_cast<float>(x));
      }
    }
    ir.finish();
  }
}
}  // namespace

namespace {
// layout "affnet": {"layout": "affnet", "affnet": {"mode": ..., "attn_norm": ..., "act": ...},
// "name", "in_chans", "num_classes", "input"}; the rest follows from the mode.
MetaFormerConfig parse_affnet(Reader& r, const json& j, const MetaFormerConfig& base, const std::string& what);
}  // namespace

MetaFormerConfig parse_config(const std::string& text, const std::string& what) {
  // Depth bomb guard: nlohmann's parser recurses per nesting level.
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') max_depth = std::max(max_depth, ++depth);
    else if (c == ']' || c == '}') --depth;
  }
  MF_CHECK(max_depth <= 32, "{}: JSON nested {} levels deep (at most 32 allowed)", what, max_depth);

  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  MF_CHECK(!j.is_discarded(), "{}: not valid JSON", what);
  Reader r(j, what);
  MetaFormerConfig c;
  c.name = r.string("name", "custom");
  c.in_chans = r.integer("in_chans", 3, 1, 64);
  c.num_classes = r.integer("num_classes", 1000, 1, 1000000);
  if (r.has("layout") && j["layout"] == "affnet") return parse_affnet(r, j, c, what);

  const json* depths = r.get("depths");
  const json* dims = r.get("dims");
  MF_CHECK(depths && depths->is_array() && !depths->empty(), "{}: 'depths' must be a non-empty array", what);
  MF_CHECK(dims && dims->is_array(), "{}: 'dims' must be an array", what);
  MF_CHECK(depths->size() <= 8, "{}: at most 8 stages", what);
  MF_CHECK(dims->size() == depths->size(), "{}: 'depths' has {} entries, 'dims' {}", what, depths->size(),
           dims->size());
  const size_t n = depths->size();
  for (size_t i = 0; i < n; ++i) {
    c.depths.push_back(r.to_int((*depths)[i], "depths", 0, 1000));
    c.dims.push_back(r.to_int((*dims)[i], "dims", 1, 65536));
  }

  const json* mixers = r.get("mixers");
  MF_CHECK(mixers != nullptr, "{}: 'mixers' is required (one name, or one per stage)", what);
  auto parse_mixer = [](const json& v, const std::string& w) {
    if (v.is_string()) return MixerSpec{v.get<std::string>(), json::object()};
    MF_CHECK(v.is_object() && v.contains("type") && v["type"].is_string(),
             "{}: a mixer is a name or an object with a string 'type'", w);
    json opts = v;
    std::string type = opts["type"].get<std::string>();
    opts.erase("type");
    return MixerSpec{type, opts};
  };
  c.mixers = per_stage<MixerSpec>(mixers, n, what + ": mixers", parse_mixer);

  c.block = r.string("block", c.block);
  c.layout = r.string("layout", c.layout);
  const json* norms = r.get("norms");
  c.norms = norms ? per_stage<NormSpec>(norms, n, what + ": norms", parse_norm)
                  : std::vector<NormSpec>(n, norm_from_name("layer_norm_nobias"));

  if (const json* mlp = r.get("mlp")) {
    Reader m(*mlp, what + ": mlp");
    c.mlp_act = m.string("act", c.mlp_act);
    c.mlp_bias = m.boolean("bias", c.mlp_bias);
    c.mlp_ratio = m.number("ratio", c.mlp_ratio, 1e-3, 64);
    c.mlp_glu = m.boolean("glu", c.mlp_glu);
    if (const json* mixer = m.get("mixer")) c.mlp_mixer = parse_mixer(*mixer, what + ": mlp.mixer");
    c.mlp_gate = m.boolean("gate", c.mlp_gate);
    m.finish();
  }

  auto optional_number = [](const json& v, const std::string& w) -> std::optional<double> {
    if (v.is_null()) return std::nullopt;
    MF_CHECK(v.is_number(), "{}: must be a number or null", w);
    const double x = v.get<double>();
    MF_CHECK(x >= -1e4 && x <= 1e4, "{}: {} is out of range [-1e4, 1e4]", w, x);
    return x;
  };
  const json* ls = r.get("layer_scale_init");
  c.layer_scale_init = ls ? per_stage<std::optional<double>>(ls, n, what + ": layer_scale_init", optional_number)
                          : std::vector<std::optional<double>>(n);
  const json* rs = r.get("res_scale_init");
  c.res_scale_init = rs ? per_stage<std::optional<double>>(rs, n, what + ": res_scale_init", optional_number)
                        : std::vector<std::optional<double>>(n);

  c.stem = parse_conv(r.get("stem"), ConvSpec{7, 4, 2, norm_from_name("layer_norm_nobias")}, what + ": stem");
  c.downsample =
      parse_conv(r.get("downsample"), ConvSpec{3, 2, 1, norm_from_name("layer_norm_nobias")}, what + ": downsample");

  if (const json* h = r.get("head")) {
    Reader hr(*h, what + ": head");
    c.head.type = hr.string("type", c.head.type);
    if (hr.has("norm")) c.head.norm = parse_norm(*hr.get("norm"), what + ": head.norm");
    c.head.mlp_ratio = hr.number("mlp_ratio", c.head.mlp_ratio, 1e-3, 64);
    c.head.horizon = hr.integer("horizon", c.head.horizon, 0, 1 << 20);
    c.head.act = hr.string("act", c.head.act);
    if (hr.has("mlp_norm")) c.head.mlp_norm = parse_norm(*hr.get("mlp_norm"), what + ": head.mlp_norm");
    hr.finish();
  }

  parse_input(r, c, what);
  if (const json* ek = r.get("embed_kernels")) {
    MF_CHECK(ek->is_array() && ek->size() == n, "{}: 'embed_kernels' must be an array of one list per stage", what);
    for (const auto& stage : *ek) {
      MF_CHECK(stage.is_array() && !stage.empty() && stage.size() <= 8, "{}: 'embed_kernels' must hold lists of 1 to "
               "8 kernel sizes", what);
      std::vector<int> k;
      for (const auto& x : stage) k.push_back(r.to_int(x, "embed_kernels", 1, 64));
      c.embed_kernels.push_back(k);
    }
  }
  c.drop_path_rate = r.number("drop_path_rate", 0.0, 0.0, 0.99);
  if (const json* q = r.get("sequence"); q && !q->is_null()) {
    Reader sr(*q, what + ": sequence");
    c.sequence.input = sr.string("input", "");
    c.sequence.vocab_size = sr.integer("vocab_size", 0, 0, 1 << 24);
    c.sequence.length = sr.integer("length", 0, 0, 1 << 22);
    c.sequence.patch_size = sr.integer("patch_size", 1, 1, 1 << 16);
    c.sequence.patch_stride = sr.integer("patch_stride", c.sequence.patch_size, 1, 1 << 16);
    c.sequence.position = sr.string("position", "none");
    c.sequence.channels = sr.string("channels", "mixed");
    c.sequence.scaling = sr.string("scaling", "none");
    sr.finish();
    MF_CHECK(c.sequence.enabled(), "{}: sequence.input is required ('tokens' or 'series')", what);
  }
  r.finish();
  c.validate();
  return c;
}

MetaFormerConfig affnet_description(const std::string& name, const std::string& mode) {
  MetaFormerConfig c;
  c.name = name;
  c.layout = "affnet";
  c.affnet.mode = mode;
  c.stem = {3, 2, 1, NormSpec{"batch_norm", 1e-5, true, 0.1}};  // conv_1: what check_input reads
  // cvnets feeds images scaled to [0, 1] without mean/std normalisation; AFFNet is trained and
  // evaluated at 256×256 (resize 288, centre crop 256, bilinear).
  c.input.size = 256;
  c.input.crop_pct = 256.0 / 288.0;
  c.input.interpolation = "bilinear";
  c.input.mean = {0.f, 0.f, 0.f};
  c.input.std = {1.f, 1.f, 1.f};
  return c;
}

namespace {
MetaFormerConfig parse_affnet(Reader& r, const json& j, const MetaFormerConfig& base, const std::string& what) {
  (void)j;
  r.string("layout", "affnet");
  std::string mode = "small";
  NormSpec attn_norm{"group_norm1", 1e-5, true};
  std::string act = "silu";
  double expand_ratio = 4;
  std::vector<AffNetLayer> layers;
  if (const json* a = r.get("affnet")) {
    Reader ar(*a, what + ": affnet");
    mode = ar.string("mode", mode);
    if (ar.has("attn_norm")) attn_norm = parse_norm(*ar.get("attn_norm"), what + ": affnet.attn_norm");
    act = ar.string("act", act);
    expand_ratio = ar.number("expand_ratio", expand_ratio, 1e-3, 16);
    if (const json* ls = ar.get("layers")) {
      MF_CHECK(ls->is_array(), "{}: affnet.layers must be an array", what);
      for (const json& lj : *ls) {
        Reader lr(lj, what + ": affnet.layers");
        AffNetLayer l;
        const std::string type = lr.string("type", "mv2");
        MF_CHECK(type == "mv2" || type == "aff", "{}: an AFFNet layer's type is 'mv2' or 'aff', not '{}'", what, type);
        l.aff = type == "aff";
        l.out = lr.integer("out", 0, 1, 4096);
        l.blocks = lr.integer("blocks", 1, 1, 64);
        l.stride = lr.integer("stride", 1, 1, 2);
        l.ffn = lr.integer("ffn", 0, 0, 16384);
        lr.finish();
        layers.push_back(l);
      }
    }
    ar.finish();
  }
  MetaFormerConfig c = affnet_description(base.name, mode);
  c.affnet.expand_ratio = expand_ratio;
  c.affnet.layers = layers;
  c.in_chans = base.in_chans;
  c.num_classes = base.num_classes;
  c.affnet.attn_norm = attn_norm;
  c.affnet.act = act;
  parse_input(r, c, what);
  r.finish();
  c.validate();
  return c;
}
}  // namespace

MetaFormerConfig load_config(const std::string& path) {
  const auto bytes = read_file(path);
  MF_CHECK(bytes.size() <= (16u << 20), "{}: config file is larger than 16 MB", path);
  return parse_config(std::string(bytes.begin(), bytes.end()), path);
}

json config_to_json(const MetaFormerConfig& c) {
  json j;
  j["name"] = c.name;
  j["in_chans"] = c.in_chans;
  j["num_classes"] = c.num_classes;
  if (c.is_affnet()) {  // everything else follows from the mode
    j["layout"] = c.layout;
    j["affnet"] = json{{"mode", c.affnet.mode}, {"attn_norm", norm_to_json(c.affnet.attn_norm)}, {"act", c.affnet.act}};
    if (c.affnet.mode == "custom") {
      j["affnet"]["expand_ratio"] = c.affnet.expand_ratio;
      json ls = json::array();
      for (const AffNetLayer& l : c.affnet.layers)
        ls.push_back(json{{"type", l.aff ? "aff" : "mv2"}, {"out", l.out}, {"blocks", l.blocks}, {"stride", l.stride},
                          {"ffn", l.ffn}});
      j["affnet"]["layers"] = ls;
    }
    j["input"] = json{{"size", c.input.size},         {"crop_pct", c.input.crop_pct},
                      {"interpolation", c.input.interpolation}, {"crop_mode", c.input.crop_mode},
                      {"mean", c.input.mean},         {"std", c.input.std}};
    return j;
  }
  j["depths"] = c.depths;
  j["dims"] = c.dims;
  json mixers = json::array(), norms = json::array(), ls = json::array(), rs = json::array();
  for (size_t i = 0; i < c.num_stages(); ++i) {
    if (c.mixers[i].options.empty()) {
      mixers.push_back(c.mixers[i].type);
    } else {
      json m = c.mixers[i].options;
      m["type"] = c.mixers[i].type;
      mixers.push_back(m);
    }
    norms.push_back(norm_to_json(c.norms[i]));
    ls.push_back(c.layer_scale_init[i] ? json(*c.layer_scale_init[i]) : json(nullptr));
    rs.push_back(c.res_scale_init[i] ? json(*c.res_scale_init[i]) : json(nullptr));
  }
  j["mixers"] = mixers;
  j["norms"] = norms;
  j["block"] = c.block;
  j["layout"] = c.layout;
  j["mlp"] = json{{"act", c.mlp_act}, {"bias", c.mlp_bias}, {"ratio", c.mlp_ratio}, {"glu", c.mlp_glu}};
  if (!c.mlp_mixer.type.empty()) {
    json m = c.mlp_mixer.options;
    m["type"] = c.mlp_mixer.type;
    j["mlp"]["mixer"] = m;
  }
  if (c.mlp_gate) j["mlp"]["gate"] = true;
  j["layer_scale_init"] = ls;
  j["res_scale_init"] = rs;
  j["stem"] = conv_to_json(c.stem);
  j["downsample"] = conv_to_json(c.downsample);
  j["head"] = json{{"type", c.head.type},
                   {"norm", norm_to_json(c.head.norm)},
                   {"mlp_ratio", c.head.mlp_ratio},
                   {"act", c.head.act},
                   {"mlp_norm", norm_to_json(c.head.mlp_norm)}};
  if (c.head.horizon > 0) j["head"]["horizon"] = c.head.horizon;
  j["input"] = json{{"size", c.input.size},         {"crop_pct", c.input.crop_pct},
                    {"interpolation", c.input.interpolation}, {"crop_mode", c.input.crop_mode},
                    {"mean", c.input.mean},         {"std", c.input.std}};
  if (!c.embed_kernels.empty()) j["embed_kernels"] = c.embed_kernels;
  j["drop_path_rate"] = c.drop_path_rate;
  if (c.is_sequence()) {
    const SequenceSpec& q = c.sequence;
    j["sequence"] = json{{"input", q.input}, {"length", q.length}, {"position", q.position}};
    if (q.input == "tokens") j["sequence"]["vocab_size"] = q.vocab_size;
    if (q.input == "series") {
      j["sequence"]["patch_size"] = q.patch_size;
      j["sequence"]["patch_stride"] = q.patch_stride;
      j["sequence"]["channels"] = q.channels;
      j["sequence"]["scaling"] = q.scaling;
    }
  }
  return j;
}

}  // namespace mf
