#include "protocols/postgres/codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agentgate::pg {
namespace {

constexpr uint32_t frame_bytes_max = 1u << 20;
constexpr uint32_t startup_bytes_max = 10000;

bytes as_bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

std::string frame(char type, std::string_view body) {
  std::string out;
  append_frame(out, type, body);
  return out;
}

std::string header(char type, uint32_t length) {
  std::string out(1, type);
  append_u32(out, length);
  return out;
}

std::string u16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }
std::string u32(uint32_t v) {
  std::string out;
  append_u32(out, v);
  return out;
}
std::string cstr(std::string_view s) { return std::string(s) + '\0'; }

header_result decode(direction dir, std::string_view data, uint32_t max = frame_bytes_max) {
  return decode_header(dir, as_bytes(data), max);
}

// ---- decode_header: the type tables ------------------------------------------

// Smallest body of each message type as the protocol defines it, and whether
// the body has exactly that size. Bind's framing minimum is looser than its
// grammar (8): validate_frontend_body() checks the rest.
struct type_row {
  char type;
  uint32_t body_min;
  bool fixed;
};

constexpr type_row frontend_types[] = {
    {'B', 4, false},   // Bind
    {'C', 2, false},   // Close: 'S'/'P' + name
    {'d', 0, false},   // CopyData
    {'c', 0, true},    // CopyDone
    {'f', 1, false},   // CopyFail: message
    {'D', 2, false},   // Describe: 'S'/'P' + name
    {'E', 5, false},   // Execute: portal + int32
    {'H', 0, true},    // Flush
    {'F', 10, false},  // FunctionCall: oid, int16 x3
    {'P', 4, false},   // Parse: name, query, int16
    {'p', 0, false},   // PasswordMessage / SASL / GSS
    {'Q', 1, false},   // Query
    {'S', 0, true},    // Sync
    {'X', 0, true},    // Terminate
};

constexpr type_row backend_types[] = {
    {'R', 4, false},   // Authentication*
    {'K', 8, true},    // BackendKeyData (protocol 3.0)
    {'2', 0, true},    // BindComplete
    {'3', 0, true},    // CloseComplete
    {'C', 1, false},   // CommandComplete
    {'d', 0, false},   // CopyData
    {'c', 0, true},    // CopyDone
    {'G', 3, false},   // CopyInResponse
    {'H', 3, false},   // CopyOutResponse
    {'W', 3, false},   // CopyBothResponse
    {'D', 2, false},   // DataRow
    {'I', 0, true},    // EmptyQueryResponse
    {'E', 1, false},   // ErrorResponse
    {'V', 4, false},   // FunctionCallResponse
    {'v', 8, false},   // NegotiateProtocolVersion
    {'n', 0, true},    // NoData
    {'N', 1, false},   // NoticeResponse
    {'A', 6, false},   // NotificationResponse: pid, channel, payload
    {'t', 2, false},   // ParameterDescription
    {'S', 2, false},   // ParameterStatus
    {'1', 0, true},    // ParseComplete
    {'s', 0, true},    // PortalSuspended
    {'Z', 1, true},    // ReadyForQuery
    {'T', 2, false},   // RowDescription
};

template <size_t N>
const type_row* find_row(const type_row (&table)[N], char type) {
  for (const type_row& row : table)
    if (row.type == type) return &row;
  return nullptr;
}

template <size_t N>
void check_type_table(direction dir, const type_row (&table)[N]) {
  for (int b = 0; b < 256; ++b) {
    const char type = static_cast<char>(b);
    SCOPED_TRACE(testing::Message() << "type byte " << b << " '" << (b >= 32 && b < 127 ? type : '?')
                                    << "'");
    const type_row* row = find_row(table, type);
    EXPECT_EQ(is_known_type(dir, type), row != nullptr);
    if (row == nullptr) {
      const header_result r = decode(dir, header(type, 4 + 16));
      EXPECT_EQ(r.status, frame_status::desync);
      EXPECT_STREQ(r.error, "unknown message type");
      continue;
    }
    const uint32_t smallest = 4 + row->body_min;
    const header_result ok = decode(dir, header(type, smallest));
    EXPECT_EQ(ok.status, frame_status::frame) << "smallest legal length " << smallest;
    EXPECT_EQ(ok.header.type, type);
    EXPECT_EQ(ok.header.length, smallest);
    if (row->body_min > 0) {
      const header_result shorter = decode(dir, header(type, smallest - 1));
      EXPECT_EQ(shorter.status, frame_status::desync) << "length " << smallest - 1;
    }
    const header_result longer = decode(dir, header(type, smallest + 1));
    if (row->fixed) {
      EXPECT_EQ(longer.status, frame_status::desync) << "fixed-length type with a longer body";
      EXPECT_STREQ(longer.error, "invalid message length for its type");
    } else {
      EXPECT_EQ(longer.status, frame_status::frame);
      EXPECT_EQ(decode(dir, header(type, frame_bytes_max)).status, frame_status::frame);
    }
  }
}

TEST(DecodeHeader, FrontendTypeTable) { check_type_table(direction::frontend, frontend_types); }

