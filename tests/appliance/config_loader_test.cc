#include "appliance/config_loader.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/identity/token_signer.h"

namespace agentgate {
namespace {

namespace fs = std::filesystem;

// Each test gets its own directory with a password file "pw", so relative
// paths in the documents below resolve against it.
class ConfigLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "config_loader_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    write_file("pw", "s3cret\n");
  }

  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  void write_file(const std::string& name, const std::string& contents) {
    std::ofstream out(dir_ + "/" + name, std::ios::binary);
    out << contents;
    ASSERT_TRUE(out.good());
  }

  result<gateway_config> parse(std::string_view json) { return parse_config(json, dir_); }

  // The error message, or "ok" when the document was accepted.
  std::string error_of(std::string_view json) {
    auto r = parse(json);
    if (r) return "ok";
    EXPECT_EQ(r.error().code(), errc::invalid_argument);
    return r.error().message();
  }

  std::string dir_;
};

bool is_loopback_listen(const std::string& listen) {
  return listen.starts_with("127.") || listen.starts_with("localhost:") ||
         listen.starts_with("[::1]:") || listen.starts_with("[::ffff:127.");
}

// A target without client_auth: "jwt" by default.
std::string bare_target(const std::string& name, const std::string& listen,
                        const std::string& upstream_extra = "") {
  return R"({"name": ")" + name + R"(", "protocol": "postgres", "listen": ")" + listen +
         R"(", "upstream": {"host": "127.0.0.1", "user": "app", "password_file": "pw")" +
         upstream_extra + "}}";
}

// A client_auth "trust" target (written out, as the loader demands; off
// loopback with allow_trust_on_network), for tests about other keys.
std::string target(const std::string& name, const std::string& listen,
                   const std::string& upstream_extra = "") {
  std::string t = bare_target(name, listen, upstream_extra);
  t.insert(t.find(R"("upstream")"),
           is_loopback_listen(listen) ? R"("client_auth": "trust", )"
                                      : R"("client_auth": "trust", "allow_trust_on_network": true, )");
  return t;
}

std::string with_targets(const std::string& targets, const std::string& extra = "") {
  return R"({"targets": [)" + targets + "]" + extra + "}";
}

std::string one_target(const std::string& extra = "") {
  return with_targets(target("pg", "127.0.0.1:6432"), extra);
}

TEST_F(ConfigLoaderTest, FullConfigRoundTrip) {
  write_file("other-pw", "hunter2\r\n");
  auto r = parse(R"({
    "shards": 2,
    "log_level": "debug",
    "targets": [
      {"name": "pg-main", "protocol": "postgres", "listen": "0.0.0.0:6432", "client_auth": "trust",
       "allow_trust_on_network": true,
       "upstream": {"host": "db.internal", "port": 5433, "user": "app", "password_file": "pw",
                    "database": "appdb"}},
      {"name": "pg.replica_2", "protocol": "postgres", "listen": "[::1]:6433", "client_auth": "trust",
       "upstream": {"host": "::1", "user": "ro", "password_file": "other-pw"}}
    ],
    "limits": {"frame_bytes_max": 1048576, "startup_bytes_max": 8192, "unsent_bytes_max": 65536,
               "connect_timeout_ms": 1000, "auth_timeout_ms": 2000, "idle_timeout_ms": 300000,
               "sessions_per_shard_max": 500},
    "io": {"ring_entries": 1024, "recv_buffer_bytes": 8192, "recv_buffers": 256,
           "pin_threads": false}
  })");
  ASSERT_TRUE(r) << r.error().message();
  const gateway_config& c = r.value();
  EXPECT_EQ(c.shards, 2u);
  EXPECT_EQ(c.log_level, "debug");
  ASSERT_EQ(c.targets.size(), 2u);

  const target_config& a = c.targets[0];
  EXPECT_EQ(a.name, "pg-main");
  EXPECT_EQ(a.protocol, "postgres");
  EXPECT_EQ(a.listen_host, "0.0.0.0");
  EXPECT_EQ(a.listen_port, 6432);
  EXPECT_EQ(a.client_auth, client_auth_mode::trust);
  EXPECT_EQ(a.upstream.host, "db.internal");
  EXPECT_EQ(a.upstream.port, 5433);
  EXPECT_EQ(a.upstream.user, "app");
  EXPECT_EQ(a.upstream.password_file, "pw");
  EXPECT_EQ(a.upstream.password, "s3cret");
  EXPECT_EQ(a.upstream.database, "appdb");

  const target_config& b = c.targets[1];
  EXPECT_EQ(b.name, "pg.replica_2");
  EXPECT_EQ(b.listen_host, "::1");
  EXPECT_EQ(b.listen_port, 6433);
  EXPECT_EQ(b.upstream.host, "::1");
  EXPECT_EQ(b.upstream.password, "hunter2");

  EXPECT_EQ(c.limits.frame_bytes_max, 1048576u);
  EXPECT_EQ(c.limits.startup_bytes_max, 8192u);
  EXPECT_EQ(c.limits.unsent_bytes_max, 65536u);
  EXPECT_EQ(c.limits.connect_timeout_ms, 1000u);
  EXPECT_EQ(c.limits.auth_timeout_ms, 2000u);
  EXPECT_EQ(c.limits.idle_timeout_ms, 300000u);
  EXPECT_EQ(c.limits.sessions_per_shard_max, 500u);
  EXPECT_EQ(c.io.ring_entries, 1024u);
  EXPECT_EQ(c.io.recv_buffer_bytes, 8192u);
  EXPECT_EQ(c.io.recv_buffers, 256u);
  EXPECT_FALSE(c.io.pin_threads);
}

TEST_F(ConfigLoaderTest, DefaultsApplied) {
  auto r = parse(one_target());
  ASSERT_TRUE(r) << r.error().message();
  const gateway_config& c = r.value();
  const gateway_config d;
  EXPECT_EQ(c.shards, d.shards);
  EXPECT_EQ(c.log_level, "info");
  ASSERT_EQ(c.targets.size(), 1u);
  EXPECT_EQ(c.targets[0].client_auth, client_auth_mode::trust);
  EXPECT_EQ(c.targets[0].upstream.port, 5432);
  EXPECT_EQ(c.targets[0].upstream.database, "app");  // defaults to user
  EXPECT_EQ(c.limits.frame_bytes_max, d.limits.frame_bytes_max);
  EXPECT_EQ(c.limits.startup_bytes_max, d.limits.startup_bytes_max);
  EXPECT_EQ(c.limits.unsent_bytes_max, d.limits.unsent_bytes_max);
  EXPECT_EQ(c.limits.connect_timeout_ms, d.limits.connect_timeout_ms);
  EXPECT_EQ(c.limits.auth_timeout_ms, d.limits.auth_timeout_ms);
  EXPECT_EQ(c.limits.idle_timeout_ms, d.limits.idle_timeout_ms);
  EXPECT_EQ(c.limits.sessions_per_shard_max, d.limits.sessions_per_shard_max);
  EXPECT_EQ(c.io.ring_entries, d.io.ring_entries);
  EXPECT_EQ(c.io.recv_buffer_bytes, d.io.recv_buffer_bytes);
  EXPECT_EQ(c.io.recv_buffers, d.io.recv_buffers);
  EXPECT_EQ(c.io.pin_threads, d.io.pin_threads);

  // Empty sections keep their defaults too.
  auto empty_sections = parse(one_target(R"(, "limits": {}, "io": {})"));
  ASSERT_TRUE(empty_sections) << empty_sections.error().message();
  EXPECT_EQ(empty_sections->limits.frame_bytes_max, d.limits.frame_bytes_max);
}

