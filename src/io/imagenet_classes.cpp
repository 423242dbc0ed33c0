#include "io/imagenet_classes.h"

#include <array>
#include <string>

namespace mf {

namespace {
#include "io/imagenet_classes.inc"
}  // namespace

std::string class_label(int index, int num_classes) {
  if (num_classes == static_cast<int>(kImagenetClasses.size()) && index >= 0 && index < num_classes)
    return kImagenetClasses[static_cast<size_t>(index)];
  return "class " + std::to_string(index);
}

}  // namespace mf
