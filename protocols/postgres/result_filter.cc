#include "protocols/postgres/result_filter.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace agentgate::pg {
namespace {

constexpr uint32_t null_length = 0xffffffffu;

void put_u32_at(std::string& s, size_t at, uint32_t v) {
  s[at] = static_cast<char>(v >> 24);
  s[at + 1] = static_cast<char>(v >> 16);
  s[at + 2] = static_cast<char>(v >> 8);
  s[at + 3] = static_cast<char>(v);
}

void append_raw(std::string& out, const uint8_t* p, size_t n) {
  out.append(reinterpret_cast<const char*>(p), n);
}

// Error and notice fields that can carry data: everything but severity,
// SQLSTATE, positions and the server's source location.
bool is_text_field(uint8_t code) {
  switch (code) {
    case 'S': case 'V': case 'C': case 'P': case 'p': case 'F': case 'L': case 'R':
      return false;
    default:
      return true;
  }
}

// PostgreSQL keys prepared statements and portals by their first
// NAMEDATALEN-1 bytes (a hash of HASH_STRINGS keys): longer names that share
// them are one object there, so they must be one here.
constexpr size_t name_bytes_max = 63;

std::string name_of(body_reader& in) {
  std::string_view s;
  if (!in.cstr(&s)) return {};
  return std::string(s.substr(0, name_bytes_max));
}

}  // namespace

std::string catalog_key(std::span<const std::string> tables) {
  std::string key;
  for (const std::string& t : tables) {
    key += t;
    key += '\n';
  }
  return key;
}

namespace {

std::string sql_literal(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  out += '\'';
  return out;
}

}  // namespace

std::string catalog_query(std::span<const std::string> tables) {
  if (tables.empty()) return {};
  std::string where;
  for (const std::string& t : tables) {
    if (!where.empty()) where += " OR ";
    const size_t dot = t.rfind('.');
    if (dot == std::string::npos) {
      where += "c.relname = " + sql_literal(t);
    } else {
      where += "(n.nspname = " + sql_literal(t.substr(0, dot)) + " AND c.relname = " + sql_literal(t.substr(dot + 1)) + ")";
    }
  }
  return "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname FROM pg_catalog.pg_class c "
         "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
         "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid "
         "WHERE a.attnum > 0 AND NOT a.attisdropped AND (" + where + ") LIMIT " +
         std::to_string(table_catalog::entries_max);
}

bool table_catalog::add_row(bytes body) {
  body_reader in(body);
  uint16_t n = 0;
  if (!in.u16(&n) || n != 5) return false;
  std::string_view v[5];
  for (auto& field : v) {
    uint32_t len = 0;
    if (!in.u32(&len) || len == 0xffffffffu) return false;
    const bytes b = in.rest();
    if (!in.skip(len)) return false;
    field = std::string_view(reinterpret_cast<const char*>(b.data()), len);
  }
  const unsigned long oid = std::strtoul(std::string(v[0]).c_str(), nullptr, 10);
  const long attnum = std::strtol(std::string(v[3]).c_str(), nullptr, 10);
  if (oid == 0 || oid > 0xffffffffUL || attnum <= 0 || attnum > 32767) return false;
  if (columns.size() >= entries_max) return true;
  entry e;
  e.table = std::string(v[1]) + "." + std::string(v[2]);
  e.column = v[4];
  columns[(uint64_t{oid} << 16) | static_cast<uint16_t>(attnum)] = std::move(e);
  return true;
}

bool parse_row_description(bytes body, std::vector<row_column>& out) {
  out.clear();
  body_reader in(body);
  uint16_t n = 0;
  if (!in.u16(&n)) return false;
  out.reserve(n);
  for (uint16_t i = 0; i < n; ++i) {
    row_column c;
    std::string_view name;
    uint32_t table = 0, type = 0, typmod = 0;
    uint16_t attnum = 0, typlen = 0, format = 0;
    if (!in.cstr(&name) || !in.u32(&table) || !in.u16(&attnum) || !in.u32(&type) || !in.u16(&typlen) ||
        !in.u32(&typmod) || !in.u16(&format))
      return false;
    c.name = name;
    c.table_oid = table;
    c.attnum = static_cast<int16_t>(attnum);
    c.type_oid = type;
    c.format = static_cast<int16_t>(format);
    out.push_back(std::move(c));
  }
  return in.done();
}

