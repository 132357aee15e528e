// The masking engine behind data_masker: defaults, styles per type, column
// plans and rules, binary formats, hashing, counters and build errors.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include "masking_test_util.h"

namespace agentgate::masking {
namespace {

using testing::bytes;
using testing::make_masker;
using testing::masked_text;
using testing::masked_value;
using testing::only;
using testing::text_column;
using testing::write_key_file;

constexpr std::uint32_t oid_bool = 16, oid_bytea = 17, oid_char = 18, oid_int8 = 20, oid_int2 = 21, oid_int4 = 23,
                        oid_text = 25, oid_json = 114, oid_xml = 142, oid_cidr = 650, oid_float8 = 701,
                        oid_inet = 869, oid_bpchar = 1042, oid_varchar = 1043, oid_date = 1082,
                        oid_timestamptz = 1184, oid_numeric = 1700, oid_uuid = 2950, oid_jsonb = 3802,
                        oid_text_array = 1009, oid_citext_like = 16385;

std::string be(std::int64_t v, std::size_t width) {
  std::string s;
  for (std::size_t i = width; i-- > 0;) s += static_cast<char>((static_cast<std::uint64_t>(v) >> (i * 8)) & 0xff);
  return s;
}

TEST(MaskEngine, DefaultsTurnEverythingOnButIp) {
  auto engine = mask_engine::build(masking_settings{});
  ASSERT_TRUE(engine.is_ok());
  EXPECT_TRUE(engine.value()->active());
  for (std::size_t i = 0; i < detector_count; ++i) {
    const auto d = static_cast<detector>(i);
    const bool ip = d == detector::ipv4 || d == detector::ipv6;
    EXPECT_EQ(engine.value()->style(d), ip ? mask_style::off : mask_style::redact) << detector_name(d);
  }
  // A listed detector keeps its style; "off" disables one; unlisted stay default.
  masking_settings s;
  s.detectors = {{"email", mask_style::off}, {"ipv4", mask_style::partial}};
  auto e2 = mask_engine::build(s);
  ASSERT_TRUE(e2.is_ok());
  EXPECT_EQ(e2.value()->style(detector::email), mask_style::off);
  EXPECT_EQ(e2.value()->style(detector::ipv4), mask_style::partial);
  EXPECT_EQ(e2.value()->style(detector::credit_card), mask_style::redact);
  auto m = make_masker(s);
  EXPECT_EQ(masked_text(*m, "alice@example.com at 10.1.2.3"), "alice@example.com at [REDACTED:ipv4]");
}

TEST(MaskEngine, InactiveOnlyWhenNothingMasks) {
  masking_settings s = only({});
  auto e = mask_engine::build(s);
  ASSERT_TRUE(e.is_ok());
  EXPECT_FALSE(e.value()->active());
  auto m = make_masker(s);
  EXPECT_FALSE(m->active());
  EXPECT_EQ(m->plan(text_column()).how, column_plan::mode::pass);
  EXPECT_EQ(m->plan(text_column("n", oid_int8)).how, column_plan::mode::pass);

  s.columns.push_back({"secret", "", mask_style::redact});
  EXPECT_TRUE(mask_engine::build(s).value()->active());
  s = only({});
  s.patterns.push_back({"emp", "EMP-[0-9]{6}", mask_style::redact});
  EXPECT_TRUE(mask_engine::build(s).value()->active());
  EXPECT_TRUE(mask_engine::build(only({{"jwt", mask_style::hash}}, mask_style::off)).is_ok() == false);
}

TEST(MaskEngine, BadRegexesAreNamed) {
  masking_settings s;
  s.patterns.push_back({"good", "EMP-[0-9]{6}", mask_style::redact});
  s.patterns.push_back({"broken", "(unclosed", mask_style::redact});
  auto e = mask_engine::build(s);
  ASSERT_FALSE(e.is_ok());
  EXPECT_EQ(e.error().code(), errc::invalid_argument);
  EXPECT_NE(e.error().message().find("masking.patterns[1] (\"broken\")"), std::string::npos) << e.error().message();

  masking_settings c;
  c.columns.push_back({"(?i)password", "", mask_style::redact});
  c.columns.push_back({"[a-", "", mask_style::redact});
  auto e2 = mask_engine::build(c);
  ASSERT_FALSE(e2.is_ok());
  EXPECT_NE(e2.error().message().find("masking.columns[1].name"), std::string::npos) << e2.error().message();

  masking_settings empty;
  empty.patterns.push_back({"all", "x*", mask_style::redact});
  EXPECT_FALSE(mask_engine::build(empty).is_ok());
}

TEST(MaskEngine, HashKeyIsRequiredAndChecked) {
  masking_settings s = only({{"email", mask_style::hash}});
  EXPECT_FALSE(mask_engine::build(s).is_ok());  // no key file
  s.hash_key_file = "/nonexistent/agentgate-key";
  auto e = mask_engine::build(s);
  ASSERT_FALSE(e.is_ok());
  EXPECT_NE(e.error().message().find("cannot read"), std::string::npos);
  s.hash_key_file = write_key_file("short", "short\n");
  e = mask_engine::build(s);
  ASSERT_FALSE(e.is_ok());
  EXPECT_NE(e.error().message().find("fewer than 16"), std::string::npos);
}

TEST(MaskEngine, Counters) {
  masking_settings s;
  s.columns.push_back({"password", "", mask_style::redact});
  s.columns.push_back({"ssn", "", mask_style::null});
  s.patterns.push_back({"emp", "EMP-[0-9]{6}", mask_style::redact});
  auto m = make_masker(s);
  ASSERT_NE(m, nullptr);
  const auto names = m->hit_names();
  ASSERT_EQ(names.size(), detector_count + 3);
  EXPECT_EQ(names[0], "credit_card");
  EXPECT_EQ(names[15], "private_key");
  EXPECT_EQ(names[16], "column:0");
  EXPECT_EQ(names[17], "column:1");
  EXPECT_EQ(names[18], "pattern:emp");

  EXPECT_EQ(masked_text(*m, "EMP-123456 and EMP-654321 mailed bob@example.com"),
            "[REDACTED:emp] and [REDACTED:emp] mailed [REDACTED:email]");
  EXPECT_EQ(masked_value(*m, text_column("password"), "hunter2"), "[REDACTED]");
  EXPECT_EQ(masked_value(*m, text_column("ssn"), "123-45-6789"), std::nullopt);
  const auto hits = m->hits();
  EXPECT_EQ(hits[static_cast<std::size_t>(detector::email)], 1u);
  EXPECT_EQ(hits[16], 1u);
  EXPECT_EQ(hits[17], 1u);
  EXPECT_EQ(hits[18], 2u);
  EXPECT_EQ(m->bytes_scanned(), 48u + 7u + 11u);
}

TEST(Styles, Redact) {
  auto m = make_masker(masking_settings{});
  EXPECT_EQ(masked_text(*m, "card 4111-1111-1111-1111 ok"), "card [REDACTED:credit_card] ok");
}

TEST(Styles, Partial) {
  auto m = make_masker(only({{"credit_card", mask_style::partial},
                             {"email", mask_style::partial},
                             {"phone", mask_style::partial},
                             {"us_ssn", mask_style::partial},
                             {"iban", mask_style::partial},
                             {"aws_access_key", mask_style::partial}}));
  EXPECT_EQ(masked_text(*m, "4111 1111 1111 1111"), "**** **** **** 1111");
  EXPECT_EQ(masked_text(*m, "4111111111111111"), "************1111");
  EXPECT_EQ(masked_text(*m, "mail alice.smith@example.com."), "mail ****@example.com.");
  EXPECT_EQ(masked_text(*m, "(415) 555-2671"), "(***) ***-2671");
  EXPECT_EQ(masked_text(*m, "+44 20 7946 0958"), "+** ** **** 0958");
  EXPECT_EQ(masked_text(*m, "123-45-6789"), "***-**-6789");
  EXPECT_EQ(masked_text(*m, "GB82 WEST 1234 5698 7654 32"), "**** **** **** **** **54 32");
  // Secrets keep nothing.
  EXPECT_EQ(masked_text(*m, "AKIAIOSFODNN7EXAMPLE"), "[REDACTED:aws_access_key]");
}

TEST(Styles, HashIsStableAndKeyed) {
  masking_settings s = only({{"credit_card", mask_style::hash}, {"email", mask_style::hash}});
  s.hash_key_file = write_key_file("a", "0123456789abcdef0123456789abcdef\n");
  auto m1 = make_masker(s);
  auto m2 = make_masker(s);
  const std::string h = masked_text(*m1, "4111111111111111");
  ASSERT_EQ(h.size(), 5u + 16u);
  EXPECT_EQ(h.substr(0, 5), "hash:");
  EXPECT_EQ(h.find_first_not_of("0123456789abcdef", 5), std::string::npos);
  EXPECT_EQ(masked_text(*m2, "4111111111111111"), h);       // another shard, same key
  EXPECT_EQ(masked_text(*m1, "4111 1111 1111 1111"), h);    // separators do not matter
  EXPECT_NE(masked_text(*m1, "5555555555554444"), h);
  EXPECT_EQ(masked_text(*m1, "x alice@example.com y"), "x " + masked_text(*m2, "alice@example.com") + " y");

  s.hash_key_file = write_key_file("b", "another key, also 16+ bytes long");
  auto m3 = make_masker(s);
  EXPECT_NE(masked_text(*m3, "4111111111111111"), h);
}

TEST(Styles, NullOnlyForWholeValues) {
  auto m = make_masker(only({{"email", mask_style::null}}));
  EXPECT_EQ(masked_value(*m, text_column(), "alice@example.com"), std::nullopt);
  EXPECT_EQ(masked_value(*m, text_column(), "to: alice@example.com"), "to: [REDACTED:email]");
  // Free text is never NULL.
  std::string out;
  EXPECT_EQ(m->mask_text(bytes("alice@example.com"), out), mask_outcome::rewritten);
  EXPECT_EQ(out, "[REDACTED:email]");
}

TEST(MaskText, KeepsCopyFraming) {
  masking_settings s;
  s.patterns.push_back({"kv", "secret=[^ ]+", mask_style::redact});
  auto m = make_masker(s);
  // A PEM block in a COPY text row: its "\n" escapes and the tabs stay.
  const std::string row =
      "1\t-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBg\\n-----END PRIVATE KEY-----\tbob@example.com\n";
  EXPECT_EQ(masked_text(*m, row),
            "1\t[REDACTED:private_key]\\n[REDACTED:private_key]\\n[REDACTED:private_key]\t[REDACTED:email]\n");
  // A policy pattern that swallows CSV separators leaves them in place.
  EXPECT_EQ(masked_text(*m, "a,secret=x,y,\"z\"\n"), "a,[REDACTED:kv],[REDACTED:kv],\"[REDACTED:kv]\"\n");
  // What is inserted never holds framing bytes.
  auto p = make_masker(only({{"credit_card", mask_style::partial}, {"email", mask_style::partial}}));
  const std::string csv = "4111 1111 1111 1111,\"alice@example.com\",x\n";
  EXPECT_EQ(masked_text(*p, csv), "**** **** **** 1111,\"****@example.com\",x\n");
}

TEST(Plans, ByTypeOid) {
  auto m = make_masker(masking_settings{});
  struct row {
    std::uint32_t oid;
    column_plan::mode how;
  };
  const row rows[] = {
      {0, column_plan::mode::text},          {oid_text, column_plan::mode::text},
      {oid_varchar, column_plan::mode::text}, {oid_bpchar, column_plan::mode::text},
      {19, column_plan::mode::text},          {oid_json, column_plan::mode::text},
      {oid_jsonb, column_plan::mode::text},   {oid_xml, column_plan::mode::text},
      {705, column_plan::mode::text},         {oid_text_array, column_plan::mode::text},
      {1015, column_plan::mode::text},        {oid_citext_like, column_plan::mode::text},
      {oid_int2, column_plan::mode::numeric}, {oid_int4, column_plan::mode::numeric},
      {oid_int8, column_plan::mode::numeric}, {oid_numeric, column_plan::mode::numeric},
      {oid_bool, column_plan::mode::pass},    {oid_bytea, column_plan::mode::pass},
      {oid_char, column_plan::mode::pass},    {oid_float8, column_plan::mode::pass},
      {700, column_plan::mode::pass},         {oid_date, column_plan::mode::pass},
      {1083, column_plan::mode::pass},        {1266, column_plan::mode::pass},
      {1114, column_plan::mode::pass},        {oid_timestamptz, column_plan::mode::pass},
      {1186, column_plan::mode::pass},        {oid_uuid, column_plan::mode::pass},
      {26, column_plan::mode::pass},          {790, column_plan::mode::pass},
      {oid_inet, column_plan::mode::pass},    {oid_cidr, column_plan::mode::pass},
  };
  for (const row& r : rows) {
    const column_plan p = m->plan(text_column("c", r.oid));
    EXPECT_EQ(p.how, r.how) << "oid " << r.oid;
    EXPECT_EQ(p.type_oid, r.oid);
  }
  // inet is scanned once an IP detector is on; card off turns numeric off.
  auto ip = make_masker(only({{"ipv4", mask_style::redact}}));
  EXPECT_EQ(ip->plan(text_column("c", oid_inet)).how, column_plan::mode::text);
  EXPECT_EQ(ip->plan(text_column("c", oid_int8)).how, column_plan::mode::pass);
  // An address is the whole inet value and no replacement is an inet: NULL.
  EXPECT_EQ(masked_value(*ip, text_column("c", oid_inet), "10.1.2.3/32"), std::nullopt);
}

TEST(Plans, ColumnRules) {
  masking_settings s;
  s.columns.push_back({"(?i)password|secret", "", mask_style::redact});
  s.columns.push_back({"^email$", "public.users", mask_style::partial});
  s.columns.push_back({"^phone$", "customers", mask_style::null});
  s.columns.push_back({"^notes$", "", mask_style::off});
  s.columns.push_back({"email", "", mask_style::hash});
  s.hash_key_file = write_key_file("rules", "0123456789abcdef0123456789abcdef");
  auto m = make_masker(s);

  result_column c = text_column("user_PASSWORD");
  column_plan p = m->plan(c);
  EXPECT_EQ(p.how, column_plan::mode::forced);
  EXPECT_EQ(p.rule, 0);
  EXPECT_EQ(p.style, mask_style::redact);

  // Alias in the result, real attname resolved: the attname matches.
  c = text_column("x");
  c.column = "api_secret";
  c.table = "public.keys";
  EXPECT_EQ(m->plan(c).rule, 0);

  // Table by full name or by its table part; the first rule that applies wins.
  c = text_column("email");
  c.table = "public.users";
  p = m->plan(c);
  EXPECT_EQ(p.rule, 1);
  EXPECT_EQ(p.style, mask_style::partial);
  c.table = "PUBLIC.USERS";
  EXPECT_EQ(m->plan(c).rule, 1);
  c.table = "audit.users";
  EXPECT_EQ(m->plan(c).rule, 4);  // rule 1 wants public.users
  c.table = "";                    // not tied to a table: table rules do not apply
  EXPECT_EQ(m->plan(c).rule, 4);

  c = text_column("phone");
  c.table = "sales.customers";
  EXPECT_EQ(m->plan(c).rule, 2);
  c.table = "sales.customers_old";
  EXPECT_EQ(m->plan(c).how, column_plan::mode::text);

  const auto tables = m->rule_tables();
  ASSERT_EQ(tables.size(), 2u);
  EXPECT_EQ(tables[0], "customers");
  EXPECT_EQ(tables[1], "public.users");

  // "off" exempts the column: nothing is scanned.
  EXPECT_EQ(m->plan(text_column("notes")).how, column_plan::mode::pass);
  EXPECT_EQ(m->plan(text_column("other")).how, column_plan::mode::text);
}

TEST(Forced, StylesPerType) {
  masking_settings s;
  s.columns.push_back({"^r_", "", mask_style::redact});
  s.columns.push_back({"^p_", "", mask_style::partial});
  s.columns.push_back({"^h_", "", mask_style::hash});
  s.columns.push_back({"^n_", "", mask_style::null});
  s.hash_key_file = write_key_file("forced", "0123456789abcdef0123456789abcdef");
  auto m = make_masker(s);
  auto col = [](std::string_view name, std::uint32_t oid, bool binary = false) {
    result_column c;
    c.name = name;
    c.type_oid = oid;
    c.binary = binary;
    return c;
  };
  // Text.
  EXPECT_EQ(masked_value(*m, col("r_t", oid_text), "hunter2"), "[REDACTED]");
  EXPECT_EQ(masked_value(*m, col("p_t", oid_varchar), "555-867-5309"), "***-***-5309");
  EXPECT_EQ(masked_value(*m, col("p_t", oid_text), "héllo wörld"), "***** w*rld");  // one * per code point
  EXPECT_EQ(masked_value(*m, col("h_t", oid_text), "hunter2")->substr(0, 5), "hash:");
  EXPECT_EQ(masked_value(*m, col("n_t", oid_text), "hunter2"), std::nullopt);
  EXPECT_EQ(masked_value(*m, col("r_t", oid_text, true), "hunter2"), "[REDACTED]");
  // Integers: digits zeroed but the last four; hash cannot be an integer.
  EXPECT_EQ(masked_value(*m, col("r_i", oid_int8), "4111111111111111"), "1111");
  EXPECT_EQ(masked_value(*m, col("p_i", oid_int4), "-123456"), "-3456");
  EXPECT_EQ(masked_value(*m, col("p_i", oid_int4), "42"), "42");
  EXPECT_EQ(masked_value(*m, col("h_i", oid_int8), "123456"), std::nullopt);
  EXPECT_EQ(masked_value(*m, col("r_i", oid_int8, true), be(4111111111111111, 8)), be(1111, 8));
  EXPECT_EQ(masked_value(*m, col("r_i", oid_int4, true), be(-1234567, 4)), be(-4567, 4));
  EXPECT_EQ(masked_value(*m, col("r_i", oid_int2, true), be(-32768, 2)), be(-2768, 2));
  // numeric: text keeps its shape; binary has no masked form.
  EXPECT_EQ(masked_value(*m, col("r_n", oid_numeric), "123456.78"), "56.78");  // the last four digits overall
  EXPECT_EQ(masked_value(*m, col("r_n", oid_numeric), "NaN"), std::nullopt);
  EXPECT_EQ(masked_value(*m, col("r_n", oid_numeric, true), std::string("\0\1\0\0\0\0\0\0\0\1", 10)),
            std::nullopt);
  // JSON stays JSON.
  EXPECT_EQ(masked_value(*m, col("r_j", oid_json), "{\"a\":1}"), "\"[REDACTED]\"");
  EXPECT_EQ(masked_value(*m, col("r_j", oid_jsonb, true), std::string("\1{\"a\":1}")), "\1\"[REDACTED]\"");
  // No masked value of these types exists.
  for (std::uint32_t oid : {oid_date, oid_uuid, oid_bool, oid_timestamptz, oid_inet, oid_text_array, oid_char})
    EXPECT_EQ(masked_value(*m, col("r_x", oid), "whatever"), std::nullopt) << oid;
}

TEST(Numeric, CardsInIntegerColumns) {
  auto m = make_masker(masking_settings{});
  auto col = [](std::uint32_t oid, bool binary = false) {
    result_column c;
    c.name = "n";
    c.type_oid = oid;
    c.binary = binary;
    return c;
  };
  EXPECT_EQ(masked_value(*m, col(oid_int8), "4111111111111111"), "1111");
  EXPECT_EQ(masked_value(*m, col(oid_int8), "-4111111111111111"), "-1111");
  EXPECT_EQ(masked_value(*m, col(oid_numeric), "4111111111111111.00"), "1111.00");
  EXPECT_EQ(masked_value(*m, col(oid_int8), "4111111111111112"), "4111111111111112");    // Luhn
  EXPECT_EQ(masked_value(*m, col(oid_int8), "1234567890123452"), "1234567890123452");    // issuer 1
  EXPECT_EQ(masked_value(*m, col(oid_int8), "9223372036854775807"), "9223372036854775807");
  EXPECT_EQ(masked_value(*m, col(oid_int4), "123456789"), "123456789");
  EXPECT_EQ(masked_value(*m, col(oid_numeric), "1.5e20"), "1.5e20");
  // Binary int8: decoded to decimal, re-encoded in the same width.
  EXPECT_EQ(masked_value(*m, col(oid_int8, true), be(4111111111111111, 8)), be(1111, 8));
  EXPECT_EQ(masked_value(*m, col(oid_int8, true), be(-4111111111111111, 8)), be(-1111, 8));
  EXPECT_EQ(masked_value(*m, col(oid_int8, true), be(4111111111111112, 8)), be(4111111111111112, 8));
  EXPECT_EQ(masked_value(*m, col(oid_int4, true), be(2147483647, 4)), be(2147483647, 4));
  // numeric binary passes (documented).
  const std::string nb("\0\4\0\3\0\0\0\0\x10\x0f\x04\x57\x04\x57\x04\x57", 16);
  EXPECT_EQ(masked_value(*m, col(oid_numeric, true), nb), nb);
  EXPECT_EQ(m->hits()[static_cast<std::size_t>(detector::credit_card)], 5u);

  auto h = make_masker(only({{"credit_card", mask_style::null}}));
  EXPECT_EQ(masked_value(*h, col(oid_int8), "4111111111111111"), std::nullopt);
  EXPECT_EQ(masked_value(*h, col(oid_int8, true), be(4111111111111111, 8)), std::nullopt);
}

TEST(TextTypes, BinaryAndJson) {
  auto m = make_masker(masking_settings{});
  auto col = [](std::uint32_t oid, bool binary = false) {
    result_column c;
    c.name = "doc";
    c.type_oid = oid;
    c.binary = binary;
    return c;
  };
  // Binary text is the bytes themselves.
  EXPECT_EQ(masked_value(*m, col(oid_text, true), "to bob@example.com"), "to [REDACTED:email]");
  // JSON: strings keep their quotes; a bare number becomes a string.
  EXPECT_EQ(masked_value(*m, col(oid_json), R"({"card": 4111111111111111, "mail": "x bob@example.com"})"),
            R"({"card": "[REDACTED:credit_card]", "mail": "x [REDACTED:email]"})");
  EXPECT_EQ(masked_value(*m, col(oid_jsonb, true), std::string("\1") + R"({"mail": "bob@example.com"})"),
            std::string("\1") + R"({"mail": "[REDACTED:email]"})");
  // A service-account key: the escapes survive, so the JSON stays valid.
  EXPECT_EQ(masked_value(*m, col(oid_jsonb),
                         R"({"private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----\n"})"),
            R"({"private_key": "[REDACTED:private_key]\n[REDACTED:private_key]\n[REDACTED:private_key]\n"})");
  // Unknown jsonb version or binary arrays: nothing safe to rewrite, NULL.
  EXPECT_EQ(masked_value(*m, col(oid_jsonb, true), std::string("\2\"bob@example.com\"")), std::nullopt);
  EXPECT_EQ(masked_value(*m, col(oid_text_array, true), std::string("\0\0\0\1bob@example.com", 19)), std::nullopt);
  // Text arrays in text format are rewritten in place.
  EXPECT_EQ(masked_value(*m, col(oid_text_array), "{bob@example.com,\"x y\"}"), "{[REDACTED:email],\"x y\"}");
  // Passed types are not even looked at.
  EXPECT_EQ(masked_value(*m, col(oid_bytea), "bob@example.com"), "bob@example.com");
  EXPECT_EQ(masked_value(*m, col(oid_uuid), "bob@example.com"), "bob@example.com");
}


// --- streamed values ----------------------------------------------------------

// Streams `in` through a fresh stream in pieces: the first `first` bytes, then
// `piece` at a time. The output, or nullopt on an error.
std::optional<std::string> streamed(value_stream& s, std::string_view in, std::size_t first, std::size_t piece) {
  std::string out;
  std::size_t at = 0;
  for (bool head = true; at < in.size(); head = false) {
    const std::size_t n = std::min(head ? first : piece, in.size() - at);
    if (!s.feed(bytes(in.substr(at, n)), out).is_ok()) return std::nullopt;
    at += n;
  }
  if (!s.finish(out).is_ok()) return std::nullopt;
  return out;
}

std::unique_ptr<value_stream> text_stream(data_masker& m) {
  auto s = m.stream_text();
  EXPECT_TRUE(s.is_ok());
  return std::move(s.value());
}

TEST(Streamed, CardAndEmailSplitAtEveryOffset) {
  auto m = make_masker(only({{"credit_card", mask_style::partial}, {"email", mask_style::partial}}));
  // Longer than the lag, so bytes are released before the end; the card
  // sits where the lag falls after the first slice.
  const std::string pad(stream_lag_bytes - 10, 'x');
  const std::string in = pad + " 4111 1111 1111 1111 " + pad + " alice.smith@example.com, bob@example.org\n";
  const std::string want = pad + " **** **** **** 1111 " + pad + " ***********@example.com, ***@example.org\n";
  const auto card = static_cast<std::size_t>(detector::credit_card);
  const auto email = static_cast<std::size_t>(detector::email);
  for (std::size_t k = 0; k <= in.size(); ++k) {
    const std::uint64_t cards = m->hits()[card], emails = m->hits()[email];
    auto s = text_stream(*m);
    const auto out = streamed(*s, in, k, in.size());
    ASSERT_TRUE(out.has_value());
    ASSERT_EQ(out->size(), in.size()) << "split at " << k;
    ASSERT_TRUE(*out == want) << "split at " << k;
    ASSERT_EQ(m->hits()[card] - cards, 1u) << "split at " << k;
    ASSERT_EQ(m->hits()[email] - emails, 2u) << "split at " << k;
    EXPECT_TRUE(s->rewritten());
  }
  for (std::size_t p : {1, 2, 3, 7, 19, 64, 1000, 4095, 4096, 4097}) {
    auto s = text_stream(*m);
    const auto out = streamed(*s, in, p, p);
    ASSERT_TRUE(out.has_value());
    ASSERT_TRUE(*out == want) << "pieces of " << p;
  }
  // Redact, hash and null cannot change the length: '*' fill, separators kept.
  auto r = make_masker(only({{"credit_card", mask_style::redact}, {"email", mask_style::null}}));
  auto s = text_stream(*r);
  EXPECT_EQ(streamed(*s, "card 4111-1111-1111-1111, mail alice.smith@example.com", 3, 5),
            "card ****-****-****-****, mail *****.*************.***");
}

TEST(Streamed, MemoryIsBounded) {
  auto m = make_masker(only({{"credit_card", mask_style::partial}, {"email", mask_style::partial}}));
  auto s = text_stream(*m);
  // 64 KiB pieces; a card spans every boundary between them, an email sits
  // in the middle of each.
  constexpr std::size_t piece_bytes = 64 * 1024, pieces = 1024;
  std::string piece(piece_bytes, 'a');
  for (std::size_t i = 79; i < piece_bytes; i += 80) piece[i] = ' ';
  piece.replace(0, 10, "1111 1111 ");  // the second half of the card the previous piece starts
  piece.replace(piece_bytes / 2, 25, " carol.jones@example.com ");
  piece.replace(piece_bytes - 11, 11, " 4111 1111 ");
  std::string out, tail;
  std::size_t total = 0, raw_cards = 0, masked_cards = 0;
  std::size_t held_max = 0;
  auto look = [&](std::size_t from) {
    const std::string window = tail + out.substr(from);
    for (std::size_t at = window.find("4111 1111 1111 1111"); at != std::string::npos;
         at = window.find("4111 1111 1111 1111", at + 1))
      ++raw_cards;
    for (std::size_t at = window.find("**** **** **** 1111"); at != std::string::npos;
         at = window.find("**** **** **** 1111", at + 1))
      ++masked_cards;
    EXPECT_EQ(window.find("carol.jones@"), std::string::npos);
    tail = window.substr(window.size() > 64 ? window.size() - 64 : 0);
  };
  for (std::size_t i = 0; i < pieces; ++i) {
    out.clear();
    ASSERT_TRUE(s->feed(bytes(piece), out).is_ok());
    total += out.size();
    look(0);
    held_max = std::max(held_max, s->held_bytes());
    ASSERT_LE(s->held_bytes(), stream_held_bytes_max);
  }
  out.clear();
  ASSERT_TRUE(s->finish(out).is_ok());
  total += out.size();
  look(0);
  EXPECT_EQ(total, piece_bytes * pieces);
  EXPECT_EQ(raw_cards, 0u);
  EXPECT_EQ(masked_cards, pieces - 1);
  EXPECT_EQ(m->hits()[static_cast<std::size_t>(detector::credit_card)], pieces - 1);
  EXPECT_EQ(m->hits()[static_cast<std::size_t>(detector::email)], pieces);
  // Plain text holds the lag and a little context, not a slice.
  EXPECT_LE(held_max, stream_lag_bytes + stream_context_bytes + 64);
  EXPECT_EQ(m->bytes_scanned(), piece_bytes * pieces);
}

TEST(Streamed, LongTokensAreHeldWhole) {
  auto m = make_masker(masking_settings{});
  // A JWT longer than the lag, fed in small pieces.
  const std::string jwt = "eyJhbGciOiJIUzI1NiJ9.eyJ" + std::string(10000, 'Q') + ".c2ln";
  const std::string in = "token " + jwt + " end";
  auto s = text_stream(*m);
  const auto out = streamed(*s, in, 100, 100);
  ASSERT_TRUE(out.has_value());
  EXPECT_TRUE(*out == "token " + std::string(20, '*') + "." + std::string(10003, '*') + ".**** end");

  // A private key block longer than a held token: masked to its END line.
  std::string body;
  for (int i = 0; i < 3000; ++i) body += std::string(64, 'A' + i % 26) + "\n";
  const std::string pem = "-----BEGIN PRIVATE KEY-----\n" + body + "-----END PRIVATE KEY-----";
  const std::string text = "key: " + pem + "\nafter 4111111111111111\n";
  auto p = text_stream(*m);
  const auto masked = streamed(*p, text, 4096, 4096);
  ASSERT_TRUE(masked.has_value());
  ASSERT_EQ(masked->size(), text.size());
  const std::string head = "key: -----***** ******* ***-----\n";
  EXPECT_EQ(masked->substr(0, head.size()), head);
  const std::string key_part = masked->substr(5, pem.size());
  EXPECT_EQ(key_part.find_first_not_of("*-\n "), std::string::npos);
  EXPECT_EQ(masked->substr(5 + pem.size()), "\nafter ****************\n");
  // Without an END line, to the end of the value.
  auto q = text_stream(*m);
  const std::string cut = "key: -----BEGIN RSA PRIVATE KEY-----\n" + body;
  const auto masked_cut = streamed(*q, cut, 65536, 65536);
  ASSERT_TRUE(masked_cut.has_value());
  EXPECT_EQ(masked_cut->substr(5).find_first_not_of("*-\n "), std::string::npos);
}

TEST(Streamed, ColumnsByPlan) {
  masking_settings s = only({{"credit_card", mask_style::partial}, {"email", mask_style::redact}});
  s.columns.push_back({"^secret$", "", mask_style::redact});
  s.columns.push_back({"^gone$", "", mask_style::null});
  auto m = make_masker(s);
  auto run = [&](const result_column& c, std::string_view in) -> std::optional<std::string> {
    auto st = m->stream_value(m->plan(c));
    if (!st.is_ok()) return std::nullopt;
    return streamed(*st.value(), in, 3, 2);
  };
  result_column bin_int8 = text_column("n", oid_int8);
  bin_int8.binary = true;
  result_column bin_array = text_column("tags", oid_text_array);
  bin_array.binary = true;
  result_column bin_jsonb = text_column("doc", oid_jsonb);
  bin_jsonb.binary = true;
  // Scanned and numeric columns.
  EXPECT_EQ(run(text_column(), "a 4111111111111111 b"), "a ************1111 b");
  EXPECT_EQ(run(text_column("doc", oid_json), R"({"m":"bob@example.com"})"), R"({"m":"***********.***"})");
  EXPECT_EQ(run(bin_jsonb, std::string("\x01") + R"({"m":"bob@example.com"})"),
            std::string("\x01") + R"({"m":"***********.***"})");
  EXPECT_EQ(run(text_column("n", oid_int8), "4111111111111111"), "0000000000001111");
  EXPECT_EQ(run(text_column("n", oid_numeric), "-4111111111111111.50"), "-0000000000001111.50");
  EXPECT_EQ(run(text_column("n", oid_int8), "1234"), "1234");
  EXPECT_EQ(run(bin_int8, be(4111111111111111, 8)), be(1111, 8));
  EXPECT_EQ(run(text_column("b", oid_bytea), "\\x4111111111111111"), "\\x4111111111111111");
  EXPECT_EQ(run(bin_array, "no match here"), "no match here");
  EXPECT_EQ(run(bin_array, "bob@example.com"), std::nullopt);  // cannot be rewritten in place
  // Column rules: '*' fill for text, digits for numbers, JSON stays a string.
  EXPECT_EQ(run(text_column("secret"), "hunter2"), "*******");
  EXPECT_EQ(run(text_column("secret", oid_json), R"({"a":1})"), R"("*****")");
  EXPECT_EQ(run(text_column("secret", oid_int8), "-123456"), "-003456");
  EXPECT_EQ(run(text_column("gone", oid_int4), "123456"), "000000");
  EXPECT_EQ(run(text_column("secret", oid_numeric), "NaN"), std::nullopt);
  EXPECT_EQ(run(text_column("secret", oid_date), "2024-01-01"), std::nullopt);
  EXPECT_EQ(run(text_column("secret", oid_uuid), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), std::nullopt);
  auto st = m->stream_value(m->plan(text_column("secret", oid_date)));
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.error().message().find("masked_row_bytes_max"), std::string::npos) << st.error().message();
}

TEST(Streamed, CopyRowsKeepFraming) {
  auto m = make_masker(only({{"credit_card", mask_style::redact}, {"private_key", mask_style::redact}}));
  const std::string row =
      "1\t4111 1111 1111 1111\t\"x\"\t-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\n";
  for (std::size_t p = 1; p <= row.size(); ++p) {
    auto s = text_stream(*m);
    ASSERT_EQ(streamed(*s, row, p, p),
              "1\t**** **** **** ****\t\"x\"\t-----***** ******* ***-----\\n****\\n-----*** ******* ***-----\n")
        << "pieces of " << p;
  }
}
}  // namespace
}  // namespace agentgate::masking
