#include "protocols/postgres/upstream_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cassert>
#include <charconv>
#include <climits>
#include <optional>

namespace agentgate::pg {
namespace {

using digest = std::array<uint8_t, 32>;  // SHA-256 output, and SCRAM's key size

constexpr std::string_view gs2_header = "n,,";
// base64("n,,"): the channel-binding attribute echoes the gs2 header.
constexpr std::string_view gs2_header_base64 = "biws";
// Same as libpq (SCRAM_RAW_NONCE_LEN): 144 bits of randomness.
constexpr size_t client_nonce_random_bytes = 18;
constexpr size_t server_error_chars_max = 128;

status protocol_error(std::string_view what) {
  return {errc::protocol, "SCRAM: " + std::string(what)};
}

status auth_error(std::string_view what) {
  return {errc::auth, "SCRAM: " + std::string(what)};
}

std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// SASLprep (RFC 4013) leaves printable ASCII unchanged, so such passwords are
// used as is. Anything else is used as raw bytes without normalisation: that
// is what libpq does when SASLprep fails (invalid UTF-8, prohibited
// characters such as controls), and what the server does when it builds the
// verifier, so those passwords work. A valid UTF-8 password that SASLprep
// would change (non-ASCII spaces, characters NFKC rewrites) gets a different
// key than the server's verifier and the login fails: a clear refusal, never
// a weaker check.
std::vector<uint8_t> sasl_prepare(std::string_view password) {
  auto bytes = as_bytes(password);
  return {bytes.begin(), bytes.end()};
}

std::string base64_encode(std::span<const uint8_t> in) {
  assert(in.size() <= INT_MAX / 4 * 3);
  // EVP_EncodeBlock writes 4 chars per 3 bytes (rounded up) plus a NUL.
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), in.data(),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

bool is_base64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  return c == '+' ? 62 : 63;
}

// Strict RFC 4648 base64. EVP_DecodeBlock alone would skip surrounding
// whitespace and count padding as decoded zero bytes, so the alphabet and
// padding are checked here and the padding is taken off its length. Unused
// bits before the padding must be zero, so each byte string has exactly one
// accepted encoding.
std::optional<std::vector<uint8_t>> base64_decode(std::string_view in) {
  if (in.size() % 4 != 0 || in.size() > scram_server_message_bytes_max) return std::nullopt;
  size_t padding = 0;
  while (padding < 2 && padding < in.size() && in[in.size() - 1 - padding] == '=') ++padding;
  for (size_t i = 0; i < in.size() - padding; ++i) {
    if (!is_base64_char(in[i])) return std::nullopt;
  }
  if (padding > 0) {
    int unused_bits_mask = padding == 1 ? 0x03 : 0x0f;
    if ((base64_value(in[in.size() - 1 - padding]) & unused_bits_mask) != 0) return std::nullopt;
  }
  std::vector<uint8_t> out(in.size() / 4 * 3);
  if (in.empty()) return out;
  int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0 || static_cast<size_t>(n) != out.size()) return std::nullopt;
  out.resize(out.size() - padding);
  return out;
}

bool hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data, digest& out) {
  unsigned int len = 0;
  const unsigned char* r = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                                data.data(), data.size(), out.data(), &len);
  return r != nullptr && len == out.size();
}

bool sha256(std::span<const uint8_t> data, digest& out) {
  unsigned int len = 0;
  return EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) == 1 &&
         len == out.size();
}

// RFC 5802 §5.1 saslname: ',' and '=' are escaped so the user cannot inject
// attributes. Only the test path sends a user; PostgreSQL's is empty.
std::string escape_saslname(std::string_view user) {
  std::string out;
  for (char c : user) {
    if (c == ',') {
      out += "=2C";
    } else if (c == '=') {
      out += "=3D";
    } else {
      out += c;
    }
  }
  return out;
}

// RFC 5802 "printable": %x21-2B / %x2D-7E, i.e. visible ASCII except ','.
bool is_valid_nonce(std::string_view nonce) {
  for (unsigned char c : nonce) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return !nonce.empty();
}

// Reads "<name>=<value>" from the front of `in`, leaving `in` at the ','
// that ends the value (or empty).
result<std::string_view> take_attribute(std::string_view& in, char name, std::string_view what) {
  if (in.size() < 2 || in[0] != name || in[1] != '=') {
    return protocol_error(std::string("malformed message: expected ") + name + "= (" +
                          std::string(what) + ")");
  }
  in.remove_prefix(2);
  std::string_view value = in.substr(0, in.find(','));
  in.remove_prefix(value.size());
  return value;
}

bool take_separator(std::string_view& in) {
  if (in.empty() || in[0] != ',') return false;
  in.remove_prefix(1);
  return true;
}

