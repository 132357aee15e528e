#include "appliance/control.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "appliance/guard.h"
#include "tests/io/shard_test_util.h"

namespace agentgate {
namespace {

using testing::eventually;
using testing::gate;
using testing::running_shards;
using testing::stall_task;

constexpr char admin_token[] = "t0ken-for-control-tests-0123456789";

std::string policy_doc(const char* id) {
  return std::string(R"({"default_action": "allow", "rules": [{"id": ")") + id +
         R"(", "match": {"sql": {"statements": ["DROP TABLE"]}}, "action": "deny", "message": "no"}]})";
}

// One blocking HTTP/1.1 exchange with Connection: close; the whole response.
std::string http(uint16_t port, const std::string& method, const std::string& path, const std::string& body = {}) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return {};
  }
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + admin_token +
                    "\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

// Two shards, one guard each, the policy store at version 1.
class ControlPlane : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<policy_error> errors;
    result<std::shared_ptr<const policy>> first = store_.put(policy_doc("v1"), "test", errors);
    ASSERT_TRUE(first) << first.error().message() << (errors.empty() ? "" : " " + errors[0].path + ": " + errors[0].message);
    result<std::vector<guard_snapshot>> built = build_guard_snapshots(*first, 2);
    ASSERT_TRUE(built) << built.error().message();
    std::vector<shard_parts> parts(2);
    for (unsigned i = 0; i < 2; ++i) {
      guards_.push_back(std::make_unique<policy_guard>(std::move((*built)[i])));
      parts[i].shard = &shards_[i];
      parts[i].guard = guards_.back().get();
    }
    control_ = std::make_unique<control_plane>(std::move(parts), store_);
    control_->set_answer_timeout_ms(200);
  }
  void TearDown() override { stalled_.open(); }

  void stall(unsigned shard) {
    ASSERT_TRUE(shards_[shard].post_from_control(std::make_unique<stall_task>(stalled_)));
    ASSERT_TRUE(stalled_.wait_entered(std::chrono::seconds(10)));
  }
  // What shard i's own thread says, once it answers.
  uint64_t version_on(unsigned i) {
    std::atomic<uint64_t> v{0};
    std::atomic<bool> done{false};
    class ask final : public shard_task {
     public:
      ask(policy_guard& g, std::atomic<uint64_t>& v, std::atomic<bool>& d) : g_(g), v_(v), d_(d) {}
      void run(shard_services&) override {
        v_.store(g_.version());
        d_.store(true);
      }

     private:
      policy_guard& g_;
      std::atomic<uint64_t>& v_;
      std::atomic<bool>& d_;
    };
    EXPECT_TRUE(shards_[i].post_from_control(std::make_unique<ask>(*guards_[i], v, done)));
    EXPECT_TRUE(eventually([&] { return done.load(); }));
    return v.load();
  }

  // Destroyed bottom up: the shards stop (and drop what waits in their
  // inboxes) before anything their tasks point to goes.
  gate stalled_;
  policy_store store_;
  std::vector<std::unique_ptr<policy_guard>> guards_;
  std::unique_ptr<control_plane> control_;
  running_shards shards_{2};
};

// Item 5 of issue 10: a shard answering after the fan-out gave up used to
// write into the caller's freed vector (heap-use-after-free under ASan).
TEST_F(ControlPlane, LateShardAnswersIntoMemoryTheFanOutOwns) {
  stall(1);
  for (int round = 0; round < 3; ++round) {
    const std::string metrics = control_->metrics_text();
    EXPECT_NE(metrics.find("agentgate_shard_answered{shard=\"0\"} 1"), std::string::npos);
    EXPECT_NE(metrics.find("agentgate_shard_answered{shard=\"1\"} 0"), std::string::npos);
    EXPECT_NE(metrics.find("agentgate_policy_version{shard=\"0\"} 1"), std::string::npos);
    EXPECT_EQ(metrics.find("agentgate_policy_version{shard=\"1\"}"), std::string::npos);
    const std::string sessions = control_->sessions_json();
    EXPECT_NE(sessions.find("\"shards_unanswered\":[1]"), std::string::npos) << sessions;
  }
  // The late answers now run, after every caller's frame is gone.
  stalled_.open();
  EXPECT_EQ(version_on(1), 1u);
  const std::string metrics = control_->metrics_text();
  EXPECT_NE(metrics.find("agentgate_shard_answered{shard=\"1\"} 1"), std::string::npos);
  EXPECT_EQ(control_->sessions_json(), "{\"sessions\":[]}");
}

// Item 6: a policy swap reaches a shard whose inbox overflowed while it was
// stalled, and until it does the API says which shard has not applied it.
TEST_F(ControlPlane, PolicySwapReachesAStalledShardAndIsReportedPending) {
  admin_server_options options;
  options.admin_token = admin_token;
  admin_server admin(options);
  control_->register_routes(admin);
  ASSERT_TRUE(admin.start());

  stall(1);
  class noop final : public shard_task {
   public:
    void run(shard_services&) override {}
  };
  for (int i = 0; i < 3000; ++i) ASSERT_TRUE(shards_[1].post_from_control(std::make_unique<noop>()));

  const std::string put = http(admin.port(), "PUT", "/v1/policy", policy_doc("v2"));
  EXPECT_NE(put.find("HTTP/1.1 202"), std::string::npos) << put;
  EXPECT_NE(put.find("\"version\":2"), std::string::npos) << put;
  EXPECT_NE(put.find("\"in_force\":false"), std::string::npos) << put;
  EXPECT_NE(put.find("\"shards_pending\":[1]"), std::string::npos) << put;
  const std::string get = http(admin.port(), "GET", "/v1/policy");
  EXPECT_NE(get.find("X-Policy-Version: 2"), std::string::npos) << get;
  EXPECT_NE(get.find("X-Policy-In-Force: pending"), std::string::npos) << get;
  EXPECT_NE(get.find("X-Policy-Shards-Pending: 1"), std::string::npos) << get;
  EXPECT_EQ(version_on(0), 2u);

  // A newer version while the shard is still stalled replaces the waiting one.
  const std::string put3 = http(admin.port(), "PUT", "/v1/policy", policy_doc("v3"));
  EXPECT_NE(put3.find("\"shards_pending\":[1]"), std::string::npos) << put3;

  stalled_.open();
  EXPECT_EQ(version_on(1), 3u);
  EXPECT_TRUE(control_->shards_without(3).empty());
  const std::string after = http(admin.port(), "GET", "/v1/policy");
  EXPECT_NE(after.find("X-Policy-In-Force: all-shards"), std::string::npos) << after;
  EXPECT_EQ(after.find("X-Policy-Shards-Pending"), std::string::npos) << after;
  const std::string put4 = http(admin.port(), "PUT", "/v1/policy", policy_doc("v4"));
  EXPECT_NE(put4.find("HTTP/1.1 200"), std::string::npos) << put4;
  EXPECT_NE(put4.find("\"in_force\":true"), std::string::npos) << put4;
  admin.stop();
}

}  // namespace
}  // namespace agentgate
