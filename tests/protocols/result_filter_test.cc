#include "protocols/postgres/result_filter.h"

#include <gtest/gtest.h>

#include <optional>

#include "masking/data_masker.h"

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
  // A client message; counts the Describes the filter asks the gateway to
  // send before an Execute (a test, as the server, must answer them).
  bool frontend(const std::string& f) {
    const bool ok = filter.on_frontend(f[0], as_bytes(f).subspan(5), 7);
    if (!filter.describe_to_inject().empty()) {
      ++injected;
      EXPECT_EQ(filter.describe_to_inject()[0], 'D');
      EXPECT_EQ(filter.describe_to_inject()[5], 'P');
    }
    return ok;
  }
  int injected = 0;

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

// Parse/Describe(S), then Bind with binary results/Execute/Sync in the same
// batch: the rows carry no description, the statement's is used in Bind's
// formats.
TEST_F(result_filter_test, extended_protocol_uses_the_statement_description) {
  frontend(frame('P', std::string("s1\0select\0", 10) + u16(0)));
  frontend(frame('D', std::string("Ss1\0", 4)));
  // Bind portal "" to s1, result formats: binary for all.
  frontend(frame('B', std::string("\0s1\0", 4) + u16(0) + u16(0) + u16(1) + u16(1)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('t', u16(0)));
  backend(row_description({{"card", 20}, {"note", 25}}));
  backend(frame('2', ""));
  // Binary int8 card is left to the masker (numeric, binary: unchanged here);
  // the binary text column is still scanned as text.
  EXPECT_EQ(backend(data_row({std::string(8, '\x01'), "my secret"})), result_filter::action::rewritten);
  const auto values = decode_row(out);
  EXPECT_EQ(values[1], "my [REDACTED]");
  backend(frame('C', std::string("SELECT 1\0", 9)));
  backend(frame('Z', "I"));
  EXPECT_EQ(injected, 0);
}

// A Sync commits, and a commit can run code (deferred triggers, WITH HOLD
// cursors) that replaces a statement: a description from before it is not
// trusted (finding 4 of the review of issue 10).
TEST_F(result_filter_test, a_statement_described_before_a_sync_is_described_again) {
  frontend(frame('P', std::string("s1\0select\0", 10) + u16(0)));
  frontend(frame('D', std::string("Ss1\0", 4)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('t', u16(0)));
  backend(row_description({{"flag", 16}}));
  backend(frame('Z', "I"));
  frontend(frame('B', std::string("\0s1\0", 4) + u16(0) + u16(0) + u16(0)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  EXPECT_EQ(injected, 1);
  backend(frame('2', ""));
  EXPECT_EQ(backend(row_description({{"ssn", 25}})), result_filter::action::drop);
  ASSERT_EQ(backend(data_row({"123-45-6789"})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out)[0], std::nullopt);
}

// Answers that do not answer the message at the front end the session
// rather than being paired with the wrong statement (finding 1 of the
// review: a Query the server skipped after an error left a Sync behind).
TEST_F(result_filter_test, an_answer_that_does_not_fit_fails_closed) {
  frontend(frame('P', std::string("\0select\0", 8) + u16(0)));
  EXPECT_EQ(backend(frame('2', "")), result_filter::action::fail);
  result_filter other;
  other.set_masker(masker);
  other.on_frontend('S', {});
  EXPECT_EQ([&] {
    const std::string f = data_row({"x"});
    const header_result h = decode_header(direction::backend, as_bytes(f), 1u << 20);
    return other.on_backend(h.header, as_bytes(f), out);
  }(), result_filter::action::fail);
}

// COPY FROM STDIN over the extended protocol, as libpq sends it: the Sync
// behind the Execute is ignored by the server in COPY-in mode, the one
// after CopyDone answered.
TEST_F(result_filter_test, syncs_a_server_in_copy_in_mode_ignores_are_not_awaited) {
  frontend(frame('P', std::string("\0copy\0", 6) + u16(0)));
  frontend(frame('B', std::string("\0\0", 2) + u16(0) + u16(0) + u16(0)));
  frontend(frame('D', std::string("P\0", 2)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('2', ""));
  backend(frame('n', ""));
  EXPECT_EQ(backend(frame('G', std::string(1, '\0') + u16(0))), result_filter::action::pass);
  EXPECT_EQ(filter.take_ignored_syncs(), 1u);
  EXPECT_TRUE(filter.copy_in());
  frontend(frame('d', "1\n"));
  frontend(frame('S', ""));  // ignored too
  frontend(frame('c', ""));
  EXPECT_FALSE(filter.copy_in());
  frontend(frame('S', ""));
  EXPECT_EQ(backend(frame('C', std::string("COPY 1\0", 7))), result_filter::action::pass);
  EXPECT_EQ(backend(frame('Z', "I")), result_filter::action::pass);
  // In step afterwards: the next batch's answers fit.
  frontend(frame('P', std::string("\0select\0", 8) + u16(0)));
  frontend(frame('B', std::string("\0\0", 2) + u16(0) + u16(0) + u16(0)));
  frontend(frame('D', std::string("P\0", 2)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  EXPECT_EQ(backend(frame('1', "")), result_filter::action::pass);
  EXPECT_EQ(backend(frame('2', "")), result_filter::action::pass);
  EXPECT_EQ(backend(row_description({{"ssn", 25}})), result_filter::action::pass);
  ASSERT_EQ(backend(data_row({"123-45-6789"})), result_filter::action::rewritten);
  // All pipelined before the CopyInResponse: the CopyDone marks the end.
  result_filter f2;
  f2.on_frontend('Q', as_bytes(std::string("copy\0", 5)));
  const std::string d = frame('d', "1\n");
  f2.on_frontend('S', {});
  f2.on_frontend('c', {});
  f2.on_frontend('S', {});
  const std::string g = frame('G', std::string(1, '\0') + u16(0));
  const header_result h = decode_header(direction::backend, as_bytes(g), 1u << 20);
  EXPECT_EQ(f2.on_backend(h.header, as_bytes(g), out), result_filter::action::pass);
  EXPECT_EQ(f2.take_ignored_syncs(), 1u);
  EXPECT_FALSE(f2.copy_in());
}

// What JDBC does past prepareThreshold: Parse S_1 + Bind + Describe(portal)
// + Execute, then later only Bind(S_1, binary formats) + Execute. Anything
// may have replaced S_1 in between: the gateway describes the portal itself.
TEST_F(result_filter_test, a_portal_bound_again_later_is_described_again) {
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

  EXPECT_EQ(injected, 0);
  frontend(frame('B', std::string("\0S_1\0", 5) + u16(0) + u16(0) + u16(2) + u16(0) + u16(1)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  EXPECT_EQ(injected, 1);
  backend(frame('2', ""));
  EXPECT_EQ(backend(row_description({{"note", 25, 0}, {"card", 20, 1}})), result_filter::action::drop);
  EXPECT_EQ(backend(data_row({"the secret", std::string(8, '\0')})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out)[0], "the [REDACTED]");
}

// Nobody described the statement: the gateway's own Describe of the portal
// tells the columns and formats, and its answer is not the client's.
TEST_F(result_filter_test, undescribed_portals_are_described_by_the_gateway) {
  frontend(frame('P', std::string("s2\0select\0", 10) + u16(0)));
  frontend(frame('B', std::string("\0s2\0", 4) + u16(0) + u16(0) + u16(1) + u16(1)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  EXPECT_EQ(injected, 1);
  backend(frame('1', ""));
  backend(frame('2', ""));
  EXPECT_EQ(backend(row_description({{"ssn", 25, 1}, {"note", 25, 1}})), result_filter::action::drop);
  ASSERT_EQ(backend(data_row({"123-45-6789", "the secret"})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out)[0], std::nullopt);
  EXPECT_EQ(decode_row(out)[1], "the [REDACTED]");
  // A portal with no columns: NoData, also the gateway's.
  frontend(frame('B', std::string("\0s2\0", 4) + u16(0) + u16(0) + u16(0)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  EXPECT_EQ(injected, 2);
  backend(frame('C', std::string("SELECT 1\0", 9)));
  backend(frame('Z', "I"));
  backend(frame('2', ""));
  EXPECT_EQ(backend(frame('n', "")), result_filter::action::drop);
}

// Finding 3 of issue 10: a portal described as booleans, then a SQL cursor
// of the same name (the server dropped the portal at transaction end, or a
// function closed it): its rows are never read with the old description.
TEST_F(result_filter_test, a_sql_cursor_reusing_a_described_portal_name_is_described_again) {
  frontend(frame('P', std::string("\0select flag\0", 13) + u16(0)));
  frontend(frame('B', std::string("c1\0\0", 4) + u16(0) + u16(0) + u16(0)));
  frontend(frame('D', std::string("Pc1\0", 4)));
  frontend(frame('E', std::string("c1\0", 3) + u32(1)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('2', ""));
  backend(row_description({{"flag", 16}}));
  EXPECT_EQ(backend(data_row({"t"})), result_filter::action::pass);
  backend(frame('s', ""));
  backend(frame('Z', "T"));
  EXPECT_EQ(injected, 0);
  frontend(frame('Q', std::string("DECLARE c1 CURSOR WITH HOLD FOR SELECT ssn FROM users") + '\0'));
  backend(frame('C', std::string("DECLARE CURSOR\0", 15)));
  backend(frame('Z', "T"));
  frontend(frame('E', std::string("c1\0", 3) + u32(0)));
  frontend(frame('S', ""));
  EXPECT_EQ(injected, 1);
  EXPECT_EQ(backend(row_description({{"ssn", 25}})), result_filter::action::drop);
  ASSERT_EQ(backend(data_row({"123-45-6789"})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out)[0], std::nullopt);
}

// What libpq sends (Parse, Bind, Describe portal, Execute) needs nothing more.
TEST_F(result_filter_test, a_portal_described_after_its_bind_is_trusted) {
  for (int i = 0; i < 3; ++i) {
    frontend(frame('P', std::string("\0select\0", 8) + u16(0)));
    frontend(frame('B', std::string("\0\0", 2) + u16(0) + u16(0) + u16(0)));
    frontend(frame('D', std::string("P\0", 2)));
    frontend(frame('E', std::string("\0", 1) + u32(0)));
    frontend(frame('S', ""));
    backend(frame('1', ""));
    backend(frame('2', ""));
    EXPECT_EQ(backend(row_description({{"ssn", 25}})), result_filter::action::pass);
    ASSERT_EQ(backend(data_row({"123-45-6789"})), result_filter::action::rewritten);
    backend(frame('C', std::string("SELECT 1\0", 9)));
    backend(frame('Z', "I"));
  }
  EXPECT_EQ(injected, 0);
}

// Finding 8: remembered descriptions are bounded in bytes, not only count.
TEST_F(result_filter_test, remembered_descriptions_are_bounded_in_bytes) {
  std::vector<col> wide;
  for (int c = 0; c < 1600; ++c) wide.push_back({std::string(60, 'a' + c % 26) + std::to_string(c), 25});
  const std::string described = row_description(wide);
  for (int i = 0; i < 200; ++i) {
    const std::string name = "s" + std::to_string(i);
    frontend(frame('P', name + '\0' + std::string("select\0", 7) + u16(0)));
    frontend(frame('D', "S" + name + '\0'));
    frontend(frame('S', ""));
    backend(frame('1', ""));
    backend(frame('t', u16(0)));
    backend(described);
    backend(frame('Z', "I"));
    ASSERT_LE(filter.described_bytes(), described_bytes_max) << i;
  }
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

// Review (983592a..): a Describe's answer belongs to the statement the
// Describe was sent for, not to whatever carries its name when it arrives.
TEST_F(result_filter_test, a_describe_answers_the_statement_it_was_sent_for) {
  frontend(frame('P', std::string("\0select flag\0", 13) + u16(0)));
  frontend(frame('D', std::string("S\0", 2)));
  frontend(frame('P', std::string("\0select note\0", 13) + u16(0)));  // replaces the unnamed statement
  frontend(frame('B', std::string("\0\0", 2) + u16(0) + u16(0) + u16(0)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('t', u16(0)));
  backend(row_description({{"flag", 16}}));  // the first statement's
  backend(frame('1', ""));
  backend(frame('2', ""));
  EXPECT_EQ(injected, 1);
  EXPECT_EQ(backend(row_description({{"note", 25}})), result_filter::action::drop);
  ASSERT_EQ(backend(data_row({"a secret"})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out)[0], "a [REDACTED]");
}

// Rows answer the Execute they follow: the portal bound before it, even when
// the client has bound the unnamed portal again since.
TEST_F(result_filter_test, rows_use_the_portal_bound_before_their_execute) {
  frontend(frame('P', std::string("txt\0select note\0", 16) + u16(0)));
  frontend(frame('P', std::string("bool\0select flag\0", 17) + u16(0)));
  frontend(frame('D', std::string("Sbool\0", 6)));
  frontend(frame('B', std::string("\0txt\0", 5) + u16(0) + u16(0) + u16(0)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('B', std::string("\0bool\0", 6) + u16(0) + u16(0) + u16(0)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('1', ""));
  backend(frame('t', u16(0)));
  backend(row_description({{"flag", 16}}));
  backend(frame('2', ""));
  EXPECT_EQ(injected, 2);
  EXPECT_EQ(backend(row_description({{"note", 25}})), result_filter::action::drop);
  ASSERT_EQ(backend(data_row({"a secret"})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out)[0], "a [REDACTED]");
}

// PostgreSQL keys statements and portals by their first NAMEDATALEN-1 (63)
// bytes: two longer names with those in common are one statement.
TEST_F(result_filter_test, statement_names_are_cut_as_the_server_cuts_them) {
  const std::string a = std::string(63, 'n') + "1", b = std::string(63, 'n') + "2";
  frontend(frame('P', a + '\0' + std::string("select flag\0", 12) + u16(0)));
  frontend(frame('D', "S" + a + '\0'));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('t', u16(0)));
  backend(row_description({{"flag", 16}}));
  backend(frame('Z', "I"));
  frontend(frame('C', "S" + b + '\0'));  // closes `a` on the server
  frontend(frame('P', b + '\0' + std::string("select note\0", 12) + u16(0)));
  frontend(frame('B', std::string("\0", 1) + a + '\0' + u16(0) + u16(0) + u16(0)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  backend(frame('3', ""));
  backend(frame('1', ""));
  backend(frame('2', ""));
  EXPECT_EQ(injected, 1);
  EXPECT_EQ(backend(row_description({{"note", 25}})), result_filter::action::drop);
  ASSERT_EQ(backend(data_row({"a secret"})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out)[0], "a [REDACTED]");
}

// After an error in an extended batch the server skips everything up to the
// Sync, a pipelined Query too: one ReadyForQuery answers them all.
TEST_F(result_filter_test, an_error_skips_a_pipelined_query_up_to_the_sync) {
  frontend(frame('P', std::string("\0select\0", 8) + u16(0)));
  frontend(frame('B', std::string("\0\0", 2) + u16(0) + u16(0) + u16(0)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('Q', std::string("select\0", 7)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('2', ""));
  EXPECT_EQ(backend(row_description({{"q", 23}})), result_filter::action::drop);
  backend(frame('E', std::string("SERROR\0C22012\0Mdivision by zero\0\0", 34)));
  backend(frame('Z', "I"));
  // The next batch: a statement described as booleans, rows of another.
  frontend(frame('P', std::string("bool\0select flag\0", 17) + u16(0)));
  frontend(frame('D', std::string("Sbool\0", 6)));
  frontend(frame('P', std::string("txt\0select note\0", 16) + u16(0)));
  frontend(frame('B', std::string("\0txt\0", 5) + u16(0) + u16(0) + u16(0)));
  frontend(frame('E', std::string("\0", 1) + u32(0)));
  frontend(frame('S', ""));
  backend(frame('1', ""));
  backend(frame('t', u16(0)));
  backend(row_description({{"flag", 16}}));
  backend(frame('1', ""));
  backend(frame('2', ""));
  EXPECT_EQ(injected, 2);
  EXPECT_EQ(backend(row_description({{"note", 25}})), result_filter::action::drop);
  ASSERT_EQ(backend(data_row({"a secret"})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out)[0], "a [REDACTED]");
}

// The client's messages are counted as they go upstream, not only when a
// response comes back (a server skipping to Sync answers none of them).
TEST_F(result_filter_test, client_messages_awaiting_responses_are_bounded) {
  const std::string d = frame('D', std::string("Sx\0", 3));
  bool refused = false;
  for (size_t i = 0; i <= outstanding_messages_max && !refused; ++i) refused = !frontend(d);
  EXPECT_TRUE(refused);
}

// ParameterStatus echoes settings a query can set from data
// (set_config('application_name', secret, false)).
TEST_F(result_filter_test, parameter_status_values_are_masked) {
  frontend(frame('Q', std::string("select\0", 7)));
  ASSERT_EQ(backend(frame('S', std::string("application_name\0a secret\0", 26))), result_filter::action::rewritten);
  EXPECT_EQ(out, frame('S', std::string("application_name\0a [REDACTED]\0", 30)));
}

// FunctionCallResponse carries a function's result (function_calls: allow).
TEST_F(result_filter_test, function_call_results_are_masked) {
  // FunctionCall: oid, 0 argument formats, 0 arguments, text result.
  frontend(frame('F', u32(1234) + u16(0) + u16(0) + u16(0)));
  ASSERT_EQ(backend(frame('V', u32(8) + "a secret")), result_filter::action::rewritten);
  EXPECT_EQ(out, frame('V', u32(12) + "a [REDACTED]"));
  backend(frame('Z', "I"));
  frontend(frame('F', u32(1234) + u16(0) + u16(0) + u16(1)));  // binary result
  EXPECT_EQ(backend(frame('V', u32(8) + "a secret")), result_filter::action::fail);
}

TEST_F(result_filter_test, inactive_masker_passes_everything) {
  filter.set_masker(nullptr);
  frontend(frame('Q', std::string("select\0", 7)));
  backend(row_description({{"ssn", 25}}));
  EXPECT_EQ(backend(data_row({"secret"})), result_filter::action::pass);
  EXPECT_EQ(masker->values_seen, 0);
}


// --- rows too big to collect: masked in place as they stream -------------------

// The real engine: cards and emails partial (last four, the domain), the
// other detectors redact.
std::shared_ptr<data_masker> real_masker(bool column_rules = true) {
  masking_settings s;
  s.present = true;
  s.detectors = {{"credit_card", mask_style::partial}, {"email", mask_style::partial}};
  if (column_rules) s.columns.push_back({"(?i)^secret$", "", mask_style::redact});
  auto engine = masking::mask_engine::build(s);
  EXPECT_TRUE(engine.is_ok());
  auto m = masking::make_shard_masker(engine.value());
  EXPECT_TRUE(m.is_ok());
  return std::shared_ptr<data_masker>(std::move(m.value()));
}

class streamed_row_test : public ::testing::Test {
 protected:
  streamed_row_test() { filter.set_masker(masker); }

  void start_query(const std::vector<col>& cols) {
    EXPECT_TRUE(filter.on_frontend('Q', as_bytes(std::string("select\0", 7)), 7));
    const std::string t = row_description(cols);
    const header_result h = decode_header(direction::backend, as_bytes(t), 1u << 20);
    std::string unused;
    ASSERT_EQ(filter.on_backend(h.header, as_bytes(t), unused), result_filter::action::pass);
  }
  void end_query() {
    std::string unused;
    for (const std::string& f : {frame('C', std::string("SELECT 1\0", 9)), frame('Z', "I")}) {
      const header_result h = decode_header(direction::backend, as_bytes(f), 1u << 20);
      (void)filter.on_backend(h.header, as_bytes(f), unused);
    }
  }

  // Streams frame `f` cut into pieces: the first `first_bytes` (at least the
  // header), then `piece_bytes` at a time. What the client would get, or
  // nullopt when the filter failed.
  std::optional<std::string> stream(const std::string& f, size_t first_bytes, size_t piece_bytes) {
    const header_result h = decode_header(direction::backend, as_bytes(f), 1u << 30);
    EXPECT_EQ(h.status, frame_status::frame);
    std::string sent;
    size_t at = 0;
    bool first = true;
    while (at < f.size()) {
      const size_t n = std::min(first ? std::max<size_t>(first_bytes, header_bytes) : piece_bytes, f.size() - at);
      const bool last = at + n == f.size();
      std::string out;
      const auto a = filter.on_backend_piece(h.header, as_bytes(f).subspan(at, n), first, last, out);
      if (a == result_filter::action::fail) return std::nullopt;
      sent += a == result_filter::action::pass ? f.substr(at, n) : out;
      EXPECT_EQ(filter.streaming(), !last && a != result_filter::action::pass);
      at += n;
      first = false;
    }
    return sent;
  }

  std::shared_ptr<data_masker> masker = real_masker();
  result_filter filter;
};

constexpr const char* card = "4111 1111 1111 1111";
constexpr const char* email = "alice.smith@example.com";

// A text value of about 9 KiB (more than the stream's lag) with a card where
// the lag falls and an email near its end.
std::string big_note() {
  std::string v(4080, 'x');
  v += std::string(" ") + card + " ";
  v += std::string(5000, 'y');
  v += std::string(" ") + email + " z";
  return v;
}
std::string big_note_masked() {
  std::string v(4080, 'x');
  v += " **** **** **** 1111 ";
  v += std::string(5000, 'y');
  v += " ***********@example.com z";
  return v;
}

TEST_F(streamed_row_test, a_row_split_at_every_point_is_masked_in_place) {
  // int4, text, bytea (passed), int8 (numeric), NULL, a text column a rule masks.
  const std::vector<col> cols = {{"id", 23}, {"note", 25}, {"blob", 17}, {"n", 20}, {"empty", 25}, {"secret", 25}};
  const std::string raw_blob = std::string("\\x") + "4111111111111111";
  const std::string f = data_row({"42", big_note(), raw_blob, "4111111111111111", std::nullopt, "hunter2"});
  start_query(cols);
  const uint64_t cards_before = masker->hits()[0];
  const auto whole = stream(f, f.size(), f.size());
  ASSERT_TRUE(whole.has_value()) << filter.failure();
  ASSERT_EQ(whole->size(), f.size());
  const auto values = decode_row(*whole);
  ASSERT_EQ(values.size(), 6u);
  EXPECT_EQ(values[0], "42");
  EXPECT_TRUE(values[1] == big_note_masked());
  EXPECT_EQ(values[2], raw_blob);              // bytea: never looked at
  EXPECT_EQ(values[3], "0000000000001111");    // same width: the length was sent
  EXPECT_EQ(values[4], std::nullopt);
  EXPECT_EQ(values[5], "*******");             // a column rule fills the value
  EXPECT_EQ(masker->hits()[0] - cards_before, 2u);  // the note's card and the int8
  EXPECT_EQ(filter.values_rewritten(), 3u);

  // Two pieces, cut at every byte (field counts and lengths split too).
  for (size_t k = header_bytes; k < f.size(); ++k) {
    const auto got = stream(f, k, f.size());
    ASSERT_TRUE(got.has_value()) << "cut at " << k << ": " << filter.failure();
    ASSERT_TRUE(*got == *whole) << "cut at " << k;
  }
  // Every piece size from 1 to 64, and a few around the lag.
  for (size_t p : {1, 2, 3, 4, 5, 7, 13, 31, 64, 4095, 4096, 4097}) {
    const auto got = stream(f, header_bytes, p);
    ASSERT_TRUE(got.has_value()) << "pieces of " << p << ": " << filter.failure();
    ASSERT_TRUE(*got == *whole) << "pieces of " << p;
  }
  for (size_t p = 8; p <= 64; ++p) {
    const auto got = stream(f, p, p);
    ASSERT_TRUE(got.has_value());
    ASSERT_TRUE(*got == *whole) << "pieces of " << p;
  }
  end_query();
}

TEST_F(streamed_row_test, undescribed_rows_are_refused_when_the_policy_has_column_rules) {
  EXPECT_TRUE(filter.on_frontend('Q', as_bytes(std::string("select\0", 7)), 7));
  const std::string f = data_row({big_note(), "4111111111111111"});
  EXPECT_FALSE(stream(f, 100, 1000).has_value());
  EXPECT_NE(filter.failure().find("column rules"), std::string::npos) << filter.failure();
}

TEST_F(streamed_row_test, rows_of_an_undescribed_result_are_streamed_as_text) {
  // A DataRow with no RowDescription in front: every value is text (a
  // policy without column rules, which such rows could not be checked against).
  filter.set_masker(real_masker(false));
  EXPECT_TRUE(filter.on_frontend('Q', as_bytes(std::string("select\0", 7)), 7));
  const std::string f = data_row({big_note(), "4111111111111111"});
  const auto got = stream(f, 100, 1000);
  ASSERT_TRUE(got.has_value()) << filter.failure();
  const auto values = decode_row(*got);
  EXPECT_TRUE(values[0] == big_note_masked());
  EXPECT_EQ(values[1], "************1111");
}

TEST_F(streamed_row_test, copy_rows_keep_their_framing) {
  // Under column rules a COPY must name a table the catalog knows.
  table_catalog catalog;
  for (const auto& [attnum, name] : {std::pair{1, "id"}, std::pair{2, "note"}}) {
    std::string row = u16(7);
    for (const std::string& v : std::vector<std::string>{"5000", "public", "t", std::to_string(attnum), name, "9001", "9002"})
      row += u32(static_cast<uint32_t>(v.size())) + v;
    ASSERT_TRUE(catalog.add_row(as_bytes(row)));
  }
  filter.set_catalog(&catalog);
  filter.note_command_text(7, "COPY t TO STDOUT");
  EXPECT_TRUE(filter.on_frontend('Q', as_bytes(std::string("copy\0", 5)), 7));
  std::string unused;
  const std::string h = frame('H', std::string(1, '\0') + u16(2) + u16(0) + u16(0));
  ASSERT_EQ(filter.on_backend(decode_header(direction::backend, as_bytes(h), 1u << 20).header, as_bytes(h), unused),
            result_filter::action::pass);
  const std::string row = "1\t" + big_note() + "\\n\t" + card + "\n";
  const std::string f = frame('d', row);
  const auto whole = stream(f, f.size(), f.size());
  ASSERT_TRUE(whole.has_value()) << filter.failure();
  EXPECT_TRUE(*whole == frame('d', "1\t" + big_note_masked() + "\\n\t**** **** **** 1111\n"));
  for (size_t p : {1, 5, 64, 1000, 4096}) {
    const auto got = stream(f, header_bytes, p);
    ASSERT_TRUE(got.has_value());
    EXPECT_TRUE(*got == *whole) << "pieces of " << p;
  }
}

TEST_F(streamed_row_test, malformed_streamed_rows_fail_closed) {
  start_query({{"note", 25}});
  // A field longer than the frame.
  EXPECT_FALSE(stream(frame('D', u16(1) + u32(100) + std::string(50, 'a')), 5, 7).has_value());
  // More fields than the description.
  EXPECT_FALSE(stream(data_row({"a", "b"}), 5, 3).has_value());
  EXPECT_NE(filter.failure().find("RowDescription"), std::string::npos);
  // Bytes after the last field.
  EXPECT_FALSE(stream(frame('D', u16(1) + u32(1) + "ab"), 5, 2).has_value());
  // A frame that ends inside a length.
  EXPECT_FALSE(stream(frame('D', u16(1) + "\\0\\0"), 5, 1).has_value());
}

TEST_F(streamed_row_test, a_match_in_a_binary_value_fails_closed) {
  // A binary text[] cannot be rewritten in place; without a match it passes.
  EXPECT_TRUE(filter.on_frontend('P', as_bytes(std::string("s\0select\0", 9) + u16(0)), 7));
  EXPECT_TRUE(filter.on_frontend('D', as_bytes(std::string("Ss\0", 3)), 0));
  EXPECT_TRUE(filter.on_frontend('B', as_bytes(std::string("\0s\0", 3) + u16(0) + u16(0) + u16(1) + u16(1)), 0));
  EXPECT_TRUE(filter.on_frontend('E', as_bytes(std::string("\0", 1) + u32(0)), 0));
  EXPECT_TRUE(filter.on_frontend('S', {}, 0));
  std::string unused;
  for (const std::string& f : {frame('1', ""), frame('t', u16(0)), row_description({{"tags", 1009}}), frame('2', "")})
    (void)filter.on_backend(decode_header(direction::backend, as_bytes(f), 1u << 20).header, as_bytes(f), unused);
  const std::string clean = data_row({std::string(9000, 'a')});
  EXPECT_TRUE(stream(clean, 5, 4096).has_value()) << filter.failure();
  EXPECT_FALSE(stream(data_row({big_note()}), 5, 4096).has_value());
  EXPECT_NE(filter.failure().find("in place"), std::string::npos) << filter.failure();
}

TEST_F(result_filter_test, a_masker_that_cannot_stream_fails_closed) {
  frontend(frame('Q', std::string("select\0", 7)));
  backend(row_description({{"note", 25}}));
  const std::string f = data_row({"a secret"});
  const header_result h = decode_header(direction::backend, as_bytes(f), 1u << 20);
  std::string o;
  EXPECT_EQ(filter.on_backend_piece(h.header, as_bytes(f).first(12), true, false, o), result_filter::action::fail);
  EXPECT_NE(filter.failure().find("streamed"), std::string::npos);
}
}  // namespace
}  // namespace agentgate::pg

// ---- catalog, source columns, whole rows and COPY (issue 10, items 10 and 11) ----

namespace agentgate::pg {
namespace {

// A policy with one column rule: a column whose name or source column is
// "password" is forced ("[REDACTED]").
class rules_masker final : public data_masker {
 public:
  bool active() const override { return true; }
  bool has_column_rules() const override { return true; }
  column_plan plan(const result_column& c) override {
    column_plan p;
    p.type_oid = c.type_oid;
    p.binary = c.binary;
    p.how = c.name == "password" || c.column == "password" ? column_plan::mode::forced : column_plan::mode::text;
    return p;
  }
  mask_outcome mask_value(const column_plan& plan, std::span<const uint8_t>, std::string& out) override {
    if (plan.how != column_plan::mode::forced) return mask_outcome::unchanged;
    out += "[REDACTED]";
    return mask_outcome::rewritten;
  }
  mask_outcome mask_text(std::span<const uint8_t>, std::string&) override { return mask_outcome::unchanged; }
  std::span<const std::string> hit_names() const override { return names_; }
  std::span<const uint64_t> hits() const override { return hits_; }
  uint64_t bytes_scanned() const override { return 0; }

 private:
  std::vector<std::string> names_{"column:0"};
  std::vector<uint64_t> hits_{0};
};

std::string catalog_row(uint32_t oid, const std::string& nsp, const std::string& rel, int attnum,
                        const std::string& att, uint32_t row_type, uint32_t array_type) {
  return data_row({std::to_string(oid), nsp, rel, std::to_string(attnum), att, std::to_string(row_type),
                   std::to_string(array_type)})
      .substr(5);
}

// pg_class (anchor) and public.users (id, name, password), row type 9001, array 9002.
table_catalog sample_catalog() {
  table_catalog c;
  EXPECT_TRUE(c.add_row(as_bytes(catalog_row(1259, "pg_catalog", "pg_class", 2, "relname", 83, 273))));
  EXPECT_TRUE(c.add_row(as_bytes(catalog_row(5000, "public", "users", 1, "id", 9001, 9002))));
  EXPECT_TRUE(c.add_row(as_bytes(catalog_row(5000, "public", "users", 2, "name", 9001, 9002))));
  EXPECT_TRUE(c.add_row(as_bytes(catalog_row(5000, "public", "users", 3, "password", 9001, 9002))));
  return c;
}

std::string described(const std::vector<std::tuple<std::string, uint32_t, int16_t, uint32_t>>& cols) {
  std::string body = u16(static_cast<uint16_t>(cols.size()));
  for (const auto& [name, table, attnum, type] : cols) {
    body += name + '\0';
    body += u32(table) + u16(static_cast<uint16_t>(attnum)) + u32(type) + u16(0xffff) + u32(0xffffffff) + u16(0);
  }
  return frame('T', body);
}

class catalog_test : public ::testing::Test {
 protected:
  catalog_test() {
    filter.set_masker(masker);
    filter.set_catalog(&catalog);
  }
  result_filter::action backend(const std::string& f) {
    const header_result h = decode_header(direction::backend, as_bytes(f), 1u << 20);
    EXPECT_EQ(h.status, frame_status::frame);
    out.clear();
    return filter.on_backend(h.header, as_bytes(f), out);
  }
  void query(const std::string& sql, uint64_t seq = 7) {
    filter.note_command_text(seq, sql);
    EXPECT_TRUE(filter.on_frontend('Q', as_bytes(sql + '\0'), seq));
  }
  std::shared_ptr<rules_masker> masker = std::make_shared<rules_masker>();
  table_catalog catalog = sample_catalog();
  result_filter filter;
  std::string out;
};

TEST(catalog_query, every_operator_and_type_is_qualified) {
  const std::string q = catalog_query();
  for (size_t i = 0; i < q.size(); ++i) {
    if (q[i] != '=' && q[i] != '>' && q[i] != '<') continue;
    // Each comparison is OPERATOR(pg_catalog.=) or OPERATOR(pg_catalog.>).
    ASSERT_GE(i, 20u) << q;
    EXPECT_EQ(q.substr(i - 20, 20), "OPERATOR(pg_catalog.") << q;
  }
  EXPECT_EQ(q.find(" IN "), std::string::npos) << "IN compares with an unqualified =";
  EXPECT_NE(q.find("'::pg_catalog.\"char\"[]"), std::string::npos);
  EXPECT_NE(q.find("0::pg_catalog.int2"), std::string::npos);
}

TEST(catalog_read, an_empty_or_filtered_read_never_replaces_the_catalog) {
  table_catalog empty;
  EXPECT_FALSE(empty.implausible().empty());
  table_catalog filtered;
  ASSERT_TRUE(filtered.add_row(as_bytes(catalog_row(5000, "public", "users", 1, "id", 9001, 9002))));
  EXPECT_FALSE(filtered.implausible().empty());
  EXPECT_TRUE(sample_catalog().implausible().empty());
  // Malformed rows are refused.
  table_catalog c;
  EXPECT_FALSE(c.add_row(as_bytes(data_row({"1", "a", "b", "1", "x"}).substr(5))));
  EXPECT_FALSE(c.add_row(as_bytes(catalog_row(0, "a", "b", 1, "x", 1, 2))));
  EXPECT_FALSE(c.add_row(as_bytes(catalog_row(5, "a", "b", 0, "x", 1, 2))));
}

TEST(catalog_read, entries_are_bounded_and_the_overflow_is_marked) {
  table_catalog c;
  for (size_t i = 0; i <= table_catalog::entries_max; ++i)
    ASSERT_TRUE(c.add_row(as_bytes(catalog_row(static_cast<uint32_t>(10000 + i / 1000), "s", "t" + std::to_string(i / 1000),
                                               static_cast<int>(i % 1000) + 1, "c", 1, 2))));
  EXPECT_EQ(c.entries, table_catalog::entries_max);
  EXPECT_TRUE(c.truncated);
}

TEST_F(catalog_test, an_alias_of_any_tables_column_is_resolved_to_its_source) {
  query("select password as p, name as password2 from users");
  backend(described({{"p", 5000, 3, 25}, {"password2", 5000, 2, 25}}));
  ASSERT_EQ(backend(data_row({"hunter2", "alice"})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out), (std::vector<std::optional<std::string>>{"[REDACTED]", "alice"}));
}

TEST_F(catalog_test, a_table_newer_than_the_read_makes_the_next_login_read_again) {
  catalog.read_at_s = 1000;
  EXPECT_TRUE(catalog.fresh(1000 + table_catalog::reread_s));
  query("select x from newer");
  backend(described({{"x", 7777, 1, 25}}));
  EXPECT_NE(backend(data_row({"v"})), result_filter::action::fail);  // scanned, not refused
  EXPECT_TRUE(catalog.missed_table);
  EXPECT_TRUE(catalog.fresh(1000 + table_catalog::reread_s - 1));
  EXPECT_FALSE(catalog.fresh(1000 + table_catalog::reread_s));
}

TEST_F(catalog_test, a_truncated_catalog_refuses_columns_it_cannot_name) {
  catalog.truncated = true;
  query("select x from t");
  backend(described({{"x", 7777, 1, 25}}));
  EXPECT_EQ(backend(data_row({"v"})), result_filter::action::fail);
  EXPECT_NE(filter.failure().find("catalog does not cover"), std::string::npos) << filter.failure();
}

TEST_F(catalog_test, whole_rows_of_a_protected_table_are_forced) {
  query("select u, array_agg(u), row(1), row_to_json(u), json_build_object('a', 1) from users u");
  backend(described({{"u", 0, 0, 9001}, {"array_agg", 0, 0, 9002}, {"row", 0, 0, 2249},
                     {"row_to_json", 0, 0, 114}, {"json_build_object", 0, 0, 114}}));
  ASSERT_EQ(backend(data_row({"(1,alice,hunter2)", "{\"(1,alice,hunter2)\"}", "(1)",
                              "{\"id\":1,\"password\":\"hunter2\"}", "{\"a\":1}"})),
            result_filter::action::rewritten);
  const auto v = decode_row(out);
  EXPECT_EQ(v[0], "[REDACTED]");
  EXPECT_EQ(v[1], "[REDACTED]");
  EXPECT_EQ(v[2], "[REDACTED]");
  EXPECT_EQ(v[3], "[REDACTED]");
  EXPECT_EQ(v[4], "{\"a\":1}");  // a JSON expression without a protected key
}

TEST_F(catalog_test, whole_rows_of_an_unprotected_table_pass) {
  ASSERT_TRUE(catalog.add_row(as_bytes(catalog_row(6000, "public", "plain", 1, "v", 9101, 9102))));
  query("select p from plain p");
  backend(described({{"p", 0, 0, 9101}}));
  EXPECT_EQ(backend(data_row({"(x)"})), result_filter::action::pass);
}

TEST_F(catalog_test, a_truncated_catalog_forces_whole_rows_it_may_have_read_in_part) {
  ASSERT_TRUE(catalog.add_row(as_bytes(catalog_row(6000, "public", "wide", 1, "v", 9101, 9102))));
  catalog.truncated = true;  // "wide" may have had a protected column past the cut
  query("select w from wide w");
  backend(described({{"w", 0, 0, 9101}}));
  ASSERT_EQ(backend(data_row({"(x)"})), result_filter::action::rewritten);
  EXPECT_EQ(decode_row(out)[0], "[REDACTED]");
}

TEST(copy_statement, sources_the_gateway_can_name) {
  copy_source s = parse_copy_source("COPY users TO STDOUT");
  EXPECT_TRUE(s.known);
  EXPECT_EQ(s.table, "users");
  EXPECT_TRUE(s.schema.empty());
  s = parse_copy_source(" /* x /* nested */ */ copy Public.\"Users\" ( id , \"Pass\"\"word\" ) to stdout "
                        "with (format csv, header) ; ");
  ASSERT_TRUE(s.known);
  EXPECT_EQ(s.schema, "public");
  EXPECT_EQ(s.table, "Users");
  EXPECT_EQ(s.columns, (std::vector<std::string>{"id", "Pass\"word"}));
  EXPECT_TRUE(s.csv);
  EXPECT_TRUE(s.header);
  EXPECT_TRUE(s.plain_options);
  s = parse_copy_source("COPY users TO STDOUT WITH CSV HEADER");
  EXPECT_TRUE(s.known && s.csv && s.header);
  s = parse_copy_source("COPY users TO STDOUT (FORMAT csv, DELIMITER '|')");
  EXPECT_TRUE(s.known);
  EXPECT_FALSE(s.plain_options);
  EXPECT_FALSE(parse_copy_source("COPY (SELECT 1) TO STDOUT").known);
  EXPECT_FALSE(parse_copy_source("COPY users TO STDOUT; COPY (SELECT password FROM users) TO STDOUT").known);
  EXPECT_FALSE(parse_copy_source("SELECT 1; COPY users TO STDOUT").known);
  EXPECT_FALSE(parse_copy_source("COPY users TO '/tmp/x'").known);
  EXPECT_FALSE(parse_copy_source("COPY users TO STDOUT WITH CSV DELIMITER '|'").known);
}

std::string copy_out(uint16_t n) {
  std::string body(1, '\0');
  body += u16(n);
  for (uint16_t i = 0; i < n; ++i) body += u16(0);
  return frame('H', body);
}

TEST_F(catalog_test, copy_of_a_table_masks_the_protected_columns) {
  query("COPY users TO STDOUT");
  ASSERT_EQ(backend(copy_out(3)), result_filter::action::pass);
  ASSERT_EQ(backend(frame('d', "1\talice\thunter2\n")), result_filter::action::rewritten);
  EXPECT_EQ(out, frame('d', "1\talice\t[REDACTED]\n"));
  ASSERT_EQ(backend(frame('d', "2\tbob\t\\N\n")), result_filter::action::rewritten);
  EXPECT_EQ(out, frame('d', "2\tbob\t\\N\n"));  // NULL stays NULL
  ASSERT_EQ(backend(frame('d', "3\tb\\tx\tpw\\\\\\tx\n")), result_filter::action::rewritten);
  EXPECT_EQ(out, frame('d', "3\tb\\tx\t[REDACTED]\n"));
  backend(frame('c', ""));
  backend(frame('C', std::string("COPY 3\0", 7)));
  backend(frame('Z', "I"));

  query("COPY public.users (password, id) TO STDOUT (FORMAT csv, HEADER)", 8);
  ASSERT_EQ(backend(copy_out(2)), result_filter::action::pass);
  EXPECT_EQ(backend(frame('d', "password,id\n")), result_filter::action::pass);  // the header
  ASSERT_EQ(backend(frame('d', "\"a,\"\"b\",1\n")), result_filter::action::rewritten);
  EXPECT_EQ(out, frame('d', "[REDACTED],1\n"));
  backend(frame('c', ""));
  backend(frame('C', std::string("COPY 1\0", 7)));
  backend(frame('Z', "I"));

  query("COPY users (id, name) TO STDOUT", 9);
  ASSERT_EQ(backend(copy_out(2)), result_filter::action::pass);
  EXPECT_EQ(backend(frame('d', "1\talice\n")), result_filter::action::pass);
}

TEST_F(catalog_test, copy_the_gateway_cannot_name_is_refused_under_column_rules) {
  query("COPY (SELECT password FROM users) TO STDOUT");
  EXPECT_EQ(backend(copy_out(1)), result_filter::action::fail);
  EXPECT_NE(filter.failure().find("cannot tell which columns"), std::string::npos) << filter.failure();

  result_filter f2;
  f2.set_masker(masker);
  f2.set_catalog(&catalog);
  f2.note_command_text(3, "COPY nosuch TO STDOUT");
  ASSERT_TRUE(f2.on_frontend('Q', as_bytes(std::string("COPY nosuch TO STDOUT\0", 22)), 3));
  const std::string h = copy_out(1);
  std::string o;
  EXPECT_EQ(f2.on_backend(decode_header(direction::backend, as_bytes(h), 1 << 20).header, as_bytes(h), o),
            result_filter::action::fail);
  EXPECT_NE(f2.failure().find("not in the gateway's catalog"), std::string::npos) << f2.failure();
}

TEST_F(catalog_test, copy_with_other_options_or_other_columns_fails_closed) {
  query("COPY users TO STDOUT (FORMAT csv, DELIMITER '|')");
  EXPECT_EQ(backend(copy_out(3)), result_filter::action::fail);

  result_filter f2;
  f2.set_masker(masker);
  f2.set_catalog(&catalog);
  f2.note_command_text(3, "COPY users TO STDOUT");
  ASSERT_TRUE(f2.on_frontend('Q', as_bytes(std::string("COPY users TO STDOUT\0", 21)), 3));
  std::string o;
  const std::string h = copy_out(3);
  ASSERT_EQ(f2.on_backend(decode_header(direction::backend, as_bytes(h), 1 << 20).header, as_bytes(h), o),
            result_filter::action::pass);
  const std::string d = frame('d', "1\talice\n");  // fewer fields than the table has
  EXPECT_EQ(f2.on_backend(decode_header(direction::backend, as_bytes(d), 1 << 20).header, as_bytes(d), o),
            result_filter::action::fail);
}

}  // namespace
}  // namespace agentgate::pg
