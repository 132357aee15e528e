#include "masking/detectors.h"

#include <array>
#include <cassert>
#include <algorithm>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "masking/validators.h"

namespace agentgate::masking {
namespace {

// Walks are bounded so that one hostile value cannot make one callback cost
// more than a few KiB of work; the caller's examined-range memo makes the
// total linear in the value.
constexpr std::size_t card_token_bytes_max = 64;
constexpr std::size_t email_local_bytes_max = 64;
constexpr std::size_t email_domain_bytes_max = 253;
constexpr std::size_t ip_token_bytes_max = 64;
constexpr std::size_t token_bytes_max = 255;       // vendor tokens with a variable tail
constexpr std::size_t jwt_part_bytes_max = 16384;  // one JWT segment
constexpr std::size_t pem_begin_bytes_max = 64;    // "-----BEGIN ... PRIVATE KEY-----"
constexpr std::size_t pem_block_bytes_max = 1 << 20;

constexpr std::array<std::string_view, detector_count> names = {
    "credit_card",  "email",          "us_ssn",      "iban",         "phone",        "ipv4",
    "ipv6",         "aws_access_key", "aws_secret_key", "gcp_api_key", "github_token", "gitlab_token",
    "slack_token",  "stripe_key",     "jwt",         "private_key"};

// Trailing-context-free shapes: each reports an end inside or at the end of
// the token; the extractor finds the token's real bounds.
// Hyperscan gets literals (or short classes it expands into literals) and
// nothing after them: each extractor checks what must follow the anchor. A
// database of pure literals costs about a quarter per call of one with the
// token bodies as bounded repeats (about 35 ns against 120 ns on a 50-byte
// value), and most values hold none of these anchors. Patterns that start
// with a character class (\d, [A-Z]) would leave Hyperscan's DFA no bytes
// to skip and cost 2-4x the whole literal set each: card numbers, SSNs,
// dashed phone numbers and IBANs are found from runs of digits instead
// (scan_digit_runs), which a SIMD loop skips to. Only the IP detectors (off
// by default) have no anchor.
constexpr detector_expression expressions[] = {
    {shape::email, detector::email, "@"},
    {shape::phone_plus, detector::phone, R"(\+[1-9])"},
    {shape::phone_paren, detector::phone, R"(\(\d{3}\))"},
    {shape::ipv4, detector::ipv4, R"(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d)"},
    {shape::ipv6, detector::ipv6, R"(:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f])"},
    {shape::aws_access, detector::aws_access_key, "A(?:KIA|SIA)"},
    // A secret access key is 40 base64 characters with nothing to recognise
    // it by; without context every byte would start a candidate and
    // 40-character tokens are common. So it needs "aws" or "secret" (any
    // case) before it on the same line, the key starting within 64 bytes.
    {shape::aws_secret, detector::aws_secret_key, "(?i)aws|secret"},
    {shape::gcp, detector::gcp_api_key, "AIza"},
    {shape::github_classic, detector::github_token, "gh[pousr]_"},
    {shape::github_pat, detector::github_token, "github_pat_"},
    {shape::gitlab, detector::gitlab_token, "glpat-"},
    {shape::slack, detector::slack_token, "xox[baprs]-"},
    {shape::stripe, detector::stripe_key, "[rs]k_(?:live|test)_"},
    {shape::jwt, detector::jwt, "eyJ"},
    {shape::private_key, detector::private_key, "-----BEGIN "},
};

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
bool is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
bool is_alpha(unsigned char c) { return is_upper(c) || is_lower(c); }
bool is_alnum(unsigned char c) { return is_alpha(c) || is_digit(c); }
bool is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_word(unsigned char c) { return is_alnum(c) || c == '_'; }
bool is_b64(unsigned char c) { return is_alnum(c) || c == '+' || c == '/'; }
bool is_b64url(unsigned char c) { return is_alnum(c) || c == '-' || c == '_'; }
bool is_email_local(unsigned char c) {
  return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}
bool is_domain(unsigned char c) { return is_alnum(c) || c == '.' || c == '-'; }

struct text_view {
  const unsigned char* p;
  std::size_t n;
  unsigned char at(std::size_t i) const { return i < n ? p[i] : 0; }
  // The byte before i, 0 at the start.
  unsigned char before(std::size_t i) const { return i > 0 && i <= n ? p[i - 1] : 0; }
};

void push(std::vector<candidate>& out, std::size_t start, std::size_t end, std::uint16_t label) {
  assert(start < end);
  out.push_back({static_cast<std::uint32_t>(start), static_cast<std::uint32_t>(end), label});
}

// A separator in a card number sits between two digits.
bool card_separator_at(const text_view& t, std::size_t i) {
  const unsigned char c = t.at(i);
  return (c == ' ' || c == '-') && i > 0 && i + 1 < t.n && is_digit(t.p[i - 1]) && is_digit(t.p[i + 1]);
}

// A number that continues as a decimal or dotted sequence ("0.4111...",
// "1.2.4111...") is not a stand-alone card number.
// A comma does not continue a number: in CSV (COPY ... CSV, exports) it
// separates fields, and "4111111111111111,12" must not hide a card because
// the next field is a number. A decimal comma costs an over-mask at worst.
bool number_continues_left(const text_view& t, std::size_t start) {
  const unsigned char b = t.before(start);
  // COPY text escapes a newline or tab as "\n", "\t": the letter is not part
  // of the number ("a\n4111 1111 1111 1111" holds a card).
  if ((is_alpha(b) || b == '_') && start >= 2 && t.p[start - 2] == '\\') return false;
  if (is_alpha(b) || b == '_') return true;
  return b == '.' && start >= 2 && is_digit(t.p[start - 2]);
}
bool number_continues_right(const text_view& t, std::size_t end) {
  const unsigned char a = t.at(end);
  if (is_alpha(a) || a == '_') return true;
  return a == '.' && end + 1 < t.n && is_digit(t.p[end + 1]);
}

examined_range extract_card(const text_view& t, std::size_t to, std::uint16_t label, std::vector<candidate>& out) {
  std::size_t s = to;
  bool bounded = true;
  while (s > 0 && (is_digit(t.p[s - 1]) || card_separator_at(t, s - 1))) {
    --s;
    if (to - s > card_token_bytes_max) {
      bounded = false;
      break;
    }
  }
  std::size_t e = to;
  while (e < t.n && (is_digit(t.p[e]) || card_separator_at(t, e))) ++e;
  const examined_range seen{s, e};
  if (!bounded || e - s > card_token_bytes_max) return seen;
  if (number_continues_left(t, s) || number_continues_right(t, e)) return seen;

  // Groups of digits split by single separators.
  struct group {
    std::size_t start, end;
  };
  std::array<group, card_token_bytes_max> groups;
  std::size_t group_count = 0;
  for (std::size_t i = s; i < e;) {
    if (!is_digit(t.p[i])) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < e && is_digit(t.p[j])) ++j;
    groups[group_count++] = {i, j};
    i = j;
  }
  // Leftmost-longest run of whole groups with 13-19 digits that passes.
  char digits[20];
  for (std::size_t i = 0; i < group_count;) {
    std::size_t best = group_count;  // none
    std::size_t total = 0;
    std::size_t end_group = i;  // one past the last group that fits in 19 digits
    for (std::size_t j = i; j < group_count; ++j) {
      total += groups[j].end - groups[j].start;
      if (total > 19) break;
      end_group = j + 1;
    }
    // Try the longest candidate first, shrinking from the right.
    for (std::size_t j = end_group; j-- > i;) {
      std::size_t count = 0;
      for (std::size_t g = i; g <= j; ++g)
        for (std::size_t k = groups[g].start; k < groups[g].end; ++k) digits[count++] = static_cast<char>(t.p[k]);
      if (count < 13) break;
      if (plausible_card(std::string_view(digits, count))) {
        best = j;
        break;
      }
    }
    if (best == group_count) {
      ++i;
      continue;
    }
    push(out, groups[i].start, groups[best].end, label);
    i = best + 1;
  }
  return seen;
}

bool domain_valid(const text_view& t, std::size_t s, std::size_t e) {
  std::size_t labels = 0;
  std::size_t label_start = s;
  for (std::size_t i = s; i <= e; ++i) {
    if (i < e && t.p[i] != '.') continue;
    const std::size_t len = i - label_start;
    if (len == 0 || len > 63) return false;
    if (t.p[label_start] == '-' || t.p[i - 1] == '-') return false;
    ++labels;
    if (i == e) {
      // The top-level domain: letters only, at least two.
      if (len < 2) return false;
      for (std::size_t k = label_start; k < i; ++k)
        if (!is_alpha(t.p[k])) return false;
    }
    label_start = i + 1;
  }
  return labels >= 2;
}

examined_range extract_email(const text_view& t, std::size_t to, std::uint16_t label, std::vector<candidate>& out) {
  std::size_t at = to;
  while (at > 0 && t.p[at - 1] != '@' && to - at < email_domain_bytes_max) --at;
  if (at == 0 || t.p[at - 1] != '@') return {to, to};
  --at;  // index of '@'
  std::size_t de = at + 1;
  while (de < t.n && is_domain(t.p[de]) && de - at <= email_domain_bytes_max) ++de;
  const examined_range seen{at, de};
  while (de > at + 1 && (t.p[de - 1] == '.' || t.p[de - 1] == '-')) --de;  // end of a sentence
  if (!domain_valid(t, at + 1, de)) return seen;
  std::size_t ls = at;
  while (ls > 0 && is_email_local(t.p[ls - 1]) && at - ls < email_local_bytes_max) --ls;
  while (ls < at && t.p[ls] == '.') ++ls;
  if (ls == at) return seen;
  push(out, ls, de, label);
  return {ls, de};
}

examined_range extract_ssn(const text_view& t, std::size_t to, std::uint16_t label, std::vector<candidate>& out) {
  if (to < 11) return {to, to};
  const std::size_t s = to - 11;
  for (std::size_t i = 0; i < 11; ++i)
    if (i == 3 || i == 6 ? t.p[s + i] != '-' : !is_digit(t.p[s + i])) return {to, to};
  const unsigned char b = t.before(s);
  const unsigned char a = t.at(to);
  if (is_alnum(b) || b == '_' || is_alnum(a) || a == '_') return {s, to};
  // Part of a longer dashed or dotted sequence (dates, ids): not an SSN.
  if ((b == '-' || b == '.') && s >= 2 && is_digit(t.p[s - 2])) return {s, to};
  if ((a == '-' || a == '.') && to + 1 < t.n && is_digit(t.p[to + 1])) return {s, to};
  auto num = [&](std::size_t i, std::size_t len) {
    unsigned v = 0;
    for (std::size_t k = 0; k < len; ++k) v = v * 10 + static_cast<unsigned>(t.p[i + k] - '0');
    return v;
  };
  if (ssn_valid(num(s, 3), num(s + 4, 2), num(s + 7, 4))) push(out, s, to, label);
  return {s, to};
}

// An IBAN starting at `s` (country code, check digits, BBAN), compact or in
// groups of four separated by single spaces.
examined_range iban_at(const text_view& t, std::size_t s, std::uint16_t label, std::vector<candidate>& out) {
  if (s + 8 > t.n) return {s, s};
  if (!is_upper(t.p[s]) || !is_upper(t.p[s + 1]) || !is_digit(t.p[s + 2]) || !is_digit(t.p[s + 3])) return {s, s};
  if (is_alnum(t.before(s)) || t.before(s) == '_') return {s, s};
  const unsigned want = iban_length(static_cast<char>(t.p[s]), static_cast<char>(t.p[s + 1]));
  if (want == 0) return {s, s};
  char compact[34];
  std::memcpy(compact, t.p + s, 4);
  std::size_t count = 4;
  std::size_t i = s + 4;
  const bool spaced = t.at(i) == ' ';
  while (count < want && i < t.n) {
    const unsigned char c = t.p[i];
    if (spaced && c == ' ' && count % 4 == 0 && i + 1 < t.n && is_alnum(t.p[i + 1])) {
      ++i;
      continue;
    }
    if (!is_upper(c) && !is_digit(c)) break;
    compact[count++] = static_cast<char>(c);
    ++i;
  }
  const examined_range seen{s, i};
  if (count != want) return seen;
  if (is_alnum(t.at(i)) || t.at(i) == '_') return seen;
  if (iban_valid(std::string_view(compact, count))) push(out, s, i, label);
  return seen;
}

// From a run of digits inside an IBAN, back over its upper-case letters,
// digits and group spaces to each place an IBAN could start.
examined_range extract_iban(const text_view& t, std::size_t digits_start, std::uint16_t label,
                            std::vector<candidate>& out) {
  constexpr std::size_t iban_text_bytes_max = 34 + 8;  // 34 characters, 8 group spaces
  std::size_t r = digits_start;
  while (r > 0 && (is_upper(t.p[r - 1]) || is_digit(t.p[r - 1]) || t.p[r - 1] == ' ') &&
         digits_start - r < iban_text_bytes_max)
    --r;
  examined_range seen{digits_start, digits_start};
  for (std::size_t q = r; q + 2 <= digits_start; ++q) {
    if (q > 0 && is_alnum(t.p[q - 1])) continue;
    const examined_range one = iban_at(t, q, label, out);
    seen.end = std::max(seen.end, one.end);
  }
  return seen;
}

// Whether the bytes around a phone number's span make it part of something
// else: a word, a longer number, a dotted or dashed sequence.
bool phone_isolated(const text_view& t, std::size_t s, std::size_t e) {
  const unsigned char b = t.before(s);
  const unsigned char a = t.at(e);
  if (is_alnum(b) || b == '_' || b == '+' || is_alnum(a) || a == '_') return false;
  if ((b == '-' || b == '.') && s >= 2 && is_digit(t.p[s - 2])) return false;
  if ((a == '-' || a == '.') && e + 1 < t.n && is_digit(t.p[e + 1])) return false;
  return true;
}

examined_range extract_phone_plus(const text_view& t, std::size_t to, std::uint16_t label,
                                  std::vector<candidate>& out) {
  const std::size_t s = to - 2;  // the '+'
  std::size_t i = s + 1;
  std::size_t digits = 0;
  bool paren_open = false;
  while (i < t.n && digits < 15) {
    const unsigned char c = t.p[i];
    if (is_digit(c)) {
      ++digits;
      ++i;
    } else if ((c == ' ' || c == '.' || c == '-') && i + 1 < t.n && (is_digit(t.p[i + 1]) || t.p[i + 1] == '(') &&
               (is_digit(t.p[i - 1]) || t.p[i - 1] == ')')) {
      ++i;
    } else if (c == '(' && !paren_open && i + 1 < t.n && is_digit(t.p[i + 1])) {
      paren_open = true;
      ++i;
    } else if (c == ')' && paren_open && is_digit(t.p[i - 1])) {
      paren_open = false;
      ++i;
    } else {
      break;
    }
  }
  const examined_range seen{s, i};
  if (paren_open || digits < 8 || digits > 15) return seen;
  if (is_digit(t.at(i))) return seen;  // more than 15 digits
  if (!phone_isolated(t, s, i)) return seen;
  push(out, s, i, label);
  return seen;
}

bool nanp_valid(unsigned char area_first, unsigned char exchange_first) {
  return area_first >= '2' && exchange_first >= '2';
}

examined_range extract_phone_paren(const text_view& t, std::size_t to, std::uint16_t label,
                                   std::vector<candidate>& out) {
  // "(415)" then an optional separator, three digits, a separator, four.
  const std::size_t s = to - 5;
  std::size_t i = to;
  if (i < t.n && (t.p[i] == ' ' || t.p[i] == '.' || t.p[i] == '-')) ++i;
  auto digits = [&](std::size_t k) {
    for (std::size_t j = 0; j < k; ++j, ++i)
      if (i >= t.n || !is_digit(t.p[i])) return false;
    return true;
  };
  if (!digits(3)) return {s, to};
  const std::size_t exchange = i - 3;
  if (i >= t.n || (t.p[i] != ' ' && t.p[i] != '.' && t.p[i] != '-')) return {s, to};
  ++i;
  if (!digits(4)) return {s, to};
  if (!nanp_valid(t.p[s + 1], t.p[exchange]) || !phone_isolated(t, s, i)) return {s, i};
  push(out, s, i, label);
  return {s, i};
}

examined_range extract_phone_dash(const text_view& t, std::size_t to, std::uint16_t label,
                                  std::vector<candidate>& out) {
  const std::size_t s = to - 12;
  for (std::size_t i = 0; i < 12; ++i) {
    const unsigned char c = t.p[s + i];
    if (i == 3 || i == 7 ? (c != '-' && c != '.') : !is_digit(c)) return {to, to};
  }
  if (!nanp_valid(t.p[s], t.p[s + 4]) || !phone_isolated(t, s, to)) return {s, to};
  push(out, s, to, label);
  return {s, to};
}

examined_range extract_ipv4(const text_view& t, std::size_t to, std::uint16_t label, std::vector<candidate>& out) {
  auto ip_char = [](unsigned char c) { return is_digit(c) || c == '.'; };
  std::size_t s = to;
  while (s > 0 && ip_char(t.p[s - 1]) && to - s < ip_token_bytes_max) --s;
  std::size_t e = to;
  while (e < t.n && ip_char(t.p[e])) ++e;
  const examined_range seen{s, e};
  while (e > s && t.p[e - 1] == '.') --e;  // end of a sentence
  if (e - s > 15 || ip_char(t.before(s))) return seen;
  const unsigned char b = t.before(s), a = t.at(e);
  if (is_alpha(b) || b == '_' || is_alpha(a) || a == '_') return seen;
  if (ipv4_valid(std::string_view(reinterpret_cast<const char*>(t.p + s), e - s))) push(out, s, e, label);
  return seen;
}

examined_range extract_ipv6(const text_view& t, std::size_t to, std::uint16_t label, std::vector<candidate>& out) {
  auto ip_char = [](unsigned char c) { return is_hex(c) || c == ':' || c == '.'; };
  std::size_t s = to;
  while (s > 0 && ip_char(t.p[s - 1]) && to - s < ip_token_bytes_max) --s;
  std::size_t e = to;
  while (e < t.n && ip_char(t.p[e])) ++e;
  const examined_range seen{s, e};
  if (ip_char(t.before(s))) return seen;  // longer than any address
  const unsigned char b = t.before(s);
  if (is_alnum(b) || b == '_' || is_alnum(t.at(e)) || t.at(e) == '_') return seen;
  while (e > s && t.p[e - 1] == '.') --e;
  if (e - s > 2 && t.p[e - 1] == ':' && t.p[e - 2] != ':') --e;
  if (e - s < 2 || e - s > 45) return seen;
  const std::string_view token(reinterpret_cast<const char*>(t.p + s), e - s);
  std::size_t colons = 0;
  for (char c : token) colons += c == ':';
  // Times ("10:30:00") and MAC addresses have neither "::" nor 7 colons.
  if (token.find("::") == std::string_view::npos && colons != 7) return seen;
  if (ipv6_valid(token)) push(out, s, e, label);
  return seen;
}

examined_range extract_aws_secret(const text_view& t, std::size_t to, std::uint16_t label,
                                  std::vector<candidate>& out) {
  constexpr std::size_t context_gap_bytes_max = 64;
  const std::size_t start_limit = std::min(t.n, to + context_gap_bytes_max);
  std::size_t i = to;
  while (i < t.n && is_b64(t.p[i]) && i > 0 && is_b64(t.p[i - 1])) ++i;  // the rest of the context word
  while (i <= start_limit && i < t.n) {
    const unsigned char c = t.p[i];
    if (c == '\n' || c == '\r') break;
    if (!is_b64(c)) {
      ++i;
      continue;
    }
    const std::size_t a = i;
    while (i < t.n && is_b64(t.p[i]) && i - a <= 40) ++i;
    if (i - a == 40 && t.at(i) != '=' && !is_b64(t.at(i))) {
      // Hex digests (SHA-1 is 40 hex characters) are not keys; a real key
      // is all-hex with probability (22/64)^40.
      bool hex_only = true;
      for (std::size_t k = a; k < i && hex_only; ++k) hex_only = is_hex(t.p[k]);
      if (!hex_only) {
        push(out, a, i, label);
        return {to, i};
      }
    }
    while (i < t.n && is_b64(t.p[i])) ++i;
  }
  return {to, i};
}

// What follows a literal anchor ending at `to`: at least `min_body` bytes of
// `cls` (exactly `min_body` when `exact`), not glued to a word before it.
template <typename Class>
examined_range anchored_token(const text_view& t, std::size_t to, std::size_t anchor_len, std::size_t min_body,
                              bool exact, Class cls, std::uint16_t label, std::vector<candidate>& out) {
  const std::size_t s = to - anchor_len;
  std::size_t e = to;
  while (e < t.n && cls(t.p[e]) && e - to < token_bytes_max) ++e;
  const examined_range seen{s, e};
  if (e - to < min_body || (exact && e - to != min_body)) return seen;
  const unsigned char b = t.before(s);
  if (is_alnum(b) || b == '_') return seen;
  push(out, s, e, label);
  return seen;
}

examined_range extract_jwt(const text_view& t, std::size_t to, std::uint16_t label, std::vector<candidate>& out) {
  const std::size_t s = to - 3;  // "eyJ": the header
  const unsigned char b = t.before(s);
  if (is_b64url(b) || b == '.') return {to, to};  // a payload's "eyJ", or inside a word
  std::size_t e = to;
  while (e < t.n && is_b64url(t.p[e]) && e - s < jwt_part_bytes_max) ++e;
  if (t.at(e) != '.' || t.at(e + 1) != 'e' || t.at(e + 2) != 'y' || t.at(e + 3) != 'J') return {s, e};
  const std::size_t payload = e + 1;
  e = payload + 3;
  while (e < t.n && is_b64url(t.p[e]) && e - payload < jwt_part_bytes_max) ++e;
  if (t.at(e) != '.') return {s, e};
  ++e;
  const std::size_t sig = e;
  while (e < t.n && is_b64url(t.p[e]) && e - sig < jwt_part_bytes_max) ++e;
  const examined_range seen{s, e};
  if (is_b64url(t.at(e)) || t.at(e) == '.') return seen;
  push(out, s, e, label);
  return seen;
}

const unsigned char* find_bytes(const unsigned char* from, const unsigned char* to, std::string_view needle) {
  if (to - from < static_cast<std::ptrdiff_t>(needle.size())) return nullptr;
  const void* hit = memmem(from, static_cast<std::size_t>(to - from), needle.data(), needle.size());
  return static_cast<const unsigned char*>(hit);
}

examined_range extract_private_key(const text_view& t, std::size_t to, std::uint16_t label,
                                   std::vector<candidate>& out) {
  static constexpr std::string_view tail = "PRIVATE KEY-----";
  const std::size_t s = to - 11;  // "-----BEGIN "
  // "RSA ", "EC ", "OPENSSH ", "ENCRYPTED " or nothing, then the tail.
  std::size_t i = to;
  while (i < t.n && (is_upper(t.p[i]) || is_digit(t.p[i]) || t.p[i] == ' ') && i - to < pem_begin_bytes_max) {
    if (t.n - i >= tail.size() && std::memcmp(t.p + i, tail.data(), tail.size()) == 0) break;
    ++i;
  }
  if (t.n - i < tail.size() || std::memcmp(t.p + i, tail.data(), tail.size()) != 0) return {s, to};
  const std::size_t header_end = i + tail.size();
  // The END line, else (a truncated or cut key) everything to the end of the
  // value: a partial key must not leak either.
  const std::size_t limit = t.n - header_end > pem_block_bytes_max ? header_end + pem_block_bytes_max : t.n;
  std::size_t e = limit;
  if (const unsigned char* end = find_bytes(t.p + header_end, t.p + limit, "-----END ")) {
    if (const unsigned char* last = find_bytes(end, t.p + limit, tail))
      e = static_cast<std::size_t>(last - t.p) + tail.size();
  }
  push(out, s, e, label);
  return {s, e};
}

}  // namespace

