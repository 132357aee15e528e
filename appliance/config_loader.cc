#include "appliance/config_loader.h"
#include "core/text.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <system_error>
#include <vector>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <simdjson.h>

#include "core/identity/jwks.h"

namespace agentgate {
namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

constexpr uint32_t shards_max = 256;
constexpr size_t targets_max = 1024;
constexpr size_t target_name_chars_max = 64;
constexpr size_t host_name_chars_max = 253;    // DNS limit
constexpr size_t pg_identifier_bytes_max = 63; // NAMEDATALEN - 1; PostgreSQL truncates beyond
constexpr uint32_t timeout_ms_max = 86'400'000;  // one day
// Buffers a shard registers up front; past this a typo costs gigabytes per core.
constexpr uint64_t recv_pool_bytes_max = uint64_t{1} << 30;
// Keeps an error line readable when the offending value is huge.

constexpr size_t issuers_max = 16;
constexpr size_t issuer_chars_max = 1024;     // iss and aud values
constexpr size_t uri_chars_max = 2048;
constexpr size_t claim_name_chars_max = 256;
constexpr uint32_t jwks_refresh_s_max = 86'400;
constexpr uint32_t leeway_s_max = 3600;
// PEM files the loader opens to check them: a chain of a few certificates,
// or a CA bundle the size of the system's.
constexpr size_t pem_file_bytes_max = 1u << 20;

// Keys DESIGN.md names for work that has not landed. Refused rather than
// ignored: a gateway that starts without the policy or recording its
// operator configured is worse than one that does not start.
constexpr std::string_view top_level_keys_later[] = {"web_console"};

bool is_later_key(std::string_view key, const auto& later) {
  return std::find(std::begin(later), std::end(later), key) != std::end(later);
}

// Values echoed into an error line are escaped and cut, so a hostile or
// mistaken value can neither break the line nor flood the log.


bool is_plain_key(std::string_view key) {
  if (key.empty()) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
  });
}

// Paths read like the JSON they point into: targets[0].upstream.port.
std::string key_path(const std::string& parent, std::string_view key) {
  if (!is_plain_key(key)) return parent + "[" + quote_for_message(key) + "]";
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

std::string index_path(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

status fail(const std::string& path, std::string_view what) {
  std::string message = path.empty() ? std::string("(top level)") : path;
  message += ": ";
  message += what;
  return status(errc::invalid_argument, std::move(message));
}

std::string os_error_text(int err) { return std::system_category().message(err); }

// Walks an object's members in document order, so the first error reported
// is the first one a reader meets. simdjson's DOM keeps duplicate keys; a
// config where the second "port" silently wins was not reviewed as written,
// so duplicates are refused.
template <typename Handler>
status for_each_member(element value, const std::string& path, Handler&& handle) {
  object members;
  if (value.get_object().get(members) != simdjson::SUCCESS) {
    return fail(path, "expected an object");
  }
  // Only keys that were accepted land here (an unknown key ends the walk),
  // so the linear search stays over a handful of entries.
  std::vector<std::string_view> seen;
  for (auto member : members) {
    std::string member_path = key_path(path, member.key);
    if (std::find(seen.begin(), seen.end(), member.key) != seen.end()) {
      return fail(member_path, "duplicate key");
    }
    seen.push_back(member.key);
    if (status s = handle(member.key, member.value, member_path); !s) return s;
  }
  return status::ok();
}

status unknown_key(std::string_view key, const std::string& path, const auto& later) {
  if (is_later_key(key, later)) return fail(path, "not supported by this build yet");
  return fail(path, "unknown key");
}

status get_string(element value, const std::string& path, std::string_view& out) {
  if (value.get_string().get(out) != simdjson::SUCCESS) return fail(path, "expected a string");
  return status::ok();
}

// JSON has one number type; config integers must be written as integers so
// that 5432.5 or 1e3 is refused rather than silently rounded.
bool get_unsigned(element value, uint64_t& out) {
  if (value.type() == element_type::UINT64) return value.get_uint64().get(out) == simdjson::SUCCESS;
  if (value.type() != element_type::INT64) return false;
  int64_t signed_value = 0;
  if (value.get_int64().get(signed_value) != simdjson::SUCCESS || signed_value < 0) return false;
  out = static_cast<uint64_t>(signed_value);
  return true;
}

template <typename T>
status get_integer(element value, const std::string& path, uint64_t lo, uint64_t hi, T& out) {
  assert(lo <= hi && hi <= std::numeric_limits<T>::max());
  uint64_t v = 0;
  if (!get_unsigned(value, v) || v < lo || v > hi) {
    return fail(path, "expected an integer between " + std::to_string(lo) + " and " +
                          std::to_string(hi));
  }
  out = static_cast<T>(v);
  return status::ok();
}

template <typename T>
status get_power_of_two(element value, const std::string& path, uint64_t lo, uint64_t hi, T& out) {
  assert(lo <= hi && hi <= std::numeric_limits<T>::max());
  uint64_t v = 0;
  if (!get_unsigned(value, v) || v < lo || v > hi || (v & (v - 1)) != 0) {
    return fail(path, "expected a power of two between " + std::to_string(lo) + " and " +
                          std::to_string(hi));
  }
  out = static_cast<T>(v);
  return status::ok();
}

status get_bool(element value, const std::string& path, bool& out) {
  if (value.get_bool().get(out) != simdjson::SUCCESS) return fail(path, "expected true or false");
  return status::ok();
}

bool is_target_name(std::string_view name) {
  if (name.empty() || name.size() > target_name_chars_max) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
  });
}

