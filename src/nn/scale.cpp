#include "nn/scale.h"

#include <fmt/format.h>

namespace mf {

Scale::Scale(int64_t dim, float init_value, const std::string& param_name)
    : param_name_(param_name), dim_(dim), init_(init_value) {
  param_ = &add_param(param_name, {dim}, Init::constant(init_value), false);
}

std::string Scale::describe() const { return fmt::format("{}, init {:g}", dim_, init_); }

}  // namespace mf
