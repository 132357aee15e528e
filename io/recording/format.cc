#include "io/recording/format.h"

#include <cstring>

namespace agentgate::recording {
namespace {

constexpr size_t list_items_max = 4096;  // groups, columns, masked counts

void put_varint(std::string& out, uint64_t v) {
  char buf[10];
  size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out.append(buf, n);
}

void put_signed(std::string& out, int64_t v) {
  put_varint(out, (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
}

void put_string(std::string& out, std::string_view s) {
  if (s.size() > field_bytes_max) s = s.substr(0, field_bytes_max);
  put_varint(out, s.size());
  out.append(s);
}

void put_id(std::string& out, const session_id& id) {
  char buf[16];
  for (int i = 0; i < 8; ++i) {
    buf[i] = static_cast<char>(id.hi >> (56 - 8 * i));
    buf[8 + i] = static_cast<char>(id.lo >> (56 - 8 * i));
  }
  out.append(buf, 16);
}

void put_prompt(std::string& out, const prompt_attribution& p) {
  put_string(out, p.prompt_id);
  put_string(out, p.prompt_text);
  put_string(out, p.traceparent);
}

void put_head(std::string& out, event_type t, const session_id& id, int64_t unix_us) {
  out.push_back(static_cast<char>(t));
  put_id(out, id);
  put_signed(out, unix_us);
}

// A bounds-checked cursor over one payload.
struct cursor {
  std::string_view in;
  bool ok = true;

  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (in.empty()) break;
      const uint8_t b = static_cast<uint8_t>(in[0]);
      in.remove_prefix(1);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    ok = false;
    return 0;
  }
  int64_t signed_varint() {
    const uint64_t z = varint();
    return static_cast<int64_t>((z >> 1) ^ (0 - (z & 1)));
  }
  std::string_view bytes(size_t n) {
    if (!ok || n > in.size()) {
      ok = false;
      return {};
    }
    std::string_view s = in.substr(0, n);
    in.remove_prefix(n);
    return s;
  }
  std::string string() {
    const uint64_t n = varint();
    if (n > field_bytes_max && n > in.size()) ok = false;
    return std::string(bytes(ok ? static_cast<size_t>(n) : 0));
  }
  uint8_t byte() {
    std::string_view b = bytes(1);
    return b.empty() ? 0 : static_cast<uint8_t>(b[0]);
  }
  session_id id() {
    std::string_view b = bytes(16);
    session_id out;
    if (b.size() != 16) return out;
    for (int i = 0; i < 8; ++i) {
      out.hi = (out.hi << 8) | static_cast<uint8_t>(b[i]);
      out.lo = (out.lo << 8) | static_cast<uint8_t>(b[8 + i]);
    }
    return out;
  }
  // A count of items each at least one byte long.
  size_t count() {
    const uint64_t n = varint();
    if (n > list_items_max || n > in.size()) {
      ok = false;
      return 0;
    }
    return static_cast<size_t>(n);
  }
  void prompt(event& e) {
    e.prompt_id = string();
    e.prompt_text = string();
    e.traceparent = string();
  }
};

}  // namespace

std::string_view event_type_name(event_type t) {
  switch (t) {
    case event_type::file_header: return "file_header";
    case event_type::session_start: return "session_start";
    case event_type::command: return "command";
    case event_type::decision: return "decision";
    case event_type::result: return "result";
    case event_type::session_end: return "session_end";
  }
  return "unknown";
}

void encode_file_header(const file_header& h, std::string& out) {
  out.push_back(static_cast<char>(event_type::file_header));
  out.append(file_magic);
  put_varint(out, h.version);
  put_varint(out, static_cast<uint64_t>(h.shard));
  char base[8];
  for (int i = 0; i < 8; ++i) base[i] = static_cast<char>(h.base_offset >> (8 * i));
  out.append(base, 8);
  put_signed(out, h.created_unix_us);
}

void encode(const rec_session_start& e, std::string& out) {
  put_head(out, event_type::session_start, e.id, e.unix_us);
  put_varint(out, static_cast<uint64_t>(e.shard));
  put_string(out, e.protocol);
  put_string(out, e.target);
  put_string(out, e.subject);
  put_string(out, e.email);
  const size_t groups = std::min(e.groups.size(), list_items_max);
  put_varint(out, groups);
  for (size_t i = 0; i < groups; ++i) put_string(out, e.groups[i]);
  put_string(out, e.client_address);
  put_string(out, e.tls);
  put_string(out, e.database);
  put_string(out, e.user);
  put_prompt(out, e.prompt);
}

void encode(const rec_command& e, std::string& out) {
  put_head(out, event_type::command, e.id, e.unix_us);
  put_varint(out, e.seq);
  out.push_back(e.message_kind);
  put_varint(out, e.text.size());
  put_string(out, e.text);
  put_string(out, e.classification);
  put_prompt(out, e.prompt);
}

void encode(const rec_decision& e, std::string& out) {
  put_head(out, event_type::decision, e.id, e.unix_us);
  put_varint(out, e.seq);
  put_string(out, e.action);
  put_string(out, e.rule_id);
  put_string(out, e.approver);
  put_string(out, e.reason);
}

void encode(const rec_result& e, std::string& out) {
  put_head(out, event_type::result, e.id, e.unix_us);
  put_varint(out, e.seq);
  const size_t columns = std::min(e.columns.size(), list_items_max);
  put_varint(out, columns);
  for (size_t i = 0; i < columns; ++i) put_string(out, e.columns[i]);
  put_varint(out, e.rows.size());  // not put_string: bounded by result_bytes_max, not field_bytes_max
  out.append(e.rows);
  put_varint(out, e.rows_total);
  out.push_back(e.rows_truncated ? 1 : 0);
  put_signed(out, e.duration_us);
  put_string(out, e.command_tag);
  put_string(out, e.error);
  const size_t masked = std::min(e.masked.size(), list_items_max);
  put_varint(out, masked);
  for (size_t i = 0; i < masked; ++i) {
    put_string(out, e.masked[i].first);
    put_varint(out, e.masked[i].second);
  }
}

void encode(const rec_session_end& e, std::string& out) {
  put_head(out, event_type::session_end, e.id, e.unix_us);
  put_string(out, e.reason);
  put_varint(out, e.commands);
  put_varint(out, e.bytes_from_client);
  put_varint(out, e.bytes_to_client);
}

bool decode_file_header(std::string_view payload, file_header& out) {
  cursor c{payload};
  if (c.byte() != static_cast<uint8_t>(event_type::file_header)) return false;
  if (c.bytes(file_magic.size()) != file_magic) return false;
  const uint64_t version = c.varint();
  const uint64_t shard = c.varint();
  std::string_view base = c.bytes(8);
  out.created_unix_us = c.signed_varint();
  if (!c.ok || version == 0 || version > 0xffff || shard > 0xffff) return false;
  out.version = static_cast<uint32_t>(version);
  out.shard = static_cast<int>(shard);
  out.base_offset = 0;
  for (int i = 7; i >= 0; --i) out.base_offset = (out.base_offset << 8) | static_cast<uint8_t>(base[i]);
  return true;
}

bool peek_event(std::string_view payload, event_type& type, session_id& id) {
  cursor c{payload};
  const uint8_t t = c.byte();
  if (t < static_cast<uint8_t>(event_type::session_start) || t > static_cast<uint8_t>(event_type::session_end))
    return false;
  type = static_cast<event_type>(t);
  id = c.id();
  return c.ok;
}

bool decode_event(std::string_view payload, event& e) {
  e = event{};
  cursor c{payload};
  if (!peek_event(payload, e.type, e.id)) return false;
  c.bytes(17);
  e.unix_us = c.signed_varint();
  switch (e.type) {
    case event_type::session_start: {
      const uint64_t shard = c.varint();
      e.shard = shard > 0xffff ? -1 : static_cast<int>(shard);
      e.protocol = c.string();
      e.target = c.string();
      e.subject = c.string();
      e.email = c.string();
      const size_t groups = c.count();
      for (size_t i = 0; i < groups && c.ok; ++i) e.groups.push_back(c.string());
      e.client_address = c.string();
      e.tls = c.string();
      e.database = c.string();
      e.user = c.string();
      c.prompt(e);
      break;
    }
    case event_type::command:
      e.seq = c.varint();
      e.message_kind = static_cast<char>(c.byte());
      e.text_bytes = c.varint();
      e.text = c.string();
      e.classification = c.string();
      c.prompt(e);
      break;
    case event_type::decision:
      e.seq = c.varint();
      e.action = c.string();
      e.rule_id = c.string();
      e.approver = c.string();
      e.reason = c.string();
      break;
    case event_type::result: {
      e.seq = c.varint();
      const size_t columns = c.count();
      for (size_t i = 0; i < columns && c.ok; ++i) e.columns.push_back(c.string());
      const uint64_t rows = c.varint();
      e.rows = std::string(c.bytes(rows <= c.in.size() ? static_cast<size_t>(rows) : c.in.size() + 1));
      e.rows_total = c.varint();
      e.rows_truncated = c.byte() != 0;
      e.duration_us = c.signed_varint();
      e.command_tag = c.string();
      e.error = c.string();
      const size_t masked = c.count();
      for (size_t i = 0; i < masked && c.ok; ++i) {
        std::string name = c.string();
        e.masked.emplace_back(std::move(name), c.varint());
      }
      break;
    }
    case event_type::session_end:
      e.reason = c.string();
      e.commands = c.varint();
      e.bytes_from_client = c.varint();
      e.bytes_to_client = c.varint();
      break;
    case event_type::file_header:
      return false;
  }
  return c.ok;
}

namespace {

uint32_t be32(const char* p) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(p[0])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 8) | static_cast<uint8_t>(p[3]);
}

// The length in bytes of the DataRow body at the start of rows, 0 if malformed.
size_t row_bytes(std::string_view rows) {
  if (rows.size() < 2) return 0;
  const size_t fields = (static_cast<uint8_t>(rows[0]) << 8) | static_cast<uint8_t>(rows[1]);
  size_t at = 2;
  for (size_t i = 0; i < fields; ++i) {
    if (rows.size() - at < 4) return 0;
    const int32_t len = static_cast<int32_t>(be32(rows.data() + at));
    at += 4;
    if (len < -1) return 0;
    if (len > 0) {
      if (rows.size() - at < static_cast<size_t>(len)) return 0;
      at += static_cast<size_t>(len);
    }
  }
  return at;
}

}  // namespace