namespace {

// The next ASCII digit at or after i, or n.
std::size_t next_digit(const unsigned char* p, std::size_t i, std::size_t n) {
#if defined(__SSE2__)
  const __m128i zero = _mm_set1_epi8('0');
  const __m128i nine = _mm_set1_epi8(9);
  for (; i + 16 <= n; i += 16) {
    const __m128i x = _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)), zero);
    const auto mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(x, nine), x)));
    if (mask != 0) return i + static_cast<std::size_t>(__builtin_ctz(mask));
  }
#endif
  while (i < n && !is_digit(p[i])) ++i;
  return i;
}

bool run_separator(unsigned char c) { return c == ' ' || c == '-' || c == '.'; }

void examine_run(const text_view& t, std::size_t rs, std::size_t re, std::size_t digits, const digit_detectors& on,
                 std::vector<candidate>& out) {
  const auto card = static_cast<std::uint16_t>(detector::credit_card);
  const auto ssn = static_cast<std::uint16_t>(detector::us_ssn);
  const auto phone = static_cast<std::uint16_t>(detector::phone);
  const auto iban = static_cast<std::uint16_t>(detector::iban);
  if (on.card && digits >= 13) {
    // Card tokens do not cross a '.': each dot-free piece is one token.
    std::size_t piece_digits = 0;
    for (std::size_t i = rs; i <= re; ++i) {
      if (i == re || t.p[i] == '.') {
        if (piece_digits >= 13) extract_card(t, i, card, out);
        piece_digits = 0;
      } else {
        piece_digits += is_digit(t.p[i]);
      }
    }
  }
  if (on.ssn || on.phone) {
    // Every end of a group of digits may end an SSN or a dashed phone
    // number; the extractors check the exact shape and the surroundings.
    for (std::size_t i = rs + 1; i <= re; ++i) {
      if (i < re && is_digit(t.p[i])) continue;
      if (!is_digit(t.p[i - 1])) continue;
      if (on.ssn && i - rs >= 11) extract_ssn(t, i, ssn, out);
      if (on.phone && i - rs >= 12) extract_phone_dash(t, i, phone, out);
    }
  }
  if (on.iban) extract_iban(t, rs, iban, out);
}

}  // namespace