TEST(DecodeHeader, BackendTypeTable) { check_type_table(direction::backend, backend_types); }

TEST(DecodeHeader, TypesBelongToTheirDirection) {
  // Backend-only types sent by a client, and frontend-only types from a server.
  for (char type : std::string_view("TZKRIn12st3AGWVvN")) {
    EXPECT_EQ(decode(direction::frontend, header(type, 8)).status, frame_status::desync) << type;
  }
  for (char type : std::string_view("QPBFfXp")) {
    EXPECT_EQ(decode(direction::backend, header(type, 16)).status, frame_status::desync) << type;
  }
  // 'T' (RowDescription) is backend only.
  EXPECT_EQ(decode(direction::backend, header('T', 6)).status, frame_status::frame);
  const header_result r = decode(direction::frontend, header('T', 6));
  EXPECT_EQ(r.status, frame_status::desync);
  EXPECT_STREQ(r.error, "unknown message type");
  // Version-2 style and garbage type bytes.
  EXPECT_EQ(decode(direction::frontend, header('\0', 8)).status, frame_status::desync);
  EXPECT_EQ(decode(direction::backend, header('\xff', 8)).status, frame_status::desync);
}

TEST(DecodeHeader, NeedsFiveBytesAndConsumesNothing) {
  const std::string query = frame('Q', cstr("SELECT 1"));
  for (size_t n = 0; n < header_bytes; ++n) {
    const header_result r = decode(direction::frontend, std::string_view(query).substr(0, n));
    EXPECT_EQ(r.status, frame_status::need_more) << n;
    EXPECT_EQ(r.error, nullptr);
  }
  // The type byte is only judged once the whole header is there.
  EXPECT_EQ(decode(direction::frontend, std::string_view("T\0\0", 3)).status, frame_status::need_more);
  // A header alone is enough: the body need not have arrived.
  const header_result r = decode(direction::frontend, std::string_view(query).substr(0, 5));
  EXPECT_EQ(r.status, frame_status::frame);
  EXPECT_EQ(r.header.type, 'Q');
  EXPECT_EQ(r.header.length, 4u + 9u);
  EXPECT_EQ(r.header.frame_bytes(), query.size());
  EXPECT_EQ(r.header.body_bytes(), 9u);
}

TEST(DecodeHeader, LengthBelowFourIsRefused) {
  for (uint32_t length : {0u, 1u, 2u, 3u}) {
    for (direction dir : {direction::frontend, direction::backend}) {
      const header_result r = decode(dir, header('d', length));
      EXPECT_EQ(r.status, frame_status::desync) << length;
      EXPECT_STREQ(r.error, "invalid message length");
    }
  }
}

TEST(DecodeHeader, LengthAboveMaxIsRefused) {
  EXPECT_EQ(decode(direction::backend, header('D', 1024), 1024).status, frame_status::frame);
  const header_result over = decode(direction::backend, header('D', 1025), 1024);
  EXPECT_EQ(over.status, frame_status::desync);
  EXPECT_STREQ(over.error, "message exceeds frame_bytes_max");
  for (direction dir : {direction::frontend, direction::backend}) {
    const header_result huge = decode(dir, header('d', 0xffffffffu));
    EXPECT_EQ(huge.status, frame_status::desync);
    EXPECT_STREQ(huge.error, "message exceeds frame_bytes_max");
    // Negative as an int32: must not wrap into a small length.
    EXPECT_EQ(decode(dir, header('d', 0x80000000u)).status, frame_status::desync);
  }
}

TEST(DecodeHeader, FixedLengthMessagesWithWrongLength) {
  // Sync, Flush, Terminate, CopyDone carry no body.
  for (char type : std::string_view("SHXc")) {
    EXPECT_EQ(decode(direction::frontend, header(type, 4)).status, frame_status::frame) << type;
    const header_result r = decode(direction::frontend, header(type, 5));
    EXPECT_EQ(r.status, frame_status::desync) << type;
    EXPECT_STREQ(r.error, "invalid message length for its type");
  }
  // ReadyForQuery has exactly one status byte.
  EXPECT_EQ(decode(direction::backend, header('Z', 5)).status, frame_status::frame);
  EXPECT_EQ(decode(direction::backend, header('Z', 4)).status, frame_status::desync);
  const header_result z6 = decode(direction::backend, header('Z', 6));
  EXPECT_EQ(z6.status, frame_status::desync);
  EXPECT_STREQ(z6.error, "invalid message length for its type");
  // BackendKeyData: pid and key, 8 bytes in protocol 3.0.
  EXPECT_EQ(decode(direction::backend, header('K', 12)).status, frame_status::frame);
  EXPECT_EQ(decode(direction::backend, header('K', 11)).status, frame_status::desync);
  EXPECT_EQ(decode(direction::backend, header('K', 13)).status, frame_status::desync);
  // Bodies shorter than the type's minimum.
  const header_result q = decode(direction::frontend, header('Q', 4));
  EXPECT_EQ(q.status, frame_status::desync);
  EXPECT_STREQ(q.error, "invalid message length for its type");
  EXPECT_EQ(decode(direction::frontend, header('E', 8)).status, frame_status::desync);
  EXPECT_EQ(decode(direction::backend, header('D', 5)).status, frame_status::desync);
}