TEST_F(ConfigLoaderTest, RelativePasswordFileResolvedAgainstBaseDir) {
  fs::create_directory(dir_ + "/secrets");
  write_file("secrets/db", "from-subdir\n");
  auto r = parse(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "localhost:6432", "client_auth": "trust",
      "upstream": {"host": "h", "user": "u", "password_file": "secrets/db"}})"));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->targets[0].upstream.password, "from-subdir");
  EXPECT_EQ(r->targets[0].upstream.password_file, "secrets/db");  // as configured

  // The same document from another directory does not find the file.
  auto elsewhere = parse_config(with_targets(R"({"name": "pg", "protocol": "postgres",
      "listen": "localhost:6432", "client_auth": "trust",
      "upstream": {"host": "h", "user": "u", "password_file": "secrets/db"}})"),
                                "/nonexistent-agentgate-dir");
  ASSERT_FALSE(elsewhere);
  EXPECT_EQ(elsewhere.error().message().rfind("targets[0].upstream.password_file: cannot open "
                                              "\"/nonexistent-agentgate-dir/secrets/db\": ",
                                              0),
            0u)
      << elsewhere.error().message();

  // An absolute path ignores base_dir.
  auto absolute = parse_config(
      with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "localhost:6432", "client_auth": "trust",
      "upstream": {"host": "h", "user": "u", "password_file": ")" +
                   dir_ + R"(/secrets/db"}})"),
      "/nonexistent-agentgate-dir");
  ASSERT_TRUE(absolute) << absolute.error().message();
  EXPECT_EQ(absolute->targets[0].upstream.password, "from-subdir");
}

TEST_F(ConfigLoaderTest, LoadConfigFileResolvesAgainstItsDirectory) {
  fs::create_directory(dir_ + "/etc");
  write_file("etc/pw", "next-to-config\n");
  write_file("etc/agentgate.json", one_target());
  auto r = load_config_file(dir_ + "/etc/agentgate.json");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->targets[0].upstream.password, "next-to-config");

  auto missing = load_config_file(dir_ + "/nope.json");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), errc::invalid_argument);
  EXPECT_EQ(missing.error().message(), "config file: cannot open \"" + dir_ +
                                           "/nope.json\": No such file or directory");
}

TEST_F(ConfigLoaderTest, PasswordLineEndingStripped) {
  for (auto [contents, expected] : {std::pair{"a\n", "a"}, std::pair{"a\r\n", "a"},
                                    std::pair{"a", "a"}, std::pair{"a\n\n", "a\n"},
                                    std::pair{" a b ", " a b "}}) {
    write_file("pw", contents);
    auto r = parse(one_target());
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->targets[0].upstream.password, expected);
  }
}

TEST_F(ConfigLoaderTest, PasswordFileBounds) {
  write_file("pw", std::string(1024, 'x'));
  EXPECT_EQ(error_of(one_target()), "ok");
  write_file("pw", std::string(1025, 'x'));
  EXPECT_EQ(error_of(one_target()),
            "targets[0].upstream.password_file: \"" + dir_ + "/pw\" is larger than 1024 bytes");
  write_file("pw", "\n");
  EXPECT_EQ(error_of(one_target()),
            "targets[0].upstream.password_file: \"" + dir_ + "/pw\" is empty");
  write_file("pw", std::string("a\0b", 3));
  EXPECT_EQ(error_of(one_target()),
            "targets[0].upstream.password_file: \"" + dir_ + "/pw\" contains a NUL byte");
}

TEST_F(ConfigLoaderTest, MissingPasswordFile) {
  auto r = parse(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1", "client_auth": "trust",
      "upstream": {"host": "h", "user": "u", "password_file": "missing.txt"}})"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "targets[0].upstream.password_file: cannot open \"" + dir_ +
                                     "/missing.txt\": No such file or directory");
}

TEST_F(ConfigLoaderTest, PasswordFileMustBeRegular) {
  fs::create_directory(dir_ + "/adir");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1", "client_auth": "trust",
      "upstream": {"host": "h", "user": "u", "password_file": "adir"}})")),
            "targets[0].upstream.password_file: \"" + dir_ + "/adir\" is not a regular file");
}

TEST_F(ConfigLoaderTest, UnknownKeyTopLevel) {
  EXPECT_EQ(error_of(one_target(R"(, "shard": 2)")), "shard: unknown key");
  EXPECT_EQ(error_of(R"({"a b\n": 1})"), R"(["a b\x0a"]: unknown key)");
}

TEST_F(ConfigLoaderTest, UnknownKeyNested) {
  EXPECT_EQ(error_of(with_targets(target("a", "127.0.0.1:6432") + "," +
                                  target("b", "127.0.0.1:6433", R"(, "hots": "x")"))),
            "targets[1].upstream.hots: unknown key");
  EXPECT_EQ(error_of(one_target(R"(, "limits": {"frame_max": 1})")),
            "limits.frame_max: unknown key");
  EXPECT_EQ(error_of(one_target(R"(, "io": {"sqpoll": true})")), "io.sqpoll: unknown key");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "tags": []})")), "targets[0].tags: unknown key");
}

