#pragma once
// One PostgreSQL client session through the gateway: the startup phase, the
// upstream login with the gateway's own credentials, then a relay that sees
// every message of both directions. Owned by one shard; single-threaded.
//
// States:  startup [-> client_auth] -> connecting [-> upstream_tls] -> upstream_auth -> relaying
// A CancelRequest is routed to the shard that minted its key and the
// connection closed; client_auth is the JWT exchange (cleartext password
// message carrying the token, over TLS).
// Any protocol violation by the client ends the session with ErrorResponse
// 08P01 and none of the offending bytes reach the upstream.

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/authenticator.h"
#include "core/config.h"
#include "core/inspector.h"
#include "core/log.h"
#include "core/masking.h"
#include "core/recording.h"
#include "core/session.h"
#include "protocols/postgres/cancel_registry.h"
#include "protocols/postgres/client_encoding.h"
#include "protocols/postgres/frame_stream.h"
#include "protocols/postgres/result_filter.h"
#include "protocols/postgres/upstream_auth.h"

namespace agentgate::pg {

// What a session needs to know about its target; immutable, shared read-only.
struct target_runtime {
  target_config config;
  net_address upstream_address;
  limits_config limits;
  token_expiry_action on_token_expiry = token_expiry_action::terminate;
};

// The password message that carries a JWT (identity.token_bytes_max is
// checked after it; this bounds what is buffered before that).
inline constexpr size_t password_message_bytes_max = 64 * 1024;

// Responses a client may have outstanding (pipelined commands).
inline constexpr size_t pending_responses_max = 65536;

// Bytes a client may pipeline behind its startup packet before the login is done.
inline constexpr size_t early_client_bytes_max = 1u << 20;

// Per-shard counters for one target. Plain integers: only the shard's thread
// writes them.
struct session_probe {
  uint64_t sessions_started = 0;
  uint64_t sessions_refused = 0;       // protocol errors, failed logins
  uint64_t client_protocol_errors = 0;
  uint64_t upstream_protocol_errors = 0;
  uint64_t upstream_login_failures = 0;
  uint64_t cancels_forwarded = 0;
  uint64_t client_logins_refused = 0;   // bad or expired tokens
  uint64_t sessions_expired = 0;        // ended because the token expired
  uint64_t commands_allowed = 0;
  uint64_t commands_denied = 0;
  uint64_t commands_held = 0;
  uint64_t frames_from_client = 0;
  uint64_t frames_from_upstream = 0;
  uint64_t values_masked = 0;           // values and text fields rewritten by masking
  uint64_t masking_refusals = 0;        // sessions ended because a result could not be masked
  uint64_t commands_unrecordable = 0;   // refused because recording was unavailable (fail closed)
  uint64_t catalog_reads = 0;           // catalog lookups for column rules
};

// What sessions share on one shard; owned by the appliance.
struct shard_context {
  authenticator* auth = nullptr;             // this shard's; null when no identity is configured
  command_inspector* inspector = nullptr;    // this shard's; null: no policy, everything passes
  approval_gate* approvals = nullptr;        // null: require_approval is refused
  cancel_directory* cancels = nullptr;       // every shard's registry
  // This shard's masker slot, replaced on a policy swap; null: no policy, no masking.
  const std::shared_ptr<data_masker>* masker = nullptr;
  session_recorder* recorder = nullptr;      // this shard's; null: recording off
};

// Prompt attribution carried by a session (startup option, SET) or one
// command (a trailing sqlcommenter comment).
struct prompt_context {
  std::string prompt_id;
  std::string prompt_text;
  std::string traceparent;
  bool empty() const { return prompt_id.empty() && prompt_text.empty() && traceparent.empty(); }
};

// Reads `-c agentgate.prompt_id=...` (and prompt_text, traceparent) out of
// a startup packet's options.
prompt_context prompt_from_options(std::string_view options);
// A trailing sqlcommenter comment: /*traceparent='..',prompt_id='..'*/.
bool prompt_from_comment(std::string_view sql, prompt_context& out);
// `SET [SESSION] agentgate.<key> {=|TO} value` or `RESET agentgate.<key>`:
// true and the key (prompt_id, prompt_text, traceparent) and value when the
// whole text is one such statement.
bool parse_prompt_set(std::string_view sql, std::string& key, std::string& value);

class session final : public session_handler {
 public:
  session(const target_runtime& target, session_probe& probe, const shard_context& shard,
          table_catalog& catalog);
  ~session() override;