// `LISTEN a; NOTIFY a;` makes the server send pid, "a\0", "\0": a 7-byte body.
TEST(DecodeHeader, ShortNotificationResponseIsAccepted) {
  std::string body = u32(4242) + cstr("a") + cstr("");
  ASSERT_EQ(body.size(), 7u);
  const header_result r = decode(direction::backend, frame('A', body));
  EXPECT_EQ(r.status, frame_status::frame) << (r.error ? r.error : "");
  body = u32(4242) + cstr("ab") + cstr("");
  EXPECT_EQ(decode(direction::backend, frame('A', body)).status, frame_status::frame);
}

// ---- validate_frontend_body ----------------------------------------------------

const char* validate(char type, std::string_view body) { return validate_frontend_body(type, as_bytes(body)); }

struct body_case {
  char type;
  std::string body;
};

std::string parse_body(std::string_view name, std::string_view query, std::vector<uint32_t> oids) {
  std::string b = cstr(name) + cstr(query) + u16(static_cast<uint16_t>(oids.size()));
  for (uint32_t oid : oids) b += u32(oid);
  return b;
}

// Bind with one text/binary format per parameter; std::nullopt is SQL NULL.
std::string bind_body(std::string_view portal, std::string_view statement,
                      const std::vector<uint16_t>& formats,
                      const std::vector<std::optional<std::string>>& params,
                      const std::vector<uint16_t>& result_formats) {
  std::string b = cstr(portal) + cstr(statement) + u16(static_cast<uint16_t>(formats.size()));
  for (uint16_t f : formats) b += u16(f);
  b += u16(static_cast<uint16_t>(params.size()));
  for (const auto& p : params) b += p ? u32(static_cast<uint32_t>(p->size())) + *p : u32(0xffffffffu);
  b += u16(static_cast<uint16_t>(result_formats.size()));
  for (uint16_t f : result_formats) b += u16(f);
  return b;
}

std::vector<body_case> good_bodies() {
  return {
      {'Q', cstr("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;")},
      {'Q', cstr("")},
      {'P', parse_body("", "SELECT 1", {})},
      {'P', parse_body("s1", "SELECT $1::int + $2", {23, 0})},
      {'B', bind_body("", "", {}, {}, {})},
      {'B', bind_body("p1", "s1", {0, 1}, {std::string("42"), std::nullopt}, {1})},
      {'B', bind_body("", "s1", {1}, {std::string(""), std::string("\0\0\0\x2a", 4)}, {0, 1, 1})},
      {'D', "S" + cstr("s1")},
      {'D', "P" + cstr("")},
      {'C', "S" + cstr("s1")},
      {'C', "P" + cstr("portal")},
      {'E', cstr("") + u32(0)},
      {'E', cstr("p1") + u32(100)},
      {'f', cstr("aborted by the user")},
  };
}

TEST(ValidateFrontendBody, WellFormedBodiesPass) {
  for (const body_case& c : good_bodies()) {
    EXPECT_EQ(validate(c.type, c.body), nullptr) << c.type;
  }
}

// Every grammar is self-delimiting: no strict prefix of a good body is good,
// and no good body with a byte appended is good.
TEST(ValidateFrontendBody, EveryTruncationAndEveryTrailingByteIsRefused) {
  for (const body_case& c : good_bodies()) {
    for (size_t n = 0; n < c.body.size(); ++n) {
      EXPECT_NE(validate(c.type, std::string_view(c.body).substr(0, n)), nullptr)
          << c.type << " truncated to " << n << " of " << c.body.size();
    }
    for (char extra : {'\0', 'x'}) {
      EXPECT_NE(validate(c.type, c.body + extra), nullptr) << c.type << " with a trailing byte";
    }
  }
}

// An independent reading of each body grammar (PostgreSQL's protocol docs),
// written index by index rather than with the codec's reader: true when the
// body is well formed.
class reference_body {
 public:
  explicit reference_body(std::string_view b) : b_(b) {}
  bool cstr() {
    const size_t nul = b_.find('\0', at_);
    if (nul == std::string_view::npos) return false;
    at_ = nul + 1;
    return true;
  }
  bool take(size_t n) {
    if (b_.size() - at_ < n) return false;
    at_ += n;
    return true;
  }
  bool u16(uint32_t& v) {
    if (!take(2)) return false;
    v = (uint32_t{static_cast<uint8_t>(b_[at_ - 2])} << 8) | static_cast<uint8_t>(b_[at_ - 1]);
    return true;
  }
  bool u32(uint32_t& v) {
    if (!take(4)) return false;
    v = 0;
    for (size_t i = at_ - 4; i < at_; ++i) v = (v << 8) | static_cast<uint8_t>(b_[i]);
    return true;
  }
  bool byte(char& c) {
    if (!take(1)) return false;
    c = b_[at_ - 1];
    return true;
  }
  bool end() const { return at_ == b_.size(); }

 private:
  std::string_view b_;
  size_t at_ = 0;
};

