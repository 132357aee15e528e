#pragma once
// The recording seam: what a protocol session tells its shard's recorder,
// protocol-neutral. Implemented in io/ (append-only segment files, one writer
// per shard, docs/recording-format.md); used only by the shard's thread.
//
// Every call either records the event or, when recording is unavailable
// (disk full, I/O error), returns false: a session then refuses new commands
// (recording.on_failure "fail_closed", the default) or carries on and the
// recorder counts what went unrecorded ("fail_open"). Never a silent gap.

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace agentgate {

// 128 random bits naming a session in logs, the API and recordings.
struct session_id {
  uint64_t hi = 0;
  uint64_t lo = 0;
  bool empty() const { return hi == 0 && lo == 0; }
  std::string hex() const;                       // 32 lower-case hex digits
  static bool parse(std::string_view hex, session_id& out);
  static session_id generate();                  // from a per-thread CSPRNG-seeded generator
  friend bool operator==(const session_id&, const session_id&) = default;
};

// Where a command came from: the prompt that caused it.
struct prompt_attribution {
  std::string_view prompt_id;    // empty when unknown
  std::string_view prompt_text;  // optional
  std::string_view traceparent;  // W3C traceparent, empty when none
};

struct rec_session_start {
  session_id id;
  int64_t unix_us = 0;
  int shard = 0;
  std::string_view protocol;  // "postgres"
  std::string_view target;
  std::string_view subject;
  std::string_view email;
  std::span<const std::string> groups;
  std::string_view client_address;
  std::string_view tls;       // e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384", empty for plaintext
  std::string_view database;  // what the client asked for
  std::string_view user;      // what the client sent as user name
  prompt_attribution prompt;
};

struct rec_command {
  session_id id;
  int64_t unix_us = 0;
  uint64_t seq = 0;              // 1, 2, ... per session
  char message_kind = 0;         // the protocol's message type ('Q', 'P', ...)
  std::string_view text;         // the command as sent (SQL)
  std::string_view classification;  // e.g. "SELECT" or "DELETE,UPDATE"; empty if not classified
  prompt_attribution prompt;
};

struct rec_decision {
  session_id id;
  int64_t unix_us = 0;
  uint64_t seq = 0;              // the command's
  std::string_view action;       // "allow", "deny", "require_approval", "approved", "denied", "refused"
  std::string_view rule_id;
  std::string_view approver;
  std::string_view reason;
};

// Masked rows are kept in PostgreSQL's DataRow body layout (int16 field
// count, then per field int32 length (-1 NULL) and bytes), one after the
// other, up to recording.result_bytes_max per command; past that only counted.
struct rec_result {
  session_id id;
  int64_t unix_us = 0;
  uint64_t seq = 0;
  std::span<const std::string> columns;  // names
  std::string_view rows;                  // concatenated DataRow bodies, bounded
  uint64_t rows_total = 0;               // including those not kept
  bool rows_truncated = false;
  int64_t duration_us = 0;
  std::string_view command_tag;          // e.g. "SELECT 3"
  std::string_view error;                // "SQLSTATE: message" when the command failed
  std::span<const std::pair<std::string, uint64_t>> masked;  // matches by detector/rule, nonzero only
};

struct rec_session_end {
  session_id id;
  int64_t unix_us = 0;
  std::string_view reason;  // "client closed", "upstream closed", "token expired", ...
  uint64_t commands = 0;
  uint64_t bytes_from_client = 0;
  uint64_t bytes_to_client = 0;
};

// Told on the shard thread whether the record a ticket names was recorded
// as the recorder promises (session_recorder::submit_command).
class record_waiter {
 public:
  virtual ~record_waiter() = default;
  virtual void on_recorded(uint64_t ticket, bool recorded) = 0;
};

class session_recorder {
 public:
  virtual ~session_recorder() = default;
  // False: this event was not recorded (see the top of this file).
  virtual bool session_start(const rec_session_start& e) = 0;
  virtual bool command(const rec_command& e) = 0;
  virtual bool decision(const rec_decision& e) = 0;
  virtual bool result(const rec_result& e) = 0;
  virtual bool session_end(const rec_session_end& e) = 0;
  // True while events can be recorded; false after a disk failure until the
  // writer recovers (a new segment could be opened).
  virtual bool available() const = 0;
  // fail_open: commands may go on while unavailable.
  virtual bool fail_open() const = 0;
  // Why recording is unavailable, for the error a client gets.
  virtual std::string_view failure_reason() const = 0;
  // Bound for rec_result::rows.
  virtual uint64_t result_bytes_max() const = 0;

  // fsync "always" without waiting on the shard thread: true when a
  // command's record must be durable before the command runs and the
  // verdict can come later. The session then calls submit_command instead
  // of command and holds the command (as for an approval) until
  // waiter->on_recorded(ticket, ok), delivered on the shard thread: ok, it
  // goes upstream; not ok, it is refused (58030). A session that ends first
  // calls forget(ticket). False: command() answers at once.
  virtual bool durable_later() const { return false; }
  // 0: not even queued (refuse the command now); else the ticket.
  virtual uint64_t submit_command(const rec_command& e, record_waiter* waiter) {
    (void)e;
    (void)waiter;
    return 0;
  }
  virtual void forget(uint64_t ticket) { (void)ticket; }
};

}  // namespace agentgate