// The server's error text ends up in our logs: keep it short and printable.
std::string sanitize_server_text(std::string_view text) {
  std::string out;
  for (unsigned char c : text.substr(0, server_error_chars_max)) {
    out += (c >= 0x20 && c <= 0x7e) ? static_cast<char>(c) : '?';
  }
  if (text.size() > server_error_chars_max) out += "...";
  if (out.empty()) out = "(empty)";
  return out;
}

// Parses the iteration count strictly: digits only, no sign, no spaces.
std::optional<uint64_t> parse_iterations(std::string_view s) {
  if (s.empty()) return std::nullopt;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec == std::errc::result_out_of_range) return UINT64_MAX;  // refused as too large
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

}  // namespace

scram_client::scram_client(std::string_view password, std::string client_nonce)
    : scram_client(password, std::move(client_nonce), std::string_view{}) {}

scram_client::scram_client(std::string_view password, std::string client_nonce,
                           std::string_view user)
    : password_(sasl_prepare(password)), client_nonce_(std::move(client_nonce)) {
  if (client_nonce_.empty()) {
    std::array<uint8_t, client_nonce_random_bytes> raw{};
    if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) == 1) {
      client_nonce_ = base64_encode(raw);
    } else {
      // No exceptions here: client_final() reports it before any proof is
      // computed, so the empty nonce in client_first() never authenticates.
      init_error_ = status(errc::auth, "SCRAM: RAND_bytes failed to produce a client nonce");
    }
  } else {
    assert(is_valid_nonce(client_nonce_) && "test nonce must be printable ASCII without ','");
  }
  client_first_ = std::string(gs2_header) + "n=" + escape_saslname(user) + ",r=" + client_nonce_;
  client_first_bare_offset_ = gs2_header.size();
}

scram_client::~scram_client() {
  if (!password_.empty()) OPENSSL_cleanse(password_.data(), password_.size());
}

const std::string& scram_client::client_first() const { return client_first_; }

result<std::string> scram_client::client_final(std::string_view server_first) {
  if (state_ != state::initial) {
    return protocol_error("unexpected second server-first-message");
  }
  // Whatever happens next, this nonce is spent: a failed exchange is not
  // retried on the same object.
  state_ = state::done;
  if (!init_error_.is_ok()) return init_error_;
  if (password_.size() > INT_MAX) {
    return status(errc::invalid_argument, "SCRAM: password too long");
  }
  if (server_first.empty()) return protocol_error("empty server-first-message");
  if (server_first.size() > scram_server_message_bytes_max) {
    return protocol_error("server-first-message longer than " +
                          std::to_string(scram_server_message_bytes_max) + " bytes");
  }
  if (server_first.starts_with("m=")) {
    return protocol_error("server requires an unsupported mandatory extension (m=)");
  }

  std::string_view in = server_first;
  auto nonce = take_attribute(in, 'r', "nonce");
  if (!nonce) return nonce.error();
  if (!take_separator(in)) return protocol_error("server-first-message truncated after nonce");
  if (!is_valid_nonce(*nonce)) return protocol_error("server nonce has invalid characters");
  // RFC 5802 §5.1: the server appends its own nonce to ours. One that merely
  // echoes ours contributed nothing and is refused like a foreign one.
  if (nonce->size() <= client_nonce_.size() || !nonce->starts_with(client_nonce_)) {
    return auth_error("server nonce does not extend the client nonce");
  }

  auto salt_b64 = take_attribute(in, 's', "salt");
  if (!salt_b64) return salt_b64.error();
  if (!take_separator(in)) return protocol_error("server-first-message truncated after salt");
  auto salt = base64_decode(*salt_b64);
  if (!salt) return protocol_error("salt is not valid base64");
  if (salt->empty()) return protocol_error("salt is empty");

  auto iterations_text = take_attribute(in, 'i', "iteration count");
  if (!iterations_text) return iterations_text.error();
  if (!in.empty()) {
    // RFC 5802 allows optional extensions here; PostgreSQL sends none and
    // libpq refuses them too, so anything unexpected is refused.
    return protocol_error("unexpected data after the iteration count");
  }
  auto iterations = parse_iterations(*iterations_text);
  if (!iterations) return protocol_error("iteration count is not a number");
  if (*iterations < 1 || *iterations > scram_iterations_max) {
    return auth_error("iteration count " + std::string(*iterations_text) +
                      " refused (must be 1.." + std::to_string(scram_iterations_max) + ")");
  }

  std::string final_without_proof =
      "c=" + std::string(gs2_header_base64) + ",r=" + std::string(*nonce);
  std::string auth_message = client_first_.substr(client_first_bare_offset_) + "," +
                             std::string(server_first) + "," + final_without_proof;

  digest salted{}, client_key{}, stored_key{}, client_signature{}, server_key{};
  bool ok = PKCS5_PBKDF2_HMAC(reinterpret_cast<const char*>(password_.data()),
                              static_cast<int>(password_.size()), salt->data(),
                              static_cast<int>(salt->size()), static_cast<int>(*iterations),
                              EVP_sha256(), static_cast<int>(salted.size()), salted.data()) == 1;
  ok = ok && hmac_sha256(salted, as_bytes("Client Key"), client_key);
  ok = ok && sha256(client_key, stored_key);
  ok = ok && hmac_sha256(stored_key, as_bytes(auth_message), client_signature);
  ok = ok && hmac_sha256(salted, as_bytes("Server Key"), server_key);
  ok = ok && hmac_sha256(server_key, as_bytes(auth_message), server_signature_);

  digest proof{};
  for (size_t i = 0; i < proof.size(); ++i) proof[i] = client_key[i] ^ client_signature[i];

  for (digest* secret : {&salted, &client_key, &stored_key, &client_signature, &server_key}) {
    OPENSSL_cleanse(secret->data(), secret->size());
  }
  OPENSSL_cleanse(password_.data(), password_.size());
  password_.clear();

  if (!ok) return auth_error("OpenSSL failed to compute the SCRAM-SHA-256 proof");
  state_ = state::awaiting_server_final;
  return final_without_proof + ",p=" + base64_encode(proof);
}

