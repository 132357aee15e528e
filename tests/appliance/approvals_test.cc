#include "appliance/approvals.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <simdjson.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "appliance/admin_server.h"
#include "appliance/approvals_cli.h"

namespace agentgate {
namespace {

using namespace std::chrono_literals;
using identity::verified_identity;

constexpr char admin_token[] = "admin-t0ken-for-approvals-tests-0123";
constexpr char issuer[] = "https://idp.example";

approval_request make_request(uint32_t timeout_s = 300) {
  approval_request q;
  q.target = "pg-main";
  q.issuer = issuer;
  q.subject = "alice";
  q.email = "alice@example.com";
  q.groups = {"dev"};
  q.command = "DELETE FROM users";
  q.rule_id = "bulk-writes";
  q.rule_message = "bulk writes need a DBA";
  q.approvers = {"dba", "sre"};
  q.timeout_s = timeout_s;
  q.prompt_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  q.session_id = "s-1";
  q.client_address = "10.0.0.5:51234";
  return q;
}

verified_identity person(std::string sub, std::vector<std::string> groups, std::string email = "") {
  verified_identity v;
  v.issuer = issuer;
  v.sub = std::move(sub);
  v.email = std::move(email);
  v.groups = std::move(groups);
  v.exp_s = 4'000'000'000;
  return v;
}

// Collects verdicts from whatever thread delivers them.
struct verdicts {
  std::mutex mu;
  std::vector<approval_verdict> got;

  verdict_fn fn() {
    return [this](const approval_verdict& v) {
      std::lock_guard lock(mu);
      got.push_back(v);
    };
  }
  size_t count() {
    std::lock_guard lock(mu);
    return got.size();
  }
  approval_verdict at(size_t i) {
    std::lock_guard lock(mu);
    return got.at(i);
  }
  bool wait_for(size_t n, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (count() < n) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }
};

TEST(ApprovalService, SubmitListDecide) {
  approval_service svc({});
  verdicts v;
  result<std::string> id = svc.submit(make_request(), v.fn());
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(id->size(), 32u);
  EXPECT_EQ(id->find_first_not_of("0123456789abcdef"), std::string::npos);

  std::vector<approval_record> pending = svc.list(false);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].id, *id);
  EXPECT_EQ(pending[0].state, approval_state::pending);
  EXPECT_EQ(pending[0].request.command, "DELETE FROM users");
  EXPECT_EQ(pending[0].expires_at_s - pending[0].created_at_s, 300);
  EXPECT_EQ(svc.stats().pending, 1u);

  result<approval_record> r = svc.decide(*id, true, person("bob", {"dba"}, "bob@example.com"), "looks fine");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->state, approval_state::approved);
  EXPECT_EQ(r->approver_subject, "bob");
  EXPECT_EQ(r->reason, "looks fine");
  EXPECT_GT(r->decided_at_s, 0);
  ASSERT_EQ(v.count(), 1u);  // delivered on this thread before decide() returned
  EXPECT_TRUE(v.at(0).approved);
  EXPECT_EQ(v.at(0).reason, "approved by bob@example.com: looks fine");
  EXPECT_EQ(v.at(0).approver, "bob@example.com");

  EXPECT_TRUE(svc.list(false).empty());
  std::vector<approval_record> all = svc.list(true);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].state, approval_state::approved);
  EXPECT_EQ(all[0].verdict, "approved by bob@example.com: looks fine");
  approval_stats s = svc.stats();
  EXPECT_EQ(s.pending, 0u);
  EXPECT_EQ(s.approved, 1u);
  EXPECT_EQ(s.submitted, 1u);
}

TEST(ApprovalService, DenyWithoutReasonNamesTheSubject) {
  approval_service svc({});
  verdicts v;
  std::string id = *svc.submit(make_request(), v.fn());
  result<approval_record> r = svc.decide(id, false, person("bob", {"sre"}), "");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->state, approval_state::denied);
  ASSERT_EQ(v.count(), 1u);
  EXPECT_FALSE(v.at(0).approved);
  EXPECT_EQ(v.at(0).reason, "denied by bob");
  EXPECT_EQ(svc.stats().denied, 1u);
}