void scan_digit_runs(std::string_view text, const digit_detectors& on, std::vector<candidate>& out) {
  if (!on.card && !on.ssn && !on.phone && !on.iban) return;
  const text_view t{reinterpret_cast<const unsigned char*>(text.data()), text.size()};
  std::size_t i = 0;
  while ((i = next_digit(t.p, i, t.n)) < t.n) {
    const std::size_t rs = i;
    std::size_t digits = 0;
    while (i < t.n) {
      if (is_digit(t.p[i])) {
        ++digits;
        ++i;
      } else if (run_separator(t.p[i]) && i + 1 < t.n && is_digit(t.p[i + 1])) {
        ++i;
      } else {
        break;
      }
    }
    // Nine digits: the fewest any of the four holds (an SSN; IBANs are
    // found from a run of at least nine digits in their BBAN).
    if (digits >= 9) examine_run(t, rs, i, digits, on, out);
  }
}

std::string_view detector_name(detector d) { return names[static_cast<std::size_t>(d)]; }

std::span<const detector_expression> detector_expressions() { return expressions; }

examined_range extract(shape what, std::string_view text, std::size_t to, std::uint16_t label,
                       std::vector<candidate>& out) {
  const text_view t{reinterpret_cast<const unsigned char*>(text.data()), text.size()};
  assert(to <= t.n);
  auto upper_digit = [](unsigned char c) { return is_upper(c) || is_digit(c); };
  auto gcp_class = [](unsigned char c) { return is_alnum(c) || c == '_' || c == '-'; };
  auto slack_class = [](unsigned char c) { return is_alnum(c) || c == '-'; };
  auto gitlab_class = [](unsigned char c) { return is_alnum(c) || c == '_' || c == '-' || c == '.'; };
  switch (what) {
    case shape::card: return extract_card(t, to, label, out);
    case shape::email: return extract_email(t, to, label, out);
    case shape::ssn: return extract_ssn(t, to, label, out);
    case shape::iban: return extract_iban(t, to, label, out);  // `to`: where a run of digits starts
    case shape::phone_plus: return extract_phone_plus(t, to, label, out);
    case shape::phone_paren: return extract_phone_paren(t, to, label, out);
    case shape::phone_dash: return extract_phone_dash(t, to, label, out);
    case shape::ipv4: return extract_ipv4(t, to, label, out);
    case shape::ipv6: return extract_ipv6(t, to, label, out);
    case shape::aws_access: return anchored_token(t, to, 4, 16, true, upper_digit, label, out);
    case shape::aws_secret: return extract_aws_secret(t, to, label, out);
    case shape::gcp: return anchored_token(t, to, 4, 35, true, gcp_class, label, out);
    case shape::github_classic: return anchored_token(t, to, 4, 36, false, is_alnum, label, out);
    case shape::github_pat: return anchored_token(t, to, 11, 22, false, is_word, label, out);
    case shape::gitlab: return anchored_token(t, to, 6, 20, false, gitlab_class, label, out);
    case shape::slack: return anchored_token(t, to, 5, 10, false, slack_class, label, out);
    case shape::stripe: return anchored_token(t, to, 8, 10, false, is_alnum, label, out);
    case shape::jwt: return extract_jwt(t, to, label, out);
    case shape::private_key: return extract_private_key(t, to, label, out);
  }
  return {to, to};
}

}  // namespace agentgate::masking
