// Replay and export of a synthetic session, and the recordings CLI.

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "appliance/recordings_cli.h"
#include "io/recording/replay.h"
#include "io/recording/shard_recorder.h"
#include "tests/io/recording_test_util.h"

namespace agentgate::recording {
namespace {

class RecordingReplay : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("agentgate-replay-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
    shard_recorder_options o;
    o.dir = dir_;
    o.shard = 2;
    auto r = shard_recorder::open(o, 0);
    ASSERT_TRUE(r.is_ok()) << r.error().message();
    id_ = session_id::generate();
    const int64_t t0 = 1714564800000000;
    std::vector<std::string> groups{"dev"};
    rec_session_start s;
    s.id = id_;
    s.unix_us = t0;
    s.shard = 2;
    s.protocol = "postgres";
    s.target = "prod-db";
    s.subject = "alice";
    s.email = "alice@example.com";
    s.groups = groups;
    s.client_address = "10.1.2.3:5555";
    s.database = "shop";
    s.user = "agent";
    ASSERT_TRUE((*r)->session_start(s));
    rec_command c{id_, t0 + 1000, 1, 'Q', "SELECT id, email FROM customers LIMIT 2", "SELECT", {}};
    ASSERT_TRUE((*r)->command(c));
    ASSERT_TRUE((*r)->decision(rec_decision{id_, t0 + 1100, 1, "allow", "", "", ""}));
    std::vector<std::string> cols{"id", "email"};
    const std::string rows = testing::data_row({"1", "a***@example.com"}) + testing::data_row({"2", "\x01NULL"});
    std::vector<std::pair<std::string, uint64_t>> masked{{"email", 1}};
    rec_result res;
    res.id = id_;
    res.unix_us = t0 + 5000;
    res.seq = 1;
    res.columns = cols;
    res.rows = rows;
    res.rows_total = 2;
    res.duration_us = 3900;
    res.command_tag = "SELECT 2";
    res.masked = masked;
    ASSERT_TRUE((*r)->result(res));
    ASSERT_TRUE((*r)->command(rec_command{id_, t0 + 2000000, 2, 'Q', "DROP TABLE customers", "DROP TABLE", {}}));
    ASSERT_TRUE((*r)->decision(rec_decision{id_, t0 + 2000100, 2, "deny", "no-drops", "", "needs a change request"}));
    rec_result denied;
    denied.id = id_;
    denied.unix_us = t0 + 2000200;
    denied.seq = 2;
    denied.error = "42501: denied by rule no-drops";
    ASSERT_TRUE((*r)->result(denied));
    ASSERT_TRUE((*r)->session_end(rec_session_end{id_, t0 + 3000000, "client closed", 2, 120, 340}));
    // Another session, to be left out of this one's transcript.
    rec_session_start other = s;
    other.id = session_id::generate();
    other.subject = "bob";
    other.unix_us = t0 + 10;
    ASSERT_TRUE((*r)->session_start(other));
    ASSERT_TRUE((*r)->flush().is_ok());
  }
  void TearDown() override { if (!getenv("KEEP")) std::filesystem::remove_all(dir_); }

  std::string segment_path() {
    for (auto& e : std::filesystem::directory_iterator(dir_ + "/shard-2")) return e.path();
    return {};
  }

  int run_cli(bool verify, const std::string& session, const std::string& format, std::string& out) {
    char* buf = nullptr;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    FILE* err = fopen("/dev/null", "w");
    recordings_cli_options o;
    o.dir = dir_;
    o.session = session;
    o.format = format;
    o.out = f;
    o.err = err;
    const int rc = verify ? run_recordings_verify(o) : run_replay(o);
    fclose(f);
    fclose(err);
    out.assign(buf, len);
    free(buf);
    return rc;
  }

