#include "masking/validators.h"

#include <arpa/inet.h>

#include <array>
#include <cstring>

namespace agentgate::masking {

bool luhn_valid(std::string_view digits) {
  if (digits.empty()) return false;
  unsigned sum = 0;
  bool twice = false;
  for (std::size_t i = digits.size(); i-- > 0;) {
    const char c = digits[i];
    if (c < '0' || c > '9') return false;
    unsigned d = static_cast<unsigned>(c - '0');
    if (twice) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    twice = !twice;
  }
  return sum % 10 == 0;
}

bool plausible_card(std::string_view digits) {
  if (digits.size() < 13 || digits.size() > 19) return false;
  if (digits[0] < '2' || digits[0] > '6') return false;
  return luhn_valid(digits);
}

namespace {

struct iban_country {
  char code[3];
  unsigned char length;
};

// SWIFT IBAN registry (release 95, 2023), sorted by code.
constexpr iban_country iban_countries[] = {
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16}, {"BG", 22},
    {"BH", 22}, {"BI", 27}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28}, {"CZ", 24},
    {"DE", 22}, {"DJ", 27}, {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24}, {"FI", 18},
    {"FK", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18}, {"GR", 27},
    {"GT", 28}, {"HN", 28}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IS", 26},
    {"IT", 27}, {"JO", 30}, {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20},
    {"LU", 20}, {"LV", 21}, {"LY", 25}, {"MC", 27}, {"MD", 24}, {"ME", 22}, {"MK", 19}, {"MN", 20},
    {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NI", 28}, {"NL", 18}, {"NO", 15}, {"OM", 23}, {"PK", 24},
    {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"RU", 33}, {"SA", 24},
    {"SC", 31}, {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"SO", 23}, {"ST", 25},
    {"SV", 28}, {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20},
    {"YE", 30},
};

}  // namespace

unsigned iban_length(char c0, char c1) {
  for (const auto& c : iban_countries)
    if (c.code[0] == c0 && c.code[1] == c1) return c.length;
  return 0;
}

bool iban_valid(std::string_view s) {
  if (s.size() < 15 || s.size() > 34) return false;
  if (iban_length(s[0], s[1]) != s.size()) return false;
  if (s[2] < '0' || s[2] > '9' || s[3] < '0' || s[3] > '9') return false;
  // Rearranged (BBAN, country, check digits), letters as 10..35, mod 97,
  // folded a digit at a time so no big integer is needed.
  unsigned rem = 0;
  auto fold = [&rem](char c) -> bool {
    if (c >= '0' && c <= '9') {
      rem = (rem * 10 + static_cast<unsigned>(c - '0')) % 97;
    } else if (c >= 'A' && c <= 'Z') {
      rem = (rem * 100 + static_cast<unsigned>(c - 'A' + 10)) % 97;
    } else {
      return false;
    }
    return true;
  };
  for (std::size_t i = 4; i < s.size(); ++i)
    if (!fold(s[i])) return false;
  for (std::size_t i = 0; i < 4; ++i)
    if (!fold(s[i])) return false;
  return rem == 1;
}

bool ssn_valid(unsigned area, unsigned group, unsigned serial) {
  if (area == 0 || area == 666 || area >= 900 || area > 999) return false;
  if (group == 0 || group > 99) return false;
  if (serial == 0 || serial > 9999) return false;
  return true;
}

bool ipv4_valid(std::string_view s) {
  unsigned parts = 0;
  std::size_t i = 0;
  while (true) {
    unsigned value = 0;
    std::size_t digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      value = value * 10 + static_cast<unsigned>(s[i] - '0');
      ++digits;
      ++i;
      if (digits > 3) return false;
    }
    if (digits == 0 || value > 255) return false;
    ++parts;
    if (i == s.size()) break;
    if (s[i] != '.' || parts == 4) return false;
    ++i;
  }
  return parts == 4;
}

bool ipv6_valid(std::string_view s) {
  if (s.size() < 2 || s.size() > 45) return false;
  std::array<char, 46> buf{};
  std::memcpy(buf.data(), s.data(), s.size());
  in6_addr addr;
  return inet_pton(AF_INET6, buf.data(), &addr) == 1;
}

}  // namespace agentgate::masking
