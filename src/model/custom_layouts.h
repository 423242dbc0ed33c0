// Networks whose module tree is not the generic MetaFormer's: RaftMLP (layout "raftmlp"), MS-MLP
// (layout "msmlp"), Strip-MLP (layout "stripmlp") and CAS-ViT (layout "casvit"). Each is built from a MetaFormerConfig and names its children exactly as the
// authors' state dicts do, so their checkpoints load without renaming; MetaFormer holds one of them
// as its body (docs/raft-and-shift-mlps.md). Input and output as MetaFormer::forward: channels-last
// image batch in, logits out.
#pragma once

#include <memory>

#include "model/config.h"
#include "nn/module.h"

namespace mf {

std::unique_ptr<Module> make_raftmlp_net(const MetaFormerConfig& c);
std::unique_ptr<Module> make_msmlp_net(const MetaFormerConfig& c);
std::unique_ptr<Module> make_stripmlp_net(const MetaFormerConfig& c);
std::unique_ptr<Module> make_casvit_net(const MetaFormerConfig& c);
std::unique_ptr<Module> make_wavemix_net(const MetaFormerConfig& c);  // layout "wavemix"
std::unique_ptr<Module> make_iformer_net(const MetaFormerConfig& c);  // layout "iformer"

}  // namespace mf
