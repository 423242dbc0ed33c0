// Human-readable ImageNet-1k class names (timm's lemma for each synset, in index order).
#pragma once

#include <string>

namespace mf {

// The ImageNet-1k name of class `index` when the model has 1000 classes, else "class <index>".
std::string class_label(int index, int num_classes);

}  // namespace mf
