#pragma once

#include "core/text.h"
// Small helpers shared by identity/'s files; not part of its interface.

#include <string>
#include <string_view>

#include "core/status.h"

namespace agentgate::identity {

// Reads a whole regular file of at most bytes_max bytes. Errors
// (errc::invalid_argument) say which file and why, without a config path.
result<std::string> read_small_file(const std::string& path, size_t bytes_max);

using agentgate::append_json_string;

using agentgate::quote_for_message;

}  // namespace agentgate::identity
