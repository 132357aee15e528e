// jwks_uri refresh against a real HTTPS server: Debian's python3 serving a
// directory over TLS with a certificate this test makes with the openssl
// CLI, on 127.0.0.1 and a port the kernel picks.

#include "core/identity/jwks_refresher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "core/identity/token_signer.h"
#include "tests/core/identity_test_util.h"

extern char** environ;

namespace agentgate::identity {
namespace {

namespace fs = std::filesystem;
using namespace agentgate::identity::testing;
using namespace std::chrono_literals;

constexpr const char* issuer = "https://idp.test";
constexpr const char* audience = "agentgate";

constexpr const char* server_script = R"(import http.server, ssl, sys, time
root, cert, key = sys.argv[1:4]

class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)

    def do_GET(self):
        if self.path == "/slow":
            time.sleep(60)
        return super().do_GET()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
)";

bool make_cert(const std::string& dir, const std::string& name) {
  std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
                    " -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
                    " -keyout '" + dir + "/" + name + "-key.pem' -out '" + dir + "/" + name +
                    "-cert.pem' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// Snapshots handed to the publish callback, as the engine would receive them.
struct published {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::shared_ptr<const verifier>> snapshots;

  jwks_refresher::publish_fn callback() {
    return [this](std::shared_ptr<const verifier> v) {
      std::lock_guard lock(mutex);
      snapshots.push_back(std::move(v));
      changed.notify_all();
    };
  }
  size_t count() {
    std::lock_guard lock(mutex);
    return snapshots.size();
  }
  // Waits until a snapshot satisfying pred was published.
  template <typename Pred>
  std::shared_ptr<const verifier> wait_for(Pred pred, std::chrono::seconds timeout = 20s) {
    std::unique_lock lock(mutex);
    std::shared_ptr<const verifier> found;
    changed.wait_for(lock, timeout, [&] {
      for (auto& s : snapshots) {
        if (pred(*s)) found = s;
      }
      return found != nullptr;
    });
    return found;
  }
};

class JwksRefreshTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    k1_ = make_rsa().release();
    k2_ = make_p256().release();
  }
  static void TearDownTestSuite() {
    EVP_PKEY_free(k1_);
    EVP_PKEY_free(k2_);
  }

  void SetUp() override {
    dir_ = make_temp_dir("jwks_refresh_test");
    ASSERT_FALSE(dir_.empty());
    fs::create_directory(dir_ + "/www");
    ASSERT_TRUE(make_cert(dir_, "server")) << "openssl CLI failed";
    ASSERT_TRUE(make_cert(dir_, "other"));
    std::ofstream(dir_ + "/server.py") << server_script;
    serve(jwks_of({jwk_of(k1_, "k1")}));
    start_server();
  }

  void TearDown() override {
    if (server_pid_ > 0) {
      kill(server_pid_, SIGTERM);
      int status = 0;
      waitpid(server_pid_, &status, 0);
    }
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  void start_server() {
    int out[2];
    ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    std::string script = dir_ + "/server.py", root = dir_ + "/www",
                cert = dir_ + "/server-cert.pem", key = dir_ + "/server-key.pem";
    char* argv[] = {const_cast<char*>("/usr/bin/python3"), script.data(), root.data(), cert.data(),
                    key.data(), nullptr};
    int rc = posix_spawn(&server_pid_, argv[0], &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    ASSERT_EQ(rc, 0);
    std::string line;
    pollfd pfd{out[0], POLLIN, 0};
    while (line.find('\n') == std::string::npos && poll(&pfd, 1, 20000) == 1) {
      char buf[64];
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    close(out[0]);
    ASSERT_NE(line.find('\n'), std::string::npos) << "the HTTPS server did not start";
    port_ = std::stoi(line);
  }

  // Replaces what the server answers for /jwks.json, atomically.
  void serve(const std::string& body, const std::string& name = "jwks.json") {
    std::string tmp = dir_ + "/www/." + name + ".tmp";
    std::ofstream(tmp) << body;
    fs::rename(tmp, dir_ + "/www/" + name);
  }

  std::string url(const std::string& path = "/jwks.json") const {
    return "https://127.0.0.1:" + std::to_string(port_) + path;
  }

  identity_config config(const std::string& uri, const std::string& file = "",
                         uint32_t refresh_s = 1, const std::string& ca = "server") const {
    identity_config c;
    issuer_config i;
    i.issuer = issuer;
    i.audience = audience;
    i.jwks_uri = uri;
    i.jwks_file = file;
    i.jwks_refresh_s = refresh_s;
    i.jwks_ca_file = dir_ + "/" + ca + "-cert.pem";
    c.issuers = {i};
    return c;
  }

  static std::string token_for(EVP_PKEY* key, const std::string& kid) {
    std::string alg = EVP_PKEY_is_a(key, "RSA") ? "RS256" : "ES256";
    return craft(key, alg, R"({"alg":")" + alg + R"(","kid":")" + kid + R"("})",
                 R"({"iss":")" + std::string(issuer) + R"(","aud":")" + audience +
                     R"(","sub":"agent","exp":)" + std::to_string(now() + 3600) + "}");
  }
  static int64_t now() { return static_cast<int64_t>(std::time(nullptr)); }
  static std::string outcome(const verifier& v, const std::string& token) {
    auto r = v.verify(token, now());
    return r ? std::string("ok") : r.error().message();
  }

  static EVP_PKEY* k1_;
  static EVP_PKEY* k2_;
  std::string dir_;
  pid_t server_pid_ = -1;
  int port_ = 0;
  published published_;
};