TEST(ApprovalService, ListIsNewestFirst) {
  approval_service svc({});
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(*svc.submit(make_request(), nullptr));
  std::vector<approval_record> l = svc.list(false);
  ASSERT_EQ(l.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(l[i].id, ids[4 - i]);
}

TEST(ApprovalService, RequesterCannotApproveOwnCommand) {
  approval_service svc({});
  verdicts v;
  std::string id = *svc.submit(make_request(), v.fn());
  // alice is in an approver group too: being the requester still wins.
  result<approval_record> r = svc.decide(id, true, person("alice", {"dba"}), "");
  ASSERT_FALSE(r);
  EXPECT_EQ(approval_http_status(r.error()), 403);
  EXPECT_EQ(r.error().message(), "requesters cannot approve their own commands");
  EXPECT_EQ(v.count(), 0u);
  // Same sub from another issuer is another person.
  verified_identity other = person("alice", {"dba"});
  other.issuer = "https://other-idp.example";
  EXPECT_TRUE(svc.decide(id, true, other, ""));
}

TEST(ApprovalService, ApproverMustBeInAnApproverGroup) {
  approval_service svc({});
  verdicts v;
  std::string id = *svc.submit(make_request(), v.fn());
  result<approval_record> r = svc.decide(id, true, person("mallory", {"dev", "qa"}), "");
  ASSERT_FALSE(r);
  EXPECT_EQ(approval_http_status(r.error()), 403);
  EXPECT_EQ(r.error().message(), "not an approver for rule bulk-writes");
  EXPECT_EQ(v.count(), 0u);
  EXPECT_EQ(svc.list(false).size(), 1u);
}

TEST(ApprovalService, DecideTwiceConflicts) {
  approval_service svc({});
  verdicts v;
  std::string id = *svc.submit(make_request(), v.fn());
  ASSERT_TRUE(svc.decide(id, false, person("bob", {"dba"}), "no"));
  result<approval_record> again = svc.decide(id, true, person("carol", {"dba"}), "");
  ASSERT_FALSE(again);
  EXPECT_EQ(approval_http_status(again.error()), 409);
  EXPECT_EQ(again.error().message(), "approval request is already denied");
  EXPECT_EQ(v.count(), 1u);
}

TEST(ApprovalService, UnknownIdAndLongReason) {
  approval_service svc({});
  result<approval_record> r = svc.decide("nope", true, person("bob", {"dba"}), "");
  ASSERT_FALSE(r);
  EXPECT_EQ(approval_http_status(r.error()), 404);
  std::string id = *svc.submit(make_request(), nullptr);
  r = svc.decide(id, true, person("bob", {"dba"}), std::string(1025, 'x'));
  ASSERT_FALSE(r);
  EXPECT_EQ(approval_http_status(r.error()), 400);
  EXPECT_TRUE(svc.decide(id, true, person("bob", {"dba"}), std::string(1024, 'x')));
}

TEST(ApprovalService, WithdrawCallsNoVerdict) {
  approval_service svc({});
  ASSERT_TRUE(svc.start());
  verdicts v;
  std::string id = *svc.submit(make_request(1), v.fn());
  svc.withdraw(id);
  svc.withdraw(id);  // twice: ignored
  svc.withdraw("unknown");
  result<approval_record> r = svc.decide(id, true, person("bob", {"dba"}), "");
  ASSERT_FALSE(r);
  EXPECT_EQ(approval_http_status(r.error()), 409);
  std::this_thread::sleep_for(1300ms);  // past the deadline: no timeout verdict either
  EXPECT_EQ(v.count(), 0u);
  std::optional<approval_record> rec = svc.get(id);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->state, approval_state::withdrawn);
  EXPECT_EQ(rec->verdict, "withdrawn");
  EXPECT_EQ(svc.stats().withdrawn, 1u);
  EXPECT_EQ(svc.stats().expired, 0u);
}

TEST(ApprovalService, TimeoutDeliversOneDenial) {
  approval_service svc({});
  ASSERT_TRUE(svc.start());
  verdicts v;
  // The callback calls back into the service: it must run without the lock.
  std::atomic<size_t> seen_pending{99};
  std::string id = *svc.submit(make_request(1), [&](const approval_verdict& verdict) {
    seen_pending = svc.list(false).size();
    v.fn()(verdict);
  });
  std::string later = *svc.submit(make_request(60), nullptr);
  ASSERT_TRUE(v.wait_for(1, 3s));
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(v.count(), 1u);
  EXPECT_FALSE(v.at(0).approved);
  EXPECT_EQ(v.at(0).reason, "timed out after 1 s");
  EXPECT_EQ(v.at(0).approver, "");
  EXPECT_EQ(seen_pending.load(), 1u);  // only the 60 s one is left
  EXPECT_EQ(svc.get(id)->state, approval_state::expired);
  EXPECT_EQ(svc.get(later)->state, approval_state::pending);
  result<approval_record> r = svc.decide(id, true, person("bob", {"dba"}), "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "approval request is already expired");
  EXPECT_EQ(svc.stats().expired, 1u);
  svc.stop();
  svc.stop();  // idempotent
}

TEST(ApprovalService, DecidePastTheDeadlineExpiresWithoutTheThread) {
  approval_service svc({});  // not started: no expiry thread
  verdicts v;
  std::string id = *svc.submit(make_request(1), v.fn());
  std::this_thread::sleep_for(1100ms);
  result<approval_record> r = svc.decide(id, true, person("bob", {"dba"}), "");
  ASSERT_FALSE(r);
  EXPECT_EQ(approval_http_status(r.error()), 409);
  ASSERT_EQ(v.count(), 1u);
  EXPECT_FALSE(v.at(0).approved);
  EXPECT_EQ(v.at(0).reason, "timed out after 1 s");
}

TEST(ApprovalService, VerdictCallbackMayReenterTheService) {
  approval_service svc({});
  std::string second;
  bool called = false;
  std::string id = *svc.submit(make_request(), [&](const approval_verdict&) {
    called = true;
    EXPECT_EQ(svc.list(true).size(), 1u);  // deadlocks if called under the lock
    result<std::string> s = svc.submit(make_request(), nullptr);
    ASSERT_TRUE(s);
    second = *s;
    (void)svc.stats();
  });
  ASSERT_TRUE(svc.decide(id, true, person("bob", {"dba"}), ""));
  EXPECT_TRUE(called);
  EXPECT_EQ(svc.list(false).size(), 1u);
}

TEST(ApprovalService, PendingMaxBound) {
  approval_options o;
  o.pending_max = 3;
  approval_service svc(o);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(*svc.submit(make_request(), nullptr));
  bool called = false;
  result<std::string> r = svc.submit(make_request(), [&](const approval_verdict&) { called = true; });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), errc::limit);
  EXPECT_EQ(svc.stats().refused, 1u);
  // Deciding one makes room again.
  ASSERT_TRUE(svc.decide(ids[0], true, person("bob", {"dba"}), ""));
  EXPECT_TRUE(svc.submit(make_request(), nullptr));
  EXPECT_FALSE(called);
}