TEST_F(ConfigLoaderTest, NotYetSupportedKeys) {
  EXPECT_EQ(error_of(one_target(R"(, "web_console": {})")), "web_console: not supported by this build yet");
  EXPECT_EQ(error_of(one_target(R"(, "recording": {})")), "recording.dir: required");
  EXPECT_EQ(error_of(one_target(R"(, "recording": {"dir": "/tmp/r", "fsync": "never"})")),
            R"(recording.fsync: expected "interval" or "always", got "never")");
  EXPECT_EQ(error_of(one_target(R"(, "recording": {"dir": "/tmp/r", "on_failure": "ignore"})")),
            R"(recording.on_failure: expected "fail_closed" or "fail_open", got "ignore")");
  EXPECT_EQ(error_of(one_target(R"(, "recording": {"dir": "/tmp/r", "segment_bytes": 10})")),
            "recording.segment_bytes: expected an integer between 1048576 and 17179869184");
  EXPECT_EQ(error_of(one_target(R"(, "policy_file": {})")), "policy_file: expected a string");
  EXPECT_EQ(error_of(one_target(R"(, "admin": {})")), "admin.listen: required");
  EXPECT_EQ(error_of(one_target(R"(, "approvals": {"webhook_url": "ftp://x"})")),
            "approvals.webhook_url: expected an http:// or https:// URL");
  std::string mysql = target("pg", "127.0.0.1:6432");
  mysql.replace(mysql.find("postgres"), 8, "mysql");
  EXPECT_EQ(error_of(with_targets(mysql)),
            R"(targets[0].protocol: "mysql" is not supported yet; the only protocol is "postgres")");
}

TEST_F(ConfigLoaderTest, WrongType) {
  EXPECT_EQ(error_of(one_target(R"(, "shards": "2")")),
            "shards: expected an integer between 0 and 256");
  EXPECT_EQ(error_of(one_target(R"(, "shards": 2.0)")),
            "shards: expected an integer between 0 and 256");
  EXPECT_EQ(error_of(one_target(R"(, "log_level": 1)")), "log_level: expected a string");
  EXPECT_EQ(error_of(one_target(R"(, "limits": [])")), "limits: expected an object");
  EXPECT_EQ(error_of(one_target(R"(, "io": {"pin_threads": "yes"})")),
            "io.pin_threads: expected true or false");
  EXPECT_EQ(error_of(R"({"targets": {}})"), "targets: expected an array");
  EXPECT_EQ(error_of(R"({"targets": [1]})"), "targets[0]: expected an object");
  EXPECT_EQ(error_of(with_targets(R"({"name": 7})")), "targets[0].name: expected a string");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "upstream": "db:5432"})")),
            "targets[0].upstream: expected an object");
  EXPECT_EQ(error_of("[]"), "(top level): expected an object");
}

TEST_F(ConfigLoaderTest, BadPort) {
  for (const char* port : {"0", "65536", "-1", "5432.0", "\"5432\"", "1e3", "null",
                           "18446744073709551615"}) {
    EXPECT_EQ(error_of(with_targets(target("pg", "127.0.0.1:6432",
                                           std::string(R"(, "port": )") + port))),
              "targets[0].upstream.port: expected an integer between 1 and 65535")
        << port;
  }
  auto r = parse(with_targets(target("pg", "127.0.0.1:6432", R"(, "port": 65535)")));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->targets[0].upstream.port, 65535);
}

TEST_F(ConfigLoaderTest, BadListen) {
  const std::pair<const char*, const char*> cases[] = {
      {"127.0.0.1", R"(targets[0].listen: expected "host:port", got "127.0.0.1")"},
      {"127.0.0.1:0", R"(targets[0].listen: expected a port between 1 and 65535, got "127.0.0.1:0")"},
      {"127.0.0.1:65536",
       R"(targets[0].listen: expected a port between 1 and 65535, got "127.0.0.1:65536")"},
      {"127.0.0.1:", R"(targets[0].listen: expected a port between 1 and 65535, got "127.0.0.1:")"},
      {"127.0.0.1:+5", R"(targets[0].listen: expected a port between 1 and 65535, got "127.0.0.1:+5")"},
      {"::1:6432",
       R"(targets[0].listen: an IPv6 address goes in brackets, as in "[::1]:6432"; got "::1:6432")"},
      {"[::1]6432", R"(targets[0].listen: expected "[IPv6 address]:port", got "[::1]6432")"},
      {"db.example.com:6432",
       R"(targets[0].listen: expected an IPv4 address, [IPv6 address] or localhost as host, got "db.example.com:6432")"},
      {":6432",
       R"(targets[0].listen: expected an IPv4 address, [IPv6 address] or localhost as host, got ":6432")"},
      {"[127.0.0.1]:6432",
       R"(targets[0].listen: expected an IPv4 address, [IPv6 address] or localhost as host, got "[127.0.0.1]:6432")"},
      {"256.0.0.1:6432",
       R"(targets[0].listen: expected an IPv4 address, [IPv6 address] or localhost as host, got "256.0.0.1:6432")"},
  };
  for (auto [listen, message] : cases) {
    EXPECT_EQ(error_of(with_targets(target("pg", listen))), message) << listen;
  }
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "listen": 6432})")),
            "targets[0].listen: expected a string");
}

TEST_F(ConfigLoaderTest, ListenNormalized) {
  auto r = parse(with_targets(target("a", "localhost:1") + "," + target("b", "[0:0::1]:2") + "," +
                              target("c", "[::]:3")));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->targets[0].listen_host, "127.0.0.1");
  EXPECT_EQ(r->targets[0].listen_port, 1);
  EXPECT_EQ(r->targets[1].listen_host, "::1");
  EXPECT_EQ(r->targets[2].listen_host, "::");
}

TEST_F(ConfigLoaderTest, DuplicateNames) {
  EXPECT_EQ(error_of(with_targets(target("pg", "127.0.0.1:6432") + "," +
                                  target("other", "127.0.0.1:6433") + "," +
                                  target("pg", "127.0.0.1:6434"))),
            R"(targets[2].name: "pg" is already the name of targets[0])");
}

TEST_F(ConfigLoaderTest, BadNames) {
  EXPECT_EQ(error_of(with_targets(target("", "127.0.0.1:1"))),
            R"(targets[0].name: expected 1 to 64 characters from A-Z a-z 0-9 _ . -, got "")");
  EXPECT_EQ(error_of(with_targets(target("pg main", "127.0.0.1:1"))),
            R"(targets[0].name: expected 1 to 64 characters from A-Z a-z 0-9 _ . -, got "pg main")");
  EXPECT_EQ(error_of(with_targets(target(std::string(64, 'n'), "127.0.0.1:1"))), "ok");
  EXPECT_NE(error_of(with_targets(target(std::string(65, 'n'), "127.0.0.1:1"))), "ok");
}

TEST_F(ConfigLoaderTest, DuplicateListen) {
  EXPECT_EQ(error_of(with_targets(target("a", "127.0.0.1:6432") + "," +
                                  target("b", "127.0.0.1:6432"))),
            "targets[1].listen: 127.0.0.1:6432 conflicts with targets[0].listen (127.0.0.1:6432)");
  // localhost is 127.0.0.1.
  EXPECT_EQ(error_of(with_targets(target("a", "127.0.0.1:6432") + "," +
                                  target("b", "localhost:6432"))),
            "targets[1].listen: 127.0.0.1:6432 conflicts with targets[0].listen (127.0.0.1:6432)");
  // A wildcard takes every address of its port; "::" takes IPv4 too.
  EXPECT_EQ(error_of(with_targets(target("a", "0.0.0.0:6432") + "," +
                                  target("b", "10.1.2.3:6432"))),
            "targets[1].listen: 10.1.2.3:6432 conflicts with targets[0].listen (0.0.0.0:6432)");
  EXPECT_EQ(error_of(with_targets(target("a", "127.0.0.1:6432") + "," +
                                  target("b", "[::]:6432"))),
            "targets[1].listen: [::]:6432 conflicts with targets[0].listen (127.0.0.1:6432)");
  EXPECT_EQ(error_of(with_targets(target("a", "127.0.0.1:6432") + "," +
                                  target("b", "[::ffff:127.0.0.1]:6432"))),
            "targets[1].listen: [::ffff:127.0.0.1]:6432 conflicts with targets[0].listen "
            "(127.0.0.1:6432)");
  // Different ports or different specific addresses are fine.
  EXPECT_EQ(error_of(with_targets(target("a", "127.0.0.1:6432") + "," +
                                  target("b", "127.0.0.1:6433") + "," +
                                  target("c", "127.0.0.2:6432") + "," +
                                  target("d", "[::1]:6432"))),
            "ok");
}

