#include "io/recording/replay.h"

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <ctime>
#include <unordered_map>

#include "core/text.h"
#include "io/recording/file_ops.h"
#include "io/recording/segment_writer.h"

namespace agentgate::recording {
namespace {

constexpr size_t columns_max = 1664;       // PostgreSQL's own limit is 1664 target entries
constexpr size_t table_rows_max = 100;     // per result, in transcripts
constexpr size_t cell_chars_max = 40;
constexpr int asciicast_width = 120;
constexpr int asciicast_height = 40;

struct segment_ref {
  int shard = 0;
  uint64_t base = 0;
  std::string path;
};

result<std::vector<segment_ref>> find_segments(file_ops& ops, const std::string& dir) {
  result<std::vector<dir_entry>> top = ops.list_dir(dir);
  if (!top) return status(errc::invalid_argument, top.error().message());
  std::vector<segment_ref> out;
  for (const dir_entry& d : *top) {
    if (!d.name.starts_with("shard-") || !d.name.ends_with("/")) continue;
    const std::string digits = d.name.substr(6, d.name.size() - 7);
    if (digits.empty() || digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const int shard = std::stoi(digits);
    const std::string shard_dir = dir + "/" + d.name.substr(0, d.name.size() - 1);
    result<std::vector<dir_entry>> files = ops.list_dir(shard_dir);
    if (!files) return files.error();
    for (const dir_entry& f : *files) {
      uint64_t base = 0;
      if (parse_segment_file_name(f.name, base)) out.push_back(segment_ref{shard, base, shard_dir + "/" + f.name});
    }
  }
  std::sort(out.begin(), out.end(), [](const segment_ref& a, const segment_ref& b) {
    return a.shard != b.shard ? a.shard < b.shard : a.base < b.base;
  });
  return out;
}

// Calls f(segment, record) for every whole record of every segment; damage
// goes to report. A segment that vanished meanwhile (retention) is skipped.
status scan_dir(const std::string& dir, const std::function<bool(const segment_ref&, const log_record&)>& f,
                const damage_fn& report = nullptr) {
  std::unique_ptr<file_ops> ops = make_posix_file_ops();
  result<std::vector<segment_ref>> segments = find_segments(*ops, dir);
  if (!segments) return segments.error();
  for (const segment_ref& seg : *segments) {
    result<std::unique_ptr<segment_file>> file = ops->open(seg.path, open_mode::read_only);
    if (!file) continue;
    log_reader reader(**file, report);
    log_record rec;
    while (reader.next(rec))
      if (!f(seg, rec)) return status::ok();
    if (!reader.io_error().is_ok()) return reader.io_error();
  }
  return status::ok();
}

void append_u64(std::string& out, uint64_t v) { out += std::to_string(v); }
void append_i64(std::string& out, int64_t v) { out += std::to_string(v); }

void json_field(std::string& out, const char* key, std::string_view value) {
  out += ",\"";
  out += key;
  out += "\":";
  append_json_string(out, value);
}

void json_number(std::string& out, const char* key, int64_t value) {
  out += ",\"";
  out += key;
  out += "\":";
  append_i64(out, value);
}

void json_strings(std::string& out, const char* key, const std::vector<std::string>& values) {
  out += ",\"";
  out += key;
  out += "\":[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, values[i]);
  }
  out += ']';
}

std::string iso_time(int64_t unix_us) {
  const time_t secs = static_cast<time_t>(unix_us / 1000000);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
           t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>((unix_us % 1000000) / 1000));
  return buf;
}

std::string seconds(int64_t us) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.3f", static_cast<double>(us) / 1e6);
  return buf;
}

std::string cell(std::string_view raw) { return cut_to_width(terminal_safe(raw), cell_chars_max); }

void pad(std::string& out, std::string_view s, size_t width) {
  out.append(s);
  for (size_t w = display_width(s); w < width; ++w) out += ' ';
}

