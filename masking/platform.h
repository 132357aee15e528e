#pragma once
// Start-up checks for the masking engine's libraries. Hyperscan needs SSSE3;
// a host without it must be told at start, not at the first masked row.

#include <string>

#include "core/status.h"

namespace agentgate::masking {

// Whether Hyperscan can run on this CPU, with its version for the log.
status check_hyperscan_platform();
std::string hyperscan_version();

}  // namespace agentgate::masking
