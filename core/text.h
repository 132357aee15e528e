#pragma once
// Small text helpers shared by every part that writes messages, JSON or
// terminal output.

#include <string>
#include <string_view>

namespace agentgate {

// A value for an error message: quoted, escaped, control characters as \xNN,
// cut at 80 characters with "...", so a hostile or mistaken value can neither
// break the line nor flood the log.
std::string quote_for_message(std::string_view value);

// Appends value as a JSON string literal (quotes included). Valid UTF-8
// passes; controls and DEL are escaped; a byte that is not part of valid
// UTF-8 becomes \u00XX (its Latin-1 reading), so the output is always JSON.
void append_json_string(std::string& out, std::string_view value);

// The length of the valid UTF-8 sequence that starts at s[i] (1 to 4), or 0
// when none does (a stray continuation, an overlong form, a surrogate, a
// code point above U+10FFFF, a truncated sequence).
size_t utf8_sequence_length(std::string_view s, size_t i);

// Text from agents, users or the API made safe for a terminal: C0/C1
// controls, DEL, line and paragraph separators and bidirectional controls
// are written as escapes (\n \t \r, \xNN, \uNNNN); a byte that is not valid
// UTF-8 as \xNN.
std::string terminal_safe(std::string_view s);

// Code points in s (UTF-8), for column widths.
size_t display_width(std::string_view s);

// s cut to at most max_chars code points, the cut marked with "…" (which
// counts as one of them).
std::string cut_to_width(std::string s, size_t max_chars);

}  // namespace agentgate