EVP_PKEY* JwksRefreshTest::k1_ = nullptr;
EVP_PKEY* JwksRefreshTest::k2_ = nullptr;

TEST_F(JwksRefreshTest, RotatedKeyIsPickedUpAndRemovedKeyStopsWorking) {
  auto created = jwks_refresher::create(config(url()), published_.callback());
  ASSERT_TRUE(created) << created.error().message();
  jwks_refresher& refresher = **created;
  std::string t1 = token_for(k1_, "k1"), t2 = token_for(k2_, "k2");
  // Nothing fetched yet: the issuer has no keys.
  EXPECT_EQ(outcome(*refresher.current(), t1), "unknown signing key");

  refresher.start();
  auto first = published_.wait_for([&](const verifier& v) { return outcome(v, t1) == "ok"; });
  ASSERT_NE(first, nullptr) << "the first fetch was never published";
  token_cache shard_cache(100);
  ASSERT_TRUE(shard_cache.verify(*first, t1, now()));

  // The IdP adds k2 next to k1: both work, without a restart.
  serve(jwks_of({jwk_of(k1_, "k1"), jwk_of(k2_, "k2")}));
  auto both = published_.wait_for([&](const verifier& v) {
    return outcome(v, t1) == "ok" && outcome(v, t2) == "ok";
  });
  ASSERT_NE(both, nullptr) << "the new kid was never picked up";

  // Then retires k1: tokens signed with it stop working, cached or not.
  serve(jwks_of({jwk_of(k2_, "k2")}));
  auto rotated = published_.wait_for([&](const verifier& v) { return outcome(v, t1) != "ok"; });
  ASSERT_NE(rotated, nullptr) << "the removed key was never dropped";
  EXPECT_EQ(outcome(*rotated, t1), "unknown signing key");
  EXPECT_EQ(outcome(*rotated, t2), "ok");
  auto replay = shard_cache.verify(*rotated, t1, now());
  ASSERT_FALSE(replay);
  EXPECT_EQ(replay.error().message(), "unknown signing key");
  EXPECT_EQ(refresher.current()->generation(), rotated->generation());

  // Unchanged keys publish nothing new, however often they are fetched.
  size_t published_before = published_.count();
  uint64_t fetches_before = refresher.fetches();
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (refresher.fetches() < fetches_before + 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_GE(refresher.fetches(), fetches_before + 2);
  EXPECT_EQ(published_.count(), published_before);
  refresher.stop();
}

TEST_F(JwksRefreshTest, UriKeysReplaceFileKeys) {
  std::string file = dir_ + "/file-jwks.json";
  std::ofstream(file) << jwks_of({jwk_of(k2_, "pinned")});
  serve(jwks_of({jwk_of(k1_, "k1")}));
  auto created = jwks_refresher::create(config(url(), file), published_.callback());
  ASSERT_TRUE(created) << created.error().message();
  jwks_refresher& refresher = **created;
  std::string pinned = token_for(k2_, "pinned"), fetched = token_for(k1_, "k1");
  EXPECT_EQ(outcome(*refresher.current(), pinned), "ok");  // the file until the first fetch
  EXPECT_EQ(outcome(*refresher.current(), fetched), "unknown signing key");
  ASSERT_TRUE(refresher.refresh_uris());
  ASSERT_EQ(published_.count(), 1u);
  EXPECT_EQ(outcome(*refresher.current(), fetched), "ok");
  EXPECT_EQ(outcome(*refresher.current(), pinned), "unknown signing key");
}

TEST_F(JwksRefreshTest, FailedFetchKeepsPreviousKeys) {
  auto created = jwks_refresher::create(config(url()), published_.callback());
  ASSERT_TRUE(created) << created.error().message();
  jwks_refresher& refresher = **created;
  ASSERT_TRUE(refresher.refresh_uris());
  std::string t1 = token_for(k1_, "k1");
  auto good = refresher.current();
  ASSERT_EQ(outcome(*good, t1), "ok");

  serve("{\"keys\": [", "jwks.json");  // broken JSON
  status broken = refresher.refresh_uris();
  EXPECT_FALSE(broken);
  EXPECT_EQ(broken.message().rfind("identity.issuers[0].jwks_uri: invalid JSON", 0), 0u)
      << broken.message();
  fs::remove(dir_ + "/www/jwks.json");  // 404
  status missing = refresher.refresh_uris();
  EXPECT_EQ(missing.message(), "identity.issuers[0].jwks_uri: HTTP status 404");
  serve(jwks_of({R"({"kty":"oct","k":"c2VjcmV0"})"}));  // nothing usable
  EXPECT_FALSE(refresher.refresh_uris());

  EXPECT_EQ(refresher.current(), good);
  EXPECT_EQ(outcome(*refresher.current(), t1), "ok");
  EXPECT_EQ(published_.count(), 1u);

  serve(jwks_of({jwk_of(k2_, "k2")}));
  EXPECT_TRUE(refresher.refresh_uris());
  EXPECT_EQ(outcome(*refresher.current(), token_for(k2_, "k2")), "ok");
  EXPECT_EQ(outcome(*refresher.current(), t1), "unknown signing key");
}

TEST_F(JwksRefreshTest, ServerMustBeTrustedByTheConfiguredCa) {
  auto created =
      jwks_refresher::create(config(url(), "", 1, "other"), published_.callback());
  ASSERT_TRUE(created) << created.error().message();
  status s = (*created)->refresh_uris();
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("certificate"), std::string::npos) << s.message();
  EXPECT_EQ(published_.count(), 0u);
  // Plain http is not fetched at all.
  auto plain = jwks_refresher::create(
      config("http://127.0.0.1:" + std::to_string(port_) + "/jwks.json"), nullptr);
  ASSERT_TRUE(plain);
  status p = (*plain)->refresh_uris();
  ASSERT_FALSE(p);
  EXPECT_NE(p.message().find("Unsupported protocol"), std::string::npos) << p.message();
}