template <typename Map, typename Value>
void result_filter::remember(Map& map, const std::string& key, Value&& value) {
  // A client that prepares without end would grow this without end; the
  // oldest-looking entry goes. Forgetting is safe: rows of a forgotten
  // statement are masked as text, or refused when binary.
  if (map.size() >= described_entries_max && map.find(key) == map.end()) map.erase(map.begin());
  map[key] = std::forward<Value>(value);
}

namespace {

size_t bytes_of(const std::vector<row_column>& columns) {
  size_t n = columns.capacity() * sizeof(row_column);
  for (const row_column& c : columns) n += c.name.capacity();
  return n;
}

}  // namespace

// Remembered descriptions are bounded in bytes as well as in count: past
// the bound every one is forgotten, which is always safe (an Execute whose
// portal has no trusted description gets one injected).
void result_filter::account(const std::vector<row_column>& columns) {
  described_bytes_ += bytes_of(columns);
  if (described_bytes_ <= described_bytes_max) return;
  size_t total = 0;
  for (const auto& [name, st] : statements_) total += bytes_of(st->columns);
  for (const auto& [name, p] : portals_) total += bytes_of(p->described);
  described_bytes_ = total;
  if (total > described_bytes_max / 2) forget_all_descriptions();
}

void result_filter::forget_all_descriptions() {
  for (auto& [name, st] : statements_) {
    std::vector<row_column>().swap(st->columns);
    st->described = false;
  }
  for (auto& [name, p] : portals_) {
    std::vector<row_column>().swap(p->described);
    p->has_description = false;
  }
  described_bytes_ = 0;
}

