// AFFNet (microsoft/TokenMixers, "Adaptive Frequency Filters As Efficient Global Token Mixers",
// ICCV 2023; the AFFNet folder, built on Apple's ml-cvnets). A MobileViT-v2-style network:
//
//   conv_1 (3x3 stride 2, BatchNorm, act)
//   layer_1, layer_2: MobileNetV2 inverted residuals (exp_1x1 -> depthwise conv_3x3 -> red_1x1)
//   layer_3 .. layer_5: a stride-2 inverted residual, then an AFF block:
//       global_rep = [Block × n, norm], Block: x + filter(norm2(mlp(norm1(x)))), mlp an inverted
//       residual (with its own skip), filter the adaptive frequency filter (mixers/aff.cpp, its skip
//       included); then conv_proj (1x1, BatchNorm) and fusion (1x1 over [input, conv_proj], BatchNorm, act)
//   conv_1x1_exp (1x1, BatchNorm, act), classifier: global average pool, fc
//
// Module names are the authors' state-dict keys ("layer_3.1.global_rep.0.filter.w1",
// "conv_1.block.norm.running_var"). Every BatchNorm follows a convolution and is folded into it at
// inference (nn/norm.h). The structure comes from the authors' `mode` table
// (models/classification/config/affnet.py): xx_small = AFFNet-ET, x_small = AFFNet-T, small = AFFNet.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "nn/module.h"

namespace mf {

// The top-level modules of an AFFNet, in order: conv_1, layer_1 .. layer_5, conv_1x1_exp, classifier.
std::vector<std::pair<std::string, std::unique_ptr<Module>>> make_affnet_layers(const MetaFormerConfig& c);

}  // namespace mf