status scram_client::verify_server_final(std::string_view server_final) const {
  if (state_ != state::awaiting_server_final) {
    return protocol_error("server-final-message without a completed client-final-message");
  }
  if (server_final.size() > scram_server_message_bytes_max) {
    return protocol_error("server-final-message longer than " +
                          std::to_string(scram_server_message_bytes_max) + " bytes");
  }
  if (server_final.starts_with("e=")) {
    return auth_error("server reported error: " + sanitize_server_text(server_final.substr(2)));
  }
  std::string_view in = server_final;
  auto verifier = take_attribute(in, 'v', "server signature");
  if (!verifier) return verifier.error();
  if (!in.empty()) return protocol_error("unexpected data after the server signature");
  auto signature = base64_decode(*verifier);
  if (!signature) return protocol_error("server signature is not valid base64");
  if (signature->size() != server_signature_.size()) {
    return protocol_error("server signature is " + std::to_string(signature->size()) +
                          " bytes, expected " + std::to_string(server_signature_.size()));
  }
  if (CRYPTO_memcmp(signature->data(), server_signature_.data(), server_signature_.size()) != 0) {
    return auth_error("server signature does not match: the server does not know the password");
  }
  return status::ok();
}

namespace {

// Authentication request codes (PostgreSQL's AUTH_REQ_*).
constexpr uint32_t auth_ok = 0;
constexpr uint32_t auth_kerberos_v5 = 2;
constexpr uint32_t auth_password = 3;
constexpr uint32_t auth_md5 = 5;
constexpr uint32_t auth_gss = 7;
constexpr uint32_t auth_gss_continue = 8;
constexpr uint32_t auth_sspi = 9;
constexpr uint32_t auth_sasl = 10;
constexpr uint32_t auth_sasl_continue = 11;
constexpr uint32_t auth_sasl_final = 12;

constexpr std::string_view scram_mechanism = "SCRAM-SHA-256";

uint32_t read_be32(std::span<const uint8_t> in) {
  return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) | in[3];
}

void append_be32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
}

status not_allowed(uint32_t code) {
  return {errc::auth, "the upstream asked for " + upstream_login::method_name(code) +
                          " authentication, which upstream.auth_methods does not allow"};
}

}  // namespace

upstream_login::upstream_login(std::string_view user, std::string_view password,
                               upstream_auth_methods allowed, std::string scram_client_nonce)
    : user_(user), password_(password), allowed_(allowed),
      scram_client_nonce_(std::move(scram_client_nonce)) {}

std::string upstream_login::method_name(uint32_t code) {
  switch (code) {
    case auth_ok: return "none";
    case auth_kerberos_v5: return "Kerberos V5";
    case auth_password: return "password";
    case auth_md5: return "md5";
    case auth_gss:
    case auth_gss_continue: return "gss";
    case auth_sspi: return "sspi";
    case auth_sasl:
    case auth_sasl_continue:
    case auth_sasl_final: return "scram-sha-256";
    default: return "unknown (code " + std::to_string(code) + ")";
  }
}

