#include <algorithm>

#include "mixers/mixer.h"

namespace mf {

// One line per mixer; each function is defined in the mixer's own file.
void register_identity_mixer(MixerRegistry& r);
void register_random_mixer(MixerRegistry& r);
void register_pooling_mixer(MixerRegistry& r);
void register_sepconv_mixer(MixerRegistry& r);
void register_attention_mixer(MixerRegistry& r);
void register_gated_cnn_mixer(MixerRegistry& r);
void register_token_mlp_mixer(MixerRegistry& r);
void register_spatial_mlp_mixer(MixerRegistry& r);
void register_spatial_gating_mixer(MixerRegistry& r);
void register_global_filter_mixer(MixerRegistry& r);
void register_aff_mixer(MixerRegistry& r);
void register_axial_mlp_mixer(MixerRegistry& r);
void register_wavelet_mixer(MixerRegistry& r);
void register_s6_mixer(MixerRegistry& r);
void register_hydra_mixer(MixerRegistry& r);
void register_ponet_mixer(MixerRegistry& r);
void register_channel_scan_mixer(MixerRegistry& r);
void register_raft_mixer(MixerRegistry& r);
void register_mix_shift_mixer(MixerRegistry& r);
void register_strip_mixer(MixerRegistry& r);
void register_additive_mixer(MixerRegistry& r);
void register_wavemix_mixer(MixerRegistry& r);
void register_inception_mixer(MixerRegistry& r);
void register_time_mlp_mixers(MixerRegistry& r);

MixerRegistry& MixerRegistry::get() {
  static MixerRegistry registry = [] {
    MixerRegistry r;
    register_identity_mixer(r);
    register_random_mixer(r);
    register_pooling_mixer(r);
    register_sepconv_mixer(r);
    register_attention_mixer(r);
    register_gated_cnn_mixer(r);
    register_token_mlp_mixer(r);
    register_spatial_mlp_mixer(r);
    register_spatial_gating_mixer(r);
    register_global_filter_mixer(r);
    register_aff_mixer(r);
    register_axial_mlp_mixer(r);
    register_wavelet_mixer(r);
    register_s6_mixer(r);
    register_hydra_mixer(r);
    register_ponet_mixer(r);
    register_channel_scan_mixer(r);
    register_raft_mixer(r);
    register_mix_shift_mixer(r);
    register_strip_mixer(r);
    register_additive_mixer(r);
    register_wavemix_mixer(r);
    register_inception_mixer(r);
    register_time_mlp_mixers(r);
    return r;
  }();
  return registry;
}

void MixerRegistry::add(MixerInfo info) {
  MF_ASSERT(find(info.name) == nullptr);
  mixers_.push_back(std::move(info));
}

const MixerInfo* MixerRegistry::find(const std::string& name) const {
  for (auto& m : mixers_)
    if (m.name == name) return &m;
  return nullptr;
}

std::unique_ptr<TokenMixer> MixerRegistry::create(const std::string& name, const MixerContext& ctx) const {
  const MixerInfo* info = find(name);
  MF_CHECK(info != nullptr, "unknown token mixer '{}' (known: {})", name, names());
  return info->make(ctx);
}

std::vector<const MixerInfo*> MixerRegistry::all() const {
  std::vector<const MixerInfo*> out;
  for (auto& m : mixers_) out.push_back(&m);
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->name < b->name; });
  return out;
}

std::string MixerRegistry::names() const {
  std::string s;
  for (auto* m : all()) s += (s.empty() ? "" : ", ") + m->name;
  return s;
}

MixerOptions::MixerOptions(const std::string& mixer, const nlohmann::json& options)
    : mixer_(mixer), options_(options) {
  MF_CHECK(options.is_object(), "options of mixer '{}' must be a JSON object", mixer);
}

const nlohmann::json* MixerOptions::find(const std::string& key) {
  used_.insert(key);
  auto it = options_.find(key);
  return it == options_.end() ? nullptr : &*it;
}

int64_t MixerOptions::get_int(const std::string& key, int64_t fallback) {
  const auto* v = find(key);
  if (!v) return fallback;
  MF_CHECK(v->is_number_integer(), "mixer '{}': option '{}' must be an integer", mixer_, key);
  return v->get<int64_t>();
}

double MixerOptions::get_double(const std::string& key, double fallback) {
  const auto* v = find(key);
  if (!v) return fallback;
  MF_CHECK(v->is_number(), "mixer '{}': option '{}' must be a number", mixer_, key);
  return v->get<double>();
}

bool MixerOptions::get_bool(const std::string& key, bool fallback) {
  const auto* v = find(key);
  if (!v) return fallback;
  MF_CHECK(v->is_boolean(), "mixer '{}': option '{}' must be true or false", mixer_, key);
  return v->get<bool>();
}

std::string MixerOptions::get_string(const std::string& key, const std::string& fallback) {
  const auto* v = find(key);
  if (!v) return fallback;
  MF_CHECK(v->is_string(), "mixer '{}': option '{}' must be a string", mixer_, key);
  return v->get<std::string>();
}

std::vector<int> MixerOptions::get_int_list(const std::string& key, const std::vector<int>& fallback) {
  const auto* v = find(key);
  if (!v) return fallback;
  MF_CHECK(v->is_array() && !v->empty() && v->size() <= 64, "mixer '{}': option '{}' must be a list of 1 to 64 "
           "integers", mixer_, key);
  std::vector<int> out;
  for (const auto& x : *v) {
    MF_CHECK(x.is_number_integer() && x.get<int64_t>() >= -1000000 && x.get<int64_t>() <= 1000000,
             "mixer '{}': option '{}' must be a list of integers", mixer_, key);
    out.push_back(static_cast<int>(x.get<int64_t>()));
  }
  return out;
}

void MixerOptions::finish() const {
  for (auto& [key, value] : options_.items())
    if (key != "type" && !used_.count(key)) fail("mixer '{}' has no option '{}'", mixer_, key);
}

}  // namespace mf
