#include "appliance/config_loader.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

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

std::string target(const std::string& name, const std::string& listen,
                   const std::string& upstream_extra = "") {
  return R"({"name": ")" + name + R"(", "protocol": "postgres", "listen": ")" + listen +
         R"(", "upstream": {"host": "127.0.0.1", "user": "app", "password_file": "pw")" +
         upstream_extra + "}}";
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
       "upstream": {"host": "db.internal", "port": 5433, "user": "app", "password_file": "pw",
                    "database": "appdb"}},
      {"name": "pg.replica_2", "protocol": "postgres", "listen": "[::1]:6433",
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
  auto r = parse(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "localhost:6432",
      "upstream": {"host": "h", "user": "u", "password_file": "secrets/db"}})"));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->targets[0].upstream.password, "from-subdir");
  EXPECT_EQ(r->targets[0].upstream.password_file, "secrets/db");  // as configured

  // The same document from another directory does not find the file.
  auto elsewhere = parse_config(with_targets(R"({"name": "pg", "protocol": "postgres",
      "listen": "localhost:6432",
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
      with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "localhost:6432",
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
  auto r = parse(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1",
      "upstream": {"host": "h", "user": "u", "password_file": "missing.txt"}})"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "targets[0].upstream.password_file: cannot open \"" + dir_ +
                                     "/missing.txt\": No such file or directory");
}

TEST_F(ConfigLoaderTest, PasswordFileMustBeRegular) {
  fs::create_directory(dir_ + "/adir");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1",
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
  for (const char* key : {"identity", "policy_file", "recording", "admin", "tls"}) {
    EXPECT_EQ(error_of(one_target(std::string(R"(, ")") + key + R"(": {})")),
              std::string(key) + ": not supported by this build yet");
  }
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "allow_plaintext_auth": true})")),
            "targets[0].allow_plaintext_auth: not supported by this build yet");
  std::string mysql = target("pg", "127.0.0.1:6432");
  mysql.replace(mysql.find("postgres"), 8, "mysql");
  EXPECT_EQ(error_of(with_targets(mysql)),
            R"(targets[0].protocol: "mysql" is not supported yet; the only protocol is "postgres")");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "client_auth": "jwt"})")),
            R"(targets[0].client_auth: "jwt" is not supported yet; only "trust" until JWT login )"
            "arrives with identity support");
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
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1",
      "upstream": {"user": "u", "password_file": "pw"}})")),
            "targets[0].upstream.host: required");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1",
      "upstream": {"host": "h", "password_file": "pw"}})")),
            "targets[0].upstream.user: required");
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1",
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
  EXPECT_EQ(error_of(with_targets(R"({"name": "pg", "protocol": "postgres", "listen": "127.0.0.1:1",
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

}  // namespace
}  // namespace agentgate
