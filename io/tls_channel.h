#pragma once
// TLS over memory BIOs: ciphertext in and out as bytes, so TLS works the
// same over any I/O backend. One channel per TLS connection side, owned by
// the shard that owns the connection.
//
// The backend feeds what the socket received to feed(); plaintext comes out
// through the callback and whatever TLS wants to send (handshake records,
// alerts, encrypted data) is appended to the outgoing buffer. Plaintext the
// session sends before the handshake is done waits in the channel (bounded).

#include <openssl/ssl.h>

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace agentgate::io {

// Creates the server context for clients from PEM files (TLS 1.2+).
result<SSL_CTX*> make_server_tls_context(const std::string& cert_file, const std::string& key_file);
// Creates a client context for upstreams; verify: check the chain against
// ca_file (or the system store when empty) and the host name.
result<SSL_CTX*> make_client_tls_context(bool verify, const std::string& ca_file);

class tls_channel {
 public:
  using plaintext_fn = std::function<void(std::span<const uint8_t>)>;

  // ctx is up-referenced: a context swapped out later stays alive for this channel.
  static std::unique_ptr<tls_channel> server(SSL_CTX* ctx);
  static std::unique_ptr<tls_channel> client(SSL_CTX* ctx, const std::string& host_name, bool verify);
  ~tls_channel();

  // Ciphertext from the network. Decrypted bytes go to on_plaintext (which
  // may be called several times); TLS output is appended to out.
  status feed(std::span<const uint8_t> ciphertext, std::vector<uint8_t>& out,
              const plaintext_fn& on_plaintext);
  // Encrypts plaintext into out (or holds it until the handshake is done).
  status write(std::span<const uint8_t> plaintext, std::vector<uint8_t>& out);
  // Starts the handshake of a client channel (ClientHello into out).
  status start(std::vector<uint8_t>& out);

  bool handshake_done() const { return handshake_done_; }
  // "TLSv1.3 TLS_AES_256_GCM_SHA384", for logs and recordings.
  std::string description() const;

 private:
  explicit tls_channel(SSL* ssl);
  status drain(std::vector<uint8_t>& out);
  status advance_handshake(std::vector<uint8_t>& out);
  status flush_held(std::vector<uint8_t>& out);
  status ssl_error(int rc, const char* what);

  SSL* ssl_;
  BIO* network_in_;   // we write ciphertext here; OpenSSL reads it
  BIO* network_out_;  // OpenSSL writes ciphertext here; we read it
  bool handshake_done_ = false;
  std::vector<uint8_t> held_;  // plaintext written before the handshake finished
};

inline constexpr size_t tls_held_bytes_max = 1u << 20;

}  // namespace agentgate::io