// A psql-like table of the kept rows, lines ended by eol.
void render_table(std::string& out, const event& e, std::string_view indent, std::string_view eol) {
  std::vector<std::vector<std::string>> rows;
  bool more = false;
  const bool ok = for_each_row(e.rows, columns_max, [&](const std::vector<row_field>& fields) {
    if (rows.size() == table_rows_max) {
      more = true;
      return false;
    }
    std::vector<std::string> r;
    for (const row_field& f : fields) r.push_back(f.is_null ? "" : cell(f.value));
    rows.push_back(std::move(r));
    return true;
  });
  size_t ncols = e.columns.size();
  for (const auto& r : rows) ncols = std::max(ncols, r.size());
  if (ncols == 0) return;
  std::vector<std::string> header(ncols);
  std::vector<size_t> width(ncols, 0);
  for (size_t c = 0; c < ncols; ++c) {
    header[c] = c < e.columns.size() ? cell(e.columns[c]) : "?column?";
    width[c] = display_width(header[c]);
  }
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], display_width(r[c]));
  auto line = [&](const std::vector<std::string>& values) {
    out.append(indent);
    for (size_t c = 0; c < ncols; ++c) {
      out += c == 0 ? " " : " | ";
      pad(out, c < values.size() ? std::string_view(values[c]) : std::string_view(), width[c]);
    }
    out.append(eol);
  };
  line(header);
  out.append(indent);
  for (size_t c = 0; c < ncols; ++c) {
    if (c > 0) out += '+';
    out.append(width[c] + 2, '-');
  }
  out.append(eol);
  for (const auto& r : rows) line(r);
  const uint64_t shown = rows.size();
  const uint64_t total = std::max<uint64_t>(e.rows_total, shown);
  out.append(indent);
  out += "(" + std::to_string(total) + (total == 1 ? " row" : " rows");
  if (shown < total || more || e.rows_truncated) out += ", " + std::to_string(shown) + " shown";
  if (!ok) out += ", undecodable rows";
  out += ")";
  out.append(eol);
}

std::string masked_list(const event& e) {
  std::string out;
  for (const auto& [name, count] : e.masked) {
    if (!out.empty()) out += ", ";
    out += terminal_safe(name) + "=" + std::to_string(count);
  }
  return out;
}

std::string one_line(std::string_view s) { return terminal_safe(s); }

void text_event(std::string& out, const event& e, int64_t start_us) {
  const std::string at = "[+" + seconds(e.unix_us - start_us) + "s] ";
  switch (e.type) {
    case event_type::session_start: {
      out += "session " + e.id.hex() + "  " + one_line(e.protocol) + " target " + one_line(e.target) + "\n";
      out += "  who      " + one_line(e.subject);
      if (!e.email.empty()) out += " <" + one_line(e.email) + ">";
      if (!e.groups.empty()) {
        out += "  groups ";
        for (size_t i = 0; i < e.groups.size(); ++i) out += (i ? "," : "") + one_line(e.groups[i]);
      }
      out += "\n  client   " + one_line(e.client_address) + (e.tls.empty() ? "  plaintext" : "  " + one_line(e.tls));
      out += "\n  login    user " + one_line(e.user) + " database " + one_line(e.database);
      out += "\n  started  " + iso_time(e.unix_us) + " (shard " + std::to_string(e.shard) + ")\n";
      if (!e.prompt_id.empty() || !e.traceparent.empty())
        out += "  prompt   " + one_line(e.prompt_id) + (e.traceparent.empty() ? "" : " traceparent " + one_line(e.traceparent)) + "\n";
      out += "\n";
      break;
    }
    case event_type::command:
      out += at + "#" + std::to_string(e.seq) + " " + (e.message_kind ? std::string(1, e.message_kind) : "?") + "  " +
             one_line(e.text);
      if (e.text_bytes > e.text.size()) out += " ... (" + std::to_string(e.text_bytes) + " bytes)";
      if (!e.classification.empty()) out += "  [" + one_line(e.classification) + "]";
      if (!e.prompt_id.empty()) out += "  prompt " + one_line(e.prompt_id);
      out += "\n";
      break;
    case event_type::decision:
      out += at + "#" + std::to_string(e.seq) + " " + one_line(e.action);
      if (!e.rule_id.empty()) out += "  rule " + one_line(e.rule_id);
      if (!e.approver.empty()) out += "  by " + one_line(e.approver);
      if (!e.reason.empty()) out += "  \"" + one_line(e.reason) + "\"";
      out += "\n";
      break;
    case event_type::result:
      out += at + "#" + std::to_string(e.seq) + " ";
      out += e.error.empty() ? one_line(e.command_tag) : "ERROR " + one_line(e.error);
      out += "  (" + seconds(e.duration_us) + " s)";
      if (!e.masked.empty()) out += "  masked: " + masked_list(e);
      out += "\n";
      if (!e.columns.empty() || !e.rows.empty()) render_table(out, e, "    ", "\n");
      break;
    case event_type::session_end:
      out += at + "session end: " + one_line(e.reason) + ", " + std::to_string(e.commands) + " commands, " +
             std::to_string(e.bytes_from_client) + " bytes from client, " + std::to_string(e.bytes_to_client) +
             " to client\n";
      break;
    case event_type::file_header:
      break;
  }
}