result<upstream_login::step> upstream_login::on_request(std::span<const uint8_t> body) {
  if (body.size() < 4) return status(errc::protocol, "authentication request shorter than its code");
  const uint32_t code = read_be32(body);
  const std::span<const uint8_t> data = body.subspan(4);
  const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
  // A SCRAM exchange, once begun, runs to its end: nothing else may cut in.
  const bool scram_running = scram_.has_value() && !scram_verified_;
  if (scram_running && code != auth_sasl_continue && code != auth_sasl_final && code != auth_ok) {
    return status(errc::protocol, "authentication request " + std::to_string(code) +
                                      " in the middle of a SCRAM exchange");
  }
  step out;
  switch (code) {
    case auth_ok:
      if (scram_running) {
        // The server must have proven it knows the password (SASLFinal).
        return status(errc::auth, "the server skipped SCRAM's final message");
      }
      if (!scram_verified_ && !password_sent_ && !allowed_.none) {
        // libpq: "server did not complete authentication". An impostor that
        // lets the gateway in unasked proves nothing about who it is.
        return status(errc::auth,
                      "the upstream accepted the login without authentication (method none), "
                      "which upstream.auth_methods does not allow");
      }
      out.authenticated = true;
      return out;
    case auth_password:
      if (!allowed_.password) return not_allowed(code);
      out.password_message.assign(password_);
      out.password_message += '\0';
      password_sent_ = true;
      return out;
    case auth_md5: {
      if (!allowed_.md5) return not_allowed(code);
      if (data.size() != 4) return status(errc::protocol, "md5 request without a 4-byte salt");
      out.password_message =
          md5_password_response(user_, password_, std::span<const uint8_t, 4>(data.data(), 4));
      if (out.password_message.empty()) {
        return status(errc::unsupported, "md5 authentication is unavailable on the gateway");
      }
      out.password_message += '\0';
      password_sent_ = true;
      return out;
    }
    case auth_sasl:
      if (!allowed_.scram_sha_256) return not_allowed(code);
      if (scram_.has_value()) return status(errc::protocol, "a second SASL exchange");
      return on_sasl(text);
    case auth_sasl_continue: {
      if (!scram_running) return status(errc::protocol, "SASLContinue without a SASL exchange");
      result<std::string> final_message = scram_->client_final(text);
      if (!final_message) return final_message.error();
      out.password_message = std::move(*final_message);
      return out;
    }
    case auth_sasl_final: {
      if (!scram_running) return status(errc::protocol, "SASLFinal without a SASL exchange");
      if (status verified = scram_->verify_server_final(text); !verified) return verified;
      scram_verified_ = true;
      return out;  // nothing to send; AuthenticationOk follows
    }
    case auth_kerberos_v5:
    case auth_gss:
    case auth_gss_continue:
    case auth_sspi:
      return status(errc::unsupported, "the upstream asked for " + method_name(code) +
                                           " authentication, which the gateway does not support");
    default:
      return status(errc::protocol,
                    "unknown authentication request " + std::to_string(code) + " from the upstream");
  }
}

// The body is a list of NUL-terminated mechanism names ended by an empty one.
result<upstream_login::step> upstream_login::on_sasl(std::string_view mechanisms) {
  bool scram_offered = false;
  bool terminated = false;
  while (!mechanisms.empty()) {
    const size_t nul = mechanisms.find('\0');
    if (nul == std::string_view::npos) break;
    if (nul == 0) {
      terminated = true;
      break;
    }
    if (mechanisms.substr(0, nul) == scram_mechanism) scram_offered = true;
    mechanisms.remove_prefix(nul + 1);
  }
  if (!terminated) return status(errc::protocol, "malformed SASL mechanism list");
  if (!scram_offered) {
    return status(errc::unsupported,
                  "the server offers no SASL mechanism the gateway supports (only SCRAM-SHA-256)");
  }
  scram_.emplace(password_, scram_client_nonce_);
  const std::string& first = scram_->client_first();
  step out;
  out.password_message.append(scram_mechanism);
  out.password_message += '\0';
  append_be32(out.password_message, static_cast<uint32_t>(first.size()));
  out.password_message.append(first);
  return out;
}

std::string md5_password_response(std::string_view user, std::string_view password,
                                  std::span<const uint8_t, 4> salt) {
  static constexpr char hex_digits[] = "0123456789abcdef";
  auto md5_hex = [](std::string_view data, std::string& out) {
    std::array<uint8_t, 16> md{};
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_md5(), nullptr) != 1 ||
        len != md.size()) {
      return false;
    }
    for (uint8_t b : md) {
      out += hex_digits[b >> 4];
      out += hex_digits[b & 0x0f];
    }
    return true;
  };

  std::string inner_input;
  inner_input.reserve(password.size() + user.size());
  inner_input.append(password).append(user);
  std::string outer_input;  // hex(md5(password + user)) + salt
  bool ok = md5_hex(inner_input, outer_input);
  OPENSSL_cleanse(inner_input.data(), inner_input.size());
  if (!ok) return {};
  outer_input.append(reinterpret_cast<const char*>(salt.data()), salt.size());

  std::string response = "md5";
  ok = md5_hex(outer_input, response);
  OPENSSL_cleanse(outer_input.data(), outer_input.size());
  if (!ok) return {};
  return response;
}

}  // namespace agentgate::pg
