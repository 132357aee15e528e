#include "protocols/postgres/codec.h"

#include <cstring>

namespace agentgate::pg {
namespace {

// -1: not a message of that direction; otherwise the smallest legal body and
// whether the body length is fixed.
struct type_rule {
  int16_t body_min = -1;
  bool fixed = false;
};

constexpr type_rule rule_of(direction dir, char type) {
  if (dir == direction::frontend) {
    switch (type) {
      case 'B': return {4, false};   // Bind: portal, statement, counts
      case 'C': return {2, false};   // Close
      case 'd': return {0, false};   // CopyData
      case 'c': return {0, true};    // CopyDone
      case 'f': return {1, false};   // CopyFail
      case 'D': return {2, false};   // Describe
      case 'E': return {5, false};   // Execute
      case 'H': return {0, true};    // Flush
      case 'F': return {10, false};  // FunctionCall
      case 'P': return {4, false};   // Parse
      case 'p': return {0, false};   // Password / SASL / GSS response
      case 'Q': return {1, false};   // Query
      case 'S': return {0, true};    // Sync
      case 'X': return {0, true};    // Terminate
      default: return {};
    }
  }
  switch (type) {
    case 'R': return {4, false};   // Authentication*
    case 'K': return {8, true};    // BackendKeyData
    case '2': return {0, true};    // BindComplete
    case '3': return {0, true};    // CloseComplete
    case 'C': return {1, false};   // CommandComplete
    case 'd': return {0, false};   // CopyData
    case 'c': return {0, true};    // CopyDone
    case 'G': return {3, false};   // CopyInResponse
    case 'H': return {3, false};   // CopyOutResponse
    case 'W': return {3, false};   // CopyBothResponse
    case 'D': return {2, false};   // DataRow
    case 'I': return {0, true};    // EmptyQueryResponse
    case 'E': return {1, false};   // ErrorResponse
    case 'V': return {4, false};   // FunctionCallResponse
    case 'v': return {8, false};   // NegotiateProtocolVersion
    case 'n': return {0, true};    // NoData
    case 'N': return {1, false};   // NoticeResponse
    case 'A': return {6, false};   // NotificationResponse: pid + two strings
    case 't': return {2, false};   // ParameterDescription
    case 'S': return {2, false};   // ParameterStatus
    case '1': return {0, true};    // ParseComplete
    case 's': return {0, true};    // PortalSuspended
    case 'Z': return {1, true};    // ReadyForQuery
    case 'T': return {2, false};   // RowDescription
    default: return {};
  }
}

}  // namespace

bool is_known_type(direction dir, char type) { return rule_of(dir, type).body_min >= 0; }

header_result decode_header(direction dir, bytes data, uint32_t frame_bytes_max) {
  header_result r;
  if (data.size() < header_bytes) return r;
  r.header.type = static_cast<char>(data[0]);
  r.header.length = read_u32(data.data() + 1);
  const type_rule rule = rule_of(dir, r.header.type);
  if (rule.body_min < 0) {
    r.status = frame_status::desync;
    r.error = "unknown message type";
    return r;
  }
  if (r.header.length < 4 || r.header.length > frame_bytes_max) {
    r.status = frame_status::desync;
    r.error = r.header.length < 4 ? "invalid message length" : "message exceeds frame_bytes_max";
    return r;
  }
  const uint32_t body = r.header.length - 4;
  if (body < static_cast<uint32_t>(rule.body_min) ||
      (rule.fixed && body != static_cast<uint32_t>(rule.body_min))) {
    r.status = frame_status::desync;
    r.error = "invalid message length for its type";
    return r;
  }
  r.status = frame_status::frame;
  return r;
}

const char* validate_frontend_body(char type, bytes body) {
  body_reader in(body);
  switch (type) {
    case 'Q': {
      std::string_view q;
      if (!in.cstr(&q) || !in.done()) return "malformed Query message";
      return nullptr;
    }
    case 'P': {
      uint16_t n = 0;
      if (!in.cstr(nullptr) || !in.cstr(nullptr) || !in.u16(&n) || !in.skip(size_t{n} * 4) ||
          !in.done())
        return "malformed Parse message";
      return nullptr;
    }
    case 'B': {
      uint16_t formats = 0, params = 0, results = 0;
      if (!in.cstr(nullptr) || !in.cstr(nullptr) || !in.u16(&formats) ||
          !in.skip(size_t{formats} * 2) || !in.u16(&params))
        return "malformed Bind message";
      for (uint16_t i = 0; i < params; ++i) {
        uint32_t len = 0;
        if (!in.u32(&len)) return "malformed Bind message";
        if (len != 0xffffffffu && !in.skip(len)) return "malformed Bind message";
      }
      if (!in.u16(&results) || !in.skip(size_t{results} * 2) || !in.done())
        return "malformed Bind message";
      return nullptr;
    }
    case 'D':
    case 'C': {
      uint8_t what = 0;
      if (!in.u8(&what) || (what != 'S' && what != 'P') || !in.cstr(nullptr) || !in.done())
        return type == 'D' ? "malformed Describe message" : "malformed Close message";
      return nullptr;
    }
    case 'E': {
      uint32_t rows = 0;
      if (!in.cstr(nullptr) || !in.u32(&rows) || !in.done()) return "malformed Execute message";
      return nullptr;
    }
    case 'f': {
      if (!in.cstr(nullptr) || !in.done()) return "malformed CopyFail message";
      return nullptr;
    }
    default:
      return nullptr;
  }
}

const std::string* startup_packet::find(std::string_view name) const {
  for (const auto& [k, v] : parameters)
    if (k == name) return &v;
  return nullptr;
}

startup_length_result decode_startup_length(bytes data, uint32_t startup_bytes_max) {
  startup_length_result r;
  if (data.size() < 4) return r;
  r.length = read_u32(data.data());
  if (r.length < 8 || r.length > startup_bytes_max) {
    r.status = frame_status::desync;
    r.error = "invalid length of startup packet";
    return r;
  }
  r.status = data.size() >= r.length ? frame_status::frame : frame_status::need_more;
  return r;
}

result<startup_packet> parse_startup(bytes packet) {
  auto bad = [](const char* why) { return status(errc::protocol, why); };
  if (packet.size() < 8 || read_u32(packet.data()) != packet.size())
    return bad("invalid length of startup packet");
  startup_packet out;
  const uint32_t code = read_u32(packet.data() + 4);
  body_reader in(packet.subspan(8));
  if (code == cancel_request_code) {
    out.kind = startup_kind::cancel_request;
    if (!in.u32(&out.cancel_pid) || !in.u32(&out.cancel_key) || !in.done())
      return bad("invalid length of cancel request packet");
    return out;
  }
  if (code == ssl_request_code || code == gssenc_request_code) {
    out.kind = code == ssl_request_code ? startup_kind::ssl_request : startup_kind::gssenc_request;
    if (!in.done()) return bad("invalid length of encryption request packet");
    return out;
  }
  out.kind = startup_kind::startup;
  out.protocol = code;
  if ((code >> 16) != 3) return out;  // caller refuses with the version in the message
  // name\0value\0 ... \0
  for (;;) {
    std::string_view name, value;
    if (!in.cstr(&name)) return bad("invalid startup packet layout: expected terminator as last byte");
    if (name.empty()) break;
    if (!in.cstr(&value)) return bad("invalid startup packet layout: missing value");
    if (out.parameters.size() >= 64) return bad("too many startup parameters");
    out.parameters.emplace_back(std::string(name), std::string(value));
  }
  if (!in.done()) return bad("invalid startup packet layout: data after terminator");
  return out;
}

error_fields parse_error_fields(bytes body) {
  error_fields f;
  body_reader in(body);
  for (;;) {
    uint8_t code = 0;
    std::string_view value;
    if (!in.u8(&code) || code == 0 || !in.cstr(&value)) break;
    if (code == 'S' && f.severity.empty()) f.severity = value;
    else if (code == 'V') f.severity = value;  // non-localized severity wins
    else if (code == 'C') f.sqlstate = value;
    else if (code == 'M') f.message = value;
  }
  return f;
}

void append_u32(std::string& out, uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(b, 4);
}

void append_cstr(std::string& out, std::string_view s) {
  out.append(s);
  out.push_back('\0');
}

void append_frame(std::string& out, char type, std::string_view body) {
  out.push_back(type);
  append_u32(out, static_cast<uint32_t>(body.size() + 4));
  out.append(body);
}

void append_error(std::string& out, std::string_view severity, std::string_view sqlstate,
                  std::string_view message) {
  std::string body;
  body.push_back('S');
  append_cstr(body, severity);
  body.push_back('V');
  append_cstr(body, severity);
  body.push_back('C');
  append_cstr(body, sqlstate);
  body.push_back('M');
  // An embedded NUL would end the field early and desync the client.
  for (char c : message) body.push_back(c == '\0' ? ' ' : c);
  body.push_back('\0');
  body.push_back('\0');
  append_frame(out, 'E', body);
}

void append_authentication_ok(std::string& out) {
  std::string body;
  append_u32(body, 0);
  append_frame(out, 'R', body);
}

void append_startup(std::string& out,
                    const std::vector<std::pair<std::string, std::string>>& parameters) {
  std::string body;
  append_u32(body, protocol_v3);
  for (const auto& [k, v] : parameters) {
    append_cstr(body, k);
    append_cstr(body, v);
  }
  body.push_back('\0');
  append_u32(out, static_cast<uint32_t>(body.size() + 4));
  out.append(body);
}

void append_negotiate_protocol_version(std::string& out, const std::vector<std::string>& unknown) {
  std::string body;
  append_u32(body, protocol_v3);  // newest minor version supported: 3.0
  append_u32(body, static_cast<uint32_t>(unknown.size()));
  for (const auto& name : unknown) append_cstr(body, name);
  append_frame(out, 'v', body);
}

}  // namespace agentgate::pg