// Terminal-safe, keeping the line breaks of multi-line SQL as eol.
std::string multiline_safe(std::string_view s, std::string_view eol) {
  std::string out;
  while (true) {
    const size_t nl = s.find('\n');
    std::string_view line = s.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out += terminal_safe(line);
    if (nl == std::string_view::npos) break;
    out.append(eol);
    s.remove_prefix(nl + 1);
  }
  return out;
}

// asciicast v2 "o" events carry terminal output; lines end in \r\n.
void cast_output(std::string& out, int64_t rel_us, std::string_view text) {
  if (text.empty()) return;
  char buf[48];
  snprintf(buf, sizeof buf, "[%.6f, \"o\", ", static_cast<double>(std::max<int64_t>(rel_us, 0)) / 1e6);
  out += buf;
  append_json_string(out, text);
  out += "]\n";
}

void cast_event(std::string& out, const event& e, int64_t start_us, std::string& prompt) {
  std::string text;
  switch (e.type) {
    case event_type::session_start:
      prompt = (e.database.empty() ? std::string("agentgate") : terminal_safe(e.database)) + "=> ";
      text = "-- agentgate session " + e.id.hex() + ": " + terminal_safe(e.subject) +
             (e.email.empty() ? "" : " <" + terminal_safe(e.email) + ">") + " on " + terminal_safe(e.target) +
             " at " + iso_time(e.unix_us) + "\r\n";
      break;
    case event_type::command:
      text = prompt + multiline_safe(e.text, "\r\n") + (e.text.ends_with(";") ? "" : ";") + "\r\n";
      break;
    case event_type::decision:
      if (e.action == "allow") break;
      text = "-- " + terminal_safe(e.action);
      if (!e.rule_id.empty()) text += " (rule " + terminal_safe(e.rule_id) + ")";
      if (!e.approver.empty()) text += " by " + terminal_safe(e.approver);
      if (!e.reason.empty()) text += ": " + terminal_safe(e.reason);
      text += "\r\n";
      break;
    case event_type::result:
      if (!e.error.empty()) {
        text = "ERROR:  " + terminal_safe(e.error) + "\r\n";
      } else if (!e.columns.empty() || !e.rows.empty()) {
        render_table(text, e, "", "\r\n");
      } else {
        text = terminal_safe(e.command_tag) + "\r\n";
      }
      if (!e.masked.empty()) text += "-- masked: " + masked_list(e) + "\r\n";
      text += "\r\n";
      break;
    case event_type::session_end:
      text = "-- session ended: " + terminal_safe(e.reason) + "\r\n";
      break;
    case event_type::file_header:
      break;
  }
  cast_output(out, e.unix_us - start_us, text);
}

}  // namespace