  void on_start(session_io& io) override;
  void on_data(peer from, std::span<const uint8_t> bytes) override;
  void on_upstream_connected(const status& result) override;
  void on_peer_closed(peer which, const status& reason) override;
  void on_deadline() override;
  std::string describe_json() const override;
  const session_id& id() const { return id_; }

  // The CancelRequest this connection carried was delivered upstream (or
  // dropped as unknown): the connection closes, as PostgreSQL's would.
  void on_cancel_done();

  // The verdict on the command this session holds for approval, delivered
  // on the session's shard.
  void on_approval_verdict(bool approved, const std::string& reason, const std::string& approver);
  // A CancelRequest for this session arrived; true if it was taken here
  // (it withdrew a held command) and must not go upstream.
  bool on_cancel_requested();

 private:
  enum class state : uint8_t {
    startup, client_auth, connecting, upstream_tls, upstream_auth, relaying, cancel_wait, closed
  };

  class client_sink;
  class upstream_sink;

  void on_startup_bytes(bytes data);
  bool handle_startup_packet(const startup_packet& packet, bool more_bytes_follow);
  void send_upstream_startup();
  void connect_upstream();
  bool on_client_login_frame(const frame_header& header, bytes frame);
  void on_upstream_tls_answer(bytes data);
  bool on_backend_key_data(bytes frame);
  bool token_expired();

  // Guardrails.
  enum class verdict : uint8_t { forward, drop, stop };
  verdict guard(const frame_header& header, bytes frame);
  verdict refuse(const policy_decision& decision, bool extended, std::string_view detail = {});
  verdict refuse_message(std::string message, bool extended);
  verdict hold(const frame_header& header, bytes frame, const policy_decision& decision,
               std::string command = {});
  // Approvals are for one execution (finding 9 of issue 10).
  verdict gate_execution(const frame_header& header, bytes frame);
  std::string bind_parameters_text(bytes bind_body);
  [[nodiscard]] bool record_bind(bytes frame, std::string_view statement_sql, std::string_view parameters);
  verdict refuse_unrecorded(bool extended);
  std::string_view command_text(const frame_header& header, bytes frame) const;
  void respond_error(std::string error);
  void flush_synthetic_responses();
  bool expect_response();
  bool hold_early_client_bytes(bytes data);
  void on_password_bytes(bytes data);

  // Upstream messages during login.
  bool on_upstream_login_frame(const frame_header& header, bytes frame);
  bool answer_authentication(bytes body);

  // Relaying.
  bool on_client_frame(const frame_header& header, bytes frame);
  bool forward_client_frame(const frame_header& header, bytes frame);
  bool on_upstream_frame(const frame_header& header, bytes frame);

  // Ends the session with a FATAL error to the client when the client's
  // stream can still take one, else just closes.
  void fail(const char* sqlstate, const std::string& message);