bool for_each_row(std::string_view rows, size_t columns_max,
                  const std::function<bool(const std::vector<row_field>&)>& f) {
  std::vector<row_field> fields;
  while (!rows.empty()) {
    const size_t n = row_bytes(rows);
    if (n == 0) return false;
    const size_t count = (static_cast<uint8_t>(rows[0]) << 8) | static_cast<uint8_t>(rows[1]);
    if (count > columns_max) return false;
    fields.clear();
    size_t at = 2;
    for (size_t i = 0; i < count; ++i) {
      const int32_t len = static_cast<int32_t>(be32(rows.data() + at));
      at += 4;
      row_field field;
      if (len < 0) {
        field.is_null = true;
      } else {
        field.value = rows.substr(at, static_cast<size_t>(len));
        at += static_cast<size_t>(len);
      }
      fields.push_back(field);
    }
    if (!f(fields)) return true;
    rows.remove_prefix(n);
  }
  return true;
}

std::pair<size_t, uint64_t> whole_rows_prefix(std::string_view rows, size_t bytes_max) {
  size_t at = 0;
  uint64_t count = 0;
  while (at < rows.size()) {
    const size_t n = row_bytes(rows.substr(at));
    if (n == 0 || n > bytes_max - at) break;
    at += n;
    ++count;
  }
  return {at, count};
}

}  // namespace agentgate::recording