result<std::vector<session_summary>> list_sessions(const std::string& dir, size_t sessions_max) {
  struct id_hash {
    size_t operator()(const session_id& id) const { return static_cast<size_t>(id.hi ^ (id.lo * 0x9e3779b97f4a7c15ull)); }
  };
  std::unordered_map<session_id, session_summary, id_hash> by_id;
  event e;
  status s = scan_dir(dir, [&](const segment_ref& seg, const log_record& rec) {
    event_type type;
    session_id id;
    if (!peek_event(rec.payload, type, id)) return true;
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      // Bounded: past the bound, new sessions are not indexed.
      if (by_id.size() >= std::max<size_t>(sessions_max, 1) * 2) return true;
      it = by_id.emplace(id, session_summary{}).first;
      it->second.id = id;
      it->second.shard = seg.shard;
    }
    session_summary& sum = it->second;
    sum.recorded_bytes += rec.payload.size();
    // Results are the bulk of a recording and say nothing the index needs.
    if (type == event_type::result) return true;
    if (!decode_event(rec.payload, e)) return true;
    sum.last_unix_us = std::max(sum.last_unix_us, e.unix_us);
    switch (type) {
      case event_type::session_start:
        sum.start_unix_us = e.unix_us;
        sum.protocol = e.protocol;
        sum.target = e.target;
        sum.subject = e.subject;
        sum.email = e.email;
        sum.client_address = e.client_address;
        sum.database = e.database;
        sum.user = e.user;
        break;
      case event_type::command:
        ++sum.commands;
        break;
      case event_type::session_end:
        sum.ended = true;
        sum.end_reason = e.reason;
        sum.bytes_from_client = e.bytes_from_client;
        sum.bytes_to_client = e.bytes_to_client;
        break;
      default:
        break;
    }
    return true;
  });
  if (!s) return s;
  std::vector<session_summary> out;
  out.reserve(by_id.size());
  for (auto& [id, sum] : by_id) {
    if (sum.start_unix_us == 0) sum.start_unix_us = sum.last_unix_us;
    out.push_back(std::move(sum));
  }
  std::sort(out.begin(), out.end(), [](const session_summary& a, const session_summary& b) {
    return a.start_unix_us != b.start_unix_us ? a.start_unix_us < b.start_unix_us : a.id.hex() < b.id.hex();
  });
  if (out.size() > sessions_max) out.erase(out.begin(), out.end() - static_cast<ptrdiff_t>(sessions_max));
  return out;
}

std::string session_summary_json(const session_summary& s) {
  std::string out = "{\"id\":\"" + s.id.hex() + "\"";
  json_number(out, "shard", s.shard);
  json_field(out, "protocol", s.protocol);
  json_field(out, "target", s.target);
  json_field(out, "subject", s.subject);
  json_field(out, "email", s.email);
  json_field(out, "client_address", s.client_address);
  json_field(out, "database", s.database);
  json_field(out, "user", s.user);
  json_field(out, "start", iso_time(s.start_unix_us));
  json_number(out, "start_unix_us", s.start_unix_us);
  json_number(out, "duration_us", s.last_unix_us - s.start_unix_us);
  out += ",\"ended\":";
  out += s.ended ? "true" : "false";
  json_field(out, "end_reason", s.end_reason);
  json_number(out, "commands", static_cast<int64_t>(s.commands));
  json_number(out, "bytes_from_client", static_cast<int64_t>(s.bytes_from_client));
  json_number(out, "bytes_to_client", static_cast<int64_t>(s.bytes_to_client));
  json_number(out, "recorded_bytes", static_cast<int64_t>(s.recorded_bytes));
  out += '}';
  return out;
}