  // Masking and recording.
  bool relay_upstream_frame(const frame_header& header, bytes frame);
  void record_session_start();
  // False when the command's record (or its decision's) could not be
  // appended, or synced as fsync "always" promises, while recording fails
  // closed: the command must not go upstream (58030, as recording_refuses).
  bool record_command(const frame_header& header, bytes frame, const policy_decision* decision);
  bool record_decision(uint64_t seq, std::string_view action, std::string_view rule,
                       std::string_view approver, std::string_view reason);
  void record_result(uint64_t seq, const frame_header& header, bytes frame);
  void record_repeated_denials();
  bool recording_refuses();
  static uint64_t masker_total(const data_masker& m);
  void hits_before();
  void hits_after();
  bool start_catalog_read(bytes ready_for_query);
  bool on_catalog_frame(const frame_header& header, bytes frame);
  verdict answer_prompt_set(std::string_view sql);
  // Reading SQL as the server will (client_encoding.h).
  bool choose_client_encoding();
  bool watch_parameter_status(bytes frame);
  std::string_view sql_for_classifier(std::string_view sql, bool extended, bool& refused);
  verdict settle_before(const frame_header& header, bytes frame, std::string_view sql);
  bool run_deferred_frame();
  void drop_ignored_syncs(size_t n);
  verdict check_object_names(const frame_header& header, bytes frame);
  verdict refuse_with(const char* sqlstate, std::string message, bool extended);
  void send_to_client(const std::string& bytes);
  void send_to_upstream(const std::string& bytes);

  const target_runtime& target_;
  session_probe& probe_;
  const shard_context& shard_;
  table_catalog& catalog_;  // the target's on this shard
  session_identity identity_;
  int64_t started_at_s_ = 0;
  uint32_t minted_pid_ = 0;  // our BackendKeyData's pid, registered with the shard's registry
  uint64_t cancel_waiter_ = 0;  // this connection's id while its CancelRequest is on its way

  // Responses the client is owed, in order: the upstream's (one per Query,
  // Sync or FunctionCall forwarded, ending at its ReadyForQuery) and the
  // gateway's own denials, which must not overtake earlier responses.
  struct response_slot {
    bool synthetic = false;
    std::string error;  // synthetic: the ErrorResponse (ReadyForQuery added when sent);
                        // upstream: one to insert before its ReadyForQuery
  };
  std::deque<response_slot> slots_;
  char transaction_status_ = 'I';    // from the upstream's last ReadyForQuery
  bool upstream_error_in_batch_ = false;  // an ErrorResponse since the last ReadyForQuery
  bool discarding_until_sync_ = false; // an extended-protocol batch was refused
  std::string batch_denial_;           // its ErrorResponse, sent before the Sync's ReadyForQuery

  // A rule that required an approval, kept past the policy version that
  // judged it (policy_decision only points into it).
  struct gate_rule {
    std::string rule_id;
    std::string message;
    std::vector<std::string> approvers;
    uint32_t timeout_s = 0;
    static gate_rule of(const policy_decision& d) {
      return {std::string(d.rule_id), std::string(d.message), {d.approvers.begin(), d.approvers.end()}, d.timeout_s};
    }
    policy_decision decision() const {
      policy_decision d;
      d.action = policy_action::require_approval;
      d.rule_id = rule_id;
      d.message = message;
      d.approvers = approvers;
      d.timeout_s = timeout_s;
      return d;
    }
  };
  // A statement prepared (protocol Parse) under an approval: its first
  // Bind is the approved execution, every later one is held again with its
  // parameters shown. Keyed by name as the server keys it; entries only come
  // from human approvals, so they are bounded by them.
  struct gated_statement {
    gate_rule rule;
    std::string sql;
    bool used = false;
  };
  std::unordered_map<std::string, gated_statement> gated_;
  // An approved SQL PREPARE: every later SQL EXECUTE needs an approval too.
  std::unique_ptr<gate_rule> sql_gate_;
  gate_rule held_rule_;          // the rule the held command waits on
  bool held_prepares_ = false;   // the held Query contains a SQL PREPARE

  // A command held for approval: its frame, the request's id, and this
  // session's id in the shard's waiter registry (for the verdict).
  std::string held_frame_;
  std::string approval_id_;
  uint64_t approval_waiter_ = 0;
  session_io* io_ = nullptr;
  state state_ = state::startup;