TEST_F(ConfigLoaderTest, MalformedJson) {
  EXPECT_EQ(error_of(R"({"targets": [)"),
            "invalid JSON: The JSON document has an improper structure: missing or superfluous "
            "commas, braces, missing keys, etc.");
  EXPECT_EQ(error_of(""), "invalid JSON: Empty: no JSON found");
  EXPECT_EQ(error_of(one_target() + " // comment").rfind("invalid JSON: ", 0), 0u);
  EXPECT_EQ(error_of("{\"shards\": \"\xff\"}"), "invalid JSON: The input is not valid UTF-8");
  // A byte order mark is not malformed, just unusual.
  EXPECT_EQ(error_of("\xEF\xBB\xBF" + one_target()), "ok");
}

TEST_F(ConfigLoaderTest, EmptyOrMissingTargets) {
  EXPECT_EQ(error_of(R"({"targets": []})"), "targets: at least one target is required");
  EXPECT_EQ(error_of(R"({"shards": 1})"), "targets: required");
  EXPECT_EQ(error_of("{}"), "targets: required");
}

TEST_F(ConfigLoaderTest, MissingRequiredKeys) {
  EXPECT_EQ(error_of(with_targets(R"({"protocol": "postgres"})")), "targets[0].name: required");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg"})")), "targets[0].protocol: required");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres"})")),
            "targets[0].listen: required");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1"})")),
            "targets[0].upstream: required");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1", "client_auth": "trust",
      "upstream": {"user": "u", "password_file": "pw"}})")),
            "targets[0].upstream.host: required");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1", "client_auth": "trust",
      "upstream": {"host": "h", "password_file": "pw"}})")),
            "targets[0].upstream.user: required");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1", "client_auth": "trust",
      "upstream": {"host": "h", "user": "u"}})")),
            "targets[0].upstream.password_file: required");
}

TEST_F(ConfigLoaderTest, DuplicateKey) {
  EXPECT_EQ(error_of(with_targets(target("pg", "127.0.0.1:1", R"(, "port": 1, "port": 2)"))),
            "targets[0].upstream.port: duplicate key");
  EXPECT_EQ(error_of(one_target(R"(, "shards": 1, "shards": 1)")), "shards: duplicate key");
}

TEST_F(ConfigLoaderTest, FirstErrorInDocumentOrder) {
  EXPECT_EQ(error_of(R"({"shards": 999, "bogus": 1, "targets": []})"),
            "shards: expected an integer between 0 and 256");
}

TEST_F(ConfigLoaderTest, ValueRanges) {
  struct range_case {
    const char* json;
    const char* message;
  };
  const range_case cases[] = {
      {R"("shards": 257)", "shards: expected an integer between 0 and 256"},
      {R"("log_level": "trace")",
       R"(log_level: expected one of debug, info, warn, error, got "trace")"},
      {R"("limits": {"frame_bytes_max": 1023})",
       "limits.frame_bytes_max: expected an integer between 1024 and 1073741824"},
      {R"("limits": {"frame_bytes_max": 1073741825})",
       "limits.frame_bytes_max: expected an integer between 1024 and 1073741824"},
      {R"("limits": {"unsent_bytes_max": 4095})",
       "limits.unsent_bytes_max: expected an integer between 4096 and 67108864"},
      {R"("limits": {"startup_bytes_max": 100})",
       "limits.startup_bytes_max: expected an integer between 1024 and 65536"},
      {R"("limits": {"connect_timeout_ms": 0})",
       "limits.connect_timeout_ms: expected an integer between 1 and 86400000"},
      {R"("limits": {"auth_timeout_ms": 0})",
       "limits.auth_timeout_ms: expected an integer between 1 and 86400000"},
      {R"("limits": {"idle_timeout_ms": 86400001})",
       "limits.idle_timeout_ms: expected an integer between 0 and 86400000"},
      {R"("limits": {"sessions_per_shard_max": 0})",
       "limits.sessions_per_shard_max: expected an integer between 1 and 1000000"},
      {R"("io": {"ring_entries": 100})",
       "io.ring_entries: expected a power of two between 64 and 32768"},
      {R"("io": {"ring_entries": 65536})",
       "io.ring_entries: expected a power of two between 64 and 32768"},
      {R"("io": {"recv_buffers": 8})", "io.recv_buffers: expected a power of two between 16 and 32768"},
      {R"("io": {"recv_buffer_bytes": 512})",
       "io.recv_buffer_bytes: expected an integer between 1024 and 1048576"},
      {R"("io": {"recv_buffers": 32768, "recv_buffer_bytes": 1048576})",
       "io.recv_buffers: recv_buffers x recv_buffer_bytes is 34359738368 bytes per shard; at most "
       "1073741824"},
  };
  for (const range_case& c : cases) {
    EXPECT_EQ(error_of(one_target(std::string(", ") + c.json)), c.message) << c.json;
  }
  EXPECT_EQ(error_of(one_target(R"(, "limits": {"idle_timeout_ms": 0}, "shards": 0)")), "ok");
}

TEST_F(ConfigLoaderTest, UpstreamValues) {
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1", "client_auth": "trust",
      "upstream": {"host": "bad host"}})")),
            R"(targets[0].upstream.host: expected a host name or IP address, got "bad host")");
  EXPECT_EQ(error_of(with_targets(target("pg", "127.0.0.1:1", R"(, "database": "")"))),
            R"(targets[0].upstream.database: expected 1 to 63 bytes without control characters, got "")");
  EXPECT_EQ(error_of(with_targets(target("pg", "127.0.0.1:1", R"(, "database": "a\u0000b")"))),
            R"(targets[0].upstream.database: expected 1 to 63 bytes without control characters, got "a\x00b")");
}

TEST_F(ConfigLoaderTest, LongValuesAreCutInMessages) {
  std::string long_level(500, 'x');
  std::string message = error_of(one_target(R"(, "log_level": ")" + long_level + "\""));
  EXPECT_EQ(message, "log_level: expected one of debug, info, warn, error, got \"" +
                         std::string(80, 'x') + "\"...");
}

