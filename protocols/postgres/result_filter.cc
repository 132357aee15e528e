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

std::string catalog_query() {
  // OPERATOR(pg_catalog.x) and pg_catalog types throughout: the session's
  // search_path is the client's (a startup parameter or SET) and an
  // operator or type found through it could be the client's own.
  return "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, c.reltype, t.typarray "
         "FROM pg_catalog.pg_class c "
         "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
         "JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid "
         "JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) c.reltype "
         "WHERE a.attnum OPERATOR(pg_catalog.>) 0::pg_catalog.int2 AND NOT a.attisdropped "
         "AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,v,m,f,p,c}'::pg_catalog.\"char\"[]) "
         // A deterministic cut when there are more (the sort uses each type's
         // default btree operator class, not a name lookup).
         "ORDER BY 1, 4 LIMIT " + std::to_string(table_catalog::entries_max + 1);
}

namespace {

bool parse_u32(std::string_view s, uint32_t& out) {
  if (s.empty() || s.size() > 10) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > 0xffffffffu) return false;
  out = static_cast<uint32_t>(v);
  return true;
}

}  // namespace

bool table_catalog::add_row(bytes body) {
  body_reader in(body);
  uint16_t n = 0;
  if (!in.u16(&n) || n != 7) return false;
  std::string_view v[7];
  for (auto& field : v) {
    uint32_t len = 0;
    if (!in.u32(&len) || len == 0xffffffffu) return false;
    const bytes b = in.rest();
    if (!in.skip(len)) return false;
    field = std::string_view(reinterpret_cast<const char*>(b.data()), len);
  }
  if (!in.done()) return false;
  uint32_t oid = 0, attnum = 0, row_type = 0, array_type = 0;
  if (!parse_u32(v[0], oid) || !parse_u32(v[3], attnum) || !parse_u32(v[5], row_type) ||
      !parse_u32(v[6], array_type))
    return false;
  if (oid == 0 || attnum == 0 || attnum > 1664 || v[4].empty()) return false;
  if (entries >= entries_max) {
    truncated = true;
    return true;
  }
  auto [it, added] = relations.try_emplace(oid);
  relation& r = it->second;
  if (added) {
    r.schema = v[1];
    r.name = std::string(v[1]) + "." + std::string(v[2]);
    r.row_type = row_type;
    r.array_type = array_type;
    by_name.emplace(std::string(v[2]), oid);
    if (row_type != 0) row_types[row_type] = oid;
    if (array_type != 0) row_types[array_type] = oid;
  }
  if (r.columns.size() < attnum) r.columns.resize(attnum);
  if (r.columns[attnum - 1].empty()) ++entries;
  r.columns[attnum - 1] = v[4];
  return true;
}

std::string table_catalog::implausible() const {
  // Every database has pg_catalog.pg_class with its relname: a read without
  // it was filtered by something other than the catalog's contents.
  const auto range = by_name.equal_range("pg_class");
  for (auto it = range.first; it != range.second; ++it) {
    const auto r = relations.find(it->second);
    if (r == relations.end() || r->second.name != "pg_catalog.pg_class") continue;
    for (const std::string& c : r->second.columns)
      if (c == "relname") return {};
  }
  return relations.empty() ? "the catalog read returned no rows" : "the catalog read lacks pg_catalog.pg_class";
}

