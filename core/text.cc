#include "core/text.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace agentgate {
namespace {

constexpr size_t quoted_chars_max = 80;
constexpr char hex_digits[] = "0123456789abcdef";

void append_hex_byte(std::string& out, const char* prefix, unsigned char c) {
  out += prefix;
  out += hex_digits[c >> 4];
  out += hex_digits[c & 0xf];
}

}  // namespace

size_t utf8_sequence_length(std::string_view s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  const size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  // The second byte's range rules out overlong forms, surrogates and code
  // points above U+10FFFF (Unicode table 3-7).
  const unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
  const unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
  const unsigned char hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
  if (c1 < lo || c1 > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  return n;
}

void append_json_string(std::string& out, std::string_view value) {
  out += '"';
  for (size_t i = 0; i < value.size();) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20 || c == 0x7f) append_hex_byte(out, "\\u00", c);
          else out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    const size_t n = utf8_sequence_length(value, i);
    if (n == 0) {
      append_hex_byte(out, "\\u00", c);
      ++i;
    } else {
      out.append(value.substr(i, n));
      i += n;
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
      append_hex_byte(out, "\\x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  if (n < value.size()) out += "...";
  return out;
}

std::string terminal_safe(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c == '\n') out += "\\n";
      else if (c == '\t') out += "\\t";
      else if (c == '\r') out += "\\r";
      else if (c < 0x20 || c == 0x7f) append_hex_byte(out, "\\x", c);
      else out += static_cast<char>(c);
      ++i;
      continue;
    }
    const size_t n = utf8_sequence_length(s, i);
    if (n == 0) {
      append_hex_byte(out, "\\x", c);
      ++i;
      continue;
    }
    uint32_t cp = c & (0xff >> (n + 1));
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    const bool hidden = (cp >= 0x80 && cp <= 0x9f) || cp == 0x200e || cp == 0x200f ||
                        (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
    if (hidden) {
      char buf[16];
      snprintf(buf, sizeof buf, "\\u%04x", cp);
      out += buf;
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  return out;
}

size_t display_width(std::string_view s) {
  size_t n = 0;
  for (char c : s)
    if ((static_cast<unsigned char>(c) & 0xc0) != 0x80) ++n;
  return n;
}

std::string cut_to_width(std::string s, size_t max_chars) {
  size_t chars = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xc0) == 0x80) continue;
    if (chars == max_chars) {
      s.resize(i);
      // Make room for the mark within the width.
      size_t j = s.size();
      while (j > 0 && (static_cast<unsigned char>(s[j - 1]) & 0xc0) == 0x80) --j;
      if (j > 0) s.resize(j - 1);
      return s + "\xe2\x80\xa6";
    }
    ++chars;
  }
  return s;
}

}  // namespace agentgate
