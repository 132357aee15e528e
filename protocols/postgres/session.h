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

#include <memory>
#include <string>

#include "core/authenticator.h"
#include "core/config.h"
#include "core/session.h"
#include "protocols/postgres/cancel_registry.h"
#include "protocols/postgres/frame_stream.h"
#include "protocols/postgres/upstream_auth.h"

namespace agentgate::pg {

// What a session needs to know about its target; immutable, shared read-only.
struct target_runtime {
  target_config config;
  net_address upstream_address;
  limits_config limits;
  token_expiry_action on_token_expiry = token_expiry_action::terminate;
};

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
  uint64_t frames_from_client = 0;
  uint64_t frames_from_upstream = 0;
};

// What sessions share on one shard; owned by the appliance.
struct shard_context {
  authenticator* auth = nullptr;             // this shard's; null when no identity is configured
  cancel_directory* cancels = nullptr;       // every shard's registry
};

class session final : public session_handler {
 public:
  session(const target_runtime& target, session_probe& probe, const shard_context& shard);
  ~session() override;

  void on_start(session_io& io) override;
  void on_data(peer from, std::span<const uint8_t> bytes) override;
  void on_upstream_connected(const status& result) override;
  void on_peer_closed(peer which, const status& reason) override;
  void on_deadline() override;

  // The CancelRequest this connection carried was delivered upstream (or
  // dropped as unknown): the connection closes, as PostgreSQL's would.
  void on_cancel_done();

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
  bool hold_early_client_bytes(bytes data);
  void on_password_bytes(bytes data);

  // Upstream messages during login.
  bool on_upstream_login_frame(const frame_header& header, bytes frame);
  bool answer_authentication(bytes body);

  // Relaying.
  bool on_client_frame(const frame_header& header, bytes frame);
  bool on_upstream_frame(const frame_header& header, bytes frame);

  // Ends the session with a FATAL error to the client when the client's
  // stream can still take one, else just closes.
  void fail(const char* sqlstate, const std::string& message);
  void send_to_client(const std::string& bytes);
  void send_to_upstream(const std::string& bytes);

  const target_runtime& target_;
  session_probe& probe_;
  const shard_context& shard_;
  session_identity identity_;
  uint32_t minted_pid_ = 0;  // our BackendKeyData's pid, registered with the shard's registry
  uint64_t cancel_waiter_ = 0;  // this connection's id while its CancelRequest is on its way
  session_io* io_ = nullptr;
  state state_ = state::startup;

  std::string startup_buffer_;  // the startup phase's bytes, bounded by startup_bytes_max
  startup_packet startup_;      // the client's startup packet
  std::string early_client_bytes_;  // pipelined behind the startup packet, replayed after login
  std::unique_ptr<scram_client> scram_;
  bool client_terminated_ = false;   // the client sent Terminate
  bool upstream_sent_fatal_ = false; // the upstream already told the client why it is closing

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

 private:
  const target_runtime& target_;
  const shard_context& shard_;
  session_probe probe_;
};

}  // namespace agentgate::pg