const table_catalog::protection& table_catalog::protected_by(const std::shared_ptr<data_masker>& masker) const {
  if (protection_.masker == masker) return protection_;
  protection_ = protection{};
  protection_.masker = masker;
  if (masker == nullptr || !masker->has_column_rules()) return protection_;
  std::vector<std::string> names;
  for (const auto& [oid, r] : relations) {
    for (const std::string& c : r.columns) {
      if (c.empty()) continue;
      result_column rc;
      rc.name = c;
      rc.table = r.name;
      rc.column = c;
      rc.type_oid = 25;
      const column_plan p = masker->plan(rc);
      if (p.how != column_plan::mode::forced) continue;
      protection_.relations.try_emplace(oid, p);
      names.push_back(c);
    }
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  protection_.names = std::move(names);
  protection_.any = !protection_.relations.empty();
  return protection_;
}

namespace {

// --- COPY statements ------------------------------------------------------

struct sql_lexer {
  std::string_view s;
  size_t i = 0;

  void skip_space() {
    for (;;) {
      while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' ||
                              s[i] == '\v'))
        ++i;
      if (s.substr(i, 2) == "--") {
        while (i < s.size() && s[i] != '\n') ++i;
      } else if (s.substr(i, 2) == "/*") {
        // PostgreSQL's block comments nest.
        int depth = 0;
        while (i < s.size()) {
          if (s.substr(i, 2) == "/*") {
            ++depth;
            i += 2;
          } else if (s.substr(i, 2) == "*/") {
            i += 2;
            if (--depth == 0) break;
          } else {
            ++i;
          }
        }
        if (depth != 0) return;
      } else {
        return;
      }
    }
  }
  // An identifier as PostgreSQL folds it: unquoted ASCII lowercased, quoted
  // kept (with "" as "). False when none is next.
  bool ident(std::string& out) {
    skip_space();
    out.clear();
    if (i < s.size() && s[i] == '"') {
      ++i;
      for (;;) {
        if (i >= s.size()) return false;
        if (s[i] == '"') {
          if (i + 1 < s.size() && s[i + 1] == '"') {
            out += '"';
            i += 2;
            continue;
          }
          ++i;
          return !out.empty();
        }
        out += s[i++];
      }
    }
    const size_t from = i;
    while (i < s.size()) {
      const auto c = static_cast<unsigned char>(s[i]);
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80 ||
                      (i > from && ((c >= '0' && c <= '9') || c == '$'));
      if (!ok) break;
      out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : static_cast<char>(c);
      ++i;
    }
    return i > from;
  }
  bool punct(char c) {
    skip_space();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  bool keyword(std::string_view k) {
    const size_t at = i;
    std::string w;
    if (ident(w) && w == k) return true;
    i = at;
    return false;
  }
  bool at_end() {
    skip_space();
    while (punct(';')) {
    }
    skip_space();
    return i >= s.size();
  }
};

}  // namespace