// One identity's flood of held commands must not block everyone else's
// approvals (issue 10): it hits its own bound first.
TEST(ApprovalService, PendingBoundPerIdentity) {
  approval_options o;
  o.pending_max = 10;
  o.pending_per_identity_max = 3;
  approval_service svc(o);
  std::vector<std::string> alices;
  for (int i = 0; i < 3; ++i) alices.push_back(*svc.submit(make_request(), nullptr));
  result<std::string> flood = svc.submit(make_request(), nullptr);
  ASSERT_FALSE(flood);
  EXPECT_EQ(flood.error().code(), errc::limit);
  EXPECT_NE(flood.error().message().find("identity"), std::string::npos) << flood.error().message();
  // Another subject, and the same subject from another issuer, still get in.
  approval_request carol = make_request();
  carol.subject = "carol";
  EXPECT_TRUE(svc.submit(carol, nullptr));
  approval_request other_idp = make_request();
  other_idp.issuer = "https://other-idp.example";
  EXPECT_TRUE(svc.submit(other_idp, nullptr));
  // Every way out of pending makes room again: a decision, a withdrawal, expiry.
  ASSERT_TRUE(svc.decide(alices[0], false, person("bob", {"dba"}), ""));
  ASSERT_TRUE(svc.submit(make_request(), nullptr));
  EXPECT_FALSE(svc.submit(make_request(), nullptr));
  svc.withdraw(alices[1]);
  EXPECT_TRUE(svc.submit(make_request(), nullptr));
  EXPECT_EQ(svc.stats().refused, 2u);
}

TEST(ApprovalService, PerIdentityCountsFollowExpiry) {
  approval_options o;
  o.pending_per_identity_max = 2;
  approval_service svc(o);
  ASSERT_TRUE(svc.start());
  ASSERT_TRUE(svc.submit(make_request(1), nullptr));
  ASSERT_TRUE(svc.submit(make_request(1), nullptr));
  EXPECT_FALSE(svc.submit(make_request(1), nullptr));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (svc.stats().expired < 2 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(svc.stats().expired, 2u);
  EXPECT_TRUE(svc.submit(make_request(1), nullptr));
  svc.stop();
}

TEST(ApprovalService, HistoryIsBounded) {
  approval_options o;
  o.history_max = 2;
  approval_service svc(o);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(*svc.submit(make_request(), nullptr));
    ASSERT_TRUE(svc.decide(ids.back(), i % 2 == 0, person("bob", {"dba"}), ""));
  }
  std::vector<approval_record> all = svc.list(true);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id, ids[3]);
  EXPECT_EQ(all[1].id, ids[2]);
  EXPECT_FALSE(svc.get(ids[0]));
  EXPECT_EQ(approval_http_status(svc.decide(ids[0], true, person("bob", {"dba"}), "").error()), 404);

  o.history_max = 0;  // decided ones are forgotten at once
  approval_service none(o);
  std::string id = *none.submit(make_request(), nullptr);
  result<approval_record> r = none.decide(id, true, person("bob", {"dba"}), "ok");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->state, approval_state::approved);
  EXPECT_TRUE(none.list(true).empty());
}

