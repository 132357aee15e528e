// CRC-32C, session ids and the typed payloads of the recording format.

#include <gtest/gtest.h>

#include <set>

#include "io/recording/crc32c.h"
#include "io/recording/format.h"
#include "tests/io/recording_test_util.h"

namespace agentgate::recording {
namespace {

TEST(Crc32c, KnownValues) {
  // The values LevelDB's crc32c_test checks (RFC 3720 B.4).
  std::string zeros(32, '\0');
  EXPECT_EQ(0x8a9136aau, crc32c(zeros.data(), zeros.size()));
  std::string ones(32, '\xff');
  EXPECT_EQ(0x62a8ab43u, crc32c(ones.data(), ones.size()));
  std::string up(32, '\0');
  for (int i = 0; i < 32; ++i) up[i] = static_cast<char>(i);
  EXPECT_EQ(0x46dd794eu, crc32c(up.data(), up.size()));
  EXPECT_EQ(0xe3069283u, crc32c("123456789", 9));
}

TEST(Crc32c, HardwareAndTableAgreeOnEveryLengthAndAlignment) {
  std::string data(300, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + 7);
  for (size_t start = 0; start < 9; ++start)
    for (size_t n = 0; start + n <= data.size(); n += 7)
      ASSERT_EQ(crc32c_extend_table(0, data.data() + start, n), crc32c(data.data() + start, n)) << start << " " << n;
  EXPECT_EQ(crc32c("hello world", 11), crc32c_extend(crc32c("hello ", 6), "world", 5));
}

TEST(Crc32c, Mask) {
  const uint32_t crc = crc32c("foo", 3);
  EXPECT_NE(crc, crc_mask(crc));
  EXPECT_NE(crc, crc_mask(crc_mask(crc)));
  EXPECT_EQ(crc, crc_unmask(crc_mask(crc)));
  EXPECT_EQ(crc, crc_unmask(crc_unmask(crc_mask(crc_mask(crc)))));
}

TEST(SessionId, HexRoundTripAndParse) {
  session_id id{0x0123456789abcdefull, 0xfedcba9876543210ull};
  EXPECT_EQ("0123456789abcdeffedcba9876543210", id.hex());
  session_id back;
  ASSERT_TRUE(session_id::parse(id.hex(), back));
  EXPECT_EQ(id, back);
  ASSERT_TRUE(session_id::parse("0123456789ABCDEFFEDCBA9876543210", back));
  EXPECT_EQ(id, back);
  EXPECT_FALSE(session_id::parse("0123456789abcdeffedcba987654321", back));
  EXPECT_FALSE(session_id::parse("0123456789abcdeffedcba98765432100", back));
  EXPECT_FALSE(session_id::parse("0123456789abcdeffedcba987654321g", back));
}

TEST(SessionId, GenerateIsUniqueAndNonEmpty) {
  std::set<std::string> seen;
  for (int i = 0; i < 2000; ++i) {
    session_id id = session_id::generate();
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(seen.insert(id.hex()).second);
  }
}

TEST(Payload, EveryEventRoundTrips) {
  const session_id id = session_id::generate();
  std::vector<std::string> groups{"dba", "dev"};
  rec_session_start s;
  s.id = id;
  s.unix_us = 1714564800123456;
  s.shard = 3;
  s.protocol = "postgres";
  s.target = "prod";
  s.subject = "alice";
  s.email = "alice@example.com";
  s.groups = groups;
  s.client_address = "10.0.0.7:51234";
  s.tls = "TLSv1.3";
  s.database = "app";
  s.user = "agent";
  s.prompt = {"p-1", "drop the temp tables", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"};
  std::string buf;
  encode(s, buf);
  event e;
  ASSERT_TRUE(decode_event(buf, e));
  EXPECT_EQ(event_type::session_start, e.type);
  EXPECT_EQ(id, e.id);
  EXPECT_EQ(s.unix_us, e.unix_us);
  EXPECT_EQ(3, e.shard);
  EXPECT_EQ("prod", e.target);
  EXPECT_EQ(groups, e.groups);
  EXPECT_EQ("p-1", e.prompt_id);
  EXPECT_EQ("drop the temp tables", e.prompt_text);
  EXPECT_EQ("agent", e.user);

  rec_command c;
  c.id = id;
  c.unix_us = 5;
  c.seq = 7;
  c.message_kind = 'Q';
  c.text = "SELECT 1";
  c.classification = "SELECT";
  buf.clear();
  encode(c, buf);
  ASSERT_TRUE(decode_event(buf, e));
  EXPECT_EQ(event_type::command, e.type);
  EXPECT_EQ(7u, e.seq);
  EXPECT_EQ('Q', e.message_kind);
  EXPECT_EQ("SELECT 1", e.text);
  EXPECT_EQ(8u, e.text_bytes);

  rec_decision d;
  d.id = id;
  d.seq = 7;
  d.action = "deny";
  d.rule_id = "no-drops";
  d.reason = "needs a change request";
  buf.clear();
  encode(d, buf);
  ASSERT_TRUE(decode_event(buf, e));
  EXPECT_EQ("deny", e.action);
  EXPECT_EQ("no-drops", e.rule_id);

  std::vector<std::string> cols{"id", "email"};
  std::string rows = testing::data_row({"1", "a***@example.com"}) + testing::data_row({"2", "\x01NULL"});
  std::vector<std::pair<std::string, uint64_t>> masked{{"email", 1}};
  rec_result r;
  r.id = id;
  r.seq = 7;
  r.columns = cols;
  r.rows = rows;
  r.rows_total = 2;
  r.duration_us = -3;  // a clock step must not break decoding
  r.command_tag = "SELECT 2";
  r.masked = masked;
  buf.clear();
  encode(r, buf);
  ASSERT_TRUE(decode_event(buf, e));
  EXPECT_EQ(cols, e.columns);
  EXPECT_EQ(rows, e.rows);
  EXPECT_EQ(-3, e.duration_us);
  EXPECT_EQ(masked, e.masked);
  int n = 0;
  EXPECT_TRUE(for_each_row(e.rows, 100, [&](const std::vector<row_field>& f) {
    EXPECT_EQ(2u, f.size());
    if (n++ == 1) {
      EXPECT_TRUE(f[1].is_null);
    }
    return true;
  }));
  EXPECT_EQ(2, n);

  rec_session_end end;
  end.id = id;
  end.reason = "client closed";
  end.commands = 1;
  end.bytes_to_client = 99;
  buf.clear();
  encode(end, buf);
  ASSERT_TRUE(decode_event(buf, e));
  EXPECT_EQ(99u, e.bytes_to_client);

  // Every strict prefix is refused, never read as a shorter event.
  for (size_t cut = 0; cut < buf.size(); ++cut) EXPECT_FALSE(decode_event(std::string_view(buf).substr(0, cut), e));
}

TEST(Payload, FileHeader) {
  std::string buf;
  encode_file_header(file_header{format_version, 2, 123456789012ull, 42}, buf);
  file_header h;
  ASSERT_TRUE(decode_file_header(buf, h));
  EXPECT_EQ(2, h.shard);
  EXPECT_EQ(123456789012ull, h.base_offset);
  EXPECT_EQ(42, h.created_unix_us);
  buf[3] ^= 1;
  EXPECT_FALSE(decode_file_header(buf, h));
}

TEST(Payload, WholeRowsPrefix) {
  std::string rows = testing::data_row({"abc"}) + testing::data_row({"defg"});
  const size_t first = testing::data_row({"abc"}).size();
  EXPECT_EQ(std::make_pair(first, uint64_t{1}), whole_rows_prefix(rows, rows.size() - 1));
  EXPECT_EQ(std::make_pair(rows.size(), uint64_t{2}), whole_rows_prefix(rows, rows.size()));
  EXPECT_EQ(std::make_pair(size_t{0}, uint64_t{0}), whole_rows_prefix(rows, 3));
}

}  // namespace
}  // namespace agentgate::recording