TEST_F(ConfigLoaderTest, DemoExampleParses) {
  // appliance/examples/demo.json, with its password file beside it as
  // scripts/demo arranges.
  // CMake compiles with absolute source paths, so __FILE__ finds the tree.
  fs::path source_dir = fs::path(__FILE__).parent_path().parent_path().parent_path();
  std::ifstream in(source_dir / "appliance/examples/demo.json");
  ASSERT_TRUE(in.good());
  std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  write_file("demo-password", "demo\n");
  // scripts/demo copies the example's policy_file beside the config, too.
  fs::copy_file(source_dir / "appliance/examples/policy-demo.json", fs::path(dir_) / "policy-demo.json");
  auto r = parse(json);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->targets.size(), 1u);
  EXPECT_EQ(r->targets[0].name, "demo");
  EXPECT_EQ(r->targets[0].listen_host, "127.0.0.1");
  EXPECT_EQ(r->targets[0].listen_port, 6432);
  EXPECT_EQ(r->targets[0].upstream.port, 5432);
  EXPECT_EQ(r->targets[0].upstream.user, "agentgate");
  EXPECT_EQ(r->targets[0].upstream.database, "demo");
  EXPECT_EQ(r->targets[0].upstream.password, "demo");
}


// ---- tls, identity, client_auth, upstream TLS ----

// Certificates and keys made with the openssl CLI, once per suite.
class ConfigLoaderTlsTest : public ConfigLoaderTest {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = (fs::temp_directory_path() / "config_loader_pki.XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    pki_ = pattern;
    for (const char* name : {"server", "other"}) {
      std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                        "-nodes -days 2 -subj /CN=localhost -keyout '" + pki_ + "/" + name +
                        "-key.pem' -out '" + pki_ + "/" + name + "-cert.pem' >/dev/null 2>&1";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
    std::string enc = "openssl genpkey -algorithm ed25519 -aes-128-cbc -pass pass:x -out '" +
                      pki_ + "/encrypted-key.pem' >/dev/null 2>&1";
    ASSERT_EQ(std::system(enc.c_str()), 0);
    auto jwks = identity::jwks_for_key(pki_ + "/server-key.pem", "k1");
    ASSERT_TRUE(jwks) << jwks.error().message();
    std::ofstream(pki_ + "/jwks.json") << *jwks;
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    fs::remove_all(pki_, ignored);
  }

  void SetUp() override {
    ConfigLoaderTest::SetUp();
    for (const char* f : {"server-cert.pem", "server-key.pem", "other-cert.pem", "other-key.pem",
                          "encrypted-key.pem", "jwks.json"}) {
      fs::copy_file(pki_ + "/" + f, dir_ + "/" + f);
    }
  }

  // A target with client_auth jwt, plus the given top-level sections.
  std::string jwt_config(const std::string& target_extra, const std::string& top_extra) {
    std::string t = bare_target("pg", "127.0.0.1:6432");
    t.insert(t.find(R"("upstream")"), R"("client_auth": "jwt", )" + target_extra);
    return with_targets(t, top_extra);
  }

  static inline std::string pki_;
};

constexpr const char* tls_ok = R"(, "tls": {"cert": "server-cert.pem", "key": "server-key.pem"})";
constexpr const char* identity_ok =
    R"(, "identity": {"issuers": [{"issuer": "https://idp.test", "audience": "agentgate",
                                   "jwks_file": "jwks.json"}]})";

TEST_F(ConfigLoaderTlsTest, TlsLoadsWithPathsResolved) {
  auto r = parse(one_target(tls_ok));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->tls.cert, dir_ + "/server-cert.pem");
  EXPECT_EQ(r->tls.key, dir_ + "/server-key.pem");
  // Absent: no TLS for clients.
  auto none = parse(one_target());
  ASSERT_TRUE(none);
  EXPECT_EQ(none->tls.cert, "");
}

TEST_F(ConfigLoaderTlsTest, TlsErrors) {
  EXPECT_EQ(error_of(one_target(R"(, "tls": {"cert": "server-cert.pem", "key": "other-key.pem"})")),
            "tls.key: does not match tls.cert");
  EXPECT_EQ(error_of(one_target(R"(, "tls": {"key": "server-key.pem"})")), "tls.cert: required");
  EXPECT_EQ(error_of(one_target(R"(, "tls": {"cert": "server-cert.pem"})")), "tls.key: required");
  EXPECT_EQ(error_of(one_target(R"(, "tls": {"cert": "nope.pem", "key": "server-key.pem"})")),
            "tls.cert: cannot open \"" + dir_ + "/nope.pem\": No such file or directory");
  EXPECT_EQ(error_of(one_target(R"(, "tls": {"cert": "pw", "key": "server-key.pem"})")),
            "tls.cert: no PEM certificate in \"" + dir_ + "/pw\"");
  EXPECT_EQ(error_of(one_target(R"(, "tls": {"cert": "server-cert.pem", "key": "server-cert.pem"})")),
            "tls.key: no unencrypted PEM private key in \"" + dir_ + "/server-cert.pem\"");
  EXPECT_EQ(error_of(one_target(R"(, "tls": {"cert": "server-cert.pem", "key": "encrypted-key.pem"})")),
            "tls.key: no unencrypted PEM private key in \"" + dir_ + "/encrypted-key.pem\"");
  EXPECT_EQ(error_of(one_target(R"(, "tls": {"cert": "", "key": "server-key.pem"})")),
            "tls.cert: expected a file path");
  EXPECT_EQ(error_of(one_target(R"(, "tls": {"cert": 1})")), "tls.cert: expected a string");
  EXPECT_EQ(error_of(one_target(R"(, "tls": {"ciphers": "x"})")), "tls.ciphers: unknown key");
  EXPECT_EQ(error_of(one_target(R"(, "tls": true)")), "tls: expected an object");
}

TEST_F(ConfigLoaderTlsTest, IdentityRoundTrip) {
  auto r = parse(jwt_config("", std::string(tls_ok) + R"(, "identity": {
      "issuers": [
        {"issuer": "https://idp.test", "audience": "agentgate", "jwks_file": "jwks.json",
         "groups_claim": "roles"},
        {"issuer": "https://login.example.com/tenant", "audience": "api://agentgate",
         "jwks_uri": "https://login.example.com/keys", "jwks_refresh_s": 600,
         "jwks_ca_file": "other-cert.pem"}],
      "leeway_s": 30, "token_bytes_max": 4096, "cache_entries_max": 0,
      "on_token_expiry": "ignore"})"));
  ASSERT_TRUE(r) << r.error().message();
  const identity_config& id = r->identity;
  ASSERT_EQ(id.issuers.size(), 2u);
  EXPECT_EQ(id.issuers[0].issuer, "https://idp.test");
  EXPECT_EQ(id.issuers[0].audience, "agentgate");
  EXPECT_EQ(id.issuers[0].jwks_file, dir_ + "/jwks.json");
  EXPECT_EQ(id.issuers[0].jwks_uri, "");
  EXPECT_EQ(id.issuers[0].groups_claim, "roles");
  EXPECT_EQ(id.issuers[1].jwks_file, "");
  EXPECT_EQ(id.issuers[1].jwks_uri, "https://login.example.com/keys");
  EXPECT_EQ(id.issuers[1].jwks_refresh_s, 600u);
  EXPECT_EQ(id.issuers[1].jwks_ca_file, dir_ + "/other-cert.pem");
  EXPECT_EQ(id.issuers[1].groups_claim, "groups");
  EXPECT_EQ(id.leeway_s, 30u);
  EXPECT_EQ(id.token_bytes_max, 4096u);
  EXPECT_EQ(id.cache_entries_max, 0u);
  EXPECT_EQ(id.on_expiry, token_expiry_action::ignore);
  EXPECT_EQ(r->targets[0].client_auth, client_auth_mode::jwt);
  EXPECT_FALSE(r->targets[0].allow_plaintext_auth);
}