copy_source parse_copy_source(std::string_view sql) {
  copy_source out;
  sql_lexer lx{sql};
  if (!lx.keyword("copy")) return out;
  std::string a, b;
  if (!lx.ident(a)) return out;  // COPY (query) TO ...
  if (lx.punct('.')) {
    if (!lx.ident(b)) return out;
    out.schema = a;
    out.table = b;
    if (lx.punct('.')) return out;  // database.schema.table: not read
  } else {
    out.table = a;
  }
  if (lx.punct('(')) {
    std::string c;
    do {
      if (!lx.ident(c)) return out;
      out.columns.push_back(c);
    } while (lx.punct(','));
    if (!lx.punct(')')) return out;
  }
  if (!lx.keyword("to") || !lx.keyword("stdout")) return out;
  // Options: WITH ( FORMAT text|csv, HEADER [bool] ) or the old CSV/HEADER
  // keywords; anything else (DELIMITER, QUOTE, NULL, ...) changes how a
  // row splits into fields.
  if (lx.keyword("with")) {
  }
  if (lx.punct('(')) {
    do {
      std::string name, value;
      if (!lx.ident(name)) return out;
      if (name == "format") {
        if (!lx.ident(value)) return out;
        if (value == "csv") out.csv = true;
        else if (value != "text") out.plain_options = false;
      } else if (name == "header") {
        const size_t at = lx.i;
        if (lx.ident(value)) {
          if (value == "true" || value == "on") out.header = true;
          else if (value != "false" && value != "off") out.plain_options = false;
        } else {
          lx.i = at;
          out.header = true;
        }
      } else {
        out.plain_options = false;
        // Skip the option's value: one token, or a parenthesised list.
        lx.skip_space();
        int depth = 0;
        while (lx.i < sql.size()) {
          const char c = sql[lx.i];
          if (c == '(') ++depth;
          else if (c == ')' && depth-- == 0) break;
          else if (c == ',' && depth == 0) break;
          else if (c == '\'') {
            ++lx.i;
            while (lx.i < sql.size() && sql[lx.i] != '\'') ++lx.i;
          }
          ++lx.i;
        }
      }
    } while (lx.punct(','));
    if (!lx.punct(')')) return out;
  } else {
    for (;;) {
      if (lx.keyword("csv")) out.csv = true;
      else if (lx.keyword("header")) out.header = true;
      else break;
    }
  }
  if (!lx.at_end()) return out;  // more options, or more statements
  out.known = true;
  return out;
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
  } end_of{epoch_, type == 'Q' || type == 'P' || type == 'B' || type == 'E' || type == 'F' ||
                       // a Sync commits (deferred triggers, WITH HOLD cursors run on);
                       // COPY rows fire triggers; closing a portal ends its query
                       type == 'S' || type == 'C' || type == 'd' || type == 'c' || type == 'f'};
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
      outstanding o = message(kind::parse, seq);
      o.name = std::move(name);
      return push(std::move(o));
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
      if (copy_in_) return true;  // ignored by a server in COPY-in mode
      return push(message(kind::sync));
    case 'c':
    case 'f':
      if (copy_in_) {
        copy_in_ = false;
        return true;
      }
      // Sent before the server's CopyInResponse arrived: marks where the
      // Syncs it will ignore end.
      return push(message(kind::copy_end));
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
      return true;  // Flush, CopyData, Terminate: no response of their own
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
  json_guard_.clear();
  refusal_.clear();
  if (masker_ == nullptr || !masker_->active()) return;
  plans_.reserve(columns_.size());
  const bool rules = masker_->has_column_rules();
  for (const row_column& c : columns_) {
    result_column rc;
    rc.name = c.name;
    rc.type_oid = c.type_oid;
    rc.binary = c.format == 1;
    table_catalog::column_ref ref;
    if (catalog_ != nullptr && catalog_->find(c.table_oid, c.attnum, ref)) {
      rc.table = ref.table;
      rc.column = ref.column;
    } else if (rules && c.table_oid != 0 && c.attnum > 0 && refusal_.empty()) {
      // A table column the catalog does not know: its source name cannot be
      // checked against the rules, so an alias could hide it. A table newer
      // than the read: the next login re-reads sooner.
      if (catalog_ != nullptr && !catalog_->truncated) catalog_->missed_table = true;
      if (catalog_ != nullptr && catalog_->truncated)
        refusal_ = "column \"" + c.name + "\" comes from a table the gateway's catalog does not cover (" +
                   std::to_string(table_catalog::entries_max) + " columns at most); column rules cannot be applied";
    }
    plans_.push_back(masker_->plan(rc));
  }
  if (rules) plan_whole_values(columns_);
}

namespace {

constexpr uint32_t record_oid = 2249, record_array_oid = 2287;
constexpr size_t json_names_max = 64;
constexpr uint32_t json_oid = 114, jsonb_oid = 3802, json_array_oid = 199, jsonb_array_oid = 3807;

}  // namespace

