#pragma once
// Just-in-time approvals, control-plane half (docs/approvals.md): the record
// of commands held for a human, their decisions and timeouts, the webhook
// that announces each one, and the config API routes that list and decide
// them.
//
// Contract:
// - Threading: approval_service is control plane and thread-safe (one
//   mutex). Shards call submit() and withdraw() only for held commands, which
//   are rare; the admin API thread calls decide() and list(). Nothing here
//   blocks on the network while holding the lock: webhooks are sent by a
//   thread of the service's own, from a bounded queue.
// - Verdicts: each submitted request gets exactly one verdict_fn call
//   (approved, denied or timed out) unless it is withdrawn first, in which
//   case none. The call comes from a control-plane thread (whichever called
//   decide(), i.e. the admin API's; the expiry thread for a timeout), never
//   while the service's lock is held: the callback may call back into the
//   service (but not stop(), which joins the thread it may be running on).
//   A verdict and a withdraw() can cross: the data plane must ignore a
//   verdict for a request it has already withdrawn.
// - Timeouts need start(): its thread expires requests at their deadline.
//   decide() also refuses (and expires) a request whose deadline has passed.
// - Limits: pending requests, remembered decided requests, command and
//   field sizes, reason size, timeout, webhook queue and retries.
//
// Errors of submit() and decide() carry these codes; approval_http_status()
// maps them for the API:
//   approval_not_found   (errc::invalid_argument) -> 404 no such approval request
//   approval_not_pending (errc::unsupported)      -> 409 already decided, expired or withdrawn
//   approval_forbidden   (errc::auth)             -> 403 not an approver, or the requester
//   approval_too_large   (errc::limit)            -> 400 reason too long (submit: too many pending, too large)

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/identity/jwt.h"
#include "core/status.h"

namespace agentgate {

class admin_server;

inline constexpr errc approval_not_found = errc::invalid_argument;
inline constexpr errc approval_not_pending = errc::unsupported;
inline constexpr errc approval_forbidden = errc::auth;
inline constexpr errc approval_too_large = errc::limit;

// What the data plane knows about a held command.
struct approval_request {
  std::string target;
  std::string issuer;  // the requester's token issuer: with subject, who may not approve
  std::string subject;
  std::string email;
  std::vector<std::string> groups;
  std::string command;  // full text, as the client sent it
  std::string rule_id;
  std::string rule_message;
  std::vector<std::string> approvers;  // any one of these groups may decide
  uint32_t timeout_s = 0;              // 1 .. approval_options::timeout_s_max
  std::string prompt_id;               // prompt attribution, when the session has one
  std::string session_id;
  std::string client_address;
};

struct approval_verdict {
  bool approved = false;
  // For the client: "approved by bob@example.com: looks fine",
  // "denied by bob: no", "timed out after 300 s".
  std::string reason;
  std::string approver;  // the approver's email, else subject; empty on timeout
};

using verdict_fn = std::function<void(const approval_verdict&)>;

enum class approval_state : uint8_t { pending, approved, denied, expired, withdrawn };
std::string_view to_string(approval_state state);
// "pending", ..., as to_string() writes them; false for anything else.
bool parse_approval_state(std::string_view text, approval_state* out);

struct approval_record {
  std::string id;
  approval_state state = approval_state::pending;
  approval_request request;
  int64_t created_at_s = 0;  // seconds since the epoch
  int64_t expires_at_s = 0;
  int64_t decided_at_s = 0;  // 0 while pending
  // approved / denied only: who decided.
  std::string approver;  // email, else subject (as in the verdict)
  std::string approver_issuer;
  std::string approver_subject;
  std::string approver_email;
  std::string reason;   // the approver's own words; may be empty
  std::string verdict;  // what the client was told; empty while pending, "withdrawn" when withdrawn
};

struct approval_options {
  size_t pending_max = 1000;
  // Per requester (issuer and subject): one identity's flood of held
  // commands must not use up everyone's pending_max.
  size_t pending_per_identity_max = 50;
  size_t history_max = 1000;  // decided requests kept for listing; the oldest go first
  size_t command_bytes_max = 256 * 1024;
  size_t field_bytes_max = 4096;  // every other string of a request, and each group
  size_t groups_max = 256;        // requester groups and approver groups, each
  size_t reason_bytes_max = 1024;
  uint32_t timeout_s_max = 86'400;