  std::string startup_buffer_;  // the startup phase's bytes, bounded by startup_bytes_max
  startup_packet startup_;      // the client's startup packet
  std::string early_client_bytes_;  // pipelined behind the startup packet, replayed after login
  std::optional<upstream_login> upstream_login_;  // while logging in upstream
  bool client_terminated_ = false;   // the client sent Terminate
  bool upstream_sent_fatal_ = false; // the upstream already told the client why it is closing
  bool client_mid_frame_ = false;    // part of a streamed frame went to the client
  bool login_ready_pending_ = false; // the client waits (paused) for the login's ReadyForQuery

  // Masking and recording.
  result_filter filter_;
  std::string rewritten_;         // a masked frame on its way to the client
  // This session's matches by the masker's counter (for its recording).
  const data_masker* hits_masker_ = nullptr;  // whose counters hits_seen_ mirrors
  std::vector<uint64_t> hits_seen_;           // its counters when last read
  uint64_t hits_seen_total_ = 0;
  std::vector<uint64_t> command_hits_;        // this session's, since the last result was recorded
  session_id id_;
  bool recorded_start_ = false;
  uint64_t command_seq_ = 0;
  int64_t command_started_us_ = 0;
  std::string result_rows_;       // masked DataRow bodies of the result in progress, bounded
  uint64_t result_rows_total_ = 0;
  std::vector<std::string> result_columns_;  // the names of the result being recorded
  bool result_rows_truncated_ = false;
  uint64_t bytes_from_client_ = 0;
  uint64_t bytes_to_client_ = 0;
  prompt_context prompt_;         // the session's (startup option, SET)
  std::string end_reason_ = "client closed";
  // Denials a client can provoke as fast as it sends: their log lines are
  // rate-limited, and a run of identical ones (same text, same rule) is
  // recorded once plus a count (issue 10, item 7).
  log_budget denial_log_;
  struct repeated_denial {
    char kind = 0;             // 'Q', 'P', 'F'
    std::string text;
    std::string rule_id;
    uint64_t seq = 0;          // the recorded one; 0: none to repeat
    uint64_t repeats = 0;      // identical ones after it, not recorded one by one
    uint64_t last_seq = 0;
  };
  repeated_denial repeated_denial_;
  // Reading the catalog for column rules after login, before the client's
  // first ReadyForQuery (which waits here).
  bool catalog_pending_ = false;
  std::string catalog_error_;
  std::string catalog_key_;
  std::string login_ready_;
  std::unique_ptr<table_catalog> catalog_reading_;  // the read in flight
  bool forget_statements_ = false;  // the command being forwarded may replace prepared statements

  // The one encoding the session runs in, fixed at login (client_encoding.h).
  client_encoding encoding_;
  std::string sql_utf8_;          // a command's text transcribed for the classifier
  // Upstream responses (ReadyForQuery) outstanding; while any is, a setting
  // may have changed without the gateway having seen its ParameterStatus.
  size_t upstream_pending_ = 0;
  bool batch_executed_ = false;   // a Bind or Execute went upstream since the last Sync
  bool extended_open_ = false;    // an extended-protocol message went upstream since the last Sync
  bool server_utf8_ = false;      // the upstream reported server_encoding UTF8
  std::string deferred_frame_;    // a command that waits until the settings are known

  frame_stream from_client_;
  frame_stream from_upstream_;
  std::unique_ptr<client_sink> client_sink_;
  std::unique_ptr<upstream_sink> upstream_sink_;
};

class pg_session_factory final : public session_factory {
 public:
  pg_session_factory(const target_runtime& target, const shard_context& shard)
      : target_(target), shard_(shard) {}
  std::unique_ptr<session_handler> create() override;
  std::string overload_response() const override;
  const session_probe& probe() const { return probe_; }
  const std::string& target_name() const { return target_.config.name; }

 private:
  const target_runtime& target_;
  const shard_context& shard_;
  session_probe probe_;
  table_catalog catalog_;
};

}  // namespace agentgate::pg