// DNS names (letters, digits, '-', '_', dots between labels) or IP literals
// without brackets: what getaddrinfo will be handed at start.
bool is_host(std::string_view host) {
  in6_addr v6;
  std::string nul_terminated(host);
  if (inet_pton(AF_INET6, nul_terminated.c_str(), &v6) == 1) return true;
  if (host.empty() || host.size() > host_name_chars_max) return false;
  size_t label_chars = 0;
  for (char c : host) {
    if (c == '.') {
      if (label_chars == 0) return false;
      label_chars = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok || ++label_chars > 63) return false;
  }
  return label_chars > 0;
}

// User and database names travel NUL-terminated in the startup packet.
bool is_pg_identifier(std::string_view name) {
  if (name.empty() || name.size() > pg_identifier_bytes_max) return false;
  return std::none_of(name.begin(), name.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
}

// A listen address in binary form, to compare two targets' addresses.
struct socket_address {
  int family = AF_INET;
  unsigned char bytes[16] = {};
  uint16_t port = 0;
};

bool to_socket_address(const std::string& host, uint16_t port, socket_address& out) {
  out.port = port;
  if (inet_pton(AF_INET, host.c_str(), out.bytes) == 1) {
    out.family = AF_INET;
    return true;
  }
  out.family = AF_INET6;
  return inet_pton(AF_INET6, host.c_str(), out.bytes) == 1;
}

bool is_wildcard(const socket_address& a) {
  size_t n = a.family == AF_INET ? 4 : 16;
  return std::all_of(a.bytes, a.bytes + n, [](unsigned char b) { return b == 0; });
}

// Two listen sockets conflict when one would receive the other's
// connections. The kernel does not catch this for us: every shard binds with
// SO_REUSEPORT, so a second target on the same address binds fine and the
// kernel spreads clients across both targets.
bool listen_overlaps(const socket_address& a, const socket_address& b) {
  if (a.port != b.port) return false;
  if (a.family == b.family) {
    size_t n = a.family == AF_INET ? 4 : 16;
    return is_wildcard(a) || is_wildcard(b) || std::memcmp(a.bytes, b.bytes, n) == 0;
  }
  // "::" also takes IPv4 unless IPV6_V6ONLY is set, and ::ffff:a.b.c.d is a.b.c.d.
  const socket_address& v6 = a.family == AF_INET6 ? a : b;
  const socket_address& v4 = a.family == AF_INET6 ? b : a;
  if (is_wildcard(v6)) return true;
  static constexpr unsigned char v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(v6.bytes, v4_mapped_prefix, 12) != 0) return false;
  return is_wildcard(v4) || std::memcmp(v6.bytes + 12, v4.bytes, 4) == 0;
}

// 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: only this host can connect.
bool is_loopback(const socket_address& a) {
  if (a.family == AF_INET) return a.bytes[0] == 127;
  static constexpr unsigned char v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  static constexpr unsigned char v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(a.bytes, v6_loopback, 16) == 0) return true;
  return std::memcmp(a.bytes, v4_mapped_prefix, 12) == 0 && a.bytes[12] == 127;
}

std::string listen_text(const target_config& t) {
  bool v6 = t.listen_host.find(':') != std::string::npos;
  std::string host = v6 ? "[" + t.listen_host + "]" : t.listen_host;
  return host + ":" + std::to_string(t.listen_port);
}

// "host:port" with host an IPv4 literal, "[IPv6 literal]" or "localhost".
// Names other than localhost are refused: a listen address that depends on
// DNS at start is a listen address nobody can review.
status parse_listen(std::string_view text, const std::string& path, target_config& out) {
  std::string_view host;
  std::string_view port_text;
  bool bracketed = !text.empty() && text.front() == '[';
  if (bracketed) {
    size_t close = text.find("]:");
    if (close == std::string_view::npos) {
      return fail(path, "expected \"[IPv6 address]:port\", got " + quote_for_message(text));
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return fail(path, "expected \"host:port\", got " + quote_for_message(text));
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return fail(path, "an IPv6 address goes in brackets, as in \"[::1]:6432\"; got " +
                            quote_for_message(text));
    }
  }

  uint32_t port = 0;
  bool port_ok = !port_text.empty() && port_text.size() <= 5 &&
                 std::all_of(port_text.begin(), port_text.end(),
                             [](char c) { return c >= '0' && c <= '9'; });
  if (port_ok) {
    for (char c : port_text) port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (!port_ok || port < 1 || port > 65535) {
    return fail(path, "expected a port between 1 and 65535, got " + quote_for_message(text));
  }

  // Binding by name would pick one of localhost's addresses behind our back;
  // 127.0.0.1 is the one every client reaches.
  std::string host_text = host == "localhost" ? std::string("127.0.0.1") : std::string(host);
  socket_address address;
  if (!to_socket_address(host_text, static_cast<uint16_t>(port), address) ||
      (address.family == AF_INET6) != bracketed) {
    return fail(path, "expected an IPv4 address, [IPv6 address] or localhost as host, got " +
                          quote_for_message(text));
  }
  // Canonical text, so equal addresses compare and print equal.
  char canonical[INET6_ADDRSTRLEN] = {};
  inet_ntop(address.family, address.bytes, canonical, sizeof canonical);
  out.listen_host = canonical;
  out.listen_port = static_cast<uint16_t>(port);
  return status::ok();
}

std::string resolve_path(const std::string& file, const std::string& base_dir) {
  if (base_dir.empty() || (!file.empty() && file.front() == '/')) return file;
  if (base_dir.back() == '/') return base_dir + file;
  return base_dir + "/" + file;
}

// Reads a whole small regular file. On failure returns the reason without a
// key path; callers put it behind theirs.
bool read_small_file(const std::string& path, size_t bytes_max, std::string& out,
                     std::string& reason) {
  // O_NONBLOCK so that a FIFO given by mistake fails the S_ISREG check below
  // instead of blocking start-up until someone writes to it.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    reason = "cannot open " + quote_for_message(path) + ": " + os_error_text(errno);
    return false;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    reason = "cannot stat " + quote_for_message(path) + ": " + os_error_text(errno);
    ::close(fd);
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    reason = quote_for_message(path) + " is not a regular file";
    ::close(fd);
    return false;
  }
  // One byte past the limit tells "exactly at the limit" from "too large",
  // even if the file grew after fstat.
  out.assign(bytes_max + 1, '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      reason = "cannot read " + quote_for_message(path) + ": " + os_error_text(errno);
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got > bytes_max) {
    reason = quote_for_message(path) + " is larger than " + std::to_string(bytes_max) + " bytes";
    return false;
  }
  out.resize(got);
  return true;
}