bool result_filter::on_frontend(char type, bytes body, uint64_t seq) {
  inject_.clear();
  // Every message that can run code ends the epoch it went up in.
  struct epoch_end {
    uint64_t& epoch;
    bool runs;
    ~epoch_end() {
      if (runs) ++epoch;
    }
  } end_of{epoch_, type == 'Q' || type == 'P' || type == 'B' || type == 'E' || type == 'F'};
  body_reader in(body);
  auto push = [&](outstanding o) {
    // Counted as messages go upstream: a server skipping to a Sync after an
    // error answers none of them, so on_backend alone would never see the
    // queue grow.
    if (outstanding_.size() >= outstanding_messages_max) {
      overflowed_ = true;
      return false;
    }
    outstanding_.push_back(std::move(o));
    return true;
  };
  auto message = [](kind k, uint64_t s = 0, std::shared_ptr<statement> st = nullptr,
                    std::shared_ptr<portal> p = nullptr) {
    outstanding o;
    o.what = k;
    o.seq = s;
    o.stmt = std::move(st);
    o.port = std::move(p);
    return o;
  };
  auto find_statement = [&](const std::string& name) -> std::shared_ptr<statement> {
    const auto it = statements_.find(name);
    return it == statements_.end() ? nullptr : it->second;
  };
  auto find_portal = [&](const std::string& name) -> std::shared_ptr<portal> {
    const auto it = portals_.find(name);
    return it == portals_.end() ? nullptr : it->second;
  };
  switch (type) {
    case 'Q':
      statements_.erase(std::string());
      portals_.erase(std::string());
      return push(message(kind::query, seq));
    case 'P': {
      std::string name = name_of(in);
      auto st = std::make_shared<statement>();
      st->seq = seq;
      remember(statements_, name, std::move(st));
      return push(message(kind::parse, seq));
    }
    case 'B': {
      auto p = std::make_shared<portal>();
      std::string name = name_of(in);
      p->stmt = find_statement(name_of(in));
      // The session records each Bind as a command of its own (with its
      // parameters) and numbers it `seq`; without one, the statement's.
      p->seq = seq != 0 ? seq : (p->stmt != nullptr ? p->stmt->seq : 0);
      p->bind_epoch = epoch_;
      uint16_t formats = 0, params = 0, results = 0;
      in.u16(&formats);
      in.skip(size_t{formats} * 2);
      in.u16(&params);
      for (uint16_t i = 0; i < params; ++i) {
        uint32_t len = 0;
        in.u32(&len);
        if (len != null_length) in.skip(len);
      }
      in.u16(&results);
      for (uint16_t i = 0; i < results; ++i) {
        uint16_t f = 0;
        if (!in.u16(&f)) break;
        p->formats.push_back(static_cast<int16_t>(f));
      }
      const uint64_t portal_seq = p->seq;
      remember(portals_, name, std::move(p));
      return push(message(kind::bind, portal_seq));
    }
    case 'D': {
      uint8_t what = 0;
      in.u8(&what);
      const std::string name = name_of(in);
      if (what == 'S') {
        std::shared_ptr<statement> st = find_statement(name);
        if (st != nullptr) st->describe_epoch = epoch_;
        return push(message(kind::describe_statement, 0, std::move(st)));
      }
      std::shared_ptr<portal> p = find_portal(name);
      if (p != nullptr) p->describe_epoch = epoch_;
      return push(message(kind::describe_portal, 0, nullptr, std::move(p)));
    }
    case 'E': {
      std::string_view raw_name;
      in.cstr(&raw_name);
      const std::string name(raw_name.substr(0, name_bytes_max));
      std::shared_ptr<portal> p = find_portal(name);
      const bool portal_described = p != nullptr && p->describe_epoch == epoch_;
      const bool statement_described = p != nullptr && p->stmt != nullptr && p->stmt->describe_epoch != no_epoch &&
                                       p->stmt->describe_epoch == p->bind_epoch && p->bind_epoch + 1 == epoch_;
      if (active() && !portal_described && !statement_described) {
        // A portal the filter did not bind (a SQL cursor), or one anything
        // could have replaced since it was described: ask the server.
        if (p == nullptr) {
          p = std::make_shared<portal>();
          remember(portals_, name, p);
        }
        p->describe_epoch = epoch_;
        outstanding d = message(kind::describe_portal, 0, nullptr, p);
        d.injected = true;
        if (!push(std::move(d))) return false;
        std::string body_out;
        body_out.push_back('P');
        body_out.append(raw_name);
        body_out.push_back('\0');
        append_frame(inject_, 'D', body_out);
      }
      const uint64_t portal_seq = p == nullptr ? 0 : p->seq;
      outstanding x = message(kind::execute, portal_seq, nullptr, std::move(p));
      x.epoch = epoch_;
      return push(std::move(x));
    }
    case 'C': {
      uint8_t what = 0;
      in.u8(&what);
      const std::string name = name_of(in);
      if (what == 'S') statements_.erase(name);
      else portals_.erase(name);
      return push(message(kind::close));
    }
    case 'S':
      return push(message(kind::sync));
    case 'F': {
      // Function OID, argument formats, arguments, then the result's format.
      uint32_t oid = 0;
      uint16_t formats = 0, args = 0, result_format = 0;
      in.u32(&oid);
      in.u16(&formats);
      in.skip(size_t{formats} * 2);
      in.u16(&args);
      for (uint16_t i = 0; i < args; ++i) {
        uint32_t len = 0;
        in.u32(&len);
        if (len != null_length) in.skip(len);
      }
      const bool known = in.u16(&result_format);
      outstanding o = message(kind::function, seq);
      o.binary = !known || result_format != 0;
      return push(std::move(o));
    }
    default:
      return true;  // Flush, CopyData/Done/Fail, Terminate: no response of their own
  }
}

void result_filter::pop_outstanding() {
  if (outstanding_.front().forgets) forget_at_ready_ = true;
  outstanding_.pop_front();
}

void result_filter::forget_after_last() {
  if (!outstanding_.empty()) outstanding_.back().forgets = true;
}

void result_filter::forget_statement_descriptions() {
  for (auto& [name, st] : statements_) {
    st->columns.clear();
    st->described = false;
  }
}

result_filter::action result_filter::refuse(std::string why) {
  failure_ = std::move(why);
  return action::fail;
}

