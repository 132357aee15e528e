#pragma once
// Small text helpers shared by every part that writes messages or JSON.

#include <string>
#include <string_view>

namespace agentgate {

// A value for an error message: quoted, escaped, control characters as \xNN,
// cut at 80 characters with "...", so a hostile or mistaken value can neither
// break the line nor flood the log.
std::string quote_for_message(std::string_view value);

// Appends value as a JSON string literal (quotes included).
void append_json_string(std::string& out, std::string_view value);

}  // namespace agentgate
