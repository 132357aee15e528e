#pragma once
// PostgreSQL v3 wire codec: framing and the few message grammars the gateway
// needs. Pure functions over bytes, no sockets (see protocol.md beside this).
//
// Framing is separate from meaning: decode_header() only looks at the type
// byte and the length and says "frame", "need more" or "desync"; it never
// consumes anything. After a desync the caller closes the connection and
// never reads payload as lengths again.

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace agentgate::pg {

using bytes = std::span<const uint8_t>;

inline constexpr uint32_t protocol_v3 = 3u << 16;
inline constexpr uint32_t cancel_request_code = 80877102;
inline constexpr uint32_t ssl_request_code = 80877103;
inline constexpr uint32_t gssenc_request_code = 80877104;
inline constexpr size_t header_bytes = 5;  // type byte + int32 length

enum class direction : uint8_t { frontend, backend };

inline uint32_t read_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
inline uint16_t read_u16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

// A cursor over a message body; every read is bounds-checked.
class body_reader {
 public:
  explicit body_reader(bytes b) : p_(b.data()), end_(b.data() + b.size()) {}

  bool cstr(std::string_view* out) {
    if (p_ == end_) return false;  // memchr on an empty span may see a null pointer
    const void* nul = memchr(p_, 0, end_ - p_);
    if (nul == nullptr) return false;
    const auto* z = static_cast<const uint8_t*>(nul);
    if (out) *out = std::string_view(reinterpret_cast<const char*>(p_), z - p_);
    p_ = z + 1;
    return true;
  }
  bool u8(uint8_t* out) {
    if (end_ - p_ < 1) return false;
    *out = *p_++;
    return true;
  }
  bool u16(uint16_t* out) {
    if (end_ - p_ < 2) return false;
    *out = read_u16(p_);
    p_ += 2;
    return true;
  }
  bool u32(uint32_t* out) {
    if (end_ - p_ < 4) return false;
    *out = read_u32(p_);
    p_ += 4;
    return true;
  }
  bool skip(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    p_ += n;
    return true;
  }
  bool done() const { return p_ == end_; }
  bytes rest() const { return {p_, static_cast<size_t>(end_ - p_)}; }
  const uint8_t* position() const { return p_; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// ---- framing ---------------------------------------------------------------

enum class frame_status : uint8_t { frame, need_more, desync };

struct frame_header {
  char type = 0;
  uint32_t length = 0;  // as on the wire: includes the 4 length bytes
  size_t frame_bytes() const { return size_t{length} + 1; }
  size_t body_bytes() const { return length - 4; }
};

struct header_result {
  frame_status status = frame_status::need_more;
  frame_header header;
  const char* error = nullptr;  // set on desync
};

// Reads the 5-byte header at the start of data, if there is one, and checks
// the type byte against the direction's message types and the length against
// [4 + type's minimum body, frame_bytes_max].
header_result decode_header(direction dir, bytes data, uint32_t frame_bytes_max);

// Messages a sender may legitimately send in that direction.
bool is_known_type(direction dir, char type);

// Messages that may be forwarded from their header before their body has
// arrived (they can be huge and the gateway does not need to see them whole).
inline bool is_streamable(direction dir, char type) {
  return dir == direction::backend ? (type == 'D' || type == 'd') : type == 'd';
}

// Checks the body grammar of a frontend message the gateway must understand
// before forwarding it (Query, Parse, ...). Returns an error message or
// nullptr. Messages whose meaning the gateway does not need pass.
const char* validate_frontend_body(char type, bytes body);

// ---- startup phase ---------------------------------------------------------

enum class startup_kind : uint8_t { startup, ssl_request, gssenc_request, cancel_request };

struct startup_packet {
  startup_kind kind = startup_kind::startup;
  uint32_t protocol = 0;  // for kind == startup
  std::vector<std::pair<std::string, std::string>> parameters;
  uint32_t cancel_pid = 0;
  uint32_t cancel_key = 0;

  const std::string* find(std::string_view name) const;
};

// Startup packets have no type byte: int32 length (self-inclusive), int32
// code. Returns need_more until the whole packet is there.
struct startup_length_result {
  frame_status status = frame_status::need_more;
  uint32_t length = 0;
  const char* error = nullptr;
};
startup_length_result decode_startup_length(bytes data, uint32_t startup_bytes_max);

// Parses a whole startup-phase packet (including its length word). Protocol
// versions other than 3.x are returned as is; the caller decides.
result<startup_packet> parse_startup(bytes packet);

// ---- backend messages the gateway reads ------------------------------------

// ErrorResponse / NoticeResponse fields.
struct error_fields {
  std::string severity;
  std::string sqlstate;
  std::string message;
};
error_fields parse_error_fields(bytes body);

// ---- encoders ----------------------------------------------------------------

// Appends a complete frame: type, length, body.
void append_frame(std::string& out, char type, std::string_view body);
void append_u32(std::string& out, uint32_t v);
void append_cstr(std::string& out, std::string_view s);

// ErrorResponse with severity (ERROR / FATAL), SQLSTATE and message.
void append_error(std::string& out, std::string_view severity, std::string_view sqlstate,
                  std::string_view message);
void append_authentication_ok(std::string& out);
// StartupMessage (no type byte) for protocol 3.0.
void append_startup(std::string& out,
                    const std::vector<std::pair<std::string, std::string>>& parameters);
// NegotiateProtocolVersion: the newest minor version we speak (0) and the
// protocol options we did not recognise.
void append_negotiate_protocol_version(std::string& out, const std::vector<std::string>& unknown);

}  // namespace agentgate::pg
