#pragma once
// The gateway's configuration after it was loaded and validated (appliance/
// owns the loading). Plain values: every shard reads its own copy.
// Key names match docs/config.md; units are last in names.

#include <cstdint>
#include <string>
#include <vector>

namespace agentgate {

enum class upstream_tls_mode { disable, require, verify_full };

// The authentication methods the gateway answers when the upstream asks for
// its password, by libpq's require_auth names. Whatever answers at the
// upstream address chooses the method: a server (or an impostor) asking for
// "password" gets the secret in clear, "md5" a hash it can crack offline, and
// "none" (AuthenticationOk without asking) proves nothing. Only SCRAM, where
// the server must prove it knows the password too, is on by default.
struct upstream_auth_methods {
  bool scram_sha_256 = true;
  bool md5 = false;
  bool password = false;
  bool none = false;
};

struct upstream_config {
  std::string host;          // name or address; resolved once at start
  uint16_t port = 5432;
  std::string user;
  std::string password_file; // path as configured
  std::string password;      // contents of password_file, trailing newline stripped
  std::string database;
  upstream_tls_mode tls = upstream_tls_mode::disable;
  std::string ca_file;       // for verify_full; empty: the system's CA store. Resolved
                             // against the config file's directory by the loader.
  upstream_auth_methods auth_methods;  // what the gateway answers; anything else is refused
};

// trust: anyone who can connect (loopback tests, demos); must be written out,
// and on a non-loopback listen address also allowed with
// allow_trust_on_network. jwt (the default): the client's password is an
// OIDC JWT verified against identity.issuers.
enum class client_auth_mode { trust, jwt };

struct target_config {
  std::string name;
  std::string protocol = "postgres";
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 0;
  upstream_config upstream;
  client_auth_mode client_auth = client_auth_mode::jwt;
  // Accept the JWT over a plaintext connection (loopback tests only).
  bool allow_plaintext_auth = false;
  // client_auth "trust" on an address other than loopback: the operator
  // says every client that can reach it is trusted.
  bool allow_trust_on_network = false;
};

// Paths are resolved against the config file's directory by the loader,
// which also checked that the key matches the certificate.
struct tls_config {
  std::string cert;  // PEM certificate chain; empty: no TLS for clients
  std::string key;   // PEM private key
};

// File paths are resolved against the config file's directory by the loader.
// A jwks_uri key set, once fetched, replaces the jwks_file keys of the issuer
// (core/identity/jwks_refresher.h).
struct issuer_config {
  std::string issuer;             // must equal the token's iss
  std::string audience;           // must be in the token's aud (string or array)
  std::string jwks_file;          // JWKS document on disk (read at start and on SIGHUP)
  std::string jwks_uri;           // optional: fetched over HTTPS, off the data path
  uint32_t jwks_refresh_s = 300;  // how often jwks_uri is fetched
  std::string jwks_ca_file;       // CA bundle for jwks_uri; empty: the system's store
  std::string groups_claim = "groups";
  // Optional: the aud a token must carry to approve held commands through
  // the config API. Set, it splits the two uses: a token carrying it cannot
  // log in through a target, and one without it cannot approve. Empty:
  // approvals take login tokens (audience).
  std::string approver_audience;
};

enum class token_expiry_action { terminate, ignore };

struct identity_config {
  std::vector<issuer_config> issuers;
  uint32_t leeway_s = 60;               // clock skew allowed on exp / nbf / iat
  uint32_t token_bytes_max = 8192;      // longer tokens are refused unparsed
  uint32_t cache_entries_max = 10000;   // verified tokens cached per shard
  token_expiry_action on_expiry = token_expiry_action::terminate;
};

struct limits_config {
  uint32_t frame_bytes_max = 64u << 20;        // largest PostgreSQL message accepted
  uint32_t startup_bytes_max = 10000;          // PostgreSQL's own MAX_STARTUP_PACKET_LENGTH
  uint32_t unsent_bytes_max = 256u << 10;      // back-pressure: pause the other side above this
  uint32_t masked_row_bytes_max = 16u << 20;   // a row or COPY row masking must hold whole
  uint32_t connect_timeout_ms = 5000;
  uint32_t auth_timeout_ms = 10000;
  uint32_t idle_timeout_ms = 0;                // 0: no idle timeout
  uint32_t sessions_per_shard_max = 10000;
};

struct io_config {
  uint32_t ring_entries = 4096;                // submission queue depth per shard
  uint32_t recv_buffer_bytes = 16384;          // one provided buffer
  uint32_t recv_buffers = 128;                 // provided buffers per shard (power of two)
  bool pin_threads = true;                     // pin shard i to CPU i
};

struct admin_config {
  std::string listen;      // "host:port"; empty: no config API
  std::string token_file;  // the admin bearer token (first line)
  std::string token;       // its contents, read at start
  tls_config tls;          // admin.tls: HTTPS with this certificate; empty: plain HTTP
};

struct approvals_config {
  std::string webhook_url;  // optional: each new request is POSTed here
};

enum class recording_failure_action { fail_closed, fail_open };

// Session recordings (docs/recording-format.md). Off when dir is empty.
struct recording_config {
  std::string dir;                              // one subdirectory per shard
  uint64_t segment_bytes = 64ull << 20;         // a segment rolls past this
  uint32_t fsync_interval_ms = 100;             // written data is synced at least this often
  uint64_t fsync_bytes = 8ull << 20;            // ... and after this many bytes
  bool fsync_always = false;                    // "fsync": "always": every command's records synced before it runs on
  uint64_t result_bytes_max = 1ull << 20;       // masked rows kept per command; past it only counted
  recording_failure_action on_failure = recording_failure_action::fail_closed;
  uint32_t retention_hours = 0;                 // 0: keep by age forever
  uint64_t retention_bytes = 0;                 // per shard; 0: no size bound
};

struct gateway_config {
  uint32_t shards = 0;                         // 0: one per online CPU
  std::string log_level = "info";
  std::vector<target_config> targets;
  tls_config tls;
  identity_config identity;
  std::string policy_file;  // the policy at start; replaceable through PUT /v1/policy
  admin_config admin;
  approvals_config approvals;
  recording_config recording;
  limits_config limits;
  io_config io;
};

}  // namespace agentgate
