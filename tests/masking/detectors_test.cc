// One fixture table per detector: what it must find (the whole match is
// replaced, nothing around it) and the near misses it must leave alone.
// Each detector runs alone so a near miss cannot be hidden by another one.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "masking/detectors.h"
#include "masking/validators.h"
#include "masking_test_util.h"

namespace agentgate::masking {
namespace {

using testing::make_masker;
using testing::masked_text;
using testing::masked_value;
using testing::text_column;
using testing::only;

struct fixture {
  std::string detector;
  std::vector<std::string> positives;
  std::vector<std::string> near_misses;
  std::string context = {};  // put before every value (aws_secret_key needs one)
};

std::string repeat_alnum(std::size_t n, unsigned seed = 1) {
  static constexpr char alphabet[] = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += alphabet[(i * 7 + seed) % (sizeof alphabet - 1)];
  return s;
}

std::vector<fixture> fixtures() {
  const std::string sha1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
  const std::string uuid = "550e8400-e29b-41d4-a716-446655440000";
  return {
      {"credit_card",
       {"4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444", "378282246310005",
        "3782 822463 10005", "6011111111111117", "4012888888881881", "2223003122003222"},
       {"4111111111111112", "978-0-306-40615-7", "9780306406157", "1234567890123452" /* Luhn-valid, issuer 1 */,
        "ORD-20240115-000123", "2024-01-15 10:30:00", "0.4111111111111111", "41111111111111111111", sha1, uuid,
        "x4111111111111111", "1.2.3.4", "12345"}},
      {"email",
       {"alice@example.com", "bob.smith+tag@mail.example.co.uk", "x_1@sub-domain.example.org"},
       {"user@localhost", "@example.com", "a@b.c", "foo@bar", "version 1.2.3@4", "mailto:@x.io", "a@-x.com",
        uuid, sha1}},
      {"us_ssn",
       {"123-45-6789", "078-05-1120", "001-01-0001"},
       {"000-12-3456", "666-12-3456", "900-12-3456", "999-99-9999", "123-00-4567", "123-45-0000", "2024-01-15",
        "1123-45-6789", "123-45-67890", "123-45-6789-1", "12-345-6789", "a123-45-6789"}},
      {"iban",
       {"DE89370400440532013000", "GB82WEST12345698765432", "GB82 WEST 1234 5698 7654 32",
        "FR1420041010050500013M02606", "NL91ABNA0417164300", "NO9386011117947", "BE68 5390 0754 7034"},
       {"DE89370400440532013001", "XX89370400440532013000", "DE8937040044053201300", "DE893704004405320130001",
        "ABCDE89370400440532013000", "de89370400440532013000", "ISBN9780306406157"}},
      {"phone",
       {"+14155552671", "+44 20 7946 0958", "(415) 555-2671", "(415)555-2671", "415-555-2671", "415.555.2671",
        "+1 (415) 555-2671", "+49-30-1234567"},
       {"2024-01-15", "123-456-7890", "+1", "+12345", "1.2.3.4", "10:30:00+10", "555-1234", "2024-01-15 10:30:00",
        "415-555-26711", "1415-555-2671", "v415-555-2671", "192.168.100.1000", "+1234567890123456789", uuid}},
      {"ipv4",
       {"192.168.1.10", "10.0.0.1", "255.255.255.255", "8.8.8.8"},
       {"256.1.1.1", "1.2.3", "1.2.3.4.5", "v1.2.3.4", "1.2.3.4a", "1234.1.1.1", "2024-01-15"}},
      {"ipv6",
       {"2001:db8::1", "fe80::1ff:fe23:4567:890a", "::1", "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "::ffff:192.0.2.1"},
       {"10:30:00", "aa:bb:cc:dd:ee:ff", "std::vector", "2024-01-15 10:30:00", "1:2:3", "x::1"}},
      {"aws_access_key",
       {"AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A"},
       {"AKIAIOSFODNN7EXAMPL", "AKIAIOSFODNN7EXAMPLE1", "XAKIAIOSFODNN7EXAMPLE", "akiaiosfodnn7example",
        "AKIAiosfodnn7example"}},
      {"aws_secret_key",
       {"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"},
       {sha1, "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYX" /* 41 */, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKE" /* 39 */,
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY==", "line\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
       "aws_secret_access_key = "},
      {"gcp_api_key",
       {"AIza" + repeat_alnum(35), "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"},
       {"AIza" + repeat_alnum(34), "AIza" + repeat_alnum(36), "Aiza" + repeat_alnum(35)}},
      {"github_token",
       {"ghp_" + repeat_alnum(36), "gho_" + repeat_alnum(36, 3), "ghs_" + repeat_alnum(36, 5),
        "github_pat_11ABCDEFG0123456789abc_" + repeat_alnum(59)},
       {"ghp_" + repeat_alnum(35), "ghx_" + repeat_alnum(36), "xghp_" + repeat_alnum(36), "github_pat_short"}},
      {"gitlab_token",
       {"glpat-" + repeat_alnum(20), "glpat-xY9_zk-3abcdEFGHijkl"},
       {"glpat-" + repeat_alnum(19), "glpat_" + repeat_alnum(20)}},
      {"slack_token",
       {"xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxp-1234-5678-abcdefgh"},
       {"xoxb-12", "xoxz-123456789012-1234567890123", "xoxb-"}},
      {"stripe_key",
       {"sk_live_" + repeat_alnum(24), "rk_live_" + repeat_alnum(24), "sk_test_" + repeat_alnum(99)},
       {"pk_live_" + repeat_alnum(24), "sk_live_short", "task_live_" + repeat_alnum(24)}},
      {"jwt",
       {"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc123_-xyzSIG", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."},
       {"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0", "eyJhbGciOiJIUzI1NiJ9.abc.def", "abc.eyJx.y"}},
      {"private_key",
       {"-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
        "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHzBJBgkqhkiG9w0BBQ0wPDAbBgkqhkiG9w0BBQwwDgQI\n"
        "-----END ENCRYPTED PRIVATE KEY-----"},
       {"-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\n"
        "-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}},
  };
}

TEST(Detectors, NamesMatchThePolicyList) {
  const auto known = known_mask_detectors();
  ASSERT_EQ(known.size(), detector_count);
  for (std::size_t i = 0; i < detector_count; ++i) EXPECT_EQ(known[i], detector_name(static_cast<detector>(i)));
  ASSERT_EQ(fixtures().size(), detector_count);
}

TEST(Detectors, PositivesAreReplacedWhole) {
  for (const fixture& f : fixtures()) {
    auto m = make_masker(only({{f.detector, mask_style::redact}}));
    ASSERT_NE(m, nullptr);
    const std::string label = "[REDACTED:" + f.detector + "]";
    // Values, not free text: a PEM block's newlines are part of the match
    // there (mask_text keeps them; see MaskText.KeepsCopyFraming).
    const result_column col = text_column();
    const std::string& c = f.context;
    for (const std::string& p : f.positives) {
      EXPECT_EQ(masked_value(*m, col, c + p), c + label) << f.detector << ": " << p;
      EXPECT_EQ(masked_value(*m, col, c + "see " + p + " now"), c + "see " + label + " now") << f.detector << ": " << p;
      EXPECT_EQ(masked_value(*m, col, c + "(" + p + ");"), c + "(" + label + ");") << f.detector << ": " << p;
    }
    const auto names = m->hit_names();
    const auto hits = m->hits();
    for (std::size_t i = 0; i < names.size(); ++i)
      EXPECT_EQ(hits[i], names[i] == f.detector ? 3 * f.positives.size() : 0) << names[i];
  }
}

TEST(Detectors, NearMissesAreLeftAlone) {
  for (const fixture& f : fixtures()) {
    auto m = make_masker(only({{f.detector, mask_style::redact}}));
    ASSERT_NE(m, nullptr);
    for (const std::string& bare : f.near_misses) {
      const std::string n = f.context + bare;
      EXPECT_EQ(masked_text(*m, n), n) << f.detector << " matched near miss: " << n;
      EXPECT_EQ(masked_text(*m, "note: " + n + " end"), "note: " + n + " end") << f.detector << ": " << n;
    }
    // Without its context, a secret key is not recognised (documented).
    if (f.detector == "aws_secret_key") {
      for (const std::string& p : f.positives) EXPECT_EQ(masked_text(*m, "k " + p), "k " + p);
    }
  }
}

// The default set must leave an ordinary result alone.
TEST(Detectors, DefaultSetIgnoresOrdinaryText) {
  masking_settings s;
  auto m = make_masker(s);
  ASSERT_NE(m, nullptr);
  const std::vector<std::string> benign = {
      "2024-01-15 10:30:00", "2024-01-15T10:30:00.123456+00:00", "550e8400-e29b-41d4-a716-446655440000",
      "da39a3ee5e6b4b0d3255bfef95601890afd80709", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      "version 1.2.3.4 released", "ORD-20240115-000123", "ISBN 978-0-306-40615-7", "192.168.1.10", "fe80::1",
      "Total: 1234.56 EUR, 42 items", "The quick brown fox jumps over the lazy dog.", "id=9223372036854775807",
      "SELECT * FROM users WHERE id = 42", "{\"a\": [1, 2, 3], \"b\": null}", "C:\\Program Files\\App\\app.exe",
      "https://example.com/path?q=1&r=2", "+00", "12:00:00+05:30"};
  for (const std::string& b : benign) EXPECT_EQ(masked_text(*m, b), b);
}

TEST(Detectors, SeveralMatchesInOneValue) {
  auto m = make_masker(masking_settings{});
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(masked_text(*m, "alice@example.com paid with 4111 1111 1111 1111, ssn 123-45-6789."),
            "[REDACTED:email] paid with [REDACTED:credit_card], ssn [REDACTED:us_ssn].");
  // Two cards in one run of space-separated groups.
  EXPECT_EQ(masked_text(*m, "4111 1111 1111 1111 5555 5555 5555 4444"),
            "[REDACTED:credit_card] [REDACTED:credit_card]");
}

// COPY and CSV rows: a comma ends a number (the next field is not part of
// it), and a COPY text escape before the digits does not glue to them.
TEST(Detectors, CopyAndCsvFramingDoesNotHideNumbers) {
  auto m = make_masker(masking_settings{});
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(masked_text(*m, "1,4111 1111 1111 1111,123"), "1,[REDACTED:credit_card],123");
  EXPECT_EQ(masked_text(*m, "4111111111111111,123-45-6789"), "[REDACTED:credit_card],[REDACTED:us_ssn]");
  EXPECT_EQ(masked_text(*m, "note\\n4111 1111 1111 1111\\tx"), "note\\n[REDACTED:credit_card]\\tx");
  EXPECT_EQ(masked_text(*m, "ref4111111111111111"), "ref4111111111111111");  // glued to a word
}

TEST(Detectors, OverlapsMergeLeftmostLongest) {
  auto m = make_masker(masking_settings{});
  ASSERT_NE(m, nullptr);
  // The card's digits are also the email's local part: the email starts
  // first and covers the card.
  EXPECT_EQ(masked_text(*m, "4111111111111111@example.com"), "[REDACTED:email]");
  // A JWT whose signature is also a 40-character base64 run: the JWT starts
  // first and wins.
  const std::string jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCd";
  EXPECT_EQ(masked_text(*m, "secret " + jwt), "secret [REDACTED:jwt]");
  EXPECT_EQ(m->hits()[static_cast<std::size_t>(detector::jwt)], 1u);
  EXPECT_EQ(m->hits()[static_cast<std::size_t>(detector::aws_secret_key)], 0u);
}

TEST(Detectors, TruncatedPrivateKeyIsMaskedToTheEnd) {
  auto m = make_masker(masking_settings{});
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(masked_value(*m, text_column(),
                         "key: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6"),
            "key: [REDACTED:private_key]");
}

TEST(Detectors, LongRunsStayLinear) {
  auto m = make_masker(masking_settings{});
  ASSERT_NE(m, nullptr);
  // A megabyte of digits, of base64 and of hex-with-colons: nothing is a
  // match, and each costs one examination per token, not per byte.
  for (char c : {'7', 'A'}) {
    const std::string big(1 << 20, c);
    EXPECT_EQ(masked_text(*m, big), big);
  }
  std::string colons;
  while (colons.size() < (1 << 20)) colons += "ab:";
  EXPECT_EQ(masked_text(*m, colons), colons);
}

TEST(Validators, Luhn) {
  EXPECT_TRUE(luhn_valid("4111111111111111"));
  EXPECT_FALSE(luhn_valid("4111111111111112"));
  EXPECT_FALSE(luhn_valid(""));
  EXPECT_FALSE(luhn_valid("41x1"));
  EXPECT_TRUE(plausible_card("378282246310005"));
  EXPECT_FALSE(plausible_card("1234567890123452"));
  EXPECT_FALSE(plausible_card("411111111111"));
}

TEST(Validators, Iban) {
  EXPECT_TRUE(iban_valid("DE89370400440532013000"));
  EXPECT_FALSE(iban_valid("DE89370400440532013001"));
  EXPECT_FALSE(iban_valid("DE8937040044053201300"));
  EXPECT_EQ(iban_length('N', 'O'), 15u);
  EXPECT_EQ(iban_length('U', 'S'), 0u);
}

TEST(Validators, SsnAndIp) {
  EXPECT_TRUE(ssn_valid(123, 45, 6789));
  EXPECT_FALSE(ssn_valid(0, 45, 6789));
  EXPECT_FALSE(ssn_valid(666, 45, 6789));
  EXPECT_FALSE(ssn_valid(901, 45, 6789));
  EXPECT_FALSE(ssn_valid(123, 0, 6789));
  EXPECT_FALSE(ssn_valid(123, 45, 0));
  EXPECT_TRUE(ipv4_valid("0.0.0.0"));
  EXPECT_FALSE(ipv4_valid("1.2.3.256"));
  EXPECT_FALSE(ipv4_valid("1..2.3"));
  EXPECT_TRUE(ipv6_valid("::"));
  EXPECT_FALSE(ipv6_valid("1:2:3"));
}

}  // namespace
}  // namespace agentgate::masking
