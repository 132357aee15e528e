#pragma once
// The detector catalogue: what each content detector asks Hyperscan for, and
// how a match end becomes a validated candidate.
//
// Hyperscan is asked for match END offsets only (no HS_FLAG_SOM_LEFTMOST,
// which costs 10-60x), and only for literal anchors ("@", "AKIA", "eyJ",
// "-----BEGIN ", ...): the database is pure literals, cheap per call. On a
// callback the extractor for that shape walks backwards and forwards over
// the detector's own character class to find the whole token, then runs the
// validator (Luhn, mod-97, SSN rules, octets, inet_pton) on it. The caller
// remembers the token each extractor examined, so several ends reported
// inside one token cost one examination. Digit-shaped detectors have no
// literal and are found from runs of digits (scan_digit_runs below).
// docs/masking.md has the catalogue.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace agentgate::masking {

// Same order as core/policy.h's known_mask_detectors(); a test keeps them equal.
enum class detector : std::uint8_t {
  credit_card,
  email,
  us_ssn,
  iban,
  phone,
  ipv4,
  ipv6,
  aws_access_key,
  aws_secret_key,
  gcp_api_key,
  github_token,
  gitlab_token,
  slack_token,
  stripe_key,
  jwt,
  private_key,
};
inline constexpr std::size_t detector_count = 16;

std::string_view detector_name(detector d);

// How a match end is turned into a candidate. A detector may have several.
enum class shape : std::uint8_t {
  card,
  email,
  ssn,
  iban,
  phone_plus,   // +CC... (E.164 and international spacing)
  phone_paren,  // (415) 555-2671
  phone_dash,   // 415-555-2671, 415.555.2671
  ipv4,
  ipv6,
  aws_access,
  aws_secret,
  gcp,
  github_classic,
  github_pat,
  gitlab,
  slack,
  stripe,
  jwt,
  private_key,
};
inline constexpr std::size_t shape_count = 19;

struct detector_expression {
  shape what;
  detector owner;
  const char* regex;  // Hyperscan syntax, compiled without SOM
};

std::span<const detector_expression> detector_expressions();

// One validated match: [start, end) in the scanned bytes; `label` is the
// caller's counter index (detector, column rule or pattern).
struct candidate {
  std::uint32_t start = 0;
  std::uint32_t end = 0;
  std::uint16_t label = 0;
};

// The bytes an extractor looked at. Any later match end of the same shape
// inside (start, end] names the same token and is skipped.
struct examined_range {
  std::size_t start = 0;
  std::size_t end = 0;
};

// Examines the token around `match_end` (Hyperscan's `to`) and appends the
// validated candidates it holds to `out`, labelled `label`.
examined_range extract(shape what, std::string_view text, std::size_t match_end, std::uint16_t label,
                       std::vector<candidate>& out);

// Card numbers, SSNs, dashed phone numbers and IBANs are not in the
// Hyperscan database: they are found from runs of at least nine digits
// (joined by single spaces, dashes or dots), which a SIMD loop skips to, and
// the run is handed to the same extractors. Labels are the detector indexes.
struct digit_detectors {
  bool card = false;
  bool ssn = false;
  bool phone = false;
  bool iban = false;
};
void scan_digit_runs(std::string_view text, const digit_detectors& on, std::vector<candidate>& out);

}  // namespace agentgate::masking
