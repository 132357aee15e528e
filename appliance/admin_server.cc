#include "appliance/admin_server.h"

#include "io/tls_channel.h"

#include <arpa/inet.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <optional>
#include <thread>

#include "core/log.h"

namespace agentgate {
namespace {

using steady = std::chrono::steady_clock;

constexpr size_t read_chunk_bytes = 64 * 1024;
constexpr int events_per_wait_max = 64;
constexpr int accepts_per_wake_max = 64;
// Reads or requests served on one connection before others get a turn.
constexpr int turns_per_wake_max = 16;
constexpr int listen_backlog = 128;
constexpr int wait_ms_max = 1000;
constexpr uint32_t accept_pause_ms = 100;  // after EMFILE: the listener would spin
constexpr size_t linger_discard_bytes_max = 4 * 1024 * 1024;
constexpr size_t mac_bytes = 32;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    unsigned char x = static_cast<unsigned char>(a[i]);
    unsigned char y = static_cast<unsigned char>(b[i]);
    if (x >= 'A' && x <= 'Z') x = static_cast<unsigned char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<unsigned char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Length of the valid UTF-8 sequence at s[i], 0 if there is none (overlong
// forms, surrogates and code points past U+10FFFF included).
size_t utf8_sequence_bytes(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  size_t n;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
  return n;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Control characters are refused after decoding: ids and filters end up in
// logs and JSON, where a decoded newline or NUL only causes trouble.
bool percent_decode(std::string_view in, bool plus_is_space, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int h = hex_value(in[i + 1]);
      int l = hex_value(in[i + 2]);
      if (h < 0 || l < 0) return false;
      c = static_cast<char>(h * 16 + l);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
    out.push_back(c);
  }
  return true;
}

// "/a/b" -> {"a", "b"}; "/" -> {""}.
std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  path.remove_prefix(1);
  while (true) {
    size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

bool is_token_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

bool is_header_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), is_token_char);
}

// Anything that could end the header line or the header block is refused.
bool is_header_value(std::string_view value) {
  return std::none_of(value.begin(), value.end(),
                      [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

std::string peer_text(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(v4->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(v6->sin6_port));
  }
  return "unknown";
}

struct listen_address {
  sockaddr_storage storage{};
  socklen_t length = 0;
  std::string host_text;  // bracketed for IPv6
};

// "host:port" with an IPv4 literal, "[IPv6 literal]" or "localhost": the
// admin API binds to an address someone chose, never one DNS picked.
result<listen_address> parse_listen_address(std::string_view text) {
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find("]:");
    if (close == std::string_view::npos)
      return status(errc::invalid_argument, "admin.listen: expected \"[IPv6 address]:port\"");
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return status(errc::invalid_argument, "admin.listen: expected \"host:port\"");
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  if (port_text.empty() || port_text.size() > 5 ||
      !std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return status(errc::invalid_argument, "admin.listen: bad port");
  unsigned long port = std::stoul(std::string(port_text));
  if (port > 65535) return status(errc::invalid_argument, "admin.listen: bad port");

  listen_address a;
  std::string host_z(host == "localhost" ? "127.0.0.1" : host);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (inet_pton(AF_INET, host_z.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    a.length = sizeof(sockaddr_in);
    a.host_text = host_z;
    return a;
  }
  if (inet_pton(AF_INET6, host_z.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    a.length = sizeof(sockaddr_in6);
    a.host_text = "[" + host_z + "]";
    return a;
  }
  return status(errc::invalid_argument,
                "admin.listen: host must be an IP address or localhost, got " + json_quote(host));
}

struct path_segment {
  std::string text;  // literal text, or the parameter name
  bool param = false;
};

struct route_entry {
  std::string method;
  std::vector<path_segment> segments;
  route_auth auth = route_auth::admin_token;
  http_handler handler;
};

bool is_method(std::string_view m) {
  return !m.empty() && m.size() <= 16 &&
         std::all_of(m.begin(), m.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

bool parse_pattern(std::string_view pattern, std::vector<path_segment>& out) {
  if (pattern.empty() || pattern.front() != '/') return false;
  for (std::string_view seg : split_path(pattern)) {
    path_segment s;
    if (seg.size() >= 2 && seg.front() == '{' && seg.back() == '}') {
      s.param = true;
      s.text = std::string(seg.substr(1, seg.size() - 2));
      if (s.text.empty() || !std::all_of(s.text.begin(), s.text.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
          }))
        return false;
    } else {
      if (seg.find_first_of("{}?#%") != std::string_view::npos) return false;
      s.text = std::string(seg);
    }
    out.push_back(std::move(s));
  }
  return true;
}

bool segments_match(const route_entry& r, const std::vector<std::string_view>& segs) {
  if (r.segments.size() != segs.size()) return false;
  for (size_t i = 0; i < segs.size(); ++i) {
    const path_segment& p = r.segments[i];
    if (p.param ? segs[i].empty() : p.text != segs[i]) return false;
  }
  return true;
}

// When "/v1/approvals/pending" and "/v1/approvals/{id}" both match, the
// literal wins: compare segment by segment, a literal before a parameter.
bool more_specific(const route_entry& a, const route_entry& b) {
  for (size_t i = 0; i < a.segments.size(); ++i)
    if (a.segments[i].param != b.segments[i].param) return !a.segments[i].param;
  return false;
}

std::string reason_phrase(int code) {
  const char* s = http_status_str(static_cast<http_status>(code));
  return (s == nullptr || s[0] == '<') ? std::string("Status") : std::string(s);
}

}  // namespace

// ---------------------------------------------------------------------------
// Requests, responses, JSON strings.

namespace {
const std::string* find_pair(const std::vector<std::pair<std::string, std::string>>& v,
                             std::string_view name) {
  for (const auto& [k, value] : v)
    if (k == name) return &value;
  return nullptr;
}
}  // namespace

const std::string* http_request::header(std::string_view name) const {
  for (const http_header& h : headers)
    if (iequals(h.name, name)) return &h.value;
  return nullptr;
}

const std::string* http_request::param(std::string_view name) const {
  return find_pair(params, name);
}

const std::string* http_request::query_param(std::string_view name) const {
  return find_pair(query_params, name);
}

http_response http_response::json(int status, std::string body) {
  http_response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

http_response http_response::text(int status, std::string body, std::string content_type) {
  http_response r;
  r.status = status;
  r.content_type = std::move(content_type);
  r.body = std::move(body);
  return r;
}

http_response http_response::error(int status, std::string_view message) {
  return json(status, "{\"error\": " + json_quote(message) + "}\n");
}

http_response http_response::unauthorized(std::string_view message) {
  http_response r = error(401, message);
  r.headers.push_back({"WWW-Authenticate", "Bearer realm=\"agentgate\""});
  return r;
}

std::string json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  size_t i = 0;
  while (i < text.size()) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      size_t n = utf8_sequence_bytes(text, i);
      if (n == 0) {
        out += "\\ufffd";
        ++i;
      } else {
        out.append(text.substr(i, n));
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out.push_back('"');
  return out;
}

http_handler serve_document(std::string content_type, std::string_view text) {
  auto doc = std::make_shared<const http_response>(
      http_response::text(200, std::string(text), std::move(content_type)));
  return [doc](const http_request&) { return *doc; };
}

// ---------------------------------------------------------------------------
// The server.

namespace {

struct connection {
  void* owner = nullptr;  // the admin_server::impl, for the parser callbacks
  int fd = -1;
  std::string peer;
  uint32_t interest = 0;  // epoll events registered
  http_parser parser{};

  // Read but not yet parsed: what follows a pipelined request.
  std::string pending;
  std::string out;
  size_t out_sent = 0;
  // admin.tls: the connection's TLS, and ciphertext not yet sent (out is
  // then encrypted into it as soon as it is queued).
  std::unique_ptr<io::tls_channel> tls;
  std::vector<uint8_t> wire_out;
  size_t wire_sent = 0;
  std::string plain_in;  // decrypted, not yet parsed

  // The request being parsed.
  http_request req;
  std::string url;
  bool last_was_value = false;
  size_t header_bytes = 0;
  bool in_message = false;
  // Decided when the headers are complete: the route to run, or the answer
  // given instead (404, 405, 401, ...).
  const route_entry* route = nullptr;
  std::optional<http_response> early;
  // Set by a callback that stopped the parser: the answer, then close.
  std::optional<http_response> reject;
  bool reject_is_early = false;  // counted already, as a request

  uint32_t requests = 0;
  bool close_after_write = false;
  bool lingering = false;
  size_t linger_discarded = 0;
  steady::time_point deadline;
};

}  // namespace

// Bytes queued for the peer and not yet sent (plaintext, or TLS records).
bool has_output(const connection& c) { return !c.out.empty() || c.wire_sent < c.wire_out.size(); }

struct admin_server::impl {
  admin_server_options opts;
  std::vector<route_entry> routes;
  unsigned char mac_key[mac_bytes] = {};
  unsigned char token_mac[mac_bytes] = {};
  bool token_mac_ok = false;  // false: every admin token is refused
  http_parser_settings settings{};

  int listen_fd = -1;
  int epoll_fd = -1;
  int wake_fd = -1;
  uint16_t port = 0;
  std::string address;
  std::thread thread;
  std::atomic<bool> started{false};
  std::atomic<bool> stopping{false};

  // Owned by the server thread while it runs.
  std::vector<std::unique_ptr<connection>> conns;
  std::unique_ptr<char[]> read_buf;
  bool listen_paused = false;
  steady::time_point listen_resume;

  std::atomic<uint64_t> n_accepted{0}, n_refused{0}, n_requests{0}, n_bad{0}, n_unauthorized{0},
      n_timeouts{0};

  explicit impl(admin_server_options o);
  bool mac(std::string_view token, unsigned char out[mac_bytes]) const;
  bool token_matches(std::string_view bearer) const;

  void run();
  void accept_all();
  void refuse(int fd);
  void service(connection& c);
  size_t feed(connection& c, const char* data, size_t len);
  void dispatch(connection& c);
  void decide(connection& c);
  void queue_response(connection& c, const http_response& r, bool keep_alive, bool head);
  bool flush(connection& c);
  void start_linger(connection& c);
  void linger_read(connection& c);
  void want(connection& c, uint32_t events);
  void close_connection(connection& c);
  void expire(steady::time_point now);
  int wait_ms(steady::time_point now) const;

  static int on_message_begin(http_parser* p);
  static int on_url(http_parser* p, const char* at, size_t len);
  static int on_header_field(http_parser* p, const char* at, size_t len);
  static int on_header_value(http_parser* p, const char* at, size_t len);
  static int on_headers_complete(http_parser* p);
  static int on_body(http_parser* p, const char* at, size_t len);
  static int on_message_complete(http_parser* p);
};

namespace {
// Tags told apart from connections in epoll_event.data.ptr.
char listen_tag;
char wake_tag;
}  // namespace

admin_server::impl::impl(admin_server_options o) : opts(std::move(o)) {
  if (opts.tls_context != nullptr) SSL_CTX_up_ref(opts.tls_context);
  // A per-process random key: comparing HMACs of the presented and the real
  // token takes the same time whatever their lengths or common prefix.
  if (RAND_bytes(mac_key, sizeof mac_key) != 1) {
    // Still constant time; only the key is predictable.
    AG_WARN("admin API: RAND_bytes failed, token MAC key is fixed");
  }
  token_mac_ok = mac(opts.admin_token, token_mac);
  if (!token_mac_ok) AG_ERROR("admin API: HMAC failed; the admin token will be refused");
  settings.on_message_begin = on_message_begin;
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
}

bool admin_server::impl::mac(std::string_view token, unsigned char out[mac_bytes]) const {
  unsigned int len = mac_bytes;
  return HMAC(EVP_sha256(), mac_key, sizeof mac_key,
              reinterpret_cast<const unsigned char*>(token.data()), token.size(), out,
              &len) != nullptr &&
         len == mac_bytes;
}

bool admin_server::impl::token_matches(std::string_view bearer) const {
  if (opts.admin_token.empty() || !token_mac_ok) return false;
  unsigned char presented[mac_bytes];
  if (!mac(bearer, presented)) return false;
  return CRYPTO_memcmp(presented, token_mac, mac_bytes) == 0;
}

// --- parser callbacks: each one may stop the parser with an answer ---------

int admin_server::impl::on_message_begin(http_parser* p) {
  auto& c = *static_cast<connection*>(p->data);
  std::string peer = std::move(c.req.peer);
  c.req = http_request{};
  c.req.peer = std::move(peer);
  c.url.clear();
  c.last_was_value = false;
  c.header_bytes = 0;
  c.route = nullptr;
  c.early.reset();
  c.in_message = true;
  return 0;
}

int admin_server::impl::on_url(http_parser* p, const char* at, size_t len) {
  auto& c = *static_cast<connection*>(p->data);
  const impl& s = *static_cast<const impl*>(c.owner);
  c.header_bytes += len;
  if (c.header_bytes > s.opts.header_bytes_max) {
    c.reject = http_response::error(414, "request target too long");
    return 1;
  }
  c.url.append(at, len);
  return 0;
}

int admin_server::impl::on_header_field(http_parser* p, const char* at, size_t len) {
  auto& c = *static_cast<connection*>(p->data);
  const impl& s = *static_cast<const impl*>(c.owner);
  if (c.last_was_value || c.req.headers.empty()) {
    if (c.req.headers.size() >= s.opts.headers_max) {
      c.reject = http_response::error(
          431, "more than " + std::to_string(s.opts.headers_max) + " request headers");
      return 1;
    }
    c.req.headers.emplace_back();
    c.header_bytes += 4;  // ": " and CRLF
  }
  c.last_was_value = false;
  c.header_bytes += len;
  if (c.header_bytes > s.opts.header_bytes_max) {
    c.reject = http_response::error(
        431, "request headers exceed " + std::to_string(s.opts.header_bytes_max) + " bytes");
    return 1;
  }
  c.req.headers.back().name.append(at, len);
  return 0;
}

int admin_server::impl::on_header_value(http_parser* p, const char* at, size_t len) {
  auto& c = *static_cast<connection*>(p->data);
  const impl& s = *static_cast<const impl*>(c.owner);
  c.last_was_value = true;
  c.header_bytes += len;
  if (c.header_bytes > s.opts.header_bytes_max) {
    c.reject = http_response::error(
        431, "request headers exceed " + std::to_string(s.opts.header_bytes_max) + " bytes");
    return 1;
  }
  c.req.headers.back().value.append(at, len);
  return 0;
}

int admin_server::impl::on_headers_complete(http_parser* p) {
  auto& c = *static_cast<connection*>(p->data);
  impl& s = *static_cast<impl*>(c.owner);
  if (p->http_major != 1) {
    c.reject = http_response::error(505, "only HTTP/1.x is served");
    return -1;
  }
  s.decide(c);
  bool has_length = (p->flags & F_CONTENTLENGTH) != 0;
  bool chunked = (p->flags & F_CHUNKED) != 0;
  bool body_expected = chunked || (has_length && p->content_length > 0);
  // An answer that needs no body is given before the body is read: an
  // unauthenticated peer cannot make the server buffer anything.
  if (c.early && body_expected) {
    c.reject = std::move(c.early);
    c.reject_is_early = true;
    c.early.reset();
    return -1;
  }
  if (has_length && p->content_length > s.opts.body_bytes_max) {
    c.reject = http_response::error(
        413, "request body exceeds " + std::to_string(s.opts.body_bytes_max) + " bytes");
    return -1;
  }
  const std::string* expect = c.req.header("expect");
  if (expect != nullptr && body_expected && p->http_minor >= 1 &&
      iequals(trim(*expect), "100-continue"))
    c.out += "HTTP/1.1 100 Continue\r\n\r\n";
  return 0;
}

int admin_server::impl::on_body(http_parser* p, const char* at, size_t len) {
  auto& c = *static_cast<connection*>(p->data);
  const impl& s = *static_cast<const impl*>(c.owner);
  if (c.req.body.size() + len > s.opts.body_bytes_max) {
    c.reject = http_response::error(
        413, "request body exceeds " + std::to_string(s.opts.body_bytes_max) + " bytes");
    return 1;
  }
  c.req.body.append(at, len);
  return 0;
}

int admin_server::impl::on_message_complete(http_parser* p) {
  // Pausing hands the request to feed() before the parser looks at the next
  // pipelined one: responses go out in order, one request in memory at a time.
  http_parser_pause(p, 1);
  return 0;
}

// Routing and auth, once the headers are in: sets c.route, or c.early with
// the answer the handler will not be asked for.
void admin_server::impl::decide(connection& c) {
  http_request& req = c.req;
  req.method = http_method_str(static_cast<http_method>(c.parser.method));

  http_parser_url u;
  http_parser_url_init(&u);
  if (c.url.empty() ||
      http_parser_parse_url(c.url.data(), c.url.size(), c.parser.method == HTTP_CONNECT, &u) != 0 ||
      !(u.field_set & (1 << UF_PATH))) {
    n_bad.fetch_add(1, std::memory_order_relaxed);
    c.early = http_response::error(400, "malformed request target");
    return;
  }
  req.path = c.url.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
  if (u.field_set & (1 << UF_QUERY))
    req.query = c.url.substr(u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
  if (req.path.empty() || req.path.front() != '/') {
    n_bad.fetch_add(1, std::memory_order_relaxed);
    c.early = http_response::error(400, "malformed request target");
    return;
  }

  // Routing.
  std::vector<std::string_view> segs = split_path(req.path);
  bool head = c.parser.method == HTTP_HEAD;
  const route_entry* best = nullptr;
  std::vector<std::string> allowed;
  for (const route_entry& r : routes) {
    if (!segments_match(r, segs)) continue;
    allowed.push_back(r.method);
    if (r.method == "GET") allowed.push_back("HEAD");
    if (r.method != req.method && !(head && r.method == "GET")) continue;
    if (best == nullptr || more_specific(r, *best)) best = &r;
  }
  if (allowed.empty()) {
    c.early = http_response::error(404, "no such path: " + req.path);
    return;
  }
  if (best == nullptr) {
    std::sort(allowed.begin(), allowed.end());
    allowed.erase(std::unique(allowed.begin(), allowed.end()), allowed.end());
    std::string allow;
    for (const std::string& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
    c.early = http_response::error(405, req.method + " is not allowed on " + req.path);
    c.early->headers.push_back({"Allow", allow});
    return;
  }
  for (size_t i = 0; i < segs.size(); ++i) {
    if (!best->segments[i].param) continue;
    std::string value;
    if (!percent_decode(segs[i], false, value)) {
      n_bad.fetch_add(1, std::memory_order_relaxed);
      c.early = http_response::error(400, "bad percent-encoding in the path");
      return;
    }
    req.params.emplace_back(best->segments[i].text, std::move(value));
  }
  std::string_view q = req.query;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string key, value;
    if (!percent_decode(pair.substr(0, eq), true, key) ||
        (eq != std::string_view::npos && !percent_decode(pair.substr(eq + 1), true, value))) {
      n_bad.fetch_add(1, std::memory_order_relaxed);
      c.early = http_response::error(400, "bad percent-encoding in the query string");
      return;
    }
    req.query_params.emplace_back(std::move(key), std::move(value));
  }

  // The bearer. Two Authorization headers would let a proxy and this server
  // disagree on who is asking.
  const std::string* authorization = nullptr;
  for (const http_header& h : req.headers) {
    if (!iequals(h.name, "authorization")) continue;
    if (authorization != nullptr) {
      n_bad.fetch_add(1, std::memory_order_relaxed);
      c.early = http_response::error(400, "repeated Authorization header");
      return;
    }
    authorization = &h.value;
  }
  if (authorization != nullptr) {
    std::string_view v = trim(*authorization);
    if (v.size() > 7 && iequals(v.substr(0, 6), "bearer") && (v[6] == ' ' || v[6] == '\t'))
      req.bearer_token = std::string(trim(v.substr(7)));
  }

  if (best->auth != route_auth::none && req.bearer_token.empty()) {
    n_unauthorized.fetch_add(1, std::memory_order_relaxed);
    c.early = http_response::unauthorized("a bearer token is required");
    return;
  }
  if (best->auth == route_auth::admin_token && !token_matches(req.bearer_token)) {
    n_unauthorized.fetch_add(1, std::memory_order_relaxed);
    c.early = http_response::unauthorized("invalid admin token");
    c.early->headers.back().value += ", error=\"invalid_token\"";
    return;
  }
  c.route = best;
}

// --- connections -----------------------------------------------------------

void admin_server::impl::want(connection& c, uint32_t events) {
  if (c.interest == events) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = &c;
  if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c.fd, &ev) == 0) c.interest = events;
}

void admin_server::impl::close_connection(connection& c) {
  if (c.fd < 0) return;
  // close() drops the epoll registration; the object is freed after the
  // current batch of events, which may still name it.
  ::close(c.fd);
  c.fd = -1;
}

namespace {

enum class sent : uint8_t { all, later, failed };

// Sends data[*done..size) as far as the socket takes it.
sent send_some(int fd, const void* data, size_t size, size_t* done) {
  while (*done < size) {
    ssize_t n = ::send(fd, static_cast<const char*>(data) + *done, size - *done, MSG_NOSIGNAL);
    if (n > 0) {
      *done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return sent::later;
    return sent::failed;
  }
  return sent::all;
}

}  // namespace

bool admin_server::impl::flush(connection& c) {
  if (c.tls != nullptr && !c.out.empty()) {
    // Plaintext is encrypted as soon as it is queued; the records wait in wire_out.
    const auto* p = reinterpret_cast<const uint8_t*>(c.out.data());
    if (const status st = c.tls->write({p, c.out.size()}, c.wire_out); !st) {
      close_connection(c);
      return false;
    }
    c.out.clear();
    c.out_sent = 0;
  }
  const bool tls = c.tls != nullptr;
  const sent r = tls ? send_some(c.fd, c.wire_out.data(), c.wire_out.size(), &c.wire_sent)
                     : send_some(c.fd, c.out.data(), c.out.size(), &c.out_sent);
  if (r == sent::failed) {
    close_connection(c);
    return false;
  }
  if (r == sent::all) {
    if (tls) {
      c.wire_out.clear();
      c.wire_sent = 0;
    } else {
      c.out.clear();
      c.out_sent = 0;
    }
  }
  return true;
}

void admin_server::impl::queue_response(connection& c, const http_response& r, bool keep_alive,
                                        bool head) {
  int code = r.status;
  const std::string* body = &r.body;
  std::string fallback;
  if (code < 200 || code > 599) {
    AG_ERROR("admin API: a handler returned status %d; answering 500", code);
    code = 500;
    fallback = "{\"error\": \"internal error\"}\n";
    body = &fallback;
  }
  bool bodiless = code == 204 || code == 304;
  std::string& o = c.out;
  o += "HTTP/1.1 " + std::to_string(code) + " " + reason_phrase(code) + "\r\n";
  if (!bodiless) {
    bool type_ok = !fallback.empty() || is_header_value(r.content_type);
    o += "Content-Type: ";
    o += fallback.empty() ? (type_ok ? r.content_type : "application/octet-stream")
                          : "application/json";
    o += "\r\nContent-Length: " + std::to_string(body->size()) + "\r\n";
  }
  o += "Cache-Control: no-store\r\n";
  for (const http_header& h : r.headers) {
    if (!is_header_name(h.name) || !is_header_value(h.value) || iequals(h.name, "content-length") ||
        iequals(h.name, "content-type") || iequals(h.name, "connection") ||
        iequals(h.name, "transfer-encoding")) {
      AG_ERROR("admin API: dropped response header %s", json_quote(h.name).c_str());
      continue;
    }
    o += h.name + ": " + h.value + "\r\n";
  }
  if (!keep_alive)
    o += "Connection: close\r\n";
  else if (c.parser.http_minor == 0)
    o += "Connection: keep-alive\r\n";
  o += "\r\n";
  if (!head && !bodiless) o += *body;
}

void admin_server::impl::dispatch(connection& c) {
  n_requests.fetch_add(1, std::memory_order_relaxed);
  ++c.requests;
  bool keep_alive = http_should_keep_alive(&c.parser) != 0 && !c.parser.upgrade &&
                    c.requests < opts.requests_per_connection_max;
  bool head = c.parser.method == HTTP_HEAD;
  http_response r = c.early ? std::move(*c.early) : c.route->handler(c.req);
  queue_response(c, r, keep_alive, head);
  AG_DEBUG("admin API: %s %s from %s -> %d", c.req.method.c_str(), json_quote(c.req.path).c_str(),
           c.peer.c_str(), r.status);
  c.early.reset();
  c.route = nullptr;
  c.in_message = false;
  c.req.body = std::string();  // a 1 MiB body is not kept for the connection's life
  if (!keep_alive) c.close_after_write = true;
  c.deadline = steady::now() + std::chrono::milliseconds(opts.request_timeout_ms);
}

// Returns the bytes used. A complete request is answered before returning,
// with the parser paused right behind it.
size_t admin_server::impl::feed(connection& c, const char* data, size_t len) {
  size_t used = http_parser_execute(&c.parser, &settings, data, len);
  http_errno err = HTTP_PARSER_ERRNO(&c.parser);
  if (err == HPE_PAUSED) {
    http_parser_pause(&c.parser, 0);
    dispatch(c);
    return used;
  }
  if (err == HPE_OK) return used;

  http_response r = c.reject ? std::move(*c.reject)
                             : http_response::error(400, std::string("malformed request: ") +
                                                             http_errno_description(err));
  if (c.reject_is_early)
    n_requests.fetch_add(1, std::memory_order_relaxed);
  else
    n_bad.fetch_add(1, std::memory_order_relaxed);
  c.reject.reset();
  c.reject_is_early = false;
  queue_response(c, r, false, false);
  AG_DEBUG("admin API: request from %s refused with %d", c.peer.c_str(), r.status);
  c.close_after_write = true;
  c.in_message = false;
  c.pending.clear();
  return len;
}

void admin_server::impl::start_linger(connection& c) {
  c.lingering = true;
  c.pending.clear();
  ::shutdown(c.fd, SHUT_WR);
  c.deadline = steady::now() + std::chrono::milliseconds(opts.linger_ms);
  want(c, EPOLLIN);
}

// After the last response: read and drop until the peer closes, so unread
// input (a refused body) does not turn the close into a reset that could
// destroy the response before the peer reads it.
void admin_server::impl::linger_read(connection& c) {
  while (c.fd >= 0) {
    ssize_t n = ::recv(c.fd, read_buf.get(), read_chunk_bytes, 0);
    if (n > 0) {
      c.linger_discarded += static_cast<size_t>(n);
      if (c.linger_discarded > linger_discard_bytes_max) close_connection(c);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    close_connection(c);
  }
}

void admin_server::impl::service(connection& c) {
  for (int turn = 0; turn < turns_per_wake_max; ++turn) {
    if (c.fd < 0) return;
    if (!flush(c)) return;
    if (has_output(c)) {
      want(c, EPOLLOUT);  // a slow reader: no more parsing until it drains
      return;
    }
    if (c.close_after_write && !c.lingering) start_linger(c);
    if (c.lingering) {
      linger_read(c);
      return;
    }
    if (!c.pending.empty()) {
      size_t used = feed(c, c.pending.data(), c.pending.size());
      c.pending.erase(0, std::min(used, c.pending.size()));
      continue;
    }
    ssize_t n = ::recv(c.fd, read_buf.get(), read_chunk_bytes, 0);
    if (n > 0 && c.tls != nullptr) {
      // Decrypt, then parse as if it had arrived in the clear; the
      // handshake's own records go out with the next flush.
      c.plain_in.clear();
      const auto* p = reinterpret_cast<const uint8_t*>(read_buf.get());
      const status st = c.tls->feed({p, static_cast<size_t>(n)}, c.wire_out, [&](std::span<const uint8_t> b) {
        c.plain_in.append(reinterpret_cast<const char*>(b.data()), b.size());
      });
      if (!st || c.plain_in.size() > read_chunk_bytes * 4) {
        AG_DEBUG("admin API: TLS from %s failed: %s", c.peer.c_str(), st ? "too much data" : st.message().c_str());
        flush(c);
        close_connection(c);
        return;
      }
      if (c.plain_in.empty()) continue;
      size_t used = feed(c, c.plain_in.data(), c.plain_in.size());
      if (used < c.plain_in.size() && !c.close_after_write) c.pending.assign(c.plain_in, used);
      continue;
    }
    if (n > 0) {
      size_t used = feed(c, read_buf.get(), static_cast<size_t>(n));
      if (used < static_cast<size_t>(n) && !c.close_after_write)
        c.pending.assign(read_buf.get() + used, static_cast<size_t>(n) - used);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      want(c, EPOLLIN);
      return;
    }
    close_connection(c);  // peer closed, or reset
    return;
  }
  // Turns used up with work left: ask for writability, which is nearly
  // always there, to come back after the other connections had theirs.
  want(c, EPOLLIN | EPOLLOUT);
}

// Over connections_max: a best-effort 503 on the fresh socket, then close.
void admin_server::impl::refuse(int fd) {
  n_refused.fetch_add(1, std::memory_order_relaxed);
  if (opts.tls_context != nullptr) {  // a plaintext answer would be noise to a TLS client
    ::close(fd);
    return;
  }
  static const std::string msg = [] {
    std::string body = http_response::error(503, "too many connections").body;
    return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
           "application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  }();
  ssize_t ignored = ::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)ignored;
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
}

void admin_server::impl::accept_all() {
  for (int i = 0; i < accepts_per_wake_max; ++i) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd =
        ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // Out of descriptors or memory: the level-triggered listener would
      // wake us forever, so it sleeps a little.
      AG_WARN("admin API: accept failed: %s", std::strerror(errno));
      epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
      listen_paused = true;
      listen_resume = steady::now() + std::chrono::milliseconds(accept_pause_ms);
      return;
    }
    if (conns.size() >= opts.connections_max) {
      refuse(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<connection>();
    c->owner = this;
    c->fd = fd;
    if (opts.tls_context != nullptr) c->tls = io::tls_channel::server(opts.tls_context);
    c->peer = peer_text(ss);
    c->req.peer = c->peer;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c.get();
    c->deadline = steady::now() + std::chrono::milliseconds(opts.request_timeout_ms);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = c.get();
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      AG_WARN("admin API: epoll_ctl failed: %s", std::strerror(errno));
      ::close(fd);
      continue;
    }
    c->interest = EPOLLIN;
    n_accepted.fetch_add(1, std::memory_order_relaxed);
    conns.push_back(std::move(c));
  }
}

// Closes connections past their deadline: requests not completed in time
// (slowloris), idle keep-alive, responses not read in time, lingering done.
void admin_server::impl::expire(steady::time_point now) {
  for (auto& cp : conns) {
    connection& c = *cp;
    if (c.fd < 0 || now < c.deadline) continue;
    if (!c.lingering && (c.in_message || !c.pending.empty() || has_output(c))) {
      n_timeouts.fetch_add(1, std::memory_order_relaxed);
      if (!has_output(c) && c.tls == nullptr) {
        queue_response(c, http_response::error(408, "request not completed in time"), false, false);
        ssize_t ignored = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)ignored;
      }
      AG_DEBUG("admin API: %s timed out", c.peer.c_str());
    }
    close_connection(c);
  }
  if (listen_paused && now >= listen_resume) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &listen_tag;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev) == 0) listen_paused = false;
  }
}

int admin_server::impl::wait_ms(steady::time_point now) const {
  steady::time_point next = now + std::chrono::milliseconds(wait_ms_max);
  for (const auto& c : conns)
    if (c->fd >= 0) next = std::min(next, c->deadline);
  if (listen_paused) next = std::min(next, listen_resume);
  if (next <= now) return 0;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
  return static_cast<int>(ms) + 1;  // round up: waking early would spin
}

void admin_server::impl::run() {
  epoll_event events[events_per_wait_max];
  while (!stopping.load(std::memory_order_acquire)) {
    int n = epoll_wait(epoll_fd, events, events_per_wait_max, wait_ms(steady::now()));
    if (n < 0) {
      if (errno == EINTR) continue;
      AG_ERROR("admin API: epoll_wait failed: %s", std::strerror(errno));
      break;
    }
    for (int i = 0; i < n; ++i) {
      void* tag = events[i].data.ptr;
      if (tag == &wake_tag) continue;  // stop(): the loop condition sees it
      if (tag == &listen_tag) {
        accept_all();
        continue;
      }
      auto& c = *static_cast<connection*>(tag);
      if (c.fd < 0) continue;
      if (events[i].events & EPOLLERR) {
        close_connection(c);
        continue;
      }
      service(c);
    }
    expire(steady::now());
    std::erase_if(conns, [](const std::unique_ptr<connection>& c) { return c->fd < 0; });
  }
  for (auto& c : conns) close_connection(*c);
  conns.clear();
}

// ---------------------------------------------------------------------------

admin_server::admin_server(admin_server_options options)
    : impl_(std::make_unique<impl>(std::move(options))) {}

admin_server::~admin_server() {
  stop();
  if (impl_->opts.tls_context != nullptr) SSL_CTX_free(impl_->opts.tls_context);
}

status admin_server::route(std::string_view method, std::string_view pattern, route_auth auth,
                           http_handler handler) {
  if (impl_->started.load()) return status(errc::invalid_argument, "routes are fixed once started");
  if (!is_method(method) || method == "HEAD")
    return status(errc::invalid_argument, "bad method " + json_quote(method));
  if (!handler) return status(errc::invalid_argument, "no handler");
  route_entry r;
  r.method = std::string(method);
  r.auth = auth;
  r.handler = std::move(handler);
  if (!parse_pattern(pattern, r.segments))
    return status(errc::invalid_argument, "bad path pattern " + json_quote(pattern));
  for (const route_entry& other : impl_->routes) {
    if (other.method != r.method || other.segments.size() != r.segments.size()) continue;
    bool same = true;
    for (size_t i = 0; i < r.segments.size() && same; ++i) {
      const path_segment& a = r.segments[i];
      const path_segment& b = other.segments[i];
      same = a.param == b.param && (a.param || a.text == b.text);
    }
    if (same)
      return status(errc::invalid_argument,
                    "route " + r.method + " " + std::string(pattern) + " is already registered");
  }
  impl_->routes.push_back(std::move(r));
  return status::ok();
}

status admin_server::route(std::string_view method, std::string_view pattern,
                           http_handler handler) {
  return route(method, pattern, route_auth::admin_token, std::move(handler));
}

status admin_server::start() {
  impl& s = *impl_;
  if (s.started.load()) return status(errc::invalid_argument, "admin API already started");
  const admin_server_options& o = s.opts;
  if (o.connections_max == 0 || o.header_bytes_max == 0 || o.headers_max == 0 ||
      o.requests_per_connection_max == 0 || o.request_timeout_ms == 0)
    return status(errc::invalid_argument, "admin API: limits must be positive");
  bool needs_token = std::any_of(s.routes.begin(), s.routes.end(), [](const route_entry& r) {
    return r.auth == route_auth::admin_token;
  });
  if (needs_token && o.admin_token.empty())
    return status(errc::invalid_argument, "admin.token_file: the admin token is empty");

  result<listen_address> addr = parse_listen_address(o.listen);
  if (!addr) return addr.error();

  int fd = ::socket(addr->storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return status(errc::io, std::string("admin.listen: socket: ") + std::strerror(errno));
  int one = 1;
  // Lets a restarted gateway bind while old connections sit in TIME_WAIT;
  // unlike SO_REUSEPORT it never lets two listeners share the port.
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr->storage), addr->length) != 0) {
    int e = errno;
    ::close(fd);
    if (e == EADDRINUSE) return status(errc::io, "admin.listen: address in use");
    return status(errc::io, "admin.listen: cannot bind " + o.listen + ": " + std::strerror(e));
  }
  if (::listen(fd, listen_backlog) != 0) {
    int e = errno;
    ::close(fd);
    if (e == EADDRINUSE) return status(errc::io, "admin.listen: address in use");
    return status(errc::io, std::string("admin.listen: listen: ") + std::strerror(e));
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  s.port = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                            : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  s.address = addr->host_text + ":" + std::to_string(s.port);

  s.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  s.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event lev{};
  lev.events = EPOLLIN;
  lev.data.ptr = &listen_tag;
  epoll_event wev{};
  wev.events = EPOLLIN;
  wev.data.ptr = &wake_tag;
  if (s.epoll_fd < 0 || s.wake_fd < 0 || epoll_ctl(s.epoll_fd, EPOLL_CTL_ADD, fd, &lev) != 0 ||
      epoll_ctl(s.epoll_fd, EPOLL_CTL_ADD, s.wake_fd, &wev) != 0) {
    int e = errno;
    ::close(fd);
    if (s.epoll_fd >= 0) ::close(s.epoll_fd);
    if (s.wake_fd >= 0) ::close(s.wake_fd);
    s.epoll_fd = s.wake_fd = -1;
    return status(errc::io, std::string("admin API: epoll: ") + std::strerror(e));
  }
  s.listen_fd = fd;
  s.read_buf = std::make_unique<char[]>(read_chunk_bytes);
  s.stopping.store(false);
  s.started.store(true);
  s.thread = std::thread([&s] { s.run(); });
  AG_INFO("admin API listening on %s://%s", s.opts.tls_context != nullptr ? "https" : "http", s.address.c_str());
  return status::ok();
}

void admin_server::stop() {
  impl& s = *impl_;
  if (!s.started.load()) return;
  s.stopping.store(true, std::memory_order_release);
  uint64_t one = 1;
  ssize_t ignored = ::write(s.wake_fd, &one, sizeof one);
  (void)ignored;
  if (s.thread.joinable()) s.thread.join();
  ::close(s.listen_fd);
  ::close(s.epoll_fd);
  ::close(s.wake_fd);
  s.listen_fd = s.epoll_fd = s.wake_fd = -1;
  s.listen_paused = false;
  s.started.store(false);
  AG_INFO("admin API on %s stopped", s.address.c_str());
}

bool admin_server::running() const { return impl_->started.load(); }
uint16_t admin_server::port() const { return impl_->port; }
std::string admin_server::address() const { return impl_->address; }

admin_server_stats admin_server::stats() const {
  const impl& s = *impl_;
  admin_server_stats out;
  out.connections_accepted = s.n_accepted.load(std::memory_order_relaxed);
  out.connections_refused = s.n_refused.load(std::memory_order_relaxed);
  out.requests = s.n_requests.load(std::memory_order_relaxed);
  out.bad_requests = s.n_bad.load(std::memory_order_relaxed);
  out.unauthorized = s.n_unauthorized.load(std::memory_order_relaxed);
  out.timeouts = s.n_timeouts.load(std::memory_order_relaxed);
  return out;
}

}  // namespace agentgate