  std::string dir_;
  session_id id_;
};

TEST_F(RecordingReplay, ListsSessions) {
  auto sessions = list_sessions(dir_);
  ASSERT_TRUE(sessions.is_ok());
  ASSERT_EQ(2u, sessions->size());
  const session_summary& s = (*sessions)[0];
  EXPECT_EQ(id_, s.id);
  EXPECT_EQ("alice", s.subject);
  EXPECT_EQ("prod-db", s.target);
  EXPECT_EQ(2, s.shard);
  EXPECT_EQ(2u, s.commands);
  EXPECT_TRUE(s.ended);
  EXPECT_EQ(3000000, s.last_unix_us - s.start_unix_us);
  EXPECT_EQ(340u, s.bytes_to_client);
  EXPECT_FALSE((*sessions)[1].ended);
  EXPECT_NE(std::string::npos, sessions_json(*sessions).find("\"subject\":\"alice\""));
  std::string out;
  EXPECT_EQ(0, run_cli(false, "", "text", out));
  EXPECT_NE(std::string::npos, out.find(id_.hex()));
  EXPECT_NE(std::string::npos, out.find("alice <alice@example.com>"));
}

TEST_F(RecordingReplay, JsonLines) {
  auto jsonl = session_events_jsonl(dir_, id_);
  ASSERT_TRUE(jsonl.is_ok()) << jsonl.error().message();
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = jsonl->find('\n', start)) != std::string::npos; start = nl + 1)
    lines.push_back(jsonl->substr(start, nl - start));
  ASSERT_EQ(8u, lines.size());
  EXPECT_NE(std::string::npos, lines[0].find("\"type\":\"session_start\""));
  EXPECT_NE(std::string::npos, lines[1].find("\"text\":\"SELECT id, email FROM customers LIMIT 2\""));
  EXPECT_NE(std::string::npos, lines[3].find("\"rows\":[[\"1\",\"a***@example.com\"],[\"2\",null]]"));
  EXPECT_NE(std::string::npos, lines[3].find("\"masked\":{\"email\":1}"));
  EXPECT_NE(std::string::npos, lines[5].find("\"action\":\"deny\",\"rule_id\":\"no-drops\""));
  EXPECT_NE(std::string::npos, lines[7].find("\"type\":\"session_end\""));
  for (const std::string& l : lines) EXPECT_EQ(std::string::npos, l.find("bob"));
  session_id missing = session_id::generate();
  EXPECT_EQ(errc::invalid_argument, session_events_jsonl(dir_, missing).error().code());
  EXPECT_EQ(errc::limit, session_events_jsonl(dir_, id_, 100).error().code());
}

TEST_F(RecordingReplay, TextTranscript) {
  std::string out;
  ASSERT_EQ(0, run_cli(false, id_.hex(), "text", out));
  EXPECT_NE(std::string::npos, out.find("session " + id_.hex()));
  EXPECT_NE(std::string::npos, out.find("[+0.001s] #1 Q  SELECT id, email FROM customers LIMIT 2  [SELECT]"));
  EXPECT_NE(std::string::npos, out.find("masked: email=1"));
  EXPECT_NE(std::string::npos, out.find("a***@example.com"));
  EXPECT_NE(std::string::npos, out.find("(2 rows)"));
  EXPECT_NE(std::string::npos, out.find("[+2.000s] #2 deny  rule no-drops"));
  EXPECT_NE(std::string::npos, out.find("ERROR 42501: denied by rule no-drops"));
  EXPECT_NE(std::string::npos, out.find("session end: client closed"));
}

TEST_F(RecordingReplay, Asciicast) {
  std::string out;
  ASSERT_EQ(0, run_cli(false, id_.hex(), "asciicast", out));
  const std::string header = out.substr(0, out.find('\n'));
  EXPECT_EQ(0u, header.find("{\"version\":2,\"width\":120,\"height\":40,\"timestamp\":1714564800,\"title\":"));
  EXPECT_NE(std::string::npos, out.find("[0.001000, \"o\", \"shop=> SELECT id, email FROM customers LIMIT 2;\\r\\n\"]"));
  EXPECT_NE(std::string::npos, out.find("a***@example.com"));
  EXPECT_NE(std::string::npos, out.find("ERROR:  42501: denied by rule no-drops"));
  EXPECT_NE(std::string::npos, out.find("-- deny (rule no-drops): needs a change request"));
}

TEST_F(RecordingReplay, VerifyExitCodes) {
  std::string out;
  EXPECT_EQ(0, run_cli(true, "", "", out));
  EXPECT_NE(std::string::npos, out.find("  ok  "));
  const std::string path = segment_path();
  {
    std::ofstream f(path, std::ios::app | std::ios::binary);
    f << std::string("\x12\x34\x56\x78\x90\x00\x01partial", 14);  // a torn record
  }
  EXPECT_EQ(0, run_cli(true, "", "", out));
  EXPECT_NE(std::string::npos, out.find("torn tail: 14 bytes"));
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(60);
    f.put('\x7f');
  }
  EXPECT_EQ(1, run_cli(true, "", "", out));
  EXPECT_NE(std::string::npos, out.find("corruption at offset"));
  recordings_cli_options o;
  o.dir = dir_ + "/nope";
  o.err = fopen("/dev/null", "w");
  EXPECT_EQ(2, run_recordings_verify(o));
  fclose(o.err);
}

}  // namespace
}  // namespace agentgate::recording