TEST_F(ConfigLoaderTlsTest, IdentityDefaults) {
  auto r = parse(one_target(identity_ok));
  ASSERT_TRUE(r) << r.error().message();
  const identity_config d;
  EXPECT_EQ(r->identity.leeway_s, d.leeway_s);
  EXPECT_EQ(r->identity.token_bytes_max, d.token_bytes_max);
  EXPECT_EQ(r->identity.cache_entries_max, d.cache_entries_max);
  EXPECT_EQ(r->identity.on_expiry, token_expiry_action::terminate);
  EXPECT_EQ(r->identity.issuers[0].jwks_refresh_s, 300u);
  EXPECT_EQ(r->identity.issuers[0].groups_claim, "groups");
  auto empty = parse(one_target(R"(, "identity": {})"));
  ASSERT_TRUE(empty) << empty.error().message();
  EXPECT_TRUE(empty->identity.issuers.empty());
}

TEST_F(ConfigLoaderTlsTest, IdentityErrors) {
  auto issuer = [&](const std::string& members) {
    return error_of(one_target(R"(, "identity": {"issuers": [)" + members + "]}"));
  };
  const std::string base = R"("issuer": "https://idp.test", "audience": "agentgate")";
  EXPECT_EQ(issuer(R"({"audience": "a", "jwks_file": "jwks.json"})"),
            "identity.issuers[0].issuer: required");
  EXPECT_EQ(issuer(R"({"issuer": "i", "jwks_file": "jwks.json"})"),
            "identity.issuers[0].audience: required");
  EXPECT_EQ(issuer("{" + base + "}"),
            "identity.issuers[0].jwks_file: required unless jwks_uri is set");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_file": "missing.json"})"),
            "identity.issuers[0].jwks_file: cannot open \"" + dir_ +
                "/missing.json\": No such file or directory");
  write_file("broken.json", R"({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]})");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_file": "broken.json"})"),
            "identity.issuers[0].jwks_file: \"" + dir_ + "/broken.json\": keys[0].x: expected 32 bytes");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_uri": "http://idp.test/keys"})"),
            R"(identity.issuers[0].jwks_uri: expected an https:// URL, got "http://idp.test/keys")");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_uri": "https://idp.test/a b"})"),
            R"(identity.issuers[0].jwks_uri: expected an https:// URL, got "https://idp.test/a b")");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_file": "jwks.json", "jwks_ca_file": "other-cert.pem"})"),
            "identity.issuers[0].jwks_ca_file: only used with jwks_uri");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_file": "jwks.json", "jwks_refresh_s": 60})"),
            "identity.issuers[0].jwks_refresh_s: only used with jwks_uri");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_uri": "https://i/k", "jwks_ca_file": "pw"})"),
            "identity.issuers[0].jwks_ca_file: no PEM certificate in \"" + dir_ + "/pw\"");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_uri": "https://i/k", "jwks_refresh_s": 0})"),
            "identity.issuers[0].jwks_refresh_s: expected an integer between 1 and 86400");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_file": "jwks.json", "groups_claim": ""})"),
            "identity.issuers[0].groups_claim: expected 1 to 256 characters");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_file": "jwks.json", "kid": "x"})"),
            "identity.issuers[0].kid: unknown key");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_file": "jwks.json", "extra": 1})"),
            "identity.issuers[0].extra: unknown key");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_file": 5})"),
            "identity.issuers[0].jwks_file: expected a string");
  EXPECT_EQ(issuer(R"({"issuer": "", "audience": "a", "jwks_file": "jwks.json"})"),
            "identity.issuers[0].issuer: expected 1 to 1024 characters without control characters");
  EXPECT_EQ(issuer("{" + base + R"(, "jwks_file": "jwks.json"}, {)" + base +
                   R"(, "jwks_file": "jwks.json"})"),
            R"(identity.issuers[1].issuer: "https://idp.test" is already the issuer of identity.issuers[0])");
  std::string many;
  for (int i = 0; i < 17; ++i) {
    many += std::string(i ? "," : "") + R"({"issuer": "i)" + std::to_string(i) +
            R"(", "audience": "a", "jwks_file": "jwks.json"})";
  }
  EXPECT_EQ(issuer(many), "identity.issuers: at most 16 issuers are supported");

  EXPECT_EQ(error_of(one_target(R"(, "identity": {"issuers": {}})")),
            "identity.issuers: expected an array");
  EXPECT_EQ(error_of(one_target(R"(, "identity": {"leeway_s": 3601})")),
            "identity.leeway_s: expected an integer between 0 and 3600");
  EXPECT_EQ(error_of(one_target(R"(, "identity": {"token_bytes_max": 100})")),
            "identity.token_bytes_max: expected an integer between 1024 and 65536");
  EXPECT_EQ(error_of(one_target(R"(, "identity": {"cache_entries_max": 1000001})")),
            "identity.cache_entries_max: expected an integer between 0 and 1000000");
  EXPECT_EQ(error_of(one_target(R"(, "identity": {"on_token_expiry": "warn"})")),
            R"(identity.on_token_expiry: expected "terminate" or "ignore", got "warn")");
  EXPECT_EQ(error_of(one_target(R"(, "identity": {"issuer": "x"})")),
            "identity.issuer: unknown key");
}

TEST_F(ConfigLoaderTlsTest, ApproverAudience) {
  auto r = parse(one_target(R"(, "identity": {"issuers": [{"issuer": "https://idp.test",
      "audience": "agentgate", "approver_audience": "agentgate-approvals", "jwks_file": "jwks.json"}]})"));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->identity.issuers[0].approver_audience, "agentgate-approvals");
  EXPECT_EQ(issuer_config{}.approver_audience, "");
  EXPECT_EQ(error_of(one_target(R"(, "identity": {"issuers": [{"issuer": "https://idp.test",
      "audience": "agentgate", "approver_audience": "agentgate", "jwks_file": "jwks.json"}]})")),
            "identity.issuers[0].approver_audience: must differ from audience");
  EXPECT_EQ(error_of(one_target(R"(, "identity": {"issuers": [{"issuer": "https://idp.test",
      "audience": "agentgate", "approver_audience": "", "jwks_file": "jwks.json"}]})")),
            "identity.issuers[0].approver_audience: expected 1 to 1024 characters without control characters");
  EXPECT_EQ(error_of(one_target(R"(, "identity": {"issuers": [{"issuer": "https://idp.test",
      "audience": "agentgate", "approver_audience": 1, "jwks_file": "jwks.json"}]})")),
            "identity.issuers[0].approver_audience: expected a string");

  // With the config API on, an issuer without it is warned about.
  write_file("admin-token", "0123456789abcdef0123\n");
  const std::string admin = R"(, "admin": {"listen": "127.0.0.1:8081", "token_file": "admin-token"})";
  auto unsplit = parse(one_target(std::string(identity_ok) + admin));
  ASSERT_TRUE(unsplit) << unsplit.error().message();
  bool warned = false;
  for (const std::string& w : config_warnings(*unsplit))
    warned = warned || w.rfind("identity.issuers[0].approver_audience: not set", 0) == 0;
  EXPECT_TRUE(warned);
  for (const std::string& w : config_warnings(*r)) EXPECT_EQ(w.find("approver_audience"), std::string::npos) << w;
}

