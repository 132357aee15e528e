#pragma once
// The recording file format's constants and its typed payloads
// (docs/recording-format.md). Framing is LevelDB's log; payloads are a type
// byte followed by fields: varints (LEB128), zigzag varints for signed
// values, length-prefixed strings, a session id as 16 bytes.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/recording.h"
#include "core/status.h"

namespace agentgate::recording {

inline constexpr uint32_t block_bytes = 32 * 1024;
inline constexpr uint32_t header_bytes = 7;  // masked crc (4), length (2), type (1)

enum class frame_type : uint8_t { zero = 0, full = 1, first = 2, middle = 3, last = 4 };
inline constexpr uint8_t frame_type_max = 4;

// The first byte of every payload.
enum class event_type : uint8_t {
  file_header = 0x01,
  session_start = 0x10,
  command = 0x11,
  decision = 0x12,
  result = 0x13,
  session_end = 0x14,
};

inline constexpr std::string_view file_magic = "AGRECSEG";  // 8 bytes
inline constexpr uint32_t format_version = 1;
// Strings longer than this are cut when recorded (a command keeps its full
// length in text_bytes); rows are bounded by result_bytes_max instead.
inline constexpr size_t field_bytes_max = 1u << 20;
// The reader refuses logical records larger than this (a corrupted length
// chain cannot make it allocate without bound).
inline constexpr size_t record_bytes_max = 64u << 20;

struct file_header {
  uint32_t version = format_version;
  int shard = 0;
  uint64_t base_offset = 0;
  int64_t created_unix_us = 0;
};

// A decoded event, owning its bytes: for replay, export and tests, off the
// data path. Fields not carried by `type` stay empty.
struct event {
  event_type type = event_type::file_header;
  session_id id;
  int64_t unix_us = 0;
  uint64_t seq = 0;
  // session_start
  int shard = 0;
  std::string protocol, target, subject, email, client_address, tls, database, user;
  std::vector<std::string> groups;
  // session_start, command
  std::string prompt_id, prompt_text, traceparent;
  // command
  char message_kind = 0;
  std::string text;
  uint64_t text_bytes = 0;  // before any cut
  std::string classification;
  // decision
  std::string action, rule_id, approver;
  std::string reason;  // decision, session_end
  // result
  std::vector<std::string> columns;
  std::string rows;  // DataRow bodies
  uint64_t rows_total = 0;
  bool rows_truncated = false;
  int64_t duration_us = 0;
  std::string command_tag, error;
  std::vector<std::pair<std::string, uint64_t>> masked;
  // session_end
  uint64_t commands = 0, bytes_from_client = 0, bytes_to_client = 0;
};

std::string_view event_type_name(event_type t);

// Encoders append one payload to out (which is not cleared).
void encode_file_header(const file_header& h, std::string& out);
void encode(const rec_session_start& e, std::string& out);
void encode(const rec_command& e, std::string& out);
void encode(const rec_decision& e, std::string& out);
// rows must already be bounded by the caller.
void encode(const rec_result& e, std::string& out);
void encode(const rec_session_end& e, std::string& out);

// Decoders: false when the payload is malformed. Bytes after the known
// fields are ignored (newer writers may append fields).
bool decode_file_header(std::string_view payload, file_header& out);
bool decode_event(std::string_view payload, event& out);
// Just the type and session id, for indexing without decoding rows.
bool peek_event(std::string_view payload, event_type& type, session_id& id);

// DataRow bodies: calls f(fields) for each whole row; false if malformed.
// Each field is a string_view, or nullopt-ish: null_field marks SQL NULL.
struct row_field {
  bool is_null = false;
  std::string_view value;
};
bool for_each_row(std::string_view rows, size_t columns_max,
                  const std::function<bool(const std::vector<row_field>&)>& f);
// The longest prefix of rows (concatenated DataRow bodies) made of whole rows
// that fits in bytes_max, and how many rows it holds.
std::pair<size_t, uint64_t> whole_rows_prefix(std::string_view rows, size_t bytes_max);

}  // namespace agentgate::recording
