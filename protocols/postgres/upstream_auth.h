#pragma once
// Client side of PostgreSQL password authentication: how the gateway logs in
// to the real server with its own credentials (AuthenticationSASL /
// AuthenticationMD5Password). Pure computation on message bodies; framing the
// SASLInitialResponse / SASLResponse / PasswordMessage is the caller's job.
//
// Owned by one session on one shard; not thread-safe. PBKDF2 runs inline in
// client_final(): at PostgreSQL's default of 4096 iterations that is about a
// millisecond, but a hostile or misconfigured server can ask for up to
// scram_iterations_max, which costs seconds of CPU on the calling shard.

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "core/status.h"

namespace agentgate::pg {

// Bounds on what a server may ask of us. PostgreSQL itself sends 4096
// iterations and a 16-byte salt; anything near these limits is an attack or a
// hand-made verifier.
inline constexpr uint32_t scram_iterations_max = 10'000'000;
inline constexpr size_t scram_server_message_bytes_max = 4096;

// SCRAM-SHA-256 client (RFC 5802 / RFC 7677) as PostgreSQL speaks it: mechanism
// "SCRAM-SHA-256", no channel binding (gs2 header "n,,"), user name sent empty
// ("n=,") because PostgreSQL takes the user from the startup packet.
//
// Use: send client_first() in SASLInitialResponse; pass the server's
// AuthenticationSASLContinue body to client_final() and send the result in a
// SASLResponse; pass the AuthenticationSASLFinal body to verify_server_final().
// Only when that returns ok has the server proven it knows the password; an
// AuthenticationOk without it must be treated as a failed login.
class scram_client {
 public:
  // client_nonce: fixed nonce for tests; empty means 18 random bytes
  // (OpenSSL RAND_bytes), base64. If the random generator fails, the failure
  // is reported by client_final() and no proof is ever computed.
  explicit scram_client(std::string_view password, std::string client_nonce = {});
  ~scram_client();

  // Moves hand over the password buffer; copies would duplicate a secret.
  scram_client(scram_client&&) noexcept = default;
  scram_client& operator=(scram_client&&) noexcept = default;
  scram_client(const scram_client&) = delete;
  scram_client& operator=(const scram_client&) = delete;

  // The client-first-message, e.g. "n,,n=,r=<nonce>".
  const std::string& client_first() const;

  // From the server-first-message ("r=...,s=...,i=...") computes the
  // client-final-message ("c=biws,r=...,p=..."). errc::protocol for a
  // malformed message, errc::auth for one that is well formed but refused
  // (nonce not extending ours, iteration count out of range). Callable once.
  result<std::string> client_final(std::string_view server_first);

  // Verifies "v=<base64 ServerSignature>" in constant time; "e=<error>" gives
  // errc::auth carrying the server's text.
  status verify_server_final(std::string_view server_final) const;

 private:
  friend class scram_client_test_peer;  // RFC 7677's vector needs "n=user"

  enum class state : uint8_t { initial, awaiting_server_final, done };

  scram_client(std::string_view password, std::string client_nonce, std::string_view user);

  std::vector<uint8_t> password_;  // after SASLprep (see .cc); wiped once used
  std::string client_nonce_;
  std::string client_first_;
  size_t client_first_bare_offset_ = 0;  // past the gs2 header "n,,"
  status init_error_;                    // RAND_bytes failure, reported late
  state state_ = state::initial;
  std::array<uint8_t, 32> server_signature_{};
};

// The gateway's half of the upstream login: answers each authentication
// request ('R' message) the upstream sends before AuthenticationOk, under an
// allow-list of methods (upstream.auth_methods, libpq's require_auth rule).
// Whoever answers at the upstream address picks the method, so a request for
// a method that is not allowed is refused before any secret is sent, and an
// AuthenticationOk counts only after an allowed method ran to its end: a
// SCRAM exchange whose server signature was verified, a password or md5
// response that was sent, or nothing at all when "none" is allowed.
//
// SCRAM channel binding (SCRAM-SHA-256-PLUS) is not offered: the gateway
// always sends gs2 header "n" and picks SCRAM-SHA-256 where both are offered.
//
// One per session, on its shard. user and password are views into the
// target's config, which outlives every session.
class upstream_login {
 public:
  upstream_login(std::string_view user, std::string_view password, upstream_auth_methods allowed,
                 std::string scram_client_nonce = {});

  // What to do with one authentication request.
  struct step {
    bool authenticated = false;    // AuthenticationOk accepted: the login is done
    std::string password_message;  // otherwise: the body of the 'p' message to send
  };

  // body: the request without its type byte and length (Int32 code, data).
  // Errors: errc::protocol for a malformed or out-of-order request;
  // errc::auth for one refused (method not allowed or not supported, server
  // proof wrong, AuthenticationOk too early); errc::unsupported for a method
  // the gateway cannot speak (GSSAPI, SSPI; md5 under FIPS). The message
  // names the method and, for refusals, the config key.
  result<step> on_request(std::span<const uint8_t> body);

  // libpq's require_auth name of a request code ("md5", "SSPI", ...).
  static std::string method_name(uint32_t code);

 private:
  result<step> on_sasl(std::string_view mechanisms);

  std::string_view user_;
  std::string_view password_;
  upstream_auth_methods allowed_;
  std::string scram_client_nonce_;     // fixed nonce for tests; empty: random
  std::optional<scram_client> scram_;  // set once SASL started
  bool scram_verified_ = false;        // the server's final signature checked out
  bool password_sent_ = false;         // a cleartext or md5 answer went out
};

// PostgreSQL md5 password response: "md5" + hex(md5(hex(md5(password + user)) + salt)).
// Empty if MD5 is unavailable (e.g. OpenSSL's FIPS provider), which the
// caller must treat as a failed login rather than send.
std::string md5_password_response(std::string_view user, std::string_view password,
                                  std::span<const uint8_t, 4> salt);

}  // namespace agentgate::pg