  // Webhook: each new request is POSTed as JSON here (http or https).
  // Empty: no webhook. The URL is treated as a secret (Slack's carry a
  // token) and never logged.
  std::string webhook_url;
  std::string webhook_ca_file;  // empty: the system's CA store
  uint32_t webhook_timeout_ms = 5'000;  // per attempt, connect included
  uint32_t webhook_retries = 5;         // after the first attempt
  uint32_t webhook_backoff_initial_ms = 1'000;  // doubles after each failure ...
  uint32_t webhook_backoff_max_ms = 60'000;     // ... up to this
  size_t webhook_queue_max = 1000;              // announcements waiting; past it new ones are dropped
};

// Counters for /metrics; pending is a gauge, the rest only grow.
struct approval_stats {
  uint64_t pending = 0;
  uint64_t submitted = 0;
  uint64_t refused = 0;  // submit() failed: too many pending, too large, bad timeout
  uint64_t approved = 0;
  uint64_t denied = 0;
  uint64_t expired = 0;
  uint64_t withdrawn = 0;
  uint64_t webhook_sent = 0;
  uint64_t webhook_retried = 0;  // failed attempts that were retried
  uint64_t webhook_failed = 0;   // given up after every retry
  uint64_t webhook_dropped = 0;  // queue full, or left when the service stopped
  uint64_t webhook_skipped = 0;  // request decided before its announcement went out
};

class approval_service {
 public:
  explicit approval_service(approval_options options);
  ~approval_service();  // stops
  approval_service(const approval_service&) = delete;
  approval_service& operator=(const approval_service&) = delete;

  // Starts the expiry thread, and the webhook thread when a URL is set.
  // Refuses a webhook_url that is not http:// or https://. Idempotent.
  status start();
  // Joins the threads promptly (a webhook in flight is abandoned). Pending
  // requests stay pending; start() may be called again.
  void stop();

  // Records a held command and returns its id (32 hex digits from 16 random
  // bytes: the id is in URLs and webhooks, but it is not a credential).
  // errc::limit when pending_max requests are pending (or
  // pending_per_identity_max of this requester's) or a field is over its
  // bound, errc::invalid_argument for a timeout_s of 0 or over timeout_s_max
  // or no approver group. On failure on_verdict is never called.
  result<std::string> submit(approval_request request, verdict_fn on_verdict);

  // The client disconnected or cancelled. No verdict is called; the record
  // stays in the history as withdrawn. Unknown or decided ids are ignored.
  void withdraw(const std::string& id);

  // A human's decision. Checks, in this order: reason size, the id, that it
  // is still pending (and not past its deadline), that the approver is not
  // the requester (same issuer and subject), that the approver is in one of
  // the request's approver groups. On success the verdict is delivered on
  // this thread, after the lock is released, before this returns.
  result<approval_record> decide(const std::string& id, bool approve,
                                 const identity::verified_identity& approver, std::string reason);

  // Newest first. include_decided adds the remembered decided ones.
  std::vector<approval_record> list(bool include_decided) const;
  std::optional<approval_record> get(const std::string& id) const;

  approval_stats stats() const;
  const approval_options& options() const { return options_; }

 private:
  using steady = std::chrono::steady_clock;
  struct entry {
    approval_record record;
    verdict_fn on_verdict;
    steady::time_point deadline;
    uint64_t seq = 0;  // submission order, for listing newest first
  };
  struct webhook_job {
    std::string id;
    std::string body;
    uint32_t attempts = 0;
    steady::time_point next_at;
  };
  struct delivery {
    verdict_fn fn;
    approval_verdict verdict;
  };

  // Moves a pending entry to a final state: counters, deadline index,
  // history (evicting the oldest past history_max). Returns its callback.
  verdict_fn finish_locked(entry& e, approval_state state, int64_t now_s);
  void expire_locked(entry& e, int64_t now_s, std::vector<delivery>& out);
  void expiry_loop();
  void webhook_loop();
  status post_webhook(const std::string& body);

  const approval_options options_;
  mutable std::mutex mu_;
  std::condition_variable expiry_cv_;
  std::condition_variable webhook_cv_;
  std::unordered_map<std::string, entry> entries_;  // pending and remembered
  std::set<std::pair<steady::time_point, std::string>> deadlines_;  // pending only
  std::unordered_map<std::string, size_t> pending_by_identity_;     // identity_key -> pending count, no zeros
  std::deque<std::string> history_;  // decided ids, oldest first
  std::deque<webhook_job> webhooks_;
  uint64_t next_seq_ = 1;
  approval_stats stats_;
  bool running_ = false;
  bool stopping_ = false;
  std::atomic<bool> cancel_webhook_{false};
  std::thread expiry_thread_;
  std::thread webhook_thread_;
};

// The HTTP status for an error of submit() or decide().
int approval_http_status(const status& error);

// An approval as the API shows it (docs/openapi.yaml, schema Approval).
std::string approval_json(const approval_record& record);
// The webhook's body: a Slack-compatible "text" plus structured fields.
std::string approval_webhook_json(const approval_record& record);

// Appends the approvals' Prometheus series (agentgate_approvals_*) to out.
void append_approval_metrics(std::string& out, const approval_stats& stats);

using approver_verifier =
    std::function<result<identity::verified_identity>(std::string_view token)>;

// GET /v1/approvals, GET /v1/approvals/{id} (admin token);
// POST /v1/approvals/{id}/approve and /deny (the approver's JWT, checked by
// verify_approver; its errors become 401 with their message). Before
// server.start(); service and verify_approver must outlive the server's run.
status register_approval_routes(admin_server& server, approval_service& service,
                                approver_verifier verify_approver);

}  // namespace agentgate