bool reference_valid(char type, std::string_view body) {
  reference_body in(body);
  uint32_t n = 0, len = 0;
  char c = 0;
  switch (type) {
    case 'Q':
      return in.cstr() && in.end();
    case 'P':
      return in.cstr() && in.cstr() && in.u16(n) && in.take(size_t{n} * 4) && in.end();
    case 'B': {
      if (!in.cstr() || !in.cstr() || !in.u16(n) || !in.take(size_t{n} * 2) || !in.u16(n)) return false;
      for (uint32_t i = 0; i < n; ++i) {
        if (!in.u32(len)) return false;
        if (len != 0xffffffffu && !in.take(len)) return false;  // -1 is NULL, no bytes
      }
      return in.u16(n) && in.take(size_t{n} * 2) && in.end();
    }
    case 'D':
    case 'C':
      return in.byte(c) && (c == 'S' || c == 'P') && in.cstr() && in.end();
    case 'E':
      return in.cstr() && in.u32(len) && in.end();
    case 'f':
      return in.cstr() && in.end();
    default:
      ADD_FAILURE() << "no reference grammar for '" << type << "'";
      return false;
  }
}

const char* malformed_message(char type) {
  switch (type) {
    case 'Q': return "malformed Query message";
    case 'P': return "malformed Parse message";
    case 'B': return "malformed Bind message";
    case 'D': return "malformed Describe message";
    case 'C': return "malformed Close message";
    case 'E': return "malformed Execute message";
    case 'f': return "malformed CopyFail message";
    default: return "";
  }
}

// How one byte is changed: XOR with a mask (low bit, high bit, all bits), or
// set outright (to NUL, which ends a string early, and to 0xff).
constexpr std::pair<uint8_t, bool> byte_changes[] = {
    {0x01, false}, {0x80, false}, {0xff, false}, {0x00, true}, {0xff, true}};

// Every body with one byte changed (five ways, at every offset) is judged
// exactly as the reference grammar judges it: a well-formed result is
// accepted, anything else is refused with its type's own message. Each copy
// is an exact-size heap buffer, so a read past the body shows under ASan.
TEST(ValidateFrontendBody, FlippedBytesAreHandled) {
  size_t accepted = 0, refused = 0;
  for (const body_case& c : good_bodies()) {
    for (size_t i = 0; i < c.body.size(); ++i) {
      for (const auto& [mask, set] : byte_changes) {
        std::string b = c.body;
        b[i] = static_cast<char>(set ? mask : b[i] ^ mask);
        if (b == c.body) continue;  // set to the value it had
        const std::string copy(b);
        const char* error = validate(c.type, copy);
        const bool expected_ok = reference_valid(c.type, copy);
        SCOPED_TRACE(testing::Message() << "'" << c.type << "' byte " << i << (set ? " = " : " ^ ")
                                        << int{mask});
        if (expected_ok) {
          EXPECT_EQ(error, nullptr);
          ++accepted;
        } else {
          EXPECT_STREQ(error, malformed_message(c.type));
          ++refused;
        }
      }
    }
  }
  // Both outcomes occur, so neither branch above is vacuous.
  EXPECT_GT(accepted, 100u);
  EXPECT_GT(refused, 100u);
}

TEST(ValidateFrontendBody, Query) {
  EXPECT_STREQ(validate('Q', "SELECT 1"), "malformed Query message");  // missing NUL
  EXPECT_STREQ(validate('Q', cstr("SELECT 1") + "x"), "malformed Query message");
  EXPECT_STREQ(validate('Q', cstr("SELECT 1") + cstr("DROP TABLE t")), "malformed Query message");
  EXPECT_STREQ(validate('Q', ""), "malformed Query message");
}

TEST(ValidateFrontendBody, Parse) {
  EXPECT_STREQ(validate('P', cstr("s1") + "SELECT 1"), "malformed Parse message");  // query without NUL
  EXPECT_STREQ(validate('P', cstr("s1") + cstr("SELECT 1")), "malformed Parse message");  // no count
  EXPECT_STREQ(validate('P', cstr("s1") + cstr("SELECT 1") + std::string(1, '\0')), "malformed Parse message");
  // Declares three parameter types, carries two.
  std::string b = cstr("s1") + cstr("SELECT $1, $2, $3") + u16(3) + u32(23) + u32(25);
  EXPECT_STREQ(validate('P', b), "malformed Parse message");
  EXPECT_EQ(validate('P', b + u32(0)), nullptr);
  EXPECT_STREQ(validate('P', b + u32(0) + std::string(1, '\0')), "malformed Parse message");
  // The largest count with nothing behind it.
  EXPECT_STREQ(validate('P', cstr("") + cstr("SELECT 1") + u16(0xffff)), "malformed Parse message");
}

