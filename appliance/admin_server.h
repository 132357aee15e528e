#pragma once
// The config API's transport: a small HTTP/1.1 server on `admin.listen`.
//
// Contract:
// - Threading: one thread of its own, not a shard (the control plane is off
//   the data path). Routes are registered before start() and never change
//   while it runs, so that thread reads the table without locks. Handlers run
//   on it one request at a time: a slow handler stalls the admin API, never
//   the data plane. Whatever a handler touches that the rest of the process
//   also touches is the handler's business to synchronize.
// - Wire: HTTP/1.1 (1.0 accepted) parsed by http-parser, keep-alive and
//   pipelining (answered in order), over TLS when admin.tls is set (OpenSSL
//   over memory BIOs, io/tls_channel), else plain TCP: then bind it to
//   loopback or a management network (the gateway warns otherwise).
// - Limits: connections, header bytes, header count, body bytes, requests per
//   connection, and a request timeout (a connection that has not completed a
//   request within it is closed: slowloris, idle keep-alive and slow readers
//   alike). Hostile input closes that one connection with a JSON error.
// - Auth per route, checked before the handler runs: the admin token is
//   compared in constant time; the token itself is never logged.
// - Errors are JSON {"error": "..."} with a fitting status: 400 malformed,
//   401 unauthorized (with WWW-Authenticate: Bearer), 404 unknown path, 405
//   wrong method (with Allow), 408 timeout, 413 body too large, 431 headers
//   too large, 503 too many connections, 505 not HTTP/1.x.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace agentgate {

enum class route_auth : uint8_t {
  admin_token,  // Authorization: Bearer <admin token>, checked by the server
  none,         // open to anyone who reaches admin.listen: /healthz, /openapi.yaml
  custom,       // a bearer is required, the handler verifies it (approver JWTs)
};

struct http_header {
  std::string name;
  std::string value;
};

struct http_request {
  std::string method;  // "GET", "PUT", ... (HEAD is served by GET routes)
  std::string path;    // as sent, without the query: "/v1/sessions/s-1/events"
  std::string query;   // raw, without the '?'
  std::vector<std::pair<std::string, std::string>> params;        // {id} -> decoded
  std::vector<std::pair<std::string, std::string>> query_params;  // decoded, in order
  std::vector<http_header> headers;                               // in order, names as sent
  std::string body;
  std::string bearer_token;  // from "Authorization: Bearer <token>"; empty if none
  std::string peer;          // "127.0.0.1:53422", "[::1]:53422"

  // Lookups return nullptr when absent; header names are case-insensitive.
  // Repeated headers or query parameters: the first one.
  const std::string* header(std::string_view name) const;
  const std::string* param(std::string_view name) const;
  const std::string* query_param(std::string_view name) const;
};

struct http_response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Extra headers. Content-Length, Content-Type and Connection are the
  // server's; names or values that could split the response are dropped.
  std::vector<http_header> headers;

  static http_response json(int status, std::string body);
  static http_response text(int status, std::string body,
                            std::string content_type = "text/plain; charset=utf-8");
  // {"error": "<message>"}
  static http_response error(int status, std::string_view message);
  // 401 with WWW-Authenticate: Bearer, for custom-auth handlers.
  static http_response unauthorized(std::string_view message);
};

// `text` as a JSON string literal, quotes included. Control characters are
// escaped and invalid UTF-8 becomes U+FFFD, so the result is always valid JSON
// whatever a peer put in a path or a header.
std::string json_quote(std::string_view text);

using http_handler = std::function<http_response(const http_request&)>;

struct admin_server_options {
  std::string listen = "127.0.0.1:0";  // admin.listen; port 0 picks a free one
  std::string admin_token;             // contents of admin.token_file
  size_t connections_max = 256;
  size_t header_bytes_max = 16 * 1024;  // request target + header names and values
  size_t headers_max = 64;
  size_t body_bytes_max = 1024 * 1024;
  uint32_t requests_per_connection_max = 1000;
  uint32_t request_timeout_ms = 10'000;
  // After the last response on a connection being closed, unread input is
  // drained this long so the peer reads the response rather than a reset.
  uint32_t linger_ms = 1'000;
  // admin.tls: every connection speaks TLS (1.2+) with this context; null:
  // plain HTTP. Up-referenced by the server.
  SSL_CTX* tls_context = nullptr;
};

// Counters for operators and tests; read from any thread.
struct admin_server_stats {
  uint64_t connections_accepted = 0;
  uint64_t connections_refused = 0;  // over connections_max
  uint64_t requests = 0;             // dispatched to a route or answered 404/405
  uint64_t bad_requests = 0;         // malformed, too large, wrong version
  uint64_t unauthorized = 0;
  uint64_t timeouts = 0;
};

class admin_server {
 public:
  explicit admin_server(admin_server_options options);
  ~admin_server();  // stops
  admin_server(const admin_server&) = delete;
  admin_server& operator=(const admin_server&) = delete;

  // Before start() only. `pattern` is a path whose segments are literals or
  // `{name}`: "/v1/approvals/{id}/approve". Refused: a bad pattern or method,
  // a route already registered, a server already started.
  status route(std::string_view method, std::string_view pattern, route_auth auth,
               http_handler handler);
  // Same, guarded by the admin token: the safe default.
  status route(std::string_view method, std::string_view pattern, http_handler handler);

  // Binds, listens and starts the thread. "admin.listen: address in use" when
  // the port is taken; an admin_token route with an empty token is refused.
  status start();
  // Closes every connection and joins the thread: promptly, once a handler
  // that is running returns. Idempotent; start() may be called again.
  void stop();

  bool running() const;
  uint16_t port() const;        // bound port, after start()
  std::string address() const;  // "127.0.0.1:8081", after start()
  admin_server_stats stats() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// A handler that answers every request with this fixed document; for
// GET /openapi.yaml: route("GET", "/openapi.yaml", route_auth::none,
// serve_document("application/yaml", openapi_document())).
http_handler serve_document(std::string content_type, std::string_view text);

// docs/openapi.yaml, compiled into the binary so it needs no file at run time.
std::string_view openapi_document();

}  // namespace agentgate