std::string sessions_json(const std::vector<session_summary>& sessions) {
  std::string out = "{\"sessions\":[";
  for (size_t i = 0; i < sessions.size(); ++i) {
    if (i > 0) out += ',';
    out += session_summary_json(sessions[i]);
  }
  out += "]}";
  return out;
}

status for_each_event(const std::string& dir, const session_id& id, const std::function<bool(const event&)>& f) {
  event e;
  return scan_dir(dir, [&](const segment_ref&, const log_record& rec) {
    event_type type;
    session_id sid;
    if (!peek_event(rec.payload, type, sid) || !(sid == id)) return true;
    if (!decode_event(rec.payload, e)) return true;
    return f(e);
  });
}

std::string event_json(const event& e) {
  std::string out = "{\"type\":";
  append_json_string(out, event_type_name(e.type));
  out += ",\"session\":\"" + e.id.hex() + "\"";
  json_number(out, "ts_us", e.unix_us);
  json_field(out, "time", iso_time(e.unix_us));
  switch (e.type) {
    case event_type::session_start:
      json_number(out, "shard", e.shard);
      json_field(out, "protocol", e.protocol);
      json_field(out, "target", e.target);
      json_field(out, "subject", e.subject);
      json_field(out, "email", e.email);
      json_strings(out, "groups", e.groups);
      json_field(out, "client_address", e.client_address);
      json_field(out, "tls", e.tls);
      json_field(out, "database", e.database);
      json_field(out, "user", e.user);
      json_field(out, "prompt_id", e.prompt_id);
      json_field(out, "prompt_text", e.prompt_text);
      json_field(out, "traceparent", e.traceparent);
      break;
    case event_type::command:
      json_number(out, "seq", static_cast<int64_t>(e.seq));
      json_field(out, "kind", std::string_view(&e.message_kind, e.message_kind ? 1 : 0));
      json_field(out, "text", e.text);
      json_number(out, "text_bytes", static_cast<int64_t>(e.text_bytes));
      json_field(out, "classification", e.classification);
      json_field(out, "prompt_id", e.prompt_id);
      json_field(out, "prompt_text", e.prompt_text);
      json_field(out, "traceparent", e.traceparent);
      break;
    case event_type::decision:
      json_number(out, "seq", static_cast<int64_t>(e.seq));
      json_field(out, "action", e.action);
      json_field(out, "rule_id", e.rule_id);
      json_field(out, "approver", e.approver);
      json_field(out, "reason", e.reason);
      break;
    case event_type::result: {
      json_number(out, "seq", static_cast<int64_t>(e.seq));
      json_strings(out, "columns", e.columns);
      out += ",\"rows\":[";
      bool first_row = true;
      const bool ok = for_each_row(e.rows, columns_max, [&](const std::vector<row_field>& fields) {
        out += first_row ? "[" : ",[";
        first_row = false;
        for (size_t i = 0; i < fields.size(); ++i) {
          if (i > 0) out += ',';
          if (fields[i].is_null) out += "null";
          else append_json_string(out, fields[i].value);
        }
        out += ']';
        return true;
      });
      out += ']';
      if (!ok) out += ",\"rows_undecodable\":true";
      json_number(out, "rows_total", static_cast<int64_t>(e.rows_total));
      out += ",\"rows_truncated\":";
      out += e.rows_truncated ? "true" : "false";
      json_number(out, "duration_us", e.duration_us);
      json_field(out, "command_tag", e.command_tag);
      json_field(out, "error", e.error);
      out += ",\"masked\":{";
      for (size_t i = 0; i < e.masked.size(); ++i) {
        if (i > 0) out += ',';
        append_json_string(out, e.masked[i].first);
        out += ':';
        append_u64(out, e.masked[i].second);
      }
      out += '}';
      break;
    }
    case event_type::session_end:
      json_field(out, "reason", e.reason);
      json_number(out, "commands", static_cast<int64_t>(e.commands));
      json_number(out, "bytes_from_client", static_cast<int64_t>(e.bytes_from_client));
      json_number(out, "bytes_to_client", static_cast<int64_t>(e.bytes_to_client));
      break;
    case event_type::file_header:
      break;
  }
  out += '}';
  return out;
}

