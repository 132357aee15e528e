#include "io/tls_channel.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace agentgate::io {
namespace {

std::string openssl_errors() {
  std::string out;
  unsigned long e = 0;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown error" : out;
}

}  // namespace

result<SSL_CTX*> make_server_tls_context(const std::string& cert_file, const std::string& key_file) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return status(errc::io, "SSL_CTX_new: " + openssl_errors());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
    SSL_CTX_free(ctx);
    return status(errc::invalid_argument, "tls.cert: " + openssl_errors());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    SSL_CTX_free(ctx);
    return status(errc::invalid_argument, "tls.key: " + openssl_errors());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    SSL_CTX_free(ctx);
    return status(errc::invalid_argument, "tls.key: does not match tls.cert");
  }
  return ctx;
}

result<SSL_CTX*> make_client_tls_context(bool verify, const std::string& ca_file) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return status(errc::io, "SSL_CTX_new: " + openssl_errors());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (verify) {
    const int ok = ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx)
                                   : SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr);
    if (ok != 1) {
      SSL_CTX_free(ctx);
      return status(errc::invalid_argument, "ca_file: " + openssl_errors());
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  return ctx;
}

tls_channel::tls_channel(SSL* ssl) : ssl_(ssl) {
  network_in_ = BIO_new(BIO_s_mem());
  network_out_ = BIO_new(BIO_s_mem());
  // A read from an empty memory BIO means "need more", not end of file.
  BIO_set_mem_eof_return(network_in_, -1);
  SSL_set_bio(ssl_, network_in_, network_out_);  // the SSL owns both BIOs now
}

tls_channel::~tls_channel() { SSL_free(ssl_); }

std::unique_ptr<tls_channel> tls_channel::server(SSL_CTX* ctx) {
  SSL* ssl = SSL_new(ctx);
  if (ssl == nullptr) return nullptr;
  SSL_set_accept_state(ssl);
  return std::unique_ptr<tls_channel>(new tls_channel(ssl));
}

std::unique_ptr<tls_channel> tls_channel::client(SSL_CTX* ctx, const std::string& host_name, bool verify) {
  SSL* ssl = SSL_new(ctx);
  if (ssl == nullptr) return nullptr;
  SSL_set_connect_state(ssl);
  if (!host_name.empty()) {
    SSL_set_tlsext_host_name(ssl, host_name.c_str());
    if (verify) SSL_set1_host(ssl, host_name.c_str());
  }
  return std::unique_ptr<tls_channel>(new tls_channel(ssl));
}

status tls_channel::ssl_error(int rc, const char* what) {
  const int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return status::ok();
  std::string why;
  if (err == SSL_ERROR_ZERO_RETURN) {
    why = "peer closed the TLS session";
  } else {
    why = openssl_errors();
    const long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK) why += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
  }
  return {errc::protocol, std::string("TLS ") + what + " failed: " + why};
}

status tls_channel::drain(std::vector<uint8_t>& out) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(network_out_, &data);
  if (n > 0) {
    out.insert(out.end(), data, data + n);
    (void)BIO_reset(network_out_);
  }
  return status::ok();
}

status tls_channel::advance_handshake(std::vector<uint8_t>& out) {
  const int rc = SSL_do_handshake(ssl_);
  if (rc == 1) handshake_done_ = true;
  status st = rc == 1 ? status::ok() : ssl_error(rc, "handshake");
  (void)drain(out);  // alerts too: the peer should learn why
  if (!st) return st;
  return handshake_done_ ? flush_held(out) : status::ok();
}

status tls_channel::start(std::vector<uint8_t>& out) { return advance_handshake(out); }

status tls_channel::flush_held(std::vector<uint8_t>& out) {
  if (held_.empty()) return status::ok();
  std::vector<uint8_t> held;
  held.swap(held_);
  return write(held, out);
}

status tls_channel::feed(std::span<const uint8_t> ciphertext, std::vector<uint8_t>& out,
                         const plaintext_fn& on_plaintext) {
  if (!ciphertext.empty() && BIO_write(network_in_, ciphertext.data(), static_cast<int>(ciphertext.size())) <= 0)
    return {errc::io, "TLS: cannot buffer received bytes"};
  if (!handshake_done_) {
    if (status st = advance_handshake(out); !st) return st;
    if (!handshake_done_) return status::ok();
  }
  uint8_t plain[16384];
  for (;;) {
    const int n = SSL_read(ssl_, plain, sizeof(plain));
    if (n > 0) {
      on_plaintext({plain, static_cast<size_t>(n)});
      continue;
    }
    status st = ssl_error(n, "read");
    (void)drain(out);
    if (!st) return st;
    if (SSL_get_error(ssl_, n) == SSL_ERROR_ZERO_RETURN) return {errc::io, "peer closed the TLS session"};
    return status::ok();
  }
}

status tls_channel::write(std::span<const uint8_t> plaintext, std::vector<uint8_t>& out) {
  if (!handshake_done_) {
    if (held_.size() + plaintext.size() > tls_held_bytes_max)
      return {errc::limit, "TLS: too much data before the handshake completed"};
    held_.insert(held_.end(), plaintext.begin(), plaintext.end());
    return status::ok();
  }
  size_t done = 0;
  while (done < plaintext.size()) {
    size_t written = 0;
    const int rc = SSL_write_ex(ssl_, plaintext.data() + done, plaintext.size() - done, &written);
    if (rc != 1) {
      status st = ssl_error(rc, "write");
      (void)drain(out);
      return st ? status(errc::io, "TLS write stalled") : st;
    }
    done += written;
  }
  return drain(out);
}

std::string tls_channel::description() const {
  if (!handshake_done_) return "handshake in progress";
  return std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_);
}

}  // namespace agentgate::io
