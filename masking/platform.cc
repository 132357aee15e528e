#include "masking/platform.h"

#include <hs.h>

namespace agentgate::masking {

status check_hyperscan_platform() {
  if (hs_valid_platform() != HS_SUCCESS)
    return {errc::unsupported, "Hyperscan cannot run on this CPU (it needs SSSE3)"};
  return status::ok();
}

std::string hyperscan_version() { return hs_version(); }

}  // namespace agentgate::masking