void result_filter::start_result(const std::vector<row_column>& columns) {
  masker_ = next_masker_;
  in_result_ = true;
  text_only_ = false;
  columns_ = columns;
  plans_.clear();
  if (masker_ == nullptr || !masker_->active()) return;
  plans_.reserve(columns_.size());
  for (const row_column& c : columns_) {
    result_column rc;
    rc.name = c.name;
    rc.type_oid = c.type_oid;
    rc.binary = c.format == 1;
    if (catalog_ != nullptr)
      if (const table_catalog::entry* e = catalog_->find(c.table_oid, c.attnum)) {
        rc.table = e->table;
        rc.column = e->column;
      }
    plans_.push_back(masker_->plan(rc));
  }
}

// The first DataRow of an Execute: its portal's description, in the
// formats its Bind asked for.
bool result_filter::start_execute_result(const portal* p, uint64_t epoch) {
  if (p != nullptr && p->has_description && p->describe_epoch == epoch) {
    start_result(p->described);
    return true;
  }
  if (p != nullptr && p->stmt != nullptr && p->stmt->described && p->stmt->describe_epoch == p->bind_epoch &&
      p->bind_epoch + 1 == epoch) {
    std::vector<row_column> columns = p->stmt->columns;
    const std::vector<int16_t>& f = p->formats;
    for (size_t i = 0; i < columns.size(); ++i)
      columns[i].format = f.empty() ? 0 : (f.size() == 1 ? f[0] : (i < f.size() ? f[i] : 0));
    start_result(columns);
    return true;
  }
  // Nobody described these rows to us (masking was off when the Execute
  // went up): text values can still be scanned as text; binary ones, or
  // rows of a portal the filter never bound (a BINARY cursor's), cannot.
  if (next_masker_ != nullptr && next_masker_->active()) {
    if (p == nullptr || p->stmt == nullptr) return false;
    for (int16_t f : p->formats)
      if (f != 0) return false;
  }
  start_result({});
  text_only_ = true;
  return true;
}

void result_filter::end_result() {
  if (in_result_) last_columns_.swap(columns_);
  else last_columns_.clear();
  columns_.clear();
  in_result_ = false;
  text_only_ = false;
  masker_.reset();
}

// After an error in an extended batch the server skips every message up to
// the Sync, a Query or FunctionCall among them too.
void result_filter::pop_until_sync() {
  while (!outstanding_.empty() && outstanding_.front().what != kind::sync) pop_outstanding();
}