status read_password(const std::string& path, const std::string& file,
                     const std::string& base_dir, std::string& out) {
  std::string resolved = resolve_path(file, base_dir);
  std::string reason;
  if (!read_small_file(resolved, password_file_bytes_max, out, reason)) return fail(path, reason);
  // Editors end the file with a newline that is not part of the secret.
  if (!out.empty() && out.back() == '\n') out.pop_back();
  if (!out.empty() && out.back() == '\r') out.pop_back();
  if (out.empty()) return fail(path, quote_for_message(resolved) + " is empty");
  // PostgreSQL's PasswordMessage is NUL-terminated; a NUL would cut the secret.
  if (out.find('\0') != std::string::npos) return fail(path, quote_for_message(resolved) + " contains a NUL byte");
  return status::ok();
}

// OpenSSL asks for a passphrase on the terminal unless told not to; the
// gateway starts unattended, so an encrypted key is refused instead.
int refuse_passphrase(char*, int, int, void*) { return -1; }

struct bio_free {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct x509_free {
  void operator()(X509* x) const { X509_free(x); }
};
struct pkey_free {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using x509_ptr = std::unique_ptr<X509, x509_free>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;

// The first PEM certificate in path. On failure, reason is set.
x509_ptr read_first_certificate(const std::string& path, std::string& reason) {
  std::string text;
  if (!read_small_file(path, pem_file_bytes_max, text, reason)) return nullptr;
  std::unique_ptr<BIO, bio_free> bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  x509_ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, refuse_passphrase, nullptr) : nullptr);
  ERR_clear_error();
  if (!cert) reason = "no PEM certificate in " + quote_for_message(path);
  return cert;
}

status check_ca_file(const std::string& path, const std::string& file) {
  std::string reason;
  if (!read_first_certificate(file, reason)) return fail(path, reason);
  return status::ok();
}

// Checked here rather than when the first client arrives: a key that does
// not belong to the certificate fails every handshake, and the operator
// should hear about it from `agentgate serve`, not from users.
status parse_tls(element value, const std::string& path, const std::string& base_dir,
                 tls_config& out) {
  status s = for_each_member(value, path, [&](std::string_view key, element v,
                                              const std::string& p) -> status {
    std::string_view text;
    if (key != "cert" && key != "key") return fail(p, "unknown key");
    if (status e = get_string(v, p, text); !e) return e;
    if (text.empty()) return fail(p, "expected a file path");
    (key == "cert" ? out.cert : out.key) = resolve_path(std::string(text), base_dir);
    return status::ok();
  });
  if (!s) return s;
  std::string cert_path = key_path(path, "cert"), key_file_path = key_path(path, "key");
  if (out.cert.empty()) return fail(cert_path, "required");
  if (out.key.empty()) return fail(key_file_path, "required");

  std::string reason;
  x509_ptr cert = read_first_certificate(out.cert, reason);
  if (!cert) return fail(cert_path, reason);
  std::string key_text;
  if (!read_small_file(out.key, pem_file_bytes_max, key_text, reason)) {
    return fail(key_file_path, reason);
  }
  std::unique_ptr<BIO, bio_free> bio(
      BIO_new_mem_buf(key_text.data(), static_cast<int>(key_text.size())));
  pkey_ptr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, refuse_passphrase, nullptr)
                   : nullptr);
  OPENSSL_cleanse(key_text.data(), key_text.size());
  ERR_clear_error();
  if (!key) return fail(key_file_path, "no unencrypted PEM private key in " + quote_for_message(out.key));
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return fail(key_file_path, "does not match " + cert_path);
  }
  return status::ok();
}

// An https URL without spaces or control characters; libcurl checks the rest.
bool is_https_url(std::string_view text) {
  static constexpr std::string_view scheme = "https://";
  if (text.size() <= scheme.size() || text.size() > uri_chars_max) return false;
  if (text.substr(0, scheme.size()) != scheme) return false;
  return std::none_of(text.begin(), text.end(), [](char c) {
    return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
  });
}