TEST(ValidateFrontendBody, Bind) {
  const std::string head = cstr("") + cstr("s1");
  // Format codes overrun.
  EXPECT_STREQ(validate('B', head + u16(2) + u16(0)), "malformed Bind message");
  EXPECT_STREQ(validate('B', head + u16(0xffff) + u16(0)), "malformed Bind message");
  // Parameter count overruns: declares 3, carries 2.
  EXPECT_STREQ(validate('B', head + u16(0) + u16(3) + u32(1) + "a" + u32(1) + "b" + u16(0)),
               "malformed Bind message");
  EXPECT_STREQ(validate('B', head + u16(0) + u16(0xffff) + u16(0)), "malformed Bind message");
  // A parameter value longer than the message.
  EXPECT_STREQ(validate('B', head + u16(0) + u16(1) + u32(100) + "abcd" + u16(0)),
               "malformed Bind message");
  // Negative lengths other than -1 (NULL).
  EXPECT_STREQ(validate('B', head + u16(0) + u16(1) + u32(0xfffffffeu) + u16(0)),
               "malformed Bind message");
  EXPECT_EQ(validate('B', head + u16(0) + u16(1) + u32(0xffffffffu) + u16(0)), nullptr);
  // Result format count missing, or overrunning.
  EXPECT_STREQ(validate('B', head + u16(0) + u16(0)), "malformed Bind message");
  EXPECT_STREQ(validate('B', head + u16(0) + u16(0) + u16(2) + u16(1)), "malformed Bind message");
  // Statement name without NUL.
  EXPECT_STREQ(validate('B', cstr("") + "s1"), "malformed Bind message");
}

TEST(ValidateFrontendBody, DescribeAndClose) {
  for (char type : {'D', 'C'}) {
    const char* expected = type == 'D' ? "malformed Describe message" : "malformed Close message";
    EXPECT_STREQ(validate(type, "X" + cstr("s1")), expected);  // neither 'S' nor 'P'
    EXPECT_STREQ(validate(type, "S" + std::string("s1")), expected);
    EXPECT_STREQ(validate(type, "P" + cstr("s1") + "x"), expected);
    EXPECT_STREQ(validate(type, ""), expected);
    EXPECT_STREQ(validate(type, "S"), expected);
  }
}

TEST(ValidateFrontendBody, Execute) {
  EXPECT_STREQ(validate('E', cstr("p1")), "malformed Execute message");
  EXPECT_STREQ(validate('E', cstr("p1") + std::string(3, '\0')), "malformed Execute message");
  EXPECT_STREQ(validate('E', cstr("p1") + u32(0) + "x"), "malformed Execute message");
  EXPECT_STREQ(validate('E', "p1" + u32(0)), "malformed Execute message");  // name without NUL
}

TEST(ValidateFrontendBody, CopyFail) {
  EXPECT_STREQ(validate('f', "no terminator"), "malformed CopyFail message");
  EXPECT_STREQ(validate('f', cstr("why") + "x"), "malformed CopyFail message");
}

// A default span has no storage (data() is null): still just "malformed".
// Under UBSan this catches memchr() being handed a null pointer.
TEST(ValidateFrontendBody, EmptySpanWithoutStorage) {
  EXPECT_STREQ(validate_frontend_body('Q', bytes{}), "malformed Query message");
  EXPECT_STREQ(validate_frontend_body('f', bytes{}), "malformed CopyFail message");
  EXPECT_STREQ(validate_frontend_body('P', bytes{}), "malformed Parse message");
  EXPECT_EQ(validate_frontend_body('S', bytes{}), nullptr);
  const error_fields f = parse_error_fields(bytes{});
  EXPECT_TRUE(f.severity.empty() && f.sqlstate.empty() && f.message.empty());
}

TEST(ValidateFrontendBody, MessagesWhoseMeaningIsNotNeededPass) {
  EXPECT_EQ(validate('d', "\x01\x02 any bytes"), nullptr);  // CopyData
  EXPECT_EQ(validate('S', ""), nullptr);
  EXPECT_EQ(validate('H', ""), nullptr);
  EXPECT_EQ(validate('X', ""), nullptr);
  EXPECT_EQ(validate('c', ""), nullptr);
  EXPECT_EQ(validate('F', "garbage garbage"), nullptr);  // FunctionCall is not parsed
  EXPECT_EQ(validate('p', "secret"), nullptr);
}

// ---- startup phase -----------------------------------------------------------------

using parameter_list = std::vector<std::pair<std::string, std::string>>;

// A startup-phase packet: length word, code, then body.
std::string startup_packet_bytes(uint32_t code, std::string_view body) {
  std::string out = u32(static_cast<uint32_t>(8 + body.size())) + u32(code);
  out.append(body);
  return out;
}

result<startup_packet> parse(std::string_view packet) { return parse_startup(as_bytes(packet)); }

std::string error_of(const result<startup_packet>& r) {
  return r ? std::string("(parsed)") : r.error().message();
}

TEST(ParseStartup, Version3Parameters) {
  const std::string body = cstr("user") + cstr("alice") + cstr("database") + cstr("shop") +
                           cstr("application_name") + cstr("") + cstr("options") +
                           cstr("-c search_path=x") + std::string(1, '\0');
  result<startup_packet> r = parse(startup_packet_bytes(protocol_v3, body));
  ASSERT_TRUE(r) << error_of(r);
  EXPECT_EQ(r->kind, startup_kind::startup);
  EXPECT_EQ(r->protocol, protocol_v3);
  const parameter_list expected = {{"user", "alice"},
                                   {"database", "shop"},
                                   {"application_name", ""},
                                   {"options", "-c search_path=x"}};
  EXPECT_EQ(r->parameters, expected);
  ASSERT_NE(r->find("user"), nullptr);
  EXPECT_EQ(*r->find("user"), "alice");
  ASSERT_NE(r->find("application_name"), nullptr);
  EXPECT_EQ(*r->find("application_name"), "");
  EXPECT_EQ(r->find("USER"), nullptr);  // names are case-sensitive
  EXPECT_EQ(r->find("replication"), nullptr);
}