result_filter::action result_filter::on_backend(const frame_header& header, bytes frame, std::string& out) {
  if (overflowed_) return refuse("too many client messages waiting for their responses");
  const bytes body = frame.subspan(header_bytes);
  const kind front = outstanding_.empty() ? kind::sync : outstanding_.front().what;
  const uint64_t front_seq = outstanding_.empty() ? 0 : outstanding_.front().seq;
  ended_seq_ = 0;
  auto pop_if = [&](std::initializer_list<kind> kinds) {
    if (outstanding_.empty()) return;
    for (kind k : kinds)
      if (outstanding_.front().what == k) {
        pop_outstanding();
        return;
      }
  };
  switch (header.type) {
    case '1':
      pop_if({kind::parse});
      return action::pass;
    case '2':
      pop_if({kind::bind});
      return action::pass;
    case '3':
      pop_if({kind::close});
      return action::pass;
    case 'T': {
      std::vector<row_column> columns;
      if (!parse_row_description(body, columns)) return refuse("malformed RowDescription from the server");
      if (front == kind::describe_statement) {
        for (row_column& c : columns) c.format = 0;  // Bind decides the formats later
        if (statement* st = outstanding_.front().stmt.get()) {
          st->columns = std::move(columns);
          st->described = true;
          account(st->columns);
        }
        pop_outstanding();
      } else if (front == kind::describe_portal) {
        const bool injected = outstanding_.front().injected;
        if (portal* p = outstanding_.front().port.get()) {
          p->described = std::move(columns);
          p->has_description = true;
          account(p->described);
        }
        pop_outstanding();
        if (injected) return action::drop;
      } else {
        start_result(columns);  // a simple Query's result
      }
      return action::pass;
    }
    case 'n': {
      const bool injected = !outstanding_.empty() && outstanding_.front().injected;
      if (portal* p = injected ? outstanding_.front().port.get() : nullptr) {
        p->described.clear();
        p->has_description = true;
      }
      pop_if({kind::describe_statement, kind::describe_portal});
      return injected ? action::drop : action::pass;
    }
    case 'D': {
      const action a = begin_row();
      if (a != action::rewritten) return a;
      return mask_row(frame, out);
    }
    case 'C':
    case 'I':
    case 's':
      end_result();
      ended_seq_ = front_seq;
      if (front == kind::execute) pop_outstanding();
      return action::pass;
    case 'E': {
      end_result();
      ended_seq_ = front_seq;
      copy_out_ = false;
      if (front != kind::query && front != kind::function) pop_until_sync();
      if (next_masker_ == nullptr || !next_masker_->active()) return action::pass;
      masker_ = next_masker_;
      const action a = mask_fields(header, frame, out);
      masker_.reset();
      return a;
    }
    case 'N': {
      if (next_masker_ == nullptr || !next_masker_->active()) return action::pass;
      std::shared_ptr<data_masker> keep = masker_;
      masker_ = next_masker_;
      const action a = mask_fields(header, frame, out);
      masker_ = std::move(keep);
      return a;
    }
    case 'A':
      if (next_masker_ == nullptr || !next_masker_->active()) return action::pass;
      return mask_notification(frame, out);
    case 'S':
      if (next_masker_ == nullptr || !next_masker_->active()) return action::pass;
      return mask_parameter_status(frame, out);
    case 'V':
      if (next_masker_ == nullptr || !next_masker_->active()) return action::pass;
      return mask_function_result(frame, front == kind::function && outstanding_.front().binary, out);
    case 'Z':
      end_result();
      copy_out_ = false;
      // Outside a transaction block the server has no portal left (they
      // are dropped at transaction end; WITH HOLD cursors are SQL's and
      // never described here).
      if (body.size() == 1 && body[0] == 'I') portals_.clear();
      while (!outstanding_.empty()) {
        const kind k = outstanding_.front().what;
        pop_outstanding();
        if (k == kind::sync || k == kind::query || k == kind::function) break;
      }
      if (forget_at_ready_) {
        // The command that may have replaced prepared statements has run;
        // descriptions that arrived before now may be stale.
        forget_statement_descriptions();
        forget_at_ready_ = false;
      }
      return action::pass;
    case 'H':
    case 'W': {
      masker_ = next_masker_;
      copy_out_ = true;
      columns_.clear();
      if (masker_ == nullptr || !masker_->active()) return action::pass;
      if (header.type == 'W') return refuse("a COPY BOTH (replication) stream cannot be masked");
      uint8_t format = 0;
      body_reader in(body);
      if (!in.u8(&format) || format != 0)
        return refuse("binary COPY output cannot be masked; use COPY ... TO STDOUT in text or CSV format");
      return action::pass;
    }
    case 'd':
      if (!begin_copy_row()) return action::pass;
      return mask_copy_row(frame, out);
    case 'c':
      copy_out_ = false;
      return action::pass;
    default:
      return action::pass;
  }
}

// The result a DataRow belongs to. pass: it is not masked; rewritten: mask it.
result_filter::action result_filter::begin_row() {
  const bool execute = !outstanding_.empty() && outstanding_.front().what == kind::execute;
  if (!in_result_ && execute &&
      !start_execute_result(outstanding_.front().port.get(), outstanding_.front().epoch))
    return refuse("cannot mask binary-format rows whose columns were never described to the gateway");
  if (!in_result_) {
    start_result({});
    text_only_ = true;
  }
  if (masker_ == nullptr || !masker_->active()) return action::pass;
  // Column rules go by column name and table: rows nobody described cannot
  // be checked against them (every driver describes what it executes).
  if (text_only_ && masker_->has_column_rules())
    return refuse("the policy has column rules and these rows' columns were never described to the gateway; "
                  "send Describe before Execute");
  return action::rewritten;
}