bool is_bounded_text(std::string_view text, size_t chars_max) {
  if (text.empty() || text.size() > chars_max) return false;
  return std::none_of(text.begin(), text.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
}

status parse_issuer(element value, const std::string& path, const std::string& base_dir,
                    const std::vector<issuer_config>& earlier, issuer_config& out) {
  bool have_issuer = false, have_audience = false, have_refresh = false;
  status s = for_each_member(value, path, [&](std::string_view key, element v,
                                              const std::string& p) -> status {
    std::string_view text;
    if (key == "jwks_refresh_s") {
      have_refresh = true;
      return get_integer(v, p, 1, jwks_refresh_s_max, out.jwks_refresh_s);
    }
    if (status e = get_string(v, p, text); !e) {
      bool known = key == "issuer" || key == "audience" || key == "jwks_file" ||
                   key == "jwks_uri" || key == "jwks_ca_file" || key == "groups_claim" ||
                   key == "approver_audience";
      return known ? e : fail(p, "unknown key");
    }
    if (key == "issuer") {
      if (!is_bounded_text(text, issuer_chars_max)) {
        return fail(p, "expected 1 to " + std::to_string(issuer_chars_max) +
                           " characters without control characters");
      }
      for (size_t i = 0; i < earlier.size(); ++i) {
        if (earlier[i].issuer == text) {
          return fail(p, quote_for_message(text) + " is already the issuer of " +
                             index_path("identity.issuers", i));
        }
      }
      out.issuer = text;
      have_issuer = true;
    } else if (key == "audience") {
      if (!is_bounded_text(text, issuer_chars_max)) {
        return fail(p, "expected 1 to " + std::to_string(issuer_chars_max) +
                           " characters without control characters");
      }
      out.audience = text;
      have_audience = true;
    } else if (key == "approver_audience") {
      if (!is_bounded_text(text, issuer_chars_max)) {
        return fail(p, "expected 1 to " + std::to_string(issuer_chars_max) +
                           " characters without control characters");
      }
      out.approver_audience = text;
    } else if (key == "jwks_file") {
      if (text.empty()) return fail(p, "expected a file path");
      out.jwks_file = resolve_path(std::string(text), base_dir);
      // Parsed now so a broken key set stops the start, with this path.
      auto keys = identity::load_jwks_file(out.jwks_file);
      if (!keys) return fail(p, keys.error().message());
    } else if (key == "jwks_uri") {
      if (!is_https_url(text)) return fail(p, "expected an https:// URL, got " + quote_for_message(text));
      out.jwks_uri = text;
    } else if (key == "jwks_ca_file") {
      if (text.empty()) return fail(p, "expected a file path");
      out.jwks_ca_file = resolve_path(std::string(text), base_dir);
      return check_ca_file(p, out.jwks_ca_file);
    } else if (key == "groups_claim") {
      if (!is_bounded_text(text, claim_name_chars_max)) {
        return fail(p, "expected 1 to " + std::to_string(claim_name_chars_max) + " characters");
      }
      out.groups_claim = text;
    } else {
      return fail(p, "unknown key");
    }
    return status::ok();
  });
  if (!s) return s;
  if (!have_issuer) return fail(key_path(path, "issuer"), "required");
  if (!have_audience) return fail(key_path(path, "audience"), "required");
  if (out.jwks_file.empty() && out.jwks_uri.empty()) {
    return fail(key_path(path, "jwks_file"), "required unless jwks_uri is set");
  }
  if (!out.jwks_ca_file.empty() && out.jwks_uri.empty()) {
    return fail(key_path(path, "jwks_ca_file"), "only used with jwks_uri");
  }
  if (have_refresh && out.jwks_uri.empty()) {
    return fail(key_path(path, "jwks_refresh_s"), "only used with jwks_uri");
  }
  // One aud for both uses would let every token do both.
  if (!out.approver_audience.empty() && out.approver_audience == out.audience) {
    return fail(key_path(path, "approver_audience"), "must differ from audience");
  }
  return status::ok();
}

status parse_issuers(element value, const std::string& path, const std::string& base_dir,
                     std::vector<issuer_config>& out) {
  array items;
  if (value.get_array().get(items) != simdjson::SUCCESS) return fail(path, "expected an array");
  if (items.size() > issuers_max) {
    return fail(path, "at most " + std::to_string(issuers_max) + " issuers are supported");
  }
  out.clear();
  size_t index = 0;
  for (element item : items) {
    issuer_config issuer;
    if (status s = parse_issuer(item, index_path(path, index), base_dir, out, issuer); !s) {
      return s;
    }
    out.push_back(std::move(issuer));
    ++index;
  }
  return status::ok();
}

status parse_identity(element value, const std::string& path, const std::string& base_dir,
                      identity_config& out) {
  return for_each_member(value, path, [&](std::string_view key, element v,
                                          const std::string& p) -> status {
    if (key == "issuers") return parse_issuers(v, p, base_dir, out.issuers);
    if (key == "leeway_s") return get_integer(v, p, 0, leeway_s_max, out.leeway_s);
    if (key == "token_bytes_max") return get_integer(v, p, 1u << 10, 1u << 16, out.token_bytes_max);
    if (key == "cache_entries_max") {
      return get_integer(v, p, 0, 1'000'000, out.cache_entries_max);
    }
    if (key == "on_token_expiry") {
      std::string_view text;
      if (status e = get_string(v, p, text); !e) return e;
      if (text == "terminate") out.on_expiry = token_expiry_action::terminate;
      else if (text == "ignore") out.on_expiry = token_expiry_action::ignore;
      else return fail(p, "expected \"terminate\" or \"ignore\", got " + quote_for_message(text));
      return status::ok();
    }
    return fail(p, "unknown key");
  });
}

// Checks that need more than one section; they run after the walk, since
// identity and tls may come after the targets that use them.
// client_auth_written[i]: targets[i] names its client_auth; without it the
// default "jwt" applies, and an error says so (configs written when the
// default was "trust" fail here, not open).
status check_client_auth(const gateway_config& config, const std::vector<bool>& client_auth_written) {
  assert(client_auth_written.size() == config.targets.size());
  for (size_t i = 0; i < config.targets.size(); ++i) {
    const target_config& t = config.targets[i];
    if (t.client_auth != client_auth_mode::jwt) continue;
    std::string path = index_path("targets", i) + ".client_auth";
    std::string_view hint = client_auth_written[i]
                                ? ""
                                : " (client_auth is \"jwt\" unless the target says \"trust\")";
    if (config.identity.issuers.empty()) {
      return fail(path, "\"jwt\" needs identity.issuers" + std::string(hint));
    }
    // The token is a bearer credential: over plaintext anyone on the path
    // can log in as its owner until it expires.
    if (config.tls.cert.empty() && !t.allow_plaintext_auth) {
      return fail(path, "\"jwt\" needs tls (or allow_plaintext_auth for loopback tests)" +
                            std::string(hint));
    }
  }
  return status::ok();
}

// libpq's require_auth names. Negations ("!md5") are not taken: the list
// says what is allowed, so what it leaves out is refused.
status parse_auth_methods(element value, const std::string& path, upstream_auth_methods& out) {
  array items;
  if (value.get_array().get(items) != simdjson::SUCCESS) {
    return fail(path, "expected an array of authentication methods");
  }
  if (items.size() == 0) {
    return fail(path, "at least one method is required (\"scram-sha-256\" is the default)");
  }
  upstream_auth_methods methods{.scram_sha_256 = false, .md5 = false, .password = false, .none = false};
  size_t index = 0;
  for (element item : items) {
    std::string item_path = index_path(path, index++);
    std::string_view text;
    if (status e = get_string(item, item_path, text); !e) return e;
    bool* flag = text == "scram-sha-256" ? &methods.scram_sha_256
                 : text == "md5"         ? &methods.md5
                 : text == "password"    ? &methods.password
                 : text == "none"        ? &methods.none
                                         : nullptr;
    if (flag == nullptr) {
      return fail(item_path, "expected \"scram-sha-256\", \"md5\", \"password\" or \"none\", got " +
                                 quote_for_message(text));
    }
    if (*flag) return fail(item_path, quote_for_message(text) + " is listed twice");
    *flag = true;
  }
  out = methods;
  return status::ok();
}

status parse_upstream(element value, const std::string& path, const std::string& base_dir,
                      upstream_config& out) {
  bool have_host = false, have_user = false, have_password = false, have_database = false;
  status s = for_each_member(value, path, [&](std::string_view key, element v,
                                              const std::string& p) -> status {
    std::string_view text;
    if (key == "host") {
      if (status e = get_string(v, p, text); !e) return e;
      if (!is_host(text)) return fail(p, "expected a host name or IP address, got " + quote_for_message(text));
      out.host = text;
      have_host = true;
    } else if (key == "port") {
      return get_integer(v, p, 1, 65535, out.port);
    } else if (key == "user" || key == "database") {
      if (status e = get_string(v, p, text); !e) return e;
      if (!is_pg_identifier(text)) {
        return fail(p, "expected 1 to 63 bytes without control characters, got " + quote_for_message(text));
      }
      (key == "user" ? out.user : out.database) = text;
      (key == "user" ? have_user : have_database) = true;
    } else if (key == "password_file") {
      if (status e = get_string(v, p, text); !e) return e;
      if (text.empty()) return fail(p, "expected a file path");
      out.password_file = text;
      have_password = true;
      return read_password(p, out.password_file, base_dir, out.password);
    } else if (key == "tls") {
      if (status e = get_string(v, p, text); !e) return e;
      if (text == "disable") out.tls = upstream_tls_mode::disable;
      else if (text == "require") out.tls = upstream_tls_mode::require;
      else if (text == "verify-full") out.tls = upstream_tls_mode::verify_full;
      else return fail(p, "expected \"disable\", \"require\" or \"verify-full\", got " + quote_for_message(text));
    } else if (key == "ca_file") {
      if (status e = get_string(v, p, text); !e) return e;
      if (text.empty()) return fail(p, "expected a file path");
      out.ca_file = resolve_path(std::string(text), base_dir);
      return check_ca_file(p, out.ca_file);
    } else if (key == "auth_methods") {
      return parse_auth_methods(v, p, out.auth_methods);
    } else {
      return fail(p, "unknown key");
    }
    return status::ok();
  });
  if (!s) return s;
  if (!have_host) return fail(key_path(path, "host"), "required");
  if (!have_user) return fail(key_path(path, "user"), "required");
  if (!have_password) return fail(key_path(path, "password_file"), "required");
  if (!have_database) out.database = out.user;
  // "require" encrypts without checking who answers; a CA there would look
  // like verification while doing none.
  if (!out.ca_file.empty() && out.tls != upstream_tls_mode::verify_full) {
    return fail(key_path(path, "ca_file"), "only used with tls: \"verify-full\"");
  }
  return status::ok();
}

// `earlier` holds the targets before this one, for the uniqueness checks.
status parse_target(element value, const std::string& path, const std::string& base_dir,
                    const std::vector<target_config>& earlier, target_config& out,
                    bool& have_client_auth) {
  bool have_name = false, have_protocol = false, have_listen = false, have_upstream = false;
  bool have_allow_trust = false;
  have_client_auth = false;
  status s = for_each_member(value, path, [&](std::string_view key, element v,
                                              const std::string& p) -> status {
    std::string_view text;
    if (key == "name") {
      if (status e = get_string(v, p, text); !e) return e;
      if (!is_target_name(text)) {
        return fail(p, "expected 1 to 64 characters from A-Z a-z 0-9 _ . -, got " + quote_for_message(text));
      }
      for (size_t i = 0; i < earlier.size(); ++i) {
        if (earlier[i].name == text) {
          return fail(p, quote_for_message(text) + " is already the name of " + index_path("targets", i));
        }
      }
      out.name = text;
      have_name = true;
    } else if (key == "protocol") {
      if (status e = get_string(v, p, text); !e) return e;
      if (text != "postgres") {
        return fail(p, quote_for_message(text) + " is not supported yet; the only protocol is \"postgres\"");
      }
      out.protocol = text;
      have_protocol = true;
    } else if (key == "listen") {
      if (status e = get_string(v, p, text); !e) return e;
      if (status e = parse_listen(text, p, out); !e) return e;
      socket_address mine;
      to_socket_address(out.listen_host, out.listen_port, mine);
      for (size_t i = 0; i < earlier.size(); ++i) {
        socket_address theirs;
        to_socket_address(earlier[i].listen_host, earlier[i].listen_port, theirs);
        if (listen_overlaps(mine, theirs)) {
          return fail(p, listen_text(out) + " conflicts with " + index_path("targets", i) +
                             ".listen (" + listen_text(earlier[i]) + ")");
        }
      }
      have_listen = true;
    } else if (key == "client_auth") {
      if (status e = get_string(v, p, text); !e) return e;
      if (text == "trust") {
        out.client_auth = client_auth_mode::trust;
      } else if (text == "jwt") {
        out.client_auth = client_auth_mode::jwt;
      } else {
        return fail(p, "expected \"trust\" or \"jwt\", got " + quote_for_message(text));
      }
      have_client_auth = true;
    } else if (key == "allow_plaintext_auth") {
      return get_bool(v, p, out.allow_plaintext_auth);
    } else if (key == "allow_trust_on_network") {
      have_allow_trust = true;
      return get_bool(v, p, out.allow_trust_on_network);
    } else if (key == "upstream") {
      have_upstream = true;
      return parse_upstream(v, p, base_dir, out.upstream);
    } else {
      return fail(p, "unknown key");
    }
    return status::ok();
  });
  if (!s) return s;
  if (!have_name) return fail(key_path(path, "name"), "required");
  if (!have_protocol) return fail(key_path(path, "protocol"), "required");
  if (!have_listen) return fail(key_path(path, "listen"), "required");
  if (!have_upstream) return fail(key_path(path, "upstream"), "required");
  if (have_allow_trust && out.client_auth != client_auth_mode::trust) {
    return fail(key_path(path, "allow_trust_on_network"), "only used with client_auth: \"trust\"");
  }
  // A trusted listener that other machines can reach is an open door to
  // the database: it has to be asked for in so many words.
  socket_address listen_address;
  to_socket_address(out.listen_host, out.listen_port, listen_address);
  if (out.client_auth == client_auth_mode::trust && !is_loopback(listen_address) &&
      !out.allow_trust_on_network) {
    return fail(key_path(path, "client_auth"),
                "\"trust\" lets anyone who can reach " + listen_text(out) +
                    " in without a password; it is allowed on loopback addresses, or with "
                    "allow_trust_on_network: true on a network where every client is trusted");
  }
  return status::ok();
}

status parse_targets(element value, const std::string& path, const std::string& base_dir,
                     std::vector<target_config>& out, std::vector<bool>& client_auth_written) {
  array items;
  if (value.get_array().get(items) != simdjson::SUCCESS) return fail(path, "expected an array");
  if (items.size() == 0) return fail(path, "at least one target is required");
  if (items.size() > targets_max) {
    return fail(path, "at most " + std::to_string(targets_max) + " targets are supported");
  }
  out.clear();
  out.reserve(items.size());
  size_t index = 0;
  for (element item : items) {
    target_config target;
    bool written = false;
    if (status s = parse_target(item, index_path(path, index), base_dir, out, target, written); !s) {
      return s;
    }
    out.push_back(std::move(target));
    client_auth_written.push_back(written);
    ++index;
  }
  return status::ok();
}

status parse_limits(element value, const std::string& path, limits_config& out) {
  return for_each_member(value, path, [&](std::string_view key, element v,
                                          const std::string& p) -> status {
    if (key == "frame_bytes_max") return get_integer(v, p, 1u << 10, 1u << 30, out.frame_bytes_max);
    if (key == "startup_bytes_max") {
      return get_integer(v, p, 1u << 10, 1u << 16, out.startup_bytes_max);
    }
    if (key == "unsent_bytes_max") {
      return get_integer(v, p, 4u << 10, 64u << 20, out.unsent_bytes_max);
    }
    if (key == "masked_row_bytes_max") {
      return get_integer(v, p, 64u << 10, 1u << 30, out.masked_row_bytes_max);
    }
    if (key == "connect_timeout_ms") {
      return get_integer(v, p, 1, timeout_ms_max, out.connect_timeout_ms);
    }
    if (key == "auth_timeout_ms") return get_integer(v, p, 1, timeout_ms_max, out.auth_timeout_ms);
    if (key == "idle_timeout_ms") return get_integer(v, p, 0, timeout_ms_max, out.idle_timeout_ms);
    if (key == "sessions_per_shard_max") {
      return get_integer(v, p, 1, 1'000'000, out.sessions_per_shard_max);
    }
    return fail(p, "unknown key");
  });
}

status parse_io(element value, const std::string& path, io_config& out) {
  status s = for_each_member(value, path, [&](std::string_view key, element v,
                                              const std::string& p) -> status {
    // io_uring wants power-of-two ring sizes; a provided buffer ring holds at
    // most 32768 entries.
    if (key == "ring_entries") return get_power_of_two(v, p, 64, 32768, out.ring_entries);
    if (key == "recv_buffers") return get_power_of_two(v, p, 16, 32768, out.recv_buffers);
    if (key == "recv_buffer_bytes") {
      return get_integer(v, p, 1u << 10, 1u << 20, out.recv_buffer_bytes);
    }
    if (key == "pin_threads") return get_bool(v, p, out.pin_threads);
    return fail(p, "unknown key");
  });
  if (!s) return s;
  uint64_t pool_bytes = uint64_t{out.recv_buffers} * out.recv_buffer_bytes;
  if (pool_bytes > recv_pool_bytes_max) {
    return fail(key_path(path, "recv_buffers"),
                "recv_buffers x recv_buffer_bytes is " + std::to_string(pool_bytes) +
                    " bytes per shard; at most " + std::to_string(recv_pool_bytes_max));
  }
  return status::ok();
}

// The admin API: where it listens and the token that guards it (read now).
status parse_admin(element value, const std::string& path, const std::string& base_dir,
                   admin_config& out) {
  status s = for_each_member(value, path, [&](std::string_view key, element v,
                                              const std::string& p) -> status {
    std::string_view text;
    if (key == "tls") return parse_tls(v, p, base_dir, out.tls);
    if (key != "listen" && key != "token_file") return fail(p, "unknown key");
    if (status e = get_string(v, p, text); !e) return e;
    if (key == "listen") {
      target_config probe;
      if (status e = parse_listen(text, p, probe); !e) return e;
      out.listen = std::string(text);
    } else {
      if (text.empty()) return fail(p, "expected a file path");
      out.token_file = resolve_path(std::string(text), base_dir);
    }
    return status::ok();
  });
  if (!s) return s;
  if (out.listen.empty()) return fail(key_path(path, "listen"), "required");
  if (out.token_file.empty()) return fail(key_path(path, "token_file"), "required");
  std::string reason;
  if (!read_small_file(out.token_file, password_file_bytes_max, out.token, reason))
    return fail(key_path(path, "token_file"), reason);
  while (!out.token.empty() && (out.token.back() == '\n' || out.token.back() == '\r')) out.token.pop_back();
  if (out.token.size() < 16) return fail(key_path(path, "token_file"), "the token must be at least 16 characters");
  return status::ok();
}

status parse_approvals(element value, const std::string& path, approvals_config& out) {
  return for_each_member(value, path, [&](std::string_view key, element v,
                                          const std::string& p) -> status {
    std::string_view text;
    if (key != "webhook_url") return fail(p, "unknown key");
    if (status e = get_string(v, p, text); !e) return e;
    if ((text.rfind("http://", 0) != 0 && text.rfind("https://", 0) != 0) ||
        !is_bounded_text(text, uri_chars_max))
      return fail(p, "expected an http:// or https:// URL");
    out.webhook_url = std::string(text);
    return status::ok();
  });
}

status parse_recording(element value, const std::string& path, const std::string& base_dir,
                       recording_config& out) {
  bool have_dir = false;
  status s = for_each_member(value, path, [&](std::string_view key, element v, const std::string& p) -> status {
    if (key == "dir") {
      std::string_view text;
      if (status e = get_string(v, p, text); !e) return e;
      if (text.empty() || !is_bounded_text(text, 4096)) return fail(p, "expected a directory path");
      out.dir = resolve_path(std::string(text), base_dir);
      have_dir = true;
      return status::ok();
    }
    if (key == "segment_bytes") return get_integer(v, p, 1ull << 20, 1ull << 34, out.segment_bytes);
    if (key == "fsync_interval_ms") return get_integer(v, p, 1, 60'000, out.fsync_interval_ms);
    if (key == "fsync_bytes") return get_integer(v, p, 4096, 1ull << 34, out.fsync_bytes);
    if (key == "fsync") {
      std::string_view text;
      if (status e = get_string(v, p, text); !e) return e;
      if (text != "interval" && text != "always")
        return fail(p, "expected \"interval\" or \"always\", got " + quote_for_message(text));
      out.fsync_always = text == "always";
      return status::ok();
    }
    if (key == "result_bytes_max") return get_integer(v, p, 0, 1ull << 30, out.result_bytes_max);
    if (key == "on_failure") {
      std::string_view text;
      if (status e = get_string(v, p, text); !e) return e;
      if (text != "fail_closed" && text != "fail_open")
        return fail(p, "expected \"fail_closed\" or \"fail_open\", got " + quote_for_message(text));
      out.on_failure = text == "fail_open" ? recording_failure_action::fail_open : recording_failure_action::fail_closed;
      return status::ok();
    }
    if (key == "retention_hours") return get_integer(v, p, 0, 24 * 365 * 10, out.retention_hours);
    if (key == "retention_bytes") return get_integer(v, p, 0, 1ull << 50, out.retention_bytes);
    return fail(p, "unknown key");
  });
  if (!s) return s;
  if (!have_dir) return fail(path + ".dir", "required");
  return status::ok();
}

}  // namespace

result<gateway_config> parse_config(std::string_view json, const std::string& base_dir) {
  // Some editors write a UTF-8 byte order mark; simdjson refuses it.
  static constexpr std::string_view bom = "\xEF\xBB\xBF";
  if (json.substr(0, bom.size()) == bom) json.remove_prefix(bom.size());

  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  element root;
  if (auto err = parser.parse(padded).get(root); err != simdjson::SUCCESS) {
    return status(errc::invalid_argument,
                  std::string("invalid JSON: ") + simdjson::error_message(err));
  }

  gateway_config config;
  bool have_targets = false;
  std::vector<bool> client_auth_written;
  status s = for_each_member(root, "", [&](std::string_view key, element v,
                                           const std::string& p) -> status {
    if (key == "shards") return get_integer(v, p, 0, shards_max, config.shards);
    if (key == "log_level") {
      std::string_view text;
      if (status e = get_string(v, p, text); !e) return e;
      if (text != "debug" && text != "info" && text != "warn" && text != "error") {
        return fail(p, "expected one of debug, info, warn, error, got " + quote_for_message(text));
      }
      config.log_level = text;
      return status::ok();
    }
    if (key == "targets") {
      have_targets = true;
      return parse_targets(v, p, base_dir, config.targets, client_auth_written);
    }
    if (key == "limits") return parse_limits(v, p, config.limits);
    if (key == "io") return parse_io(v, p, config.io);
    if (key == "tls") return parse_tls(v, p, base_dir, config.tls);
    if (key == "identity") return parse_identity(v, p, base_dir, config.identity);
    if (key == "admin") return parse_admin(v, p, base_dir, config.admin);
    if (key == "approvals") return parse_approvals(v, p, config.approvals);
    if (key == "recording") return parse_recording(v, p, base_dir, config.recording);
    if (key == "policy_file") {
      std::string_view text;
      if (status e = get_string(v, p, text); !e) return e;
      if (text.empty()) return fail(p, "expected a file path");
      config.policy_file = resolve_path(std::string(text), base_dir);
      std::string contents, reason;
      if (!read_small_file(config.policy_file, config_file_bytes_max, contents, reason)) return fail(p, reason);
      return status::ok();
    }
    return unknown_key(key, p, top_level_keys_later);
  });
  if (!s) return s;
  if (!have_targets) return fail("targets", "required");
  if (status e = check_client_auth(config, client_auth_written); !e) return e;
  return config;
}

std::vector<std::string> config_warnings(const gateway_config& config) {
  std::vector<std::string> out;
  for (size_t i = 0; i < config.targets.size(); ++i) {
    const target_config& t = config.targets[i];
    const std::string path = index_path("targets", i);
    const std::string who = " (target " + t.name + ")";
    if (t.client_auth == client_auth_mode::trust) {
      out.push_back(path + ".client_auth: \"trust\"" + who + ": anyone who can reach " + listen_text(t) +
                    " logs in without a password" +
                    (t.allow_trust_on_network ? " (allow_trust_on_network is set)" : ""));
    }
    const upstream_config& u = t.upstream;
    if (u.tls != upstream_tls_mode::verify_full) {
      out.push_back(path + ".upstream.tls: \"" +
                    (u.tls == upstream_tls_mode::disable ? "disable" : "require") + "\"" + who +
                    ": the upstream's certificate is not verified, so whoever answers at " + u.host +
                    ":" + std::to_string(u.port) +
                    " gets the gateway's login and every session's data; use \"verify-full\"");
    }
    if (u.auth_methods.password || u.auth_methods.md5) {
      std::string methods = u.auth_methods.password && u.auth_methods.md5 ? "\"password\" and \"md5\""
                            : u.auth_methods.password                   ? "\"password\""
                                                                        : "\"md5\"";
      out.push_back(path + ".upstream.auth_methods: " + methods + who +
                    ": the gateway sends the upstream password (or a hash of it that can be cracked offline) to "
                    "whoever asks; prefer \"scram-sha-256\"");
    }
    if (u.auth_methods.none) {
      out.push_back(path + ".upstream.auth_methods: \"none\"" + who +
                    ": an upstream that does not ask for a password is accepted without proving "
                    "who it is");
    }
  }
  // Approvals are made through the config API with the approver's JWT.
  if (!config.admin.listen.empty()) {
    for (size_t i = 0; i < config.identity.issuers.size(); ++i) {
      if (!config.identity.issuers[i].approver_audience.empty()) continue;
      out.push_back(index_path("identity.issuers", i) +
                    ".approver_audience: not set: this issuer's login tokens also approve held "
                    "commands, and a token sent to the config API also logs in through the targets");
    }
  }
  return out;
}

result<gateway_config> load_config_file(const std::string& path) {
  std::string text;
  std::string reason;
  if (!read_small_file(path, config_file_bytes_max, text, reason)) {
    return status(errc::invalid_argument, "config file: " + reason);
  }
  size_t slash = path.rfind('/');
  std::string base_dir;
  if (slash == 0) {
    base_dir = "/";
  } else if (slash != std::string::npos) {
    base_dir = path.substr(0, slash);
  }
  return parse_config(text, base_dir);
}

}  // namespace agentgate