TEST(ParseStartup, NoParametersIsJustTheTerminator) {
  result<startup_packet> r = parse(startup_packet_bytes(protocol_v3, std::string(1, '\0')));
  ASSERT_TRUE(r) << error_of(r);
  EXPECT_TRUE(r->parameters.empty());
  EXPECT_EQ(error_of(parse(startup_packet_bytes(protocol_v3, ""))),
            "invalid startup packet layout: expected terminator as last byte");
}

TEST(ParseStartup, Version3MinorVersionsAreParsed) {
  const uint32_t v3_2 = protocol_v3 | 2;
  result<startup_packet> r =
      parse(startup_packet_bytes(v3_2, cstr("user") + cstr("bob") + cstr("_pq_.x") + cstr("1") + '\0'));
  ASSERT_TRUE(r) << error_of(r);
  EXPECT_EQ(r->protocol, v3_2);
  EXPECT_EQ(r->parameters.size(), 2u);
}

TEST(ParseStartup, CancelRequest) {
  result<startup_packet> r = parse(startup_packet_bytes(cancel_request_code, u32(1234) + u32(0xdeadbeef)));
  ASSERT_TRUE(r) << error_of(r);
  EXPECT_EQ(r->kind, startup_kind::cancel_request);
  EXPECT_EQ(r->cancel_pid, 1234u);
  EXPECT_EQ(r->cancel_key, 0xdeadbeefu);
  EXPECT_EQ(error_of(parse(startup_packet_bytes(cancel_request_code, u32(1234)))),
            "invalid length of cancel request packet");
  EXPECT_EQ(error_of(parse(startup_packet_bytes(cancel_request_code, u32(1) + u32(2) + u32(3)))),
            "invalid length of cancel request packet");
}

TEST(ParseStartup, EncryptionRequests) {
  result<startup_packet> ssl = parse(startup_packet_bytes(ssl_request_code, ""));
  ASSERT_TRUE(ssl);
  EXPECT_EQ(ssl->kind, startup_kind::ssl_request);
  result<startup_packet> gss = parse(startup_packet_bytes(gssenc_request_code, ""));
  ASSERT_TRUE(gss);
  EXPECT_EQ(gss->kind, startup_kind::gssenc_request);
  EXPECT_EQ(error_of(parse(startup_packet_bytes(ssl_request_code, u32(0)))),
            "invalid length of encryption request packet");
  EXPECT_EQ(error_of(parse(startup_packet_bytes(gssenc_request_code, "x"))),
            "invalid length of encryption request packet");
  // The exact bytes libpq sends.
  const std::string libpq_ssl("\x00\x00\x00\x08\x04\xd2\x16\x2f", 8);
  ASSERT_TRUE(parse(libpq_ssl));
  EXPECT_EQ(parse(libpq_ssl)->kind, startup_kind::ssl_request);
}

TEST(ParseStartup, OtherProtocolVersionsAreReturnedAsIs) {
  // Protocol 2.0's startup packet has a fixed layout the parser must not read.
  const std::string v2_body(296 - 8, 'z');
  result<startup_packet> r = parse(startup_packet_bytes(2u << 16, v2_body));
  ASSERT_TRUE(r) << error_of(r);
  EXPECT_EQ(r->kind, startup_kind::startup);
  EXPECT_EQ(r->protocol, 2u << 16);
  EXPECT_TRUE(r->parameters.empty());
  result<startup_packet> v4 = parse(startup_packet_bytes(4u << 16, ""));
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->protocol, 4u << 16);
}

TEST(ParseStartup, MalformedLayouts) {
  // Missing terminator after the last value.
  EXPECT_EQ(error_of(parse(startup_packet_bytes(protocol_v3, cstr("user") + cstr("bob")))),
            "invalid startup packet layout: expected terminator as last byte");
  // Name without NUL.
  EXPECT_EQ(error_of(parse(startup_packet_bytes(protocol_v3, cstr("user") + cstr("bob") + "data"))),
            "invalid startup packet layout: expected terminator as last byte");
  // A parameter without a value.
  EXPECT_EQ(error_of(parse(startup_packet_bytes(protocol_v3, cstr("user")))),
            "invalid startup packet layout: missing value");
  EXPECT_EQ(error_of(parse(startup_packet_bytes(protocol_v3, cstr("user") + "bob"))),
            "invalid startup packet layout: missing value");
  // Bytes after the terminator.
  EXPECT_EQ(error_of(parse(startup_packet_bytes(protocol_v3, cstr("user") + cstr("bob") + '\0' + "x"))),
            "invalid startup packet layout: data after terminator");
}