TEST_F(ConfigLoaderTlsTest, JwtClientAuthNeedsIssuersAndTls) {
  EXPECT_EQ(error_of(jwt_config("", tls_ok)),
            R"(targets[0].client_auth: "jwt" needs identity.issuers)");
  EXPECT_EQ(error_of(jwt_config("", std::string(tls_ok) + R"(, "identity": {"issuers": []})")),
            R"(targets[0].client_auth: "jwt" needs identity.issuers)");
  EXPECT_EQ(error_of(jwt_config("", identity_ok)),
            R"(targets[0].client_auth: "jwt" needs tls (or allow_plaintext_auth for loopback tests))");
  EXPECT_EQ(error_of(jwt_config(R"("allow_plaintext_auth": false, )", identity_ok)),
            R"(targets[0].client_auth: "jwt" needs tls (or allow_plaintext_auth for loopback tests))");
  auto plaintext = parse(jwt_config(R"("allow_plaintext_auth": true, )", identity_ok));
  ASSERT_TRUE(plaintext) << plaintext.error().message();
  EXPECT_TRUE(plaintext->targets[0].allow_plaintext_auth);
  // identity and tls may come before or after the targets.
  std::string t = bare_target("pg", "127.0.0.1:6432");
  t.insert(t.find(R"("upstream")"), R"("client_auth": "jwt", )");
  std::string identity_first = std::string("{") + (identity_ok + 2) + (tls_ok) +
                               R"(, "targets": [)" + t + "]}";
  EXPECT_EQ(error_of(identity_first), "ok");
  EXPECT_EQ(error_of(jwt_config("", std::string(tls_ok) + identity_ok)), "ok");
}

TEST_F(ConfigLoaderTlsTest, ClientAuthValues) {
  std::string t = bare_target("pg", "127.0.0.1:6432");
  t.insert(t.find(R"("upstream")"), R"("client_auth": "password", )");
  EXPECT_EQ(error_of(with_targets(t)),
            R"(targets[0].client_auth: expected "trust" or "jwt", got "password")");
  std::string p = target("pg", "127.0.0.1:6432");
  p.insert(p.find(R"("upstream")"), R"("allow_plaintext_auth": "yes", )");
  EXPECT_EQ(error_of(with_targets(p)), "targets[0].allow_plaintext_auth: expected true or false");
  // A trust target may carry allow_plaintext_auth; it changes nothing there.
  std::string trust = target("pg", "127.0.0.1:6432");
  trust.insert(trust.find(R"("upstream")"), R"("allow_plaintext_auth": true, )");
  EXPECT_EQ(error_of(with_targets(trust)), "ok");
}

// A target that leaves client_auth out is a jwt target: a config that
// forgets the key fails closed (no issuers, no tls) instead of letting
// anyone in.
TEST_F(ConfigLoaderTlsTest, ClientAuthDefaultsToJwt) {
  auto r = parse(with_targets(bare_target("pg", "127.0.0.1:6432"), std::string(tls_ok) + identity_ok));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->targets[0].client_auth, client_auth_mode::jwt);
  EXPECT_EQ(target_config{}.client_auth, client_auth_mode::jwt);

  EXPECT_EQ(error_of(with_targets(bare_target("pg", "127.0.0.1:6432"))),
            R"(targets[0].client_auth: "jwt" needs identity.issuers (client_auth is "jwt" unless the target says "trust"))");
  EXPECT_EQ(error_of(with_targets(bare_target("pg", "127.0.0.1:6432"), identity_ok)),
            R"(targets[0].client_auth: "jwt" needs tls (or allow_plaintext_auth for loopback tests) (client_auth is "jwt" unless the target says "trust"))");
  // A wildcard listen without client_auth is no reason to refuse: it is jwt.
  auto wild = parse(with_targets(bare_target("pg", "0.0.0.0:6432"), std::string(tls_ok) + identity_ok));
  ASSERT_TRUE(wild) << wild.error().message();
}

TEST_F(ConfigLoaderTlsTest, TrustOnNetworkNeedsAllowTrustOnNetwork) {
  auto trust_on = [&](const std::string& listen, const std::string& extra = "",
                      const std::string& name = "pg") {
    std::string t = bare_target(name, listen);
    t.insert(t.find(R"("upstream")"), R"("client_auth": "trust", )" + extra);
    return t;
  };
  auto expected = [](const std::string& shown, int index = 0) {
    return "targets[" + std::to_string(index) + R"(].client_auth: "trust" lets anyone who can reach )" +
           shown +
           " in without a password; it is allowed on loopback addresses, or with "
           "allow_trust_on_network: true on a network where every client is trusted";
  };
  EXPECT_EQ(error_of(with_targets(trust_on("0.0.0.0:6432"))), expected("0.0.0.0:6432"));
  EXPECT_EQ(error_of(with_targets(trust_on("[::]:6432"))), expected("[::]:6432"));
  EXPECT_EQ(error_of(with_targets(trust_on("10.1.2.3:6432"))), expected("10.1.2.3:6432"));
  EXPECT_EQ(error_of(with_targets(trust_on("[::ffff:10.1.2.3]:6432"))),
            expected("[::ffff:10.1.2.3]:6432"));
  // The second target is the one named.
  EXPECT_EQ(error_of(with_targets(trust_on("127.0.0.1:6432") + "," +
                                  trust_on("192.168.1.5:6433", "", "pg2"))),
            expected("192.168.1.5:6433", 1));
  // Loopback in every spelling is fine without the flag.
  for (const char* listen : {"127.0.0.1:6432", "127.0.0.2:6432", "localhost:6432", "[::1]:6432",
                             "[::ffff:127.0.0.1]:6432"}) {
    EXPECT_EQ(error_of(with_targets(trust_on(listen))), "ok") << listen;
  }
  // Said in so many words, trust on the network is allowed.
  auto allowed = parse(with_targets(trust_on("0.0.0.0:6432", R"("allow_trust_on_network": true, )")));
  ASSERT_TRUE(allowed) << allowed.error().message();
  EXPECT_TRUE(allowed->targets[0].allow_trust_on_network);
  EXPECT_EQ(error_of(with_targets(trust_on("0.0.0.0:6432", R"("allow_trust_on_network": false, )"))),
            expected("0.0.0.0:6432"));
  EXPECT_EQ(error_of(with_targets(trust_on("0.0.0.0:6432", R"("allow_trust_on_network": 1, )"))),
            "targets[0].allow_trust_on_network: expected true or false");
  // The flag means nothing on a jwt target: refused rather than ignored.
  std::string jwt = bare_target("pg", "0.0.0.0:6432");
  jwt.insert(jwt.find(R"("upstream")"), R"("client_auth": "jwt", "allow_trust_on_network": true, )");
  EXPECT_EQ(error_of(with_targets(jwt, std::string(tls_ok) + identity_ok)),
            R"(targets[0].allow_trust_on_network: only used with client_auth: "trust")");
}

