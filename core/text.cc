#include "core/text.h"

#include <algorithm>

namespace agentgate {
namespace {

constexpr size_t quoted_chars_max = 80;
constexpr char hex_digits[] = "0123456789abcdef";

}  // namespace

void append_json_string(std::string& out, std::string_view value) {
  out += '"';
  for (char ch : value) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex_digits[c >> 4];
          out += hex_digits[c & 0xf];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

std::string quote_for_message(std::string_view value) {
  std::string out = "\"";
  size_t n = std::min(value.size(), quoted_chars_max);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(value[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex_digits[c >> 4];
      out += hex_digits[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  if (n < value.size()) out += "...";
  return out;
}

}  // namespace agentgate