TEST_F(JwksRefreshTest, OversizedBodyIsRefused) {
  serve(std::string(jwks_bytes_max + 1, ' '), "big.json");
  auto created = jwks_refresher::create(config(url("/big.json")), published_.callback());
  ASSERT_TRUE(created);
  status s = (*created)->refresh_uris();
  EXPECT_EQ(s.message(), "identity.issuers[0].jwks_uri: response larger than 262144 bytes");
}

TEST_F(JwksRefreshTest, RequestRefreshFetchesNow) {
  auto created = jwks_refresher::create(config(url(), "", 3600), published_.callback());
  ASSERT_TRUE(created);
  jwks_refresher& refresher = **created;
  refresher.start();
  std::string t2 = token_for(k2_, "k2");
  ASSERT_NE(published_.wait_for([&](const verifier& v) {
              return outcome(v, token_for(k1_, "k1")) == "ok";
            }),
            nullptr);
  serve(jwks_of({jwk_of(k2_, "k2")}));
  refresher.request_refresh();
  EXPECT_NE(published_.wait_for([&](const verifier& v) { return outcome(v, t2) == "ok"; }), nullptr);
}

TEST_F(JwksRefreshTest, StopIsPromptEvenDuringAFetch) {
  auto created = jwks_refresher::create(config(url("/slow"), "", 3600), published_.callback());
  ASSERT_TRUE(created);
  jwks_refresher& refresher = **created;
  refresher.start();
  std::this_thread::sleep_for(300ms);  // the fetch is now waiting on the server
  auto started = std::chrono::steady_clock::now();
  refresher.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
  refresher.stop();  // idempotent
}

