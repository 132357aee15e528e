#include "protocols/postgres/result_filter.h"

#include <gtest/gtest.h>

#include <optional>

namespace agentgate::pg {
namespace {

// Masks the word "secret" in text; a column named "ssn" is forced to NULL;
// int8 columns (OID 20) are numeric: 16 digits become zeros but the last 4.
class fake_masker final : public data_masker {
 public:
  bool active() const override { return true; }
  column_plan plan(const result_column& c) override {
    column_plan p;
    p.type_oid = c.type_oid;
    p.binary = c.binary;
    if (c.name == "ssn") {
      p.how = column_plan::mode::forced;
      p.style = mask_style::null;
    } else if (c.type_oid == 20) {
      p.how = column_plan::mode::numeric;
    } else if (c.type_oid == 16) {
      p.how = column_plan::mode::pass;
    } else {
      p.how = column_plan::mode::text;
    }
    return p;
  }
  mask_outcome mask_value(const column_plan& plan, std::span<const uint8_t> value, std::string& out) override {
    ++values_seen;
    if (plan.how == column_plan::mode::forced) return mask_outcome::null;
    const std::string v(value.begin(), value.end());
    if (plan.how == column_plan::mode::numeric) {
      if (plan.binary) return mask_outcome::unchanged;
      if (v.size() != 16) return mask_outcome::unchanged;
      out = "000000000000" + v.substr(12);
      return mask_outcome::rewritten;
    }
    return mask_text(value, out);
  }
  mask_outcome mask_text(std::span<const uint8_t> text, std::string& out) override {
    std::string v(text.begin(), text.end());
    const size_t at = v.find("secret");
    if (at == std::string::npos) return mask_outcome::unchanged;
    v.replace(at, 6, "[REDACTED]");
    out += v;
    ++hits_[0];
    return mask_outcome::rewritten;
  }
  std::span<const std::string> hit_names() const override { return names_; }
  std::span<const uint64_t> hits() const override { return hits_; }
  uint64_t bytes_scanned() const override { return 0; }
  int values_seen = 0;

