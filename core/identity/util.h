#pragma once
// Small helpers shared by identity/'s files; not part of its interface.

#include <string>
#include <string_view>

#include "core/status.h"

namespace agentgate::identity {

// Reads a whole regular file of at most bytes_max bytes. Errors
// (errc::invalid_argument) say which file and why, without a config path.
result<std::string> read_small_file(const std::string& path, size_t bytes_max);

// Appends value as a JSON string literal (quotes included).
void append_json_string(std::string& out, std::string_view value);

// value quoted for an error line: escaped and cut to a readable length.
std::string quote_for_message(std::string_view value);

}  // namespace agentgate::identity