// Whole rows under column rules: a composite value of a table (or an array
// of them) carries every column of the row, so it is forced when any of
// them is; an anonymous record (ROW(...), a subquery's row) is forced when
// any catalogued column is protected at all; a json/jsonb expression
// (row_to_json(u), to_jsonb(u), json_agg(u)) is forced value by value when
// it holds a protected column's name as a key.
void result_filter::plan_whole_values(const std::vector<row_column>& columns) {
  if (catalog_ == nullptr) return;
  const table_catalog::protection* guard = nullptr;
  for (size_t i = 0; i < columns.size(); ++i) {
    if (plans_[i].how == column_plan::mode::forced) continue;
    const row_column& c = columns[i];
    const uint32_t t = c.type_oid;
    const bool record = t == record_oid || t == record_array_oid;
    const bool json = (t == json_oid || t == jsonb_oid || t == json_array_oid || t == jsonb_array_oid) &&
                      c.table_oid == 0;
    uint32_t rel = 0;
    const bool composite = !record && !json && catalog_->relation_of_type(t, &rel) != nullptr;
    if (!record && !json && !composite) continue;
    if (guard == nullptr) guard = &catalog_->protected_by(masker_);
    if (!guard->any) return;
    column_plan forced;
    if (composite) {
      const auto it = guard->relations.find(rel);
      // A truncated catalog may hold only some of a table's columns: its
      // whole rows are forced whether or not a protected one was read.
      if (it == guard->relations.end() && !catalog_->truncated) continue;
      forced = it != guard->relations.end() ? it->second : guard->relations.begin()->second;
    } else {
      forced = guard->relations.begin()->second;
    }
    // Partial would keep the last characters of the whole row, which may be
    // another column's.
    if (forced.style == mask_style::partial) forced.style = mask_style::redact;
    forced.type_oid = t;
    forced.binary = c.format == 1;
    if (json) {
      if (json_guard_.empty()) json_guard_.assign(columns.size(), 0);
      json_guard_[i] = 1;
      json_forced_ = forced;
      json_forced_.type_oid = 0;  // set per column when used
    } else {
      plans_[i] = forced;
    }
  }
}