TEST_F(JwksRefreshTest, StopWhileIdleIsPrompt) {
  auto created = jwks_refresher::create(config(url(), "", 3600), published_.callback());
  ASSERT_TRUE(created);
  (*created)->start();
  ASSERT_NE(published_.wait_for([](const verifier&) { return true; }), nullptr);
  auto started = std::chrono::steady_clock::now();
  created->reset();  // the destructor stops
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
}

TEST_F(JwksRefreshTest, CreateErrorsNameTheConfigPath) {
  std::string missing = dir_ + "/missing.json";
  auto r = jwks_refresher::create(config("", missing), nullptr);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "identity.issuers[0].jwks_file: cannot open \"" + missing +
                                     "\": No such file or directory");
  identity_config two = config("", dir_ + "/ok.json");
  std::ofstream(dir_ + "/ok.json") << jwks_of({jwk_of(k1_, "k1")});
  two.issuers.push_back(two.issuers[0]);
  two.issuers[1].issuer = "https://second.test";
  two.issuers[1].jwks_file = dir_ + "/bad.json";
  std::ofstream(dir_ + "/bad.json") << R"({"keys":[{"kty":"RSA","n":"***","e":"AQAB"}]})";
  auto bad = jwks_refresher::create(two, nullptr);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(),
            "identity.issuers[1].jwks_file: \"" + dir_ + "/bad.json\": keys[0].n: bad base64url");
  auto neither = jwks_refresher::create(config(""), nullptr);
  ASSERT_FALSE(neither);
  EXPECT_EQ(neither.error().message(), "identity.issuers[0]: needs jwks_file or jwks_uri");
}

TEST_F(JwksRefreshTest, ReloadFilesIsAllOrNothing) {
  std::string file = dir_ + "/keys.json";
  std::ofstream(file) << jwks_of({jwk_of(k1_, "k1")});
  auto created = jwks_refresher::create(config("", file), published_.callback());
  ASSERT_TRUE(created);
  jwks_refresher& refresher = **created;
  EXPECT_FALSE(refresher.has_uris());
  refresher.start();  // nothing to fetch: no thread
  auto initial = refresher.current();
  EXPECT_TRUE(refresher.reload_files());  // unchanged: nothing published
  EXPECT_EQ(published_.count(), 0u);

  std::ofstream(file) << "not json";
  status s = refresher.reload_files();
  EXPECT_EQ(s.message().rfind("identity.issuers[0].jwks_file: ", 0), 0u) << s.message();
  EXPECT_EQ(refresher.current(), initial);

  std::ofstream(file) << jwks_of({jwk_of(k2_, "k2")});
  ASSERT_TRUE(refresher.reload_files());
  ASSERT_EQ(published_.count(), 1u);
  EXPECT_EQ(outcome(*refresher.current(), token_for(k2_, "k2")), "ok");
  EXPECT_EQ(outcome(*refresher.current(), token_for(k1_, "k1")), "unknown signing key");
}

}  // namespace
}  // namespace agentgate::identity