 private:
  std::vector<std::string> names_{"word"};
  std::vector<uint64_t> hits_{0};
};

bytes as_bytes(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

std::string u16(uint16_t v) { return std::string{static_cast<char>(v >> 8), static_cast<char>(v)}; }
std::string u32(uint32_t v) {
  std::string s;
  append_u32(s, v);
  return s;
}
std::string frame(char type, const std::string& body) {
  std::string out;
  append_frame(out, type, body);
  return out;
}

struct col {
  std::string name;
  uint32_t type;
  uint16_t format = 0;
};

std::string row_description(const std::vector<col>& cols) {
  std::string body = u16(static_cast<uint16_t>(cols.size()));
  for (const col& c : cols) {
    body += c.name + '\0';
    body += u32(0) + u16(0) + u32(c.type) + u16(0xffff) + u32(0xffffffff) + u16(c.format);
  }
  return frame('T', body);
}

std::string data_row(const std::vector<std::optional<std::string>>& values) {
  std::string body = u16(static_cast<uint16_t>(values.size()));
  for (const auto& v : values) {
    if (!v) {
      body += u32(0xffffffff);
    } else {
      body += u32(static_cast<uint32_t>(v->size())) + *v;
    }
  }
  return frame('D', body);
}

// Decodes a DataRow back into values, checking every length on the way.
std::vector<std::optional<std::string>> decode_row(const std::string& f) {
  EXPECT_EQ(f[0], 'D');
  EXPECT_EQ(read_u32(reinterpret_cast<const uint8_t*>(f.data()) + 1), f.size() - 1);
  const auto* p = reinterpret_cast<const uint8_t*>(f.data()) + 5;
  const uint16_t n = read_u16(p);
  p += 2;
  std::vector<std::optional<std::string>> out;
  for (uint16_t i = 0; i < n; ++i) {
    const uint32_t len = read_u32(p);
    p += 4;
    if (len == 0xffffffff) {
      out.emplace_back(std::nullopt);
      continue;
    }
    out.emplace_back(std::string(reinterpret_cast<const char*>(p), len));
    p += len;
  }
  EXPECT_EQ(p, reinterpret_cast<const uint8_t*>(f.data()) + f.size());
  return out;
}

class result_filter_test : public ::testing::Test {
 protected:
  result_filter_test() { filter.set_masker(masker); }

  result_filter::action backend(const std::string& f) {
    const header_result h = decode_header(direction::backend, as_bytes(f), 1u << 20);
    EXPECT_EQ(h.status, frame_status::frame);
    out.clear();
    return filter.on_backend(h.header, as_bytes(f), out);
  }
  void frontend(const std::string& f) { filter.on_frontend(f[0], as_bytes(f).subspan(5), 7); }

  std::shared_ptr<fake_masker> masker = std::make_shared<fake_masker>();
  result_filter filter;
  std::string out;
};

TEST_F(result_filter_test, simple_query_rows_are_rewritten_with_valid_lengths) {
  frontend(frame('Q', std::string("select\0", 7)));
  EXPECT_EQ(backend(row_description({{"note", 25}, {"card", 20}, {"ssn", 25}, {"flag", 16}})),
            result_filter::action::pass);
  EXPECT_EQ(backend(data_row({"a secret here", "4111111111111111", "123-45-6789", "secret"})),
            result_filter::action::rewritten);
  const auto values = decode_row(out);
  ASSERT_EQ(values.size(), 4u);
  EXPECT_EQ(values[0], "a [REDACTED] here");
  EXPECT_EQ(values[1], "0000000000001111");
  EXPECT_EQ(values[2], std::nullopt);
  EXPECT_EQ(values[3], "secret");  // booleans are never scanned
  // A row with nothing to mask passes untouched; NULLs stay NULL.
  EXPECT_EQ(backend(data_row({"plain", std::nullopt, std::nullopt, "t"})), result_filter::action::pass);
  EXPECT_EQ(backend(frame('C', std::string("SELECT 2\0", 9))), result_filter::action::pass);
  EXPECT_EQ(filter.ended_seq(), 7u);
  ASSERT_EQ(filter.last_columns().size(), 4u);
  EXPECT_EQ(filter.last_columns()[1].name, "card");
}

TEST_F(result_filter_test, field_count_disagreeing_with_description_fails_closed) {
  frontend(frame('Q', std::string("select\0", 7)));
  backend(row_description({{"note", 25}}));
  EXPECT_EQ(backend(data_row({"a", "b"})), result_filter::action::fail);
  EXPECT_NE(filter.failure().find("RowDescription"), std::string::npos);
}

TEST_F(result_filter_test, truncated_data_row_fails_closed) {
  frontend(frame('Q', std::string("select\0", 7)));
  backend(row_description({{"note", 25}}));
  std::string body = u16(1) + u32(100) + "short";
  EXPECT_EQ(backend(frame('D', body)), result_filter::action::fail);
}

// Parse/Describe(S)/Sync, then Bind with binary results/Execute/Sync: the
// rows carry no description, the statement's is used in Bind's formats.
TEST_F(result_filter_test, extended_protocol_uses_the_statement_description) {
  frontend(frame('P', std::string("s1\0select\0", 10) + u16(0)));
  frontend(frame('D', std::string("Ss1\0", 4)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('t', u16(0)));
  backend(row_description({{"card", 20}, {"note", 25}}));
  backend(frame('Z', "I"));

  // Bind portal "" to s1, result formats: binary for all.
  frontend(frame('B', std::string("\0s1\0", 4) + u16(0) + u16(0) + u16(1) + u16(1)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  backend(frame('2', ""));
  // Binary int8 card is left to the masker (numeric, binary: unchanged here);
  // the binary text column is still scanned as text.
  EXPECT_EQ(backend(data_row({std::string(8, '\x01'), "my secret"})), result_filter::action::rewritten);
  const auto values = decode_row(out);
  EXPECT_EQ(values[1], "my [REDACTED]");
  backend(frame('C', std::string("SELECT 1\0", 9)));
  backend(frame('Z', "I"));
}

// What JDBC does past prepareThreshold: Parse S_1 + Bind + Describe(portal)
// + Execute, then later only Bind(S_1, binary formats) + Execute.
TEST_F(result_filter_test, a_described_portal_describes_its_statement) {
  frontend(frame('P', std::string("S_1\0select\0", 11) + u16(0)));
  frontend(frame('B', std::string("\0S_1\0", 5) + u16(0) + u16(0) + u16(0)));
  frontend(frame('D', std::string("P\0", 2)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('2', ""));
  backend(row_description({{"note", 25}, {"card", 20}}));
  EXPECT_EQ(backend(data_row({"a secret", "1"})), result_filter::action::rewritten);
  backend(frame('C', std::string("SELECT 1\0", 9)));
  backend(frame('Z', "I"));

  frontend(frame('B', std::string("\0S_1\0", 5) + u16(0) + u16(0) + u16(2) + u16(0) + u16(1)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  backend(frame('2', ""));
  EXPECT_EQ(backend(data_row({"the secret", std::string(8, '\0')})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out)[0], "the [REDACTED]");
}

TEST_F(result_filter_test, binary_rows_of_an_undescribed_statement_are_refused) {
  frontend(frame('P', std::string("s2\0select\0", 10) + u16(0)));
  frontend(frame('B', std::string("\0s2\0", 4) + u16(0) + u16(0) + u16(1) + u16(1)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('2', ""));
  EXPECT_EQ(backend(data_row({"x"})), result_filter::action::fail);
}

TEST_F(result_filter_test, text_rows_of_an_undescribed_statement_are_scanned_as_text) {
  frontend(frame('P', std::string("s3\0select\0", 10) + u16(0)));
  frontend(frame('B', std::string("\0s3\0", 4) + u16(0) + u16(0) + u16(0)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('2', ""));
  EXPECT_EQ(backend(data_row({"the secret", "x"})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out)[0], "the [REDACTED]");
}

TEST_F(result_filter_test, error_detail_and_notification_payload_are_masked) {
  frontend(frame('Q', std::string("insert\0", 7)));
  std::string body = std::string("SERROR\0C23505\0Mduplicate key\0DKey (v)=(secret) exists.\0", 55) + '\0';
  ASSERT_EQ(backend(frame('E', body)), result_filter::action::rewritten);
  EXPECT_NE(out.find("Key (v)=([REDACTED]) exists."), std::string::npos);
  EXPECT_NE(out.find("C23505"), std::string::npos);
  EXPECT_EQ(read_u32(reinterpret_cast<const uint8_t*>(out.data()) + 1), out.size() - 1);
  EXPECT_EQ(backend(frame('A', u32(42) + std::string("chan\0a secret\0", 14))), result_filter::action::rewritten);
  EXPECT_NE(out.find("a [REDACTED]"), std::string::npos);
}

TEST_F(result_filter_test, copy_out_text_rows_are_masked_and_binary_copy_is_refused) {
  frontend(frame('Q', std::string("copy\0", 5)));
  EXPECT_EQ(backend(frame('H', std::string(1, '\0') + u16(1) + u16(0))), result_filter::action::pass);
  EXPECT_EQ(backend(frame('d', "1\tsecret\n")), result_filter::action::rewritten);
  EXPECT_EQ(out, frame('d', "1\t[REDACTED]\n"));
  backend(frame('c', ""));
  backend(frame('C', std::string("COPY 1\0", 7)));
  backend(frame('Z', "I"));
  frontend(frame('Q', std::string("copy\0", 5)));
  EXPECT_EQ(backend(frame('H', std::string(1, '\1') + u16(1) + u16(1))), result_filter::action::fail);
}

TEST_F(result_filter_test, inactive_masker_passes_everything) {
  filter.set_masker(nullptr);
  frontend(frame('Q', std::string("select\0", 7)));
  backend(row_description({{"ssn", 25}}));
  EXPECT_EQ(backend(data_row({"secret"})), result_filter::action::pass);
  EXPECT_EQ(masker->values_seen, 0);
}

}  // namespace
}  // namespace agentgate::pg