TEST_F(ConfigLoaderTlsTest, UpstreamAuthMethods) {
  auto methods = [&](const std::string& extra) {
    auto r = parse(with_targets(target("pg", "127.0.0.1:6432", extra)));
    EXPECT_TRUE(r) << r.error().message();
    return r ? r->targets[0].upstream.auth_methods : upstream_auth_methods{};
  };
  // Default: SCRAM only.
  upstream_auth_methods d = methods("");
  EXPECT_TRUE(d.scram_sha_256);
  EXPECT_FALSE(d.md5);
  EXPECT_FALSE(d.password);
  EXPECT_FALSE(d.none);
  upstream_auth_methods md5_only = methods(R"(, "auth_methods": ["md5"])");
  EXPECT_FALSE(md5_only.scram_sha_256);
  EXPECT_TRUE(md5_only.md5);
  EXPECT_FALSE(md5_only.password);
  upstream_auth_methods all = methods(R"(, "auth_methods": ["password", "none", "scram-sha-256", "md5"])");
  EXPECT_TRUE(all.scram_sha_256 && all.md5 && all.password && all.none);

  auto error = [&](const std::string& extra) {
    return error_of(with_targets(target("pg", "127.0.0.1:6432", extra)));
  };
  EXPECT_EQ(error(R"(, "auth_methods": [])"),
            R"(targets[0].upstream.auth_methods: at least one method is required ("scram-sha-256" is the default))");
  EXPECT_EQ(error(R"(, "auth_methods": "md5")"),
            "targets[0].upstream.auth_methods: expected an array of authentication methods");
  EXPECT_EQ(error(R"(, "auth_methods": ["scram-sha-256", "gss"])"),
            R"(targets[0].upstream.auth_methods[1]: expected "scram-sha-256", "md5", "password" or "none", got "gss")");
  EXPECT_EQ(error(R"(, "auth_methods": ["!md5"])"),
            R"(targets[0].upstream.auth_methods[0]: expected "scram-sha-256", "md5", "password" or "none", got "!md5")");
  EXPECT_EQ(error(R"(, "auth_methods": ["md5", "md5"])"),
            R"(targets[0].upstream.auth_methods[1]: "md5" is listed twice)");
  EXPECT_EQ(error(R"(, "auth_methods": [5])"), "targets[0].upstream.auth_methods[0]: expected a string");
}

TEST_F(ConfigLoaderTlsTest, StartupWarnings) {
  auto warnings_for = [&](const std::string& targets, const std::string& extra = "") {
    auto r = parse(with_targets(targets, extra));
    EXPECT_TRUE(r) << r.error().message();
    return r ? config_warnings(*r) : std::vector<std::string>{};
  };
  auto contains = [](const std::vector<std::string>& lines, const std::string& prefix) {
    for (const std::string& line : lines)
      if (line.rfind(prefix, 0) == 0) return true;
    return false;
  };
  // Trust, upstream TLS off: both named, by key path.
  auto w = warnings_for(target("pg", "127.0.0.1:6432"));
  EXPECT_EQ(w.size(), 2u);
  EXPECT_TRUE(contains(w, R"(targets[0].client_auth: "trust" (target pg): anyone who can reach 127.0.0.1:6432)"));
  EXPECT_TRUE(contains(w, R"(targets[0].upstream.tls: "disable" (target pg): the upstream's certificate is not verified)"));
  w = warnings_for(target("pg", "127.0.0.1:6432", R"(, "tls": "require")"));
  EXPECT_TRUE(contains(w, R"(targets[0].upstream.tls: "require" (target pg))"));
  // md5 / password / none allowed upstream are warned about too.
  w = warnings_for(target("pg", "127.0.0.1:6432",
                          R"(, "tls": "verify-full", "auth_methods": ["scram-sha-256", "md5", "none"])"));
  EXPECT_EQ(w.size(), 3u);
  EXPECT_TRUE(contains(w, R"(targets[0].upstream.auth_methods: "md5" (target pg))"));
  EXPECT_TRUE(contains(w, R"(targets[0].upstream.auth_methods: "none" (target pg))"));
  // A jwt target over a verified upstream with SCRAM: nothing to say.
  std::string t = bare_target("pg", "0.0.0.0:6432", R"(, "tls": "verify-full")");
  EXPECT_TRUE(warnings_for(t, std::string(tls_ok) + identity_ok).empty());
}

TEST_F(ConfigLoaderTlsTest, UpstreamTls) {
  auto mode = [&](const std::string& extra) {
    auto r = parse(with_targets(target("pg", "127.0.0.1:6432", extra)));
    EXPECT_TRUE(r) << r.error().message();
    return r ? r->targets[0].upstream : upstream_config{};
  };
  EXPECT_EQ(mode("").tls, upstream_tls_mode::disable);
  EXPECT_EQ(mode(R"(, "tls": "disable")").tls, upstream_tls_mode::disable);
  EXPECT_EQ(mode(R"(, "tls": "require")").tls, upstream_tls_mode::require);
  EXPECT_EQ(mode(R"(, "tls": "verify-full")").tls, upstream_tls_mode::verify_full);
  upstream_config pinned = mode(R"(, "tls": "verify-full", "ca_file": "other-cert.pem")");
  EXPECT_EQ(pinned.ca_file, dir_ + "/other-cert.pem");
  EXPECT_EQ(mode(R"(, "tls": "verify-full")").ca_file, "");

  auto error = [&](const std::string& extra) {
    return error_of(with_targets(target("pg", "127.0.0.1:6432", extra)));
  };
  EXPECT_EQ(error(R"(, "tls": "verify-ca")"),
            R"(targets[0].upstream.tls: expected "disable", "require" or "verify-full", got "verify-ca")");
  EXPECT_EQ(error(R"(, "tls": true)"), "targets[0].upstream.tls: expected a string");
  EXPECT_EQ(error(R"(, "tls": "require", "ca_file": "other-cert.pem")"),
            R"(targets[0].upstream.ca_file: only used with tls: "verify-full")");
  EXPECT_EQ(error(R"(, "ca_file": "other-cert.pem")"),
            R"(targets[0].upstream.ca_file: only used with tls: "verify-full")");
  EXPECT_EQ(error(R"(, "tls": "verify-full", "ca_file": "none.pem")"),
            "targets[0].upstream.ca_file: cannot open \"" + dir_ +
                "/none.pem\": No such file or directory");
  EXPECT_EQ(error(R"(, "tls": "verify-full", "ca_file": "pw")"),
            "targets[0].upstream.ca_file: no PEM certificate in \"" + dir_ + "/pw\"");
}

}  // namespace
}  // namespace agentgate