bool result_filter::json_holds_protected(bytes value) const {
  const table_catalog::protection& guard = catalog_->protected_by(masker_);
  // Each name is a pass over the value: past this many (a ".*" rule on a
  // wide table), every JSON expression is forced.
  if (guard.names.size() > json_names_max) return true;
  const std::string_view v(reinterpret_cast<const char*>(value.data()), value.size());
  for (const std::string& name : guard.names) {
    // A key is "name" (json escapes in a key are not decoded: a key written
    // with \u escapes is not found; row_to_json never writes one for an
    // ASCII name).
    size_t at = 0;
    while ((at = v.find(name, at)) != std::string_view::npos) {
      if (at > 0 && v[at - 1] == '"' && at + name.size() < v.size() && v[at + name.size()] == '"') return true;
      at += 1;
    }
  }
  return false;
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
  // A CopyDone or CopyFail that reached the front ended no COPY the server
  // answered (the server ignores one outside COPY mode).
  while (!outstanding_.empty() && outstanding_.front().what == kind::copy_end) pop_outstanding();
  const bytes body = frame.subspan(header_bytes);
  const kind front = outstanding_.empty() ? kind::sync : outstanding_.front().what;
  const uint64_t front_seq = outstanding_.empty() ? 0 : outstanding_.front().seq;
  ended_seq_ = 0;
  parse_done_.done = false;
  // Every answer must answer the message at the front: one that does not
  // means the gateway has lost count of what the server is answering, and
  // rows could be read with another statement's columns. Fail closed.
  auto front_is = [&](std::initializer_list<kind> kinds) {
    if (outstanding_.empty()) return false;
    for (kind k : kinds)
      if (outstanding_.front().what == k) return true;
    return false;
  };
  switch (header.type) {
    case '1':
      if (!front_is({kind::parse})) return mismatch(header.type);
      parse_done_.done = true;
      parse_done_.approved = outstanding_.front().approved;
      parse_done_.name = outstanding_.front().name;
      pop_outstanding();
      return action::pass;
    case '2':
      if (!front_is({kind::bind})) return mismatch(header.type);
      pop_outstanding();
      return action::pass;
    case '3':
      if (!front_is({kind::close})) return mismatch(header.type);
      pop_outstanding();
      return action::pass;
    case 't':
      if (!front_is({kind::describe_statement})) return mismatch(header.type);
      return action::pass;
    case 'G': {
      if (!front_is({kind::query, kind::execute})) return mismatch(header.type);
      // COPY FROM STDIN: Syncs already sent, up to the client's CopyDone or
      // CopyFail, are ignored by the server; after them, later ones too.
      bool ended = false;
      for (auto it = outstanding_.begin() + 1; it != outstanding_.end();) {
        if (it->what == kind::copy_end) {
          outstanding_.erase(it);
          ended = true;
          break;
        }
        if (it->what == kind::sync) {
          it = outstanding_.erase(it);
          ++ignored_syncs_;
        } else {
          ++it;
        }
      }
      copy_in_ = !ended;
      return action::pass;
    }
    case 'T': {
      if (!front_is({kind::query, kind::describe_statement, kind::describe_portal})) return mismatch(header.type);
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
      if (!front_is({kind::describe_statement, kind::describe_portal})) return mismatch(header.type);
      const bool injected = !outstanding_.empty() && outstanding_.front().injected;
      if (portal* p = injected ? outstanding_.front().port.get() : nullptr) {
        p->described.clear();
        p->has_description = true;
      }
      pop_outstanding();
      return injected ? action::drop : action::pass;
    }
    case 'D': {
      if (!front_is({kind::query, kind::execute})) return mismatch(header.type);
      const action a = begin_row();
      if (a != action::rewritten) return a;
      return mask_row(frame, out);
    }
    case 'C':
    case 'I':
    case 's':
      if (!front_is({kind::query, kind::execute}) || (header.type == 's' && front != kind::execute))
        return mismatch(header.type);
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
      if (!front_is({kind::function})) return mismatch(header.type);
      if (next_masker_ == nullptr || !next_masker_->active()) return action::pass;
      return mask_function_result(frame, front == kind::function && outstanding_.front().binary, out);
    case 'Z':
      end_result();
      copy_out_ = false;
      copy_in_ = false;
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
      if (!front_is({kind::query, kind::execute})) return mismatch(header.type);
      masker_ = next_masker_;
      copy_out_ = true;
      columns_.clear();
      if (masker_ == nullptr || !masker_->active()) return action::pass;
      if (header.type == 'W') return refuse("a COPY BOTH (replication) stream cannot be masked");
      uint8_t format = 0;
      body_reader in(body);
      if (!in.u8(&format) || format != 0)
        return refuse("binary COPY output cannot be masked; use COPY ... TO STDOUT in text or CSV format");
      return start_copy(front_seq, body);
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

result_filter::action result_filter::mismatch(char type) {
  const char* front = "nothing";
  if (!outstanding_.empty()) {
    static constexpr const char* names[] = {"Parse", "Bind", "Describe", "Describe", "Execute", "Close",
                                            "Sync", "Query", "FunctionCall", "CopyDone"};
    front = names[static_cast<size_t>(outstanding_.front().what)];
  }
  return refuse(std::string("the server sent '") + type + "' in answer to " + front +
                ": the gateway cannot tell which command these results belong to");
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
  if (!refusal_.empty()) return refuse(refusal_);
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
    while (!outstanding_.empty() && outstanding_.front().what == kind::copy_end) pop_outstanding();
    if (header.type == 'D' && (outstanding_.empty() || (outstanding_.front().what != kind::query &&
                                                        outstanding_.front().what != kind::execute)))
      return mismatch('D');
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
      if (!copy_plans_.empty())
        return refuse("a COPY row bigger than limits.masked_row_bytes_max cannot be masked column by column");
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
        column_plan plan = text_only_ ? st.unknown : plans_[st.field];
        if (!text_only_ && !json_guard_.empty() && json_guard_[st.field]) {
          // Its keys arrive after its length was sent: masked whole.
          plan = json_forced_;
          plan.type_oid = columns_[st.field].type_oid;
          plan.binary = columns_[st.field].format == 1;
        }
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
    const column_plan* planned = text_only_ ? &unknown : &plans_[i];
    column_plan json_plan;
    if (!text_only_ && !json_guard_.empty() && json_guard_[i] && json_holds_protected(value)) {
      json_plan = json_forced_;
      json_plan.type_oid = columns_[i].type_oid;
      json_plan.binary = columns_[i].format == 1;
      planned = &json_plan;
    }
    const column_plan& plan = *planned;
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

void result_filter::note_command_text(uint64_t seq, std::string_view sql) {
  copy_source src = parse_copy_source(sql);
  if (!src.known) {
    // Not a COPY the gateway reads (or not a COPY at all): a CopyOutResponse
    // for this command finds nothing and is refused under column rules.
    return;
  }
  if (copy_commands_.size() >= copy_commands_max) copy_commands_.pop_front();
  copy_commands_.emplace_back(seq, std::move(src));
}

// CopyOutResponse (text or CSV). Under column rules, the fields of each row
// are the columns the COPY statement names (its table's, through the
// catalog); a column a rule forces is rewritten in every row, and the row is
// scanned as text. A COPY whose columns the gateway cannot name is refused.
result_filter::action result_filter::start_copy(uint64_t seq, bytes body) {
  copy_plans_.clear();
  copy_header_pending_ = false;
  copy_csv_ = false;
  if (!masker_->has_column_rules()) return action::pass;
  body_reader in(body);
  uint8_t format = 0;
  uint16_t n = 0;
  if (!in.u8(&format) || !in.u16(&n)) return refuse("malformed CopyOutResponse from the server");
  const copy_source* src = nullptr;
  for (auto it = copy_commands_.rbegin(); it != copy_commands_.rend(); ++it)
    if (it->first == seq) {
      src = &it->second;
      break;
    }
  if (src == nullptr || seq == 0)
    return refuse("the policy has column rules and the gateway cannot tell which columns this COPY writes; "
                  "COPY a table (with an optional column list) TO STDOUT in text or CSV format, or use SELECT");
  if (catalog_ == nullptr) return refuse("the gateway has no catalog to name this COPY's columns");
  // Unqualified: any table of that name the search_path might find; a
  // column is forced if any of them forces it (fail closed).
  std::vector<column_plan> plans(n);
  bool matched = false;
  const auto range = catalog_->by_name.equal_range(src->table);
  for (auto it = range.first; it != range.second; ++it) {
    const auto r = catalog_->relations.find(it->second);
    if (r == catalog_->relations.end()) continue;
    const table_catalog::relation& rel = r->second;
    if (!src->schema.empty() && rel.schema != src->schema) continue;
    std::vector<std::string_view> names;
    if (src->columns.empty()) {
      for (const std::string& c : rel.columns)
        if (!c.empty()) names.emplace_back(c);
    } else {
      for (const std::string& c : src->columns) names.emplace_back(c);
    }
    if (names.size() != n) continue;
    matched = true;
    for (size_t i = 0; i < names.size(); ++i) {
      result_column rc;
      rc.name = names[i];
      rc.table = rel.name;
      rc.column = names[i];
      rc.type_oid = 25;  // COPY writes every value as text
      const column_plan p = masker_->plan(rc);
      if (p.how == column_plan::mode::forced && plans[i].how != column_plan::mode::forced) plans[i] = p;
    }
  }
  if (!matched)
    return refuse("the policy has column rules and the COPY's table \"" + src->table +
                  "\" is not in the gateway's catalog (read at most once a minute) with these " +
                  std::to_string(n) + " columns (generated columns are not copied: name the columns); "
                  "its columns cannot be named");
  bool forced = false;
  for (const column_plan& p : plans) forced |= p.how == column_plan::mode::forced;
  if (!forced) return action::pass;  // rows scanned as text
  if (!src->plain_options)
    return refuse("a column rule applies to this COPY and its options (DELIMITER, QUOTE, NULL, ...) keep the "
                  "gateway from splitting rows into columns; use FORMAT text or csv with no other options");
  copy_plans_ = std::move(plans);
  copy_csv_ = src->csv;
  copy_header_pending_ = src->header;
  return action::pass;
}

namespace {

// Splits one COPY text or CSV row (without its line end) into fields:
// [begin, end) of each, quotes included.
bool split_copy_row(std::string_view row, bool csv, std::vector<std::pair<size_t, size_t>>& out) {
  out.clear();
  const char delim = csv ? ',' : '\t';
  size_t i = 0;
  for (;;) {
    const size_t from = i;
    if (csv && i < row.size() && row[i] == '"') {
      ++i;
      for (;;) {
        if (i >= row.size()) return false;
        if (row[i] == '"') {
          if (i + 1 < row.size() && row[i + 1] == '"') {
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        ++i;
      }
      if (i < row.size() && row[i] != delim) return false;
    } else {
      while (i < row.size() && row[i] != delim) {
        if (!csv && row[i] == '\\') ++i;  // an escape: its byte is data
        ++i;
      }
      if (i > row.size()) return false;
    }
    out.emplace_back(from, i);
    if (i >= row.size()) return true;
    ++i;  // the delimiter
  }
}

}  // namespace

// One COPY TO STDOUT row (the server sends one per CopyData in text and CSV).
result_filter::action result_filter::mask_copy_row(bytes frame, std::string& out) {
  bytes row = frame.subspan(header_bytes);
  std::string rebuilt;
  if (!copy_plans_.empty()) {
    if (copy_header_pending_) {
      copy_header_pending_ = false;  // column names, not values
    } else {
      std::string_view text(reinterpret_cast<const char*>(row.data()), row.size());
      std::string_view line_end;
      if (text.ends_with("\r\n")) line_end = "\r\n";
      else if (text.ends_with('\n')) line_end = "\n";
      text.remove_suffix(line_end.size());
      std::vector<std::pair<size_t, size_t>> fields;
      if (!split_copy_row(text, copy_csv_, fields) || fields.size() != copy_plans_.size())
        return refuse("a COPY row does not split into the columns its statement names");
      for (size_t i = 0; i < fields.size(); ++i) {
        std::string_view f = text.substr(fields[i].first, fields[i].second - fields[i].first);
        if (i > 0) rebuilt += copy_csv_ ? ',' : '\t';
        const column_plan& plan = copy_plans_[i];
        const bool null = copy_csv_ ? f.empty() : f == "\\N";
        if (plan.how != column_plan::mode::forced || null) {
          rebuilt += f;
          continue;
        }
        if (copy_csv_ && f.size() >= 2 && f.front() == '"') f = f.substr(1, f.size() - 2);
        value_out_.clear();
        const mask_outcome o = masker_->mask_value(
            plan, {reinterpret_cast<const uint8_t*>(f.data()), f.size()}, value_out_);
        ++values_rewritten_;
        if (o == mask_outcome::null) rebuilt += copy_csv_ ? "" : "\\N";
        else if (o == mask_outcome::rewritten) rebuilt += value_out_;
        else rebuilt += copy_csv_ ? "" : "\\N";  // a forced plan never leaves a value unchanged
      }
      rebuilt += line_end;
      row = {reinterpret_cast<const uint8_t*>(rebuilt.data()), rebuilt.size()};
    }
  }
  value_out_.clear();
  if (masker_->mask_text(row, value_out_) != mask_outcome::rewritten) {
    if (rebuilt.empty()) return action::pass;
    value_out_ = std::move(rebuilt);
  }
  ++values_rewritten_;
  out.clear();
  append_frame(out, 'd', value_out_);
  return action::rewritten;
}

}  // namespace agentgate::pg