result<std::string> session_events_jsonl(const std::string& dir, const session_id& id, size_t bytes_max) {
  return session_transcript(dir, id, transcript_format::jsonl, bytes_max);
}

result<std::string> session_transcript(const std::string& dir, const session_id& id, transcript_format format,
                                       size_t bytes_max) {
  std::string body;
  std::string header;  // asciicast: written once the start is known
  bool found = false, too_big = false;
  int64_t start_us = 0;
  std::string prompt = "agentgate=> ";
  status s = for_each_event(dir, id, [&](const event& e) {
    if (!found) {
      found = true;
      start_us = e.unix_us;
      if (format == transcript_format::asciicast) {
        header = "{\"version\":2,\"width\":" + std::to_string(asciicast_width) +
                 ",\"height\":" + std::to_string(asciicast_height) + ",\"timestamp\":" +
                 std::to_string(e.unix_us / 1000000) + ",\"title\":";
        append_json_string(header, "agentgate session " + id.hex() +
                                (e.type == event_type::session_start ? " " + e.subject + " on " + e.target : ""));
        header += ",\"env\":{\"TERM\":\"xterm-256color\",\"SHELL\":\"psql\"}}\n";
      }
    }
    switch (format) {
      case transcript_format::text: text_event(body, e, start_us); break;
      case transcript_format::jsonl: body += event_json(e) + "\n"; break;
      case transcript_format::asciicast: cast_event(body, e, start_us, prompt); break;
    }
    if (body.size() > bytes_max) {
      too_big = true;
      return false;
    }
    return true;
  });
  if (!s) return s;
  if (!found) return status(errc::invalid_argument, "no recorded session " + id.hex());
  if (too_big) return status(errc::limit, "session " + id.hex() + " is larger than " + std::to_string(bytes_max) + " bytes");
  return header + body;
}

result<std::vector<segment_status>> verify_dir(const std::string& dir) {
  std::unique_ptr<file_ops> ops = make_posix_file_ops();
  result<std::vector<segment_ref>> segments = find_segments(*ops, dir);
  if (!segments) return segments.error();
  std::vector<segment_status> out;
  for (const segment_ref& seg : *segments) {
    segment_status st;
    st.path = seg.path;
    st.shard = seg.shard;
    st.base = seg.base;
    result<std::unique_ptr<segment_file>> file = ops->open(seg.path, open_mode::read_only);
    if (!file) {
      st.problem = file.error().message();
      out.push_back(std::move(st));
      continue;
    }
    log_reader reader(**file, [&](const damage& d) { st.damages.push_back(d); });
    log_record rec;
    bool first = true;
    while (reader.next(rec)) {
      if (!first) continue;
      first = false;
      file_header h;
      if (rec.offset != 0 || !decode_file_header(rec.payload, h)) {
        st.problem = "no file header";
      } else if (h.base_offset != seg.base || h.shard != seg.shard) {
        st.problem = "file header names shard " + std::to_string(h.shard) + " base " + std::to_string(h.base_offset);
      } else if (h.version != format_version) {
        st.problem = "format version " + std::to_string(h.version);
      }
    }
    if (!reader.io_error().is_ok()) st.problem = reader.io_error().message();
    st.bytes = reader.file_bytes();
    st.records = reader.records();
    st.torn_bytes = reader.torn_bytes();
    st.corrupt_bytes = reader.corrupt_bytes();
    out.push_back(std::move(st));
  }
  return out;
}

}  // namespace agentgate::recording