TEST(ParseStartup, AtMostSixtyFourParameters) {
  std::string body;
  for (int i = 0; i < 64; ++i) body += cstr("p" + std::to_string(i)) + cstr("v");
  result<startup_packet> ok = parse(startup_packet_bytes(protocol_v3, body + '\0'));
  ASSERT_TRUE(ok) << error_of(ok);
  EXPECT_EQ(ok->parameters.size(), 64u);
  body += cstr("p64") + cstr("v");
  EXPECT_EQ(error_of(parse(startup_packet_bytes(protocol_v3, body + '\0'))), "too many startup parameters");
}

TEST(ParseStartup, LengthWordMustMatchThePacket) {
  std::string p = startup_packet_bytes(protocol_v3, cstr("user") + cstr("bob") + '\0');
  ASSERT_TRUE(parse(p));
  for (int delta : {-1, 1}) {
    std::string q = p;
    const std::string len = u32(static_cast<uint32_t>(p.size() + delta));
    q.replace(0, 4, len);
    EXPECT_EQ(error_of(parse(q)), "invalid length of startup packet") << delta;
  }
  for (size_t n = 0; n < p.size(); ++n)
    EXPECT_EQ(error_of(parse(std::string_view(p).substr(0, n))), "invalid length of startup packet") << n;
  EXPECT_EQ(error_of(parse(u32(4))), "invalid length of startup packet");
}

// A packet with one byte changed (byte_changes) is either refused with one of the parser's
// own reasons, or parsed into exactly what the bytes say: re-encoding what
// was parsed gives the input back, byte for byte. So a flip can never make
// the parser see a parameter the server would not (or miss one it would).
TEST(ParseStartup, FlippedBytesAreHandled) {
  const std::string p = startup_packet_bytes(protocol_v3, cstr("user") + cstr("bob") + cstr("database") +
                                                              cstr("db") + '\0');
  const std::vector<std::string> reasons = {
      "invalid length of startup packet",
      "invalid startup packet layout: expected terminator as last byte",
      "invalid startup packet layout: missing value",
      "invalid startup packet layout: data after terminator",
      "too many startup parameters",
      "invalid length of cancel request packet",
      "invalid length of encryption request packet",
  };
  size_t parsed = 0, refused = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    for (const auto& [mask, set] : byte_changes) {
      std::string q = p;
      q[i] = static_cast<char>(set ? mask : q[i] ^ mask);
      if (q == p) continue;  // set to the value it had
      const std::string copy(q);  // exact-size heap buffer: overreads show under ASan
      SCOPED_TRACE(testing::Message() << "byte " << i << (set ? " = " : " ^ ") << int{mask});
      result<startup_packet> r = parse(copy);
      if (!r) {
        ++refused;
        EXPECT_EQ(r.error().code(), errc::protocol);
        EXPECT_NE(std::find(reasons.begin(), reasons.end(), r.error().message()), reasons.end())
            << r.error().message();
        continue;
      }
      ++parsed;
      // The length word must equal the packet's size: a change there is refused.
      EXPECT_GE(i, 4u) << "a changed length word was accepted";
      ASSERT_EQ(r->kind, startup_kind::startup);  // one flip cannot reach another request code
      EXPECT_EQ(r->protocol, (uint32_t{static_cast<uint8_t>(copy[4])} << 24) |
                                 (uint32_t{static_cast<uint8_t>(copy[5])} << 16) |
                                 (uint32_t{static_cast<uint8_t>(copy[6])} << 8) |
                                 static_cast<uint8_t>(copy[7]));
      if ((r->protocol >> 16) != 3) {
        // Another major version: returned unread for the caller to refuse.
        EXPECT_TRUE(r->parameters.empty());
        continue;
      }
      std::string body;
      for (const auto& [name, value] : r->parameters) {
        EXPECT_FALSE(name.empty());
        body += cstr(name) + cstr(value);
      }
      body += '\0';
      EXPECT_EQ(startup_packet_bytes(r->protocol, body), copy);
    }
  }
  EXPECT_GT(parsed, 10u);
  EXPECT_GT(refused, 10u);
}

TEST(DecodeStartupLength, Bounds) {
  auto len = [](std::string_view data) { return decode_startup_length(as_bytes(data), startup_bytes_max); };
  for (size_t n = 0; n < 4; ++n) EXPECT_EQ(len(std::string(n, '\0')).status, frame_status::need_more);
  for (uint32_t bad : {0u, 4u, 7u, startup_bytes_max + 1, 0xffffffffu}) {
    const startup_length_result r = len(u32(bad) + u32(protocol_v3));
    EXPECT_EQ(r.status, frame_status::desync) << bad;
    EXPECT_STREQ(r.error, "invalid length of startup packet");
  }
  EXPECT_EQ(len(u32(8)).status, frame_status::need_more);
  const startup_length_result eight = len(u32(8) + u32(ssl_request_code));
  EXPECT_EQ(eight.status, frame_status::frame);
  EXPECT_EQ(eight.length, 8u);
  EXPECT_EQ(len(u32(startup_bytes_max)).status, frame_status::need_more);
  EXPECT_EQ(len(u32(startup_bytes_max) + std::string(startup_bytes_max - 4, 'x')).status, frame_status::frame);
  // Bytes pipelined behind the packet do not change its length.
  const startup_length_result more = len(u32(8) + u32(ssl_request_code) + "Q\0\0\0");
  EXPECT_EQ(more.status, frame_status::frame);
  EXPECT_EQ(more.length, 8u);
}