// False: a CopyData that is not masked.
bool result_filter::begin_copy_row() {
  if (masker_ == nullptr || !masker_->active()) {
    if (next_masker_ == nullptr || !next_masker_->active()) return false;
    masker_ = next_masker_;
  }
  return true;
}

result_filter::action result_filter::on_backend_piece(const frame_header& header, bytes piece, bool first, bool last,
                                                      std::string& out) {
  ended_seq_ = 0;
  const size_t mark = out.size();
  if (first) {
    piece_ = piece_state{};
    if (overflowed_)
      return refuse("too many client messages waiting for their responses");
    if (piece.size() < header_bytes) return refuse("a streamed frame's first piece lacks its header");
    if (header.type == 'D') {
      const action a = begin_row();
      if (a != action::rewritten) return a;
      if (text_only_) piece_.unknown = masker_->plan(result_column{});
      // A column rule that cannot keep a value's length (a date, a uuid) is
      // refused now, with an error the client can read, rather than in the
      // middle of the row, which can only cut the connection.
      for (const column_plan& plan : plans_)
        if (plan.how == column_plan::mode::forced)
          if (auto s = masker_->stream_value(plan); !s.is_ok()) return refuse(s.error().message());
    } else if (header.type == 'd') {
      if (!begin_copy_row()) return action::pass;
      auto s = masker_->stream_text();
      if (!s.is_ok()) return refuse(s.error().message());
      piece_.stream = std::move(s.value());
      piece_.copy = true;
    } else {
      return refuse(std::string("a streamed '") + header.type + "' frame cannot be masked");
    }
    piece_.active = true;
    piece_.body_left = header.body_bytes();
    piece_.frame_bytes = header.frame_bytes();
    append_raw(out, piece.data(), header_bytes);
    piece = piece.subspan(header_bytes);
  } else if (!piece_.active) {
    return action::pass;
  }
  if (piece.size() > piece_.body_left) return refuse("a streamed frame is longer than its header says");
  piece_.body_left -= piece.size();
  if (piece_.copy) {
    if (status s = piece_.stream->feed(piece, out); !s) return refuse(s.message());
  } else if (const action a = stream_row_bytes(piece, out); a == action::fail) {
    return a;
  }
  if (last) {
    if (piece_.body_left != 0) return refuse("a streamed frame ended before its length");
    if (piece_.copy) {
      if (status s = piece_.stream->finish(out); !s) return refuse(s.message());
      if (piece_.stream->rewritten()) ++values_rewritten_;
    } else if (piece_.where != piece_state::at::done) {
      return refuse("malformed DataRow from the server");
    }
  }
  piece_.out_bytes += out.size() - mark;
  if (last) {
    piece_.active = false;
    piece_.stream.reset();
    // Lengths were sent with the header: a masked frame must keep its size.
    if (piece_.out_bytes != piece_.frame_bytes) return refuse("a streamed row did not keep its length");
  }
  return action::rewritten;
}

// The body of a streamed DataRow: the field count and each length (either
// may be split across pieces) are copied, each value goes through its
// column's value_stream.
result_filter::action result_filter::stream_row_bytes(bytes in, std::string& out) {
  using at = piece_state::at;
  piece_state& st = piece_;
  while (!in.empty()) {
    switch (st.where) {
      case at::count:
      case at::length: {
        const size_t want = st.where == at::count ? 2 : 4;
        const size_t n = std::min(want - st.number_have, in.size());
        std::memcpy(st.number + st.number_have, in.data(), n);
        st.number_have += n;
        append_raw(out, in.data(), n);
        in = in.subspan(n);
        if (st.number_have < want) break;
        st.number_have = 0;
        if (st.where == at::count) {
          st.fields = read_u16(st.number);
          if (!text_only_ && st.fields != plans_.size())
            return refuse("DataRow has " + std::to_string(st.fields) + " fields but its RowDescription " +
                          std::to_string(plans_.size()));
          st.where = st.fields == 0 ? at::done : at::length;
          break;
        }
        const uint32_t len = read_u32(st.number);
        if (len == null_length) {
          st.where = ++st.field == st.fields ? at::done : at::length;
          break;
        }
        if (len > st.body_left + in.size()) return refuse("malformed DataRow from the server");
        const column_plan& plan = text_only_ ? st.unknown : plans_[st.field];
        st.stream.reset();
        if (plan.how != column_plan::mode::pass) {
          auto s = masker_->stream_value(plan);
          if (!s.is_ok()) return refuse(s.error().message());
          st.stream = std::move(s.value());
        }
        st.value_left = len;
        st.where = at::value;
        if (len == 0)
          if (const action a = end_streamed_value(out); a == action::fail) return a;
        break;
      }
      case at::value: {
        const size_t n = std::min<size_t>(st.value_left, in.size());
        if (st.stream == nullptr) {
          append_raw(out, in.data(), n);
        } else if (status s = st.stream->feed(in.first(n), out); !s) {
          return refuse(s.message());
        }
        st.value_left -= static_cast<uint32_t>(n);
        in = in.subspan(n);
        if (st.value_left == 0)
          if (const action a = end_streamed_value(out); a == action::fail) return a;
        break;
      }
      case at::done:
        return refuse("malformed DataRow from the server");
    }
  }
  return action::rewritten;
}

