#pragma once
// The seam between an I/O backend (io/) and a protocol's session state
// machine (protocols/). A backend owns sockets and buffers and calls a
// session_handler with the bytes each peer sent; the handler decides what to
// send where through session_io. Both objects belong to one shard and are
// only ever touched by its thread.

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/status.h"

namespace agentgate {

enum class peer : uint8_t { client = 0, upstream = 1 };

inline const char* peer_name(peer p) { return p == peer::client ? "client" : "upstream"; }

// A resolved network address, resolved once at start (never on a shard).
struct net_address {
  sockaddr_storage storage{};
  socklen_t length = 0;
  std::string text;  // "host:port", for logs
};

// Implemented by the backend. The handler calls these from inside its
// callbacks; none of them calls back into the handler synchronously.
class session_io {
 public:
  virtual ~session_io() = default;

  // Queues bytes for the peer. The backend copies them, so the span only has
  // to live for the call. Sends never block; when the unsent bytes for one
  // peer exceed the configured bound the backend stops reading the other peer
  // until they drain (back-pressure).
  virtual void send(peer to, std::span<const uint8_t> bytes) = 0;

  // Starts connecting to the upstream; completion arrives in
  // session_handler::on_upstream_connected. Bounded by connect_timeout_ms.
  virtual void connect_upstream(const net_address& address) = 0;

  // Sends what is queued for the client, then closes both sides.
  virtual void close_after_flush() = 0;

  // Closes both sides now, dropping anything unsent.
  virtual void abort() = 0;

  // Arms (ms > 0) or clears (ms == 0) the session's deadline; on expiry the
  // backend calls session_handler::on_deadline once.
  virtual void set_deadline_ms(uint32_t ms) = 0;

  // The client's address as text, for logs.
  virtual const std::string& client_address() const = 0;

  // TLS. The handler answers an SSLRequest with 'S' through send() and then
  // calls start_client_tls(): every byte after that is TLS. False (and
  // nothing changes) when no certificate is configured.
  virtual bool client_tls_available() const = 0;
  virtual status start_client_tls() = 0;
  // After the upstream answered 'S' to the handler's SSLRequest; uses the
  // target's upstream.tls and ca_file. Bytes sent from now on are encrypted
  // (held until the handshake is done).
  virtual status start_upstream_tls() = 0;
  virtual bool tls_active(peer which) const = 0;
  virtual std::string tls_description(peer which) const = 0;

  // The shard this session runs on.
  virtual class shard_services& shard() = 0;
};

class session_handler {
 public:
  virtual ~session_handler() = default;

  // The client connection was accepted; io lives as long as the handler.
  virtual void on_start(session_io& io) = 0;

  // Bytes from a peer. They are only valid during the call: whatever the
  // handler needs later it copies.
  virtual void on_data(peer from, std::span<const uint8_t> bytes) = 0;

  virtual void on_upstream_connected(const status& result) = 0;

  // The peer closed its side or its socket failed. The handler decides
  // whether to close the session (it nearly always does).
  virtual void on_peer_closed(peer which, const status& reason) = 0;

  virtual void on_deadline() = 0;

  // A JSON object describing the session for GET /v1/sessions; empty to
  // leave it out (e.g. a gateway-side cancel forwarder).
  virtual std::string describe_json() const { return {}; }
};

// Makes one handler per accepted connection. One factory per target per
// shard, owned by that shard.
class session_factory {
 public:
  virtual ~session_factory() = default;
  virtual std::unique_ptr<session_handler> create() = 0;
  // Bytes to send to a client refused because the shard is at its session
  // limit (e.g. a protocol-correct "too many connections" error).
  virtual std::string overload_response() const = 0;
};

}  // namespace agentgate