// ---- encoders ---------------------------------------------------------------------

TEST(Encoders, FrameAndIntegersAreBigEndian) {
  std::string out;
  append_u32(out, 0x01020304u);
  EXPECT_EQ(out, std::string("\x01\x02\x03\x04", 4));
  EXPECT_EQ(frame('Q', cstr("x")), std::string("Q\x00\x00\x00\x06x\x00", 7));
  std::string ok;
  append_authentication_ok(ok);
  EXPECT_EQ(ok, std::string("R\0\0\0\x08\0\0\0\0", 9));
  const header_result h = decode(direction::backend, ok);
  EXPECT_EQ(h.status, frame_status::frame);
  EXPECT_EQ(h.header.frame_bytes(), ok.size());
}

TEST(Encoders, ErrorRoundTrip) {
  std::string out;
  append_error(out, "FATAL", "08P01", "invalid frontend message: unknown message type");
  const header_result h = decode(direction::backend, out);
  ASSERT_EQ(h.status, frame_status::frame);
  EXPECT_EQ(h.header.type, 'E');
  ASSERT_EQ(h.header.frame_bytes(), out.size());
  const error_fields f = parse_error_fields(as_bytes(out).subspan(header_bytes));
  EXPECT_EQ(f.severity, "FATAL");
  EXPECT_EQ(f.sqlstate, "08P01");
  EXPECT_EQ(f.message, "invalid frontend message: unknown message type");
  EXPECT_EQ(out.back(), '\0');
  EXPECT_EQ(out[out.size() - 2], '\0');
}

TEST(Encoders, ErrorMessageCannotEndItsFieldEarly) {
  std::string out;
  append_error(out, "ERROR", "0A000", std::string_view("a\0b", 3));
  const error_fields f = parse_error_fields(as_bytes(out).subspan(header_bytes));
  EXPECT_EQ(f.message, "a b");
  EXPECT_EQ(f.sqlstate, "0A000");
  EXPECT_EQ(decode(direction::backend, out).header.frame_bytes(), out.size());
}

TEST(ParseErrorFields, NonLocalizedSeverityWinsAndTruncationStops) {
  const std::string body = "SFEHLER" + std::string(1, '\0') + "VFATAL" + '\0' + "C28P01" + '\0' +
                           "Mpassword authentication failed" + '\0' + "Rauth_failed" + '\0' + '\0';
  error_fields f = parse_error_fields(as_bytes(body));
  EXPECT_EQ(f.severity, "FATAL");
  EXPECT_EQ(f.sqlstate, "28P01");
  EXPECT_EQ(f.message, "password authentication failed");
  // Cut anywhere: never reads past the body, keeps what was whole.
  for (size_t n = 0; n <= body.size(); ++n) {
    const std::string cut = body.substr(0, n);
    f = parse_error_fields(as_bytes(cut));
  }
  f = parse_error_fields(as_bytes("SERROR" + std::string(1, '\0') + "C4"));
  EXPECT_EQ(f.severity, "ERROR");
  EXPECT_EQ(f.sqlstate, "");
}

TEST(Encoders, StartupRoundTrip) {
  const parameter_list params = {{"user", "gateway"}, {"database", "shop"}, {"application_name", "psql"}};
  std::string out;
  append_startup(out, params);
  const startup_length_result len = decode_startup_length(as_bytes(out), startup_bytes_max);
  ASSERT_EQ(len.status, frame_status::frame);
  EXPECT_EQ(len.length, out.size());
  result<startup_packet> r = parse(out);
  ASSERT_TRUE(r) << error_of(r);
  EXPECT_EQ(r->kind, startup_kind::startup);
  EXPECT_EQ(r->protocol, protocol_v3);
  EXPECT_EQ(r->parameters, params);
  std::string empty;
  append_startup(empty, {});
  EXPECT_EQ(empty, std::string("\0\0\0\x09\0\x03\0\0\0", 9));
}

TEST(Encoders, NegotiateProtocolVersionLayout) {
  std::string out;
  append_negotiate_protocol_version(out, {"_pq_.compression", "_pq_.x"});
  const std::string expected = "v" + u32(4 + 4 + 4 + 17 + 7) + u32(0x00030000) + u32(2) +
                               cstr("_pq_.compression") + cstr("_pq_.x");
  EXPECT_EQ(out, expected);
  const header_result h = decode(direction::backend, out);
  ASSERT_EQ(h.status, frame_status::frame);
  EXPECT_EQ(h.header.frame_bytes(), out.size());
  std::string none;
  append_negotiate_protocol_version(none, {});
  EXPECT_EQ(none, "v" + u32(12) + u32(0x00030000) + u32(0));
  EXPECT_EQ(decode(direction::backend, none).status, frame_status::frame);
}

}  // namespace
}  // namespace agentgate::pg