result_filter::action result_filter::end_streamed_value(std::string& out) {
  piece_state& st = piece_;
  if (st.stream != nullptr) {
    if (status s = st.stream->finish(out); !s) return refuse(s.message());
    if (st.stream->rewritten()) ++values_rewritten_;
    st.stream.reset();
  }
  st.where = ++st.field == st.fields ? piece_state::at::done : piece_state::at::length;
  return action::rewritten;
}

result_filter::action result_filter::mask_row(bytes frame, std::string& out) {
  const uint8_t* p = frame.data() + header_bytes;
  const uint8_t* const end = frame.data() + frame.size();
  if (end - p < 2) return refuse("malformed DataRow from the server");
  const uint16_t n = read_u16(p);
  p += 2;
  if (!text_only_ && n != plans_.size())
    return refuse("DataRow has " + std::to_string(n) + " fields but its RowDescription " +
                  std::to_string(plans_.size()));
  column_plan unknown;
  if (text_only_) {
    result_column rc;
    unknown = masker_->plan(rc);
  }
  bool rewriting = false;
  const uint8_t* copied_to = frame.data();  // bytes before this are in `out` when rewriting
  for (uint16_t i = 0; i < n; ++i) {
    if (end - p < 4) return refuse("malformed DataRow from the server");
    const uint32_t len = read_u32(p);
    const uint8_t* field = p;
    p += 4;
    if (len == null_length) continue;
    if (static_cast<size_t>(end - p) < len) return refuse("malformed DataRow from the server");
    const bytes value(p, len);
    p += len;
    const column_plan& plan = text_only_ ? unknown : plans_[i];
    if (plan.how == column_plan::mode::pass) continue;
    value_out_.clear();
    const mask_outcome outcome = masker_->mask_value(plan, value, value_out_);
    if (outcome == mask_outcome::unchanged) continue;
    ++values_rewritten_;
    if (!rewriting) {
      rewriting = true;
      out.clear();
      out.reserve(frame.size() + 64);
    }
    append_raw(out, copied_to, static_cast<size_t>(field - copied_to));
    if (outcome == mask_outcome::null) {
      append_u32(out, null_length);
    } else {
      append_u32(out, static_cast<uint32_t>(value_out_.size()));
      out += value_out_;
    }
    copied_to = p;
  }
  if (p != end) return refuse("malformed DataRow from the server");
  if (!rewriting) return action::pass;
  append_raw(out, copied_to, static_cast<size_t>(end - copied_to));
  put_u32_at(out, 1, static_cast<uint32_t>(out.size() - 1));
  return action::rewritten;
}