TEST(ApprovalService, RefusesBadRequests) {
  approval_options o;
  o.command_bytes_max = 10;
  approval_service svc(o);
  EXPECT_EQ(svc.submit(make_request(0), nullptr).error().code(), errc::invalid_argument);
  EXPECT_EQ(svc.submit(make_request(86'401), nullptr).error().code(), errc::invalid_argument);
  approval_request q = make_request();
  q.approvers.clear();
  EXPECT_EQ(svc.submit(q, nullptr).error().code(), errc::invalid_argument);
  q = make_request();
  q.command = std::string(11, 'x');
  EXPECT_EQ(svc.submit(q, nullptr).error().code(), errc::limit);
  q = make_request();
  q.command = "SELECT 1";
  q.prompt_id = std::string(5000, 'p');
  EXPECT_EQ(svc.submit(q, nullptr).error().code(), errc::limit);
  EXPECT_EQ(svc.stats().refused, 5u);
  EXPECT_EQ(svc.stats().pending, 0u);
}

TEST(ApprovalService, StartRefusesANonHttpWebhook) {
  approval_options o;
  o.webhook_url = "file:///etc/passwd";
  approval_service svc(o);
  EXPECT_FALSE(svc.start());
}

TEST(ApprovalService, MetricsText) {
  approval_stats s;
  s.pending = 2;
  s.approved = 7;
  s.webhook_failed = 1;
  std::string out;
  append_approval_metrics(out, s);
  EXPECT_NE(out.find("# TYPE agentgate_approvals_pending gauge\nagentgate_approvals_pending 2\n"),
            std::string::npos);
  EXPECT_NE(out.find("agentgate_approvals_total{outcome=\"approved\"} 7\n"), std::string::npos);
  EXPECT_NE(out.find("agentgate_approval_webhooks_total{result=\"failed\"} 1\n"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Webhook

// A tiny HTTP server on 127.0.0.1:0 that records each request's body and
// answers with the next status from a script (the last one repeats).
class webhook_sink {
 public:
  explicit webhook_sink(std::vector<int> statuses) : statuses_(std::move(statuses)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~webhook_sink() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hook"; }
  std::vector<std::string> bodies() {
    std::lock_guard lock(mu_);
    return bodies_;
  }
  std::vector<std::string> heads() {
    std::lock_guard lock(mu_);
    return heads_;
  }
  bool wait_for(size_t n, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (bodies().size() < n) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

 private:
  void run() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      timeval tv{2, 0};
      setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      serve(c);
      ::close(c);
    }
  }

  void serve(int c) {
    std::string in;
    char buf[4096];
    size_t head_end;
    while ((head_end = in.find("\r\n\r\n")) == std::string::npos) {
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      in.append(buf, static_cast<size_t>(n));
    }
    std::string head = in.substr(0, head_end);
    size_t length = 0;
    for (const char* name : {"Content-Length: ", "content-length: "}) {
      size_t at = head.find(name);
      if (at != std::string::npos) length = std::stoul(head.substr(at + strlen(name)));
    }
    std::string body = in.substr(head_end + 4);
    while (body.size() < length) {
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      body.append(buf, static_cast<size_t>(n));
    }
    int code;
    {
      std::lock_guard lock(mu_);
      code = statuses_[std::min(bodies_.size(), statuses_.size() - 1)];
      bodies_.push_back(body);
      heads_.push_back(head);
    }
    std::string reply = "HTTP/1.1 " + std::to_string(code) + " X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    (void)!::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
  }

  std::vector<int> statuses_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> bodies_;
  std::vector<std::string> heads_;
};

approval_options fast_webhook(const std::string& url) {
  approval_options o;
  o.webhook_url = url;
  o.webhook_backoff_initial_ms = 50;
  o.webhook_backoff_max_ms = 200;
  o.webhook_timeout_ms = 2000;
  return o;
}

std::string json_string(simdjson::dom::element root, std::string_view key) {
  std::string_view v;
  EXPECT_EQ(root[key].get_string().get(v), simdjson::SUCCESS) << key;
  return std::string(v);
}

TEST(ApprovalWebhook, PostsTextAndFieldsAndRetries) {
  webhook_sink sink({500, 500, 200});
  approval_service svc(fast_webhook(sink.url()));
  ASSERT_TRUE(svc.start());
  approval_request q = make_request();
  q.command = "DELETE FROM users\n  -- <script> & `x`";
  std::string id = *svc.submit(q, nullptr);
  ASSERT_TRUE(sink.wait_for(3, 5s));
  std::this_thread::sleep_for(100ms);
  std::vector<std::string> bodies = sink.bodies();
  ASSERT_EQ(bodies.size(), 3u);  // two failures, then the one that succeeded; no more
  EXPECT_EQ(bodies[0], bodies[2]);
  EXPECT_NE(sink.heads()[0].find("POST /hook HTTP/1.1"), std::string::npos);
  EXPECT_NE(sink.heads()[0].find("Content-Type: application/json"), std::string::npos);

  simdjson::dom::parser parser;
  simdjson::dom::element root;
  ASSERT_EQ(parser.parse(bodies[2]).get(root), simdjson::SUCCESS) << bodies[2];
  const std::string text = json_string(root, "text");
  EXPECT_NE(text.find("alice (alice@example.com) wants to run `DELETE FROM users -- &lt;script&gt; &amp; 'x'` on pg-main"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("rule bulk-writes"), std::string::npos);
  EXPECT_NE(text.find("agentgate approvals approve " + id), std::string::npos);
  EXPECT_EQ(text.find('\n'), std::string::npos);
  EXPECT_EQ(json_string(root, "event"), "approval_requested");
  EXPECT_EQ(json_string(root, "id"), id);
  EXPECT_EQ(json_string(root, "target"), "pg-main");
  EXPECT_EQ(json_string(root, "subject"), "alice");
  EXPECT_EQ(json_string(root, "email"), "alice@example.com");
  EXPECT_EQ(json_string(root, "command"), q.command);  // whole, unchanged
  EXPECT_EQ(json_string(root, "rule_id"), "bulk-writes");
  EXPECT_EQ(json_string(root, "prompt_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(json_string(root, "session_id"), "s-1");
  EXPECT_EQ(json_string(root, "expires_at").size(), 20u);  // 2026-03-02T10:15:00Z
  simdjson::dom::array groups, approvers;
  ASSERT_EQ(root["groups"].get_array().get(groups), simdjson::SUCCESS);
  ASSERT_EQ(root["approvers"].get_array().get(approvers), simdjson::SUCCESS);
  EXPECT_EQ(groups.size(), 1u);
  EXPECT_EQ(approvers.size(), 2u);

  approval_stats s = svc.stats();
  EXPECT_EQ(s.webhook_sent, 1u);
  EXPECT_EQ(s.webhook_retried, 2u);
  EXPECT_EQ(s.webhook_failed, 0u);
}

TEST(ApprovalWebhook, GivesUpAfterTheRetries) {
  webhook_sink sink({503});
  approval_options o = fast_webhook(sink.url());
  o.webhook_retries = 2;
  approval_service svc(o);
  ASSERT_TRUE(svc.start());
  ASSERT_TRUE(svc.submit(make_request(), nullptr));
  ASSERT_TRUE(sink.wait_for(3, 5s));
  const auto end = std::chrono::steady_clock::now() + 3s;
  while (svc.stats().webhook_failed == 0 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(sink.bodies().size(), 3u);
  EXPECT_EQ(svc.stats().webhook_failed, 1u);
  EXPECT_EQ(svc.stats().webhook_retried, 2u);
}

TEST(ApprovalWebhook, UnreachableEndpointNeverBlocksSubmitOrStop) {
  // A port nobody listens on: every attempt fails fast, submit stays instant.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  approval_options o = fast_webhook("http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/");
  o.webhook_backoff_initial_ms = 10'000;
  approval_service svc(o);
  ASSERT_TRUE(svc.start());
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(svc.submit(make_request(), nullptr));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  std::this_thread::sleep_for(200ms);
  const auto t1 = std::chrono::steady_clock::now();
  svc.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 2s);
  EXPECT_GT(svc.stats().webhook_retried, 0u);
  EXPECT_GT(svc.stats().webhook_dropped, 0u);  // those left at stop
}

TEST(ApprovalWebhook, QueueBoundDropsAndCounts) {
  approval_options o = fast_webhook("http://127.0.0.1:9/");
  o.webhook_queue_max = 2;
  approval_service svc(o);  // not started: nothing drains the queue
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(svc.submit(make_request(), nullptr));
  EXPECT_EQ(svc.stats().webhook_dropped, 3u);
  EXPECT_EQ(svc.stats().pending, 5u);  // the requests themselves are all kept
}

TEST(ApprovalWebhook, SkipsRequestsDecidedBeforeTheirTurn) {
  webhook_sink sink({200});
  approval_service svc(fast_webhook(sink.url()));
  std::string id = *svc.submit(make_request(), nullptr);
  ASSERT_TRUE(svc.decide(id, true, person("bob", {"dba"}), ""));
  std::string later = *svc.submit(make_request(), nullptr);
  ASSERT_TRUE(svc.start());
  ASSERT_TRUE(sink.wait_for(1, 5s));
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(sink.bodies().size(), 1u);
  EXPECT_NE(sink.bodies()[0].find(later), std::string::npos);
  EXPECT_EQ(svc.stats().webhook_skipped, 1u);
  EXPECT_EQ(svc.stats().webhook_sent, 1u);
}

// ---------------------------------------------------------------------------
// Routes and CLI, over a real admin_server

struct reply {
  int status = 0;
  std::string head;
  std::string body;
};

reply http(uint16_t port, const std::string& method, const std::string& path, const std::string& token,
           const std::string& body = "") {
  reply r;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return r;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  req += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string in;
  char buf[16384];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) in.append(buf, static_cast<size_t>(n));
  ::close(fd);
  size_t end = in.find("\r\n\r\n");
  if (in.size() < 12 || end == std::string::npos) return r;
  r.status = std::stoi(in.substr(9, 3));
  r.head = in.substr(0, end);
  r.body = in.substr(end + 4);
  return r;
}

// Approver tokens for the stub verifier: "jwt-<sub>-<group>".
result<verified_identity> stub_verify(std::string_view token) {
  if (!token.starts_with("jwt-")) return status(errc::auth, "token is not three base64url parts");
  std::string rest(token.substr(4));
  size_t dash = rest.find('-');
  if (dash == std::string::npos) return status(errc::auth, "token expired");
  return person(rest.substr(0, dash), {rest.substr(dash + 1)}, rest.substr(0, dash) + "@example.com");
}

class ApprovalRoutes : public ::testing::Test {
 protected:
  void SetUp() override {
    admin_server_options o;
    o.listen = "127.0.0.1:0";
    o.admin_token = admin_token;
    server_ = std::make_unique<admin_server>(o);
    ASSERT_TRUE(register_approval_routes(*server_, svc_, stub_verify));
    ASSERT_TRUE(server_->start());
    port_ = server_->port();
  }
  void TearDown() override { server_->stop(); }

  std::string submit(approval_request q = make_request()) {
    result<std::string> id = svc_.submit(std::move(q), v_.fn());
    EXPECT_TRUE(id);
    return id ? *id : std::string();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Runs the CLI with its output captured.
  int cli(approvals_cli_options o, std::string& out, std::string& err, bool fill_url = true) {
    char* out_buf = nullptr;
    char* err_buf = nullptr;
    size_t out_len = 0, err_len = 0;
    o.out = open_memstream(&out_buf, &out_len);
    o.err = open_memstream(&err_buf, &err_len);
    if (fill_url && o.admin_url.empty()) o.admin_url = url();
    int rc = run_approvals_cli(o);
    fclose(o.out);
    fclose(o.err);
    out.assign(out_buf, out_len);
    err.assign(err_buf, err_len);
    free(out_buf);
    free(err_buf);
    return rc;
  }

  approval_service svc_{approval_options{}};
  verdicts v_;
  std::unique_ptr<admin_server> server_;
  uint16_t port_ = 0;
};

TEST_F(ApprovalRoutes, ListNeedsTheAdminToken) {
  std::string id = submit();
  EXPECT_EQ(http(port_, "GET", "/v1/approvals", "").status, 401);
  EXPECT_EQ(http(port_, "GET", "/v1/approvals", "jwt-bob-dba").status, 401);
  reply r = http(port_, "GET", "/v1/approvals", admin_token);
  ASSERT_EQ(r.status, 200);
  simdjson::dom::parser parser;
  simdjson::dom::array items;
  ASSERT_EQ(parser.parse(r.body)["approvals"].get_array().get(items), simdjson::SUCCESS) << r.body;
  ASSERT_EQ(items.size(), 1u);
  simdjson::dom::element a = items.at(0);
  EXPECT_EQ(json_string(a, "id"), id);
  EXPECT_EQ(json_string(a, "state"), "pending");
  EXPECT_EQ(json_string(a, "command"), "DELETE FROM users");
  EXPECT_EQ(json_string(a, "rule"), "bulk-writes");
  EXPECT_EQ(json_string(a, "session"), "s-1");
  EXPECT_EQ(json_string(a["requester"], "subject"), "alice");
  EXPECT_EQ(json_string(a["requester"], "issuer"), issuer);
  EXPECT_TRUE(a["decided_by"].is_null());
  EXPECT_TRUE(a["decided_at"].is_null());
}

TEST_F(ApprovalRoutes, ApproveWithTheApproversJwt) {
  std::string id = submit();
  reply r = http(port_, "POST", "/v1/approvals/" + id + "/approve", "jwt-bob-dba", "{\"reason\": \"ticket OPS-1\"}");
  ASSERT_EQ(r.status, 200) << r.body;
  simdjson::dom::parser parser;
  simdjson::dom::element a;
  ASSERT_EQ(parser.parse(r.body).get(a), simdjson::SUCCESS);
  EXPECT_EQ(json_string(a, "state"), "approved");
  EXPECT_EQ(json_string(a, "reason"), "ticket OPS-1");
  EXPECT_EQ(json_string(a, "verdict"), "approved by bob@example.com: ticket OPS-1");
  EXPECT_EQ(json_string(a["decided_by"], "subject"), "bob");
  ASSERT_EQ(v_.count(), 1u);
  EXPECT_TRUE(v_.at(0).approved);

  // Pending list is empty now; state=all and all=1 show it.
  EXPECT_NE(http(port_, "GET", "/v1/approvals", admin_token).body.find("\"approvals\": []"), std::string::npos);
  EXPECT_NE(http(port_, "GET", "/v1/approvals?all=1", admin_token).body.find(id), std::string::npos);
  EXPECT_NE(http(port_, "GET", "/v1/approvals?state=approved", admin_token).body.find(id), std::string::npos);
  EXPECT_EQ(http(port_, "GET", "/v1/approvals?state=denied", admin_token).body.find(id), std::string::npos);
  EXPECT_EQ(http(port_, "GET", "/v1/approvals?state=bogus", admin_token).status, 400);
  EXPECT_EQ(http(port_, "GET", "/v1/approvals?all=1&state=all", admin_token).status, 400);
  EXPECT_EQ(http(port_, "GET", "/v1/approvals?limit=0", admin_token).status, 400);
  reply one = http(port_, "GET", "/v1/approvals/" + id, admin_token);
  EXPECT_EQ(one.status, 200);
  EXPECT_NE(one.body.find("\"state\": \"approved\""), std::string::npos);
  EXPECT_EQ(http(port_, "GET", "/v1/approvals/" + id, "jwt-bob-dba").status, 401);
  EXPECT_EQ(http(port_, "GET", "/v1/approvals/nope", admin_token).status, 404);

  // Again: 409.
  reply again = http(port_, "POST", "/v1/approvals/" + id + "/deny", "jwt-carol-dba");
  EXPECT_EQ(again.status, 409);
  EXPECT_NE(again.body.find("already approved"), std::string::npos);
}

TEST_F(ApprovalRoutes, RefusalsMapToStatuses) {
  std::string id = submit();
  reply r = http(port_, "POST", "/v1/approvals/" + id + "/approve", "");
  EXPECT_EQ(r.status, 401);
  r = http(port_, "POST", "/v1/approvals/" + id + "/approve", "garbage");
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(r.body.find("token is not three base64url parts"), std::string::npos);
  EXPECT_NE(r.head.find("WWW-Authenticate: Bearer"), std::string::npos);
  // The admin token is not an approver's JWT.
  EXPECT_EQ(http(port_, "POST", "/v1/approvals/" + id + "/approve", admin_token).status, 401);

  r = http(port_, "POST", "/v1/approvals/" + id + "/approve", "jwt-alice-dba");
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("requesters cannot approve their own commands"), std::string::npos);
  r = http(port_, "POST", "/v1/approvals/" + id + "/approve", "jwt-mallory-dev");
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("not an approver for rule bulk-writes"), std::string::npos);
  EXPECT_EQ(http(port_, "POST", "/v1/approvals/unknown/approve", "jwt-bob-dba").status, 404);

  EXPECT_EQ(http(port_, "POST", "/v1/approvals/" + id + "/deny", "jwt-bob-dba", "{bad").status, 400);
  EXPECT_EQ(http(port_, "POST", "/v1/approvals/" + id + "/deny", "jwt-bob-dba", "[]").status, 400);
  EXPECT_EQ(http(port_, "POST", "/v1/approvals/" + id + "/deny", "jwt-bob-dba", "{\"reason\": 5}").status, 400);
  EXPECT_EQ(http(port_, "POST", "/v1/approvals/" + id + "/deny", "jwt-bob-dba", "{\"why\": \"x\"}").status, 400);
  EXPECT_EQ(http(port_, "POST", "/v1/approvals/" + id + "/deny", "jwt-bob-dba",
                 "{\"reason\": \"a\", \"reason\": \"b\"}").status,
            400);
  EXPECT_EQ(http(port_, "POST", "/v1/approvals/" + id + "/deny", "jwt-bob-dba",
                 "{\"reason\": \"" + std::string(1025, 'r') + "\"}").status,
            400);
  EXPECT_EQ(http(port_, "POST", "/v1/approvals/" + id + "/deny", "jwt-bob-dba",
                 "{\"reason\": \"" + std::string(9000, 'r') + "\"}").status,
            413);
  EXPECT_EQ(v_.count(), 0u);
  EXPECT_EQ(svc_.list(false).size(), 1u);

  // An empty body and {} are both fine.
  r = http(port_, "POST", "/v1/approvals/" + id + "/deny", "jwt-bob-dba", " {} ");
  EXPECT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(v_.count(), 1u);
  EXPECT_EQ(v_.at(0).reason, "denied by bob@example.com");
}

TEST_F(ApprovalRoutes, CliListShowApproveDeny) {
  approval_request q = make_request();
  q.command = "DELETE FROM users\x1b[2K\x1b[1A -- \xe2\x80\xae hidden";  // terminal tricks
  std::string id = submit(q);
  std::string second = submit();
  std::string out, err;

  approvals_cli_options list;
  list.action = "list";
  list.token = admin_token;
  ASSERT_EQ(cli(list, out, err), 0) << err;
  EXPECT_NE(out.find("ID"), std::string::npos);
  EXPECT_NE(out.find(id), std::string::npos);
  EXPECT_NE(out.find(second), std::string::npos);
  EXPECT_NE(out.find("alice@example.com"), std::string::npos);
  EXPECT_NE(out.find("bulk-writes"), std::string::npos);
  EXPECT_EQ(out.find('\x1b'), std::string::npos) << out;
  EXPECT_EQ(out.find("\xe2\x80\xae"), std::string::npos) << out;
  EXPECT_NE(out.find("\\x1b[2K"), std::string::npos);
  EXPECT_NE(out.find("\\u202e"), std::string::npos);

  approvals_cli_options show;
  show.action = "show";
  show.id = id;
  show.token = admin_token;
  ASSERT_EQ(cli(show, out, err), 0) << err;
  EXPECT_NE(out.find("rule:       bulk-writes"), std::string::npos) << out;
  EXPECT_NE(out.find("hidden"), std::string::npos);
  EXPECT_EQ(out.find('\x1b'), std::string::npos);

  approvals_cli_options approve;
  approve.action = "approve";
  approve.id = id;
  approve.reason = "ok \"quoted\"";
  approve.token = "jwt-bob-dba";
  ASSERT_EQ(cli(approve, out, err), 0) << err;
  EXPECT_NE(out.find("approved " + id), std::string::npos) << out;
  ASSERT_EQ(v_.count(), 1u);
  EXPECT_EQ(v_.at(0).reason, "approved by bob@example.com: ok \"quoted\"");

  // Refusals: exit 1 with the server's message.
  approvals_cli_options deny;
  deny.action = "deny";
  deny.id = second;
  deny.token = "jwt-alice-dba";
  EXPECT_EQ(cli(deny, out, err), 1);
  EXPECT_NE(err.find("HTTP 403: requesters cannot approve their own commands"), std::string::npos) << err;
  deny.id = id;
  deny.token = "jwt-carol-sre";
  EXPECT_EQ(cli(deny, out, err), 1);
  EXPECT_NE(err.find("HTTP 409: approval request is already approved"), std::string::npos) << err;
  deny.id = second;
  ASSERT_EQ(cli(deny, out, err), 0) << err;
  EXPECT_NE(out.find("denied " + second), std::string::npos);

  list.all = true;
  ASSERT_EQ(cli(list, out, err), 0) << err;
  EXPECT_NE(out.find("approved"), std::string::npos);
  EXPECT_NE(out.find("carol@example.com"), std::string::npos);
  list.all = false;
  ASSERT_EQ(cli(list, out, err), 0) << err;
  EXPECT_EQ(out, "no pending approval requests\n");
  list.json = true;
  ASSERT_EQ(cli(list, out, err), 0) << err;
  EXPECT_NE(out.find("\"approvals\": []"), std::string::npos);

  // A wrong admin token: the server's 401 message, exit 1.
  list.token = "wrong";
  EXPECT_EQ(cli(list, out, err), 1);
  EXPECT_NE(err.find("HTTP 401"), std::string::npos);
}

TEST_F(ApprovalRoutes, CliCredentialsFromFileAndEnvironment) {
  submit();
  std::string out, err;
  char path[] = "/tmp/agentgate-approvals-token-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  std::string content = std::string(admin_token) + "\n";
  ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ::close(fd);
  approvals_cli_options list;
  list.action = "list";
  list.token_file = path;
  EXPECT_EQ(cli(list, out, err), 0) << err;
  ::unlink(path);

  list.token_file.clear();
  ::setenv("AGENTGATE_ADMIN_TOKEN", admin_token, 1);
  ::setenv("AGENTGATE_ADMIN_URL", url().c_str(), 1);
  list.admin_url.clear();
  EXPECT_EQ(cli(list, out, err, false), 0) << err;
  EXPECT_NE(out.find("alice@example.com"), std::string::npos);
  ::unsetenv("AGENTGATE_ADMIN_TOKEN");
  ::unsetenv("AGENTGATE_ADMIN_URL");
}

TEST_F(ApprovalRoutes, CliUsageErrors) {
  std::string out, err;
  ::unsetenv("AGENTGATE_TOKEN");
  ::unsetenv("AGENTGATE_ADMIN_TOKEN");
  approvals_cli_options o;
  o.action = "frobnicate";
  EXPECT_EQ(cli(o, out, err), 2);
  o.action = "approve";
  o.token = "jwt-bob-dba";
  EXPECT_EQ(cli(o, out, err), 2);  // no id
  EXPECT_NE(err.find("approve needs an approval ID"), std::string::npos);
  o.id = "x";
  o.token.clear();
  EXPECT_EQ(cli(o, out, err), 2);  // no token
  EXPECT_NE(err.find("AGENTGATE_TOKEN"), std::string::npos);
  o.token = "jwt-bob-dba";
  o.token_file = "/nonexistent";
  EXPECT_EQ(cli(o, out, err), 2);
  o.token_file.clear();
  o.admin_url = "ftp://x";
  EXPECT_EQ(cli(o, out, err), 2);
  approvals_cli_options l;
  l.action = "list";
  l.token = admin_token;
  l.reason = "why";
  EXPECT_EQ(cli(l, out, err), 2);
  EXPECT_EQ(svc_.stats().approved + svc_.stats().denied, 0u);
}

TEST(ApprovalCli, UnreachableServerIsExitOne) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  approvals_cli_options o;
  o.action = "list";
  o.token = admin_token;
  o.admin_url = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  o.err = fopen("/dev/null", "w");
  EXPECT_EQ(run_approvals_cli(o), 1);
  fclose(o.err);
}

}  // namespace
}  // namespace agentgate
