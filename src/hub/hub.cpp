// Placeholder until the hub client lands: the interface is fixed so that the CLI and the Python
// module can be written against it.
#include "hub/hub.h"

#include "core/error.h"

namespace mf::hub {

std::string pretrained_repo(const std::string& model_name_or_tag) { return "timm/" + model_name_or_tag; }

std::filesystem::path fetch_pretrained(const std::string& model_name_or_tag, const FetchOptions&) {
  MF_CHECK(false, "{}: downloading pretrained weights is not built yet", pretrained_repo(model_name_or_tag));
  return {};
}

}  // namespace mf::hub