// ErrorResponse / NoticeResponse: a unique violation's detail carries the
// duplicate value, a check violation's the whole failing row.
result_filter::action result_filter::mask_fields(const frame_header& header, bytes frame, std::string& out) {
  body_reader in(frame.subspan(header_bytes));
  std::string body;
  bool changed = false;
  for (;;) {
    uint8_t code = 0;
    if (!in.u8(&code)) return refuse("malformed error or notice from the server");
    if (code == 0) break;
    std::string_view value;
    if (!in.cstr(&value)) return refuse("malformed error or notice from the server");
    body.push_back(static_cast<char>(code));
    value_out_.clear();
    if (is_text_field(code) &&
        masker_->mask_text({reinterpret_cast<const uint8_t*>(value.data()), value.size()}, value_out_) ==
            mask_outcome::rewritten &&
        value_out_.find('\0') == std::string::npos) {
      changed = true;
      body += value_out_;
    } else {
      body += value;
    }
    body.push_back('\0');
  }
  if (!in.done()) return refuse("malformed error or notice from the server");
  if (!changed) return action::pass;
  body.push_back('\0');
  out.clear();
  append_frame(out, header.type, body);
  return action::rewritten;
}

result_filter::action result_filter::mask_notification(bytes frame, std::string& out) {
  body_reader in(frame.subspan(header_bytes));
  uint32_t pid = 0;
  std::string_view channel, payload;
  if (!in.u32(&pid) || !in.cstr(&channel) || !in.cstr(&payload) || !in.done())
    return refuse("malformed NotificationResponse from the server");
  value_out_.clear();
  if (next_masker_->mask_text({reinterpret_cast<const uint8_t*>(payload.data()), payload.size()}, value_out_) !=
          mask_outcome::rewritten ||
      value_out_.find('\0') != std::string::npos)
    return action::pass;
  std::string body;
  append_u32(body, pid);
  append_cstr(body, channel);
  append_cstr(body, value_out_);
  out.clear();
  append_frame(out, 'A', body);
  return action::rewritten;
}

// ParameterStatus: a setting a query can set from data
// (set_config('application_name', ...)) is echoed here.
result_filter::action result_filter::mask_parameter_status(bytes frame, std::string& out) {
  body_reader in(frame.subspan(header_bytes));
  std::string_view name, value;
  if (!in.cstr(&name) || !in.cstr(&value) || !in.done()) return refuse("malformed ParameterStatus from the server");
  value_out_.clear();
  if (next_masker_->mask_text({reinterpret_cast<const uint8_t*>(value.data()), value.size()}, value_out_) !=
      mask_outcome::rewritten)
    return action::pass;
  if (value_out_.find('\0') != std::string::npos) return refuse("a masked ParameterStatus value holds a NUL");
  ++values_rewritten_;
  std::string body;
  append_cstr(body, name);
  append_cstr(body, value_out_);
  out.clear();
  append_frame(out, 'S', body);
  return action::rewritten;
}

// FunctionCallResponse: the function's result, in the format the
// FunctionCall asked for; a binary one cannot be scanned (fail closed).
result_filter::action result_filter::mask_function_result(bytes frame, bool binary, std::string& out) {
  body_reader in(frame.subspan(header_bytes));
  uint32_t len = 0;
  if (!in.u32(&len)) return refuse("malformed FunctionCallResponse from the server");
  if (len == null_length) return in.done() ? action::pass : refuse("malformed FunctionCallResponse from the server");
  const bytes value = in.rest();
  if (value.size() != len) return refuse("malformed FunctionCallResponse from the server");
  if (binary) return refuse("a binary function call result cannot be masked");
  value_out_.clear();
  if (next_masker_->mask_text(value, value_out_) != mask_outcome::rewritten) return action::pass;
  ++values_rewritten_;
  std::string body;
  append_u32(body, static_cast<uint32_t>(value_out_.size()));
  body += value_out_;
  out.clear();
  append_frame(out, 'V', body);
  return action::rewritten;
}

// One COPY TO STDOUT row (the server sends one per CopyData in text and CSV).
result_filter::action result_filter::mask_copy_row(bytes frame, std::string& out) {
  const bytes row = frame.subspan(header_bytes);
  value_out_.clear();
  if (masker_->mask_text(row, value_out_) != mask_outcome::rewritten) return action::pass;
  ++values_rewritten_;
  out.clear();
  append_frame(out, 'd', value_out_);
  return action::rewritten;
}

}  // namespace agentgate::pg
