#include "masking/data_masker.h"

#include <hs.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <fstream>
#include <limits>
#include <span>

#include "masking/hs_compiled.h"
#include "masking/validators.h"

namespace agentgate::masking {

struct mask_engine::hs_state : hs_compiled {};

namespace {

// --- types ------------------------------------------------------------------

// What a PostgreSQL type's values are to the masker. OIDs from
// src/include/catalog/pg_type.dat (stable across releases).
enum class type_class : std::uint8_t {
  text,     // text-like: text and binary format are the same bytes
  json,     // json: text in both formats, rewritten so it stays JSON
  jsonb,    // jsonb: text; binary is a version byte then text
  integer,  // int2/int4/int8
  numeric,  // numeric: text format checked; binary passes
  inet,     // inet/cidr: scanned only when an IP detector is on
  array,    // arrays of text-like types
  one_byte, // "char": one byte, never holds a match
  pass,     // fixed-format scalars no detector can match in
  other,    // anything else (enums, extension types like citext, ranges, other arrays): scanned
};

type_class classify(std::uint32_t oid) {
  switch (oid) {
    case 0: case 19: case 25: case 142: case 705: case 1042: case 1043:
      return type_class::text;
    case 18: return type_class::one_byte;
    case 114: return type_class::json;
    case 3802: return type_class::jsonb;
    case 20: case 21: case 23: return type_class::integer;
    case 1700: return type_class::numeric;
    case 650: case 869: return type_class::inet;
    case 199: case 1002: case 1003: case 1009: case 1014: case 1015: case 3807:
      return type_class::array;
    case 16:    // bool
    case 17:    // bytea (hex or escape text of bytes; not scanned, see docs)
    case 22: case 24: case 26: case 27: case 28: case 29: case 30:  // int2vector, regproc, oid, tid, xid, cid, oidvector
    case 600: case 601: case 602: case 603: case 604: case 628: case 718:  // geometric
    case 700: case 701:     // float4/8
    case 774: case 829:     // macaddr8, macaddr
    case 790:               // money
    case 1082: case 1083: case 1114: case 1184: case 1186: case 1266:  // date/time
    case 1560: case 1562:   // bit, varbit
    case 2202: case 2203: case 2204: case 2205: case 2206: case 4089: case 4096:  // reg*
    case 2950:              // uuid
    case 3220:              // pg_lsn
      return type_class::pass;
    default:
      return type_class::other;
  }
}

// --- small helpers ----------------------------------------------------------

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_alnum(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// COPY text and CSV framing: never removed from, nor put into, a row.
bool is_framing(unsigned char c) {
  return c == '\t' || c == '\n' || c == '\r' || c == '\\' || c == '"' || c == '\'' || c == ',';
}

std::string_view as_chars(std::span<const std::uint8_t> v) {
  return {reinterpret_cast<const char*>(v.data()), v.size()};
}

constexpr std::uint16_t no_label = std::numeric_limits<std::uint16_t>::max();

bool is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Partial style for cards, phones, SSNs and IBANs: every letter and digit but
// the last four becomes '*', separators stay. Keeps the length.
void write_last_four(std::string_view piece, std::string& out) {
  std::size_t alnum = 0;
  for (char c : piece) alnum += is_alnum(static_cast<unsigned char>(c));
  std::size_t seen = 0;
  for (char c : piece) {
    if (!is_alnum(static_cast<unsigned char>(c))) {
      out += c;
    } else {
      out += ++seen + 4 > alnum ? c : '*';
    }
  }
}

// A streamed match rewritten in place: '*' for every byte but separators
// (control bytes, spaces, '-', '.') and COPY/CSV/JSON framing. An escaped
// byte stays with its backslash (and a JSON "\uXXXX" keeps its digits), so a
// PEM block's "\n" in a COPY row or a JSON string keeps the value's shape.
void fill_stars(std::string_view piece, std::string& out) {
  for (std::size_t i = 0; i < piece.size(); ++i) {
    const auto c = static_cast<unsigned char>(piece[i]);
    if (c == '\\' && i + 1 < piece.size()) {
      out += '\\';
      const char escaped = piece[++i];
      out += escaped;
      if (escaped == 'u')
        for (std::size_t k = 0; k < 4 && i + 1 < piece.size() && is_hex(static_cast<unsigned char>(piece[i + 1])); ++k)
          out += piece[++i];
      continue;
    }
    out += c < 0x20 || c == ' ' || c == '-' || c == '.' || is_framing(c) ? static_cast<char>(c) : '*';
  }
}

bool keeps_last_four(detector d) {
  return d == detector::credit_card || d == detector::phone || d == detector::us_ssn || d == detector::iban;
}

status read_hash_key(const std::string& path, std::string& key) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {errc::invalid_argument, "masking.hash_key_file: cannot read " + path};
  key.assign(hash_key_bytes_max + 1, '\0');
  in.read(key.data(), static_cast<std::streamsize>(key.size()));
  key.resize(static_cast<std::size_t>(in.gcount()));
  if (key.size() > hash_key_bytes_max)
    return {errc::invalid_argument, "masking.hash_key_file: " + path + " is larger than 4096 bytes"};
  // A key written with `echo` ends in a newline that is not part of it.
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.size() < hash_key_bytes_min)
    return {errc::invalid_argument,
            "masking.hash_key_file: " + path + " holds fewer than 16 bytes; use e.g. `openssl rand -hex 32`"};
  return status::ok();
}

}  // namespace

// ---------------------------------------------------------------------------

mask_engine::mask_engine() = default;
mask_engine::~mask_engine() = default;

result<std::shared_ptr<const mask_engine>> mask_engine::build(const masking_settings& settings) {
  std::shared_ptr<mask_engine> e(new mask_engine());
  e->settings_ = settings;
  const std::size_t labels = detector_count + settings.columns.size() + settings.patterns.size();
  if (labels >= no_label) return status{errc::limit, "masking: too many column rules and patterns"};

  // Defaults: every detector redacts, except the IP detectors, which match
  // version strings and are noise in most results.
  e->styles_.assign(detector_count, mask_style::redact);
  e->styles_[static_cast<std::size_t>(detector::ipv4)] = mask_style::off;
  e->styles_[static_cast<std::size_t>(detector::ipv6)] = mask_style::off;
  for (const auto& d : settings.detectors) {
    std::size_t i = 0;
    while (i < detector_count && detector_name(static_cast<detector>(i)) != d.detector) ++i;
    if (i == detector_count) return status{errc::invalid_argument, "masking: unknown detector \"" + d.detector + "\""};
    e->styles_[i] = d.style;
  }
  for (std::size_t i = 0; i < detector_count; ++i) e->hit_names_.emplace_back(detector_name(static_cast<detector>(i)));
  for (std::size_t i = 0; i < settings.columns.size(); ++i) {
    e->styles_.push_back(settings.columns[i].style);
    e->hit_names_.push_back("column:" + std::to_string(i));
    std::string t = settings.columns[i].table;
    for (char& c : t) c = lower(c);
    e->column_tables_.push_back(std::move(t));
  }
  for (const auto& t : e->column_tables_)
    if (!t.empty()) e->rule_tables_.push_back(t);
  std::sort(e->rule_tables_.begin(), e->rule_tables_.end());
  e->rule_tables_.erase(std::unique(e->rule_tables_.begin(), e->rule_tables_.end()), e->rule_tables_.end());
  for (const auto& p : settings.patterns) {
    e->styles_.push_back(p.style);
    e->hit_names_.push_back("pattern:" + p.name);
  }

  bool any_detector = false, any_hash = false;
  for (mask_style s : e->styles_) any_hash |= s == mask_style::hash;
  for (std::size_t i = 0; i < detector_count; ++i) any_detector |= e->styles_[i] != mask_style::off;
  e->active_ = any_detector || !settings.columns.empty() || !settings.patterns.empty();
  if (!settings.hash_key_file.empty()) {
    if (status s = read_hash_key(settings.hash_key_file, e->hash_key_); !s) return s;
  } else if (any_hash) {
    return status{errc::invalid_argument, "masking.hash_key_file: required when a style is hash"};
  }

  // The content database: enabled detectors (no SOM) and patterns (SOM:
  // a user's regex has no character class to walk back over).
  std::vector<std::string> regexes;
  std::vector<unsigned> flags;
  std::vector<int> origin;  // >= 0: pattern index; -1: detector
  for (const auto& x : detector_expressions()) {
    if (e->styles_[static_cast<std::size_t>(x.owner)] == mask_style::off) continue;
    regexes.emplace_back(x.regex);
    flags.push_back(0);
    origin.push_back(-1);
    e->expressions_.push_back({false, x.what, static_cast<std::uint16_t>(x.owner)});
  }
  for (std::size_t i = 0; i < settings.patterns.size(); ++i) {
    if (settings.patterns[i].style == mask_style::off) continue;
    regexes.push_back(settings.patterns[i].regex);
    flags.push_back(HS_FLAG_SOM_LEFTMOST);
    origin.push_back(static_cast<int>(i));
    e->expressions_.push_back(
        {true, shape::card, static_cast<std::uint16_t>(detector_count + settings.columns.size() + i)});
  }
  auto compile = [](const std::vector<std::string>& rx, const std::vector<unsigned>& fl,
                    std::unique_ptr<hs_state>& state, int& bad) -> std::string {
    std::vector<const char*> ptrs;
    std::vector<unsigned> ids;
    for (std::size_t i = 0; i < rx.size(); ++i) {
      ptrs.push_back(rx[i].c_str());
      ids.push_back(static_cast<unsigned>(i));
    }
    state = std::make_unique<hs_state>();
    hs_compile_error_t* err = nullptr;
    if (hs_compile_multi(ptrs.data(), fl.data(), ids.data(), static_cast<unsigned>(ptrs.size()), HS_MODE_BLOCK,
                         nullptr, &state->db, &err) != HS_SUCCESS) {
      std::string message = err != nullptr && err->message != nullptr ? err->message : "unknown error";
      bad = err != nullptr ? err->expression : -1;
      hs_free_compile_error(err);
      return message;
    }
    if (hs_alloc_scratch(state->db, &state->prototype) != HS_SUCCESS) return "cannot allocate Hyperscan scratch";
    return {};
  };
  auto on = [&](detector d) { return e->styles_[static_cast<std::size_t>(d)] != mask_style::off; };
  e->digits_ = {on(detector::credit_card), on(detector::us_ssn), on(detector::phone), on(detector::iban)};
  e->text_scan_ = e->digits_.card || e->digits_.ssn || e->digits_.phone || e->digits_.iban;
  if (!regexes.empty()) {
    int bad = -1;
    if (std::string message = compile(regexes, flags, e->content_, bad); !message.empty()) {
      if (bad >= 0 && origin[static_cast<std::size_t>(bad)] >= 0) {
        const std::size_t i = static_cast<std::size_t>(origin[static_cast<std::size_t>(bad)]);
        return status{errc::invalid_argument, "masking.patterns[" + std::to_string(i) + "] (\"" +
                                                  settings.patterns[i].name + "\"): regex does not compile: " +
                                                  message};
      }
      return status{errc::invalid_argument, "masking detectors do not compile: " + message};
    }
    e->text_scan_ = true;
  }

  if (!settings.columns.empty()) {
    std::vector<std::string> rx;
    std::vector<unsigned> fl;
    for (const auto& c : settings.columns) {
      rx.push_back(c.name_regex);
      // ".*" (every column of a table) is a natural rule; a column name is
      // never empty, so a regex that also matches "" does no harm here.
      fl.push_back(HS_FLAG_SINGLEMATCH | HS_FLAG_ALLOWEMPTY);
    }
    int bad = -1;
    if (std::string message = compile(rx, fl, e->names_, bad); !message.empty()) {
      const std::string where = bad >= 0 ? "masking.columns[" + std::to_string(bad) + "].name (\"" +
                                               settings.columns[static_cast<std::size_t>(bad)].name_regex + "\")"
                                         : std::string("masking.columns");
      return status{errc::invalid_argument, where + ": regex does not compile: " + message};
    }
  }
  return std::shared_ptr<const mask_engine>(std::move(e));
}

// ---------------------------------------------------------------------------

class shard_masker final : public data_masker {
 public:
  explicit shard_masker(std::shared_ptr<const mask_engine> engine) : engine_(std::move(engine)) {
    hits_.assign(engine_->hit_names_.size(), 0);
    rule_matched_.assign(engine_->settings_.columns.size(), 0);
    found_.reserve(64);
    merged_.reserve(64);
  }
  ~shard_masker() override {
    if (scratch_ != nullptr) hs_free_scratch(scratch_);
    if (name_scratch_ != nullptr) hs_free_scratch(name_scratch_);
  }

  status init() {
    if (engine_->content_ != nullptr && hs_clone_scratch(engine_->content_->prototype, &scratch_) != HS_SUCCESS)
      return {errc::io, "cannot clone Hyperscan scratch for masking"};
    if (engine_->names_ != nullptr && hs_clone_scratch(engine_->names_->prototype, &name_scratch_) != HS_SUCCESS)
      return {errc::io, "cannot clone Hyperscan scratch for masking column rules"};
    return status::ok();
  }

  bool active() const override { return engine_->active_; }

  column_plan plan(const result_column& column) override;
  mask_outcome mask_value(const column_plan& plan, std::span<const std::uint8_t> value, std::string& out) override;
  mask_outcome mask_text(std::span<const std::uint8_t> text, std::string& out) override;
  result<std::unique_ptr<value_stream>> stream_value(const column_plan& plan) override;
  result<std::unique_ptr<value_stream>> stream_text() override;

  std::span<const std::string> hit_names() const override { return engine_->hit_names_; }
  std::span<const std::uint64_t> hits() const override { return hits_; }
  std::uint64_t bytes_scanned() const override { return bytes_scanned_; }
  std::span<const std::string> rule_tables() const override { return engine_->rule_tables_; }
  bool has_column_rules() const override { return !engine_->settings_.columns.empty(); }

 private:
  enum class scan_result { none, found, failed };
  // How a rewrite must keep the value valid.
  enum class rewrite_kind { plain, framed, json, strict };
  class scan_stream;
  class fill_stream;
  class number_stream;

  // `count`: add the merged matches to hits_ (a stream counts what it releases).
  scan_result scan(std::string_view text, bool count = true);
  int rule_for(const result_column& column);
  bool write_rewrite(std::string_view text, rewrite_kind kind, std::string& out);
  void write_match(std::string_view piece, std::uint16_t label, bool framed, std::string& out);
  void write_one(std::string_view piece, std::uint16_t label, std::string& out);
  void write_hash(std::string_view piece, bool alnum_only, std::string& out);
  void write_fill(std::string_view piece, std::uint16_t label, std::string& out);
  status number_in_place(const column_plan& plan, std::string& value);
  mask_outcome mask_numeric(const column_plan& plan, std::span<const std::uint8_t> value, std::string& out);
  mask_outcome mask_forced(const column_plan& plan, std::span<const std::uint8_t> value, std::string& out);
  mask_outcome mask_scanned(const column_plan& plan, std::span<const std::uint8_t> value, std::string& out);
  mask_style style_of(std::uint16_t label) const { return engine_->styles_[label]; }
  std::string_view label_name(std::uint16_t label) const;

  static int on_content_match(unsigned id, unsigned long long from, unsigned long long to, unsigned flags,
                              void* ctx);
  static int on_name_match(unsigned id, unsigned long long from, unsigned long long to, unsigned flags, void* ctx);

  std::shared_ptr<const mask_engine> engine_;
  hs_scratch_t* scratch_ = nullptr;
  hs_scratch_t* name_scratch_ = nullptr;
  std::vector<candidate> found_;   // this scan's validated candidates
  std::vector<candidate> merged_;  // after leftmost-longest merging
  std::array<examined_range, shape_count> memo_{};
  std::string_view scanning_;
  // The leftmost start of a token some extractor (or a policy pattern) saw
  // run into the end of the scanned text: it may still grow in a stream.
  std::size_t growing_from_ = std::numeric_limits<std::size_t>::max();
  std::vector<std::uint8_t> rule_matched_;
  std::vector<std::uint64_t> hits_;
  std::uint64_t bytes_scanned_ = 0;
};

std::string_view shard_masker::label_name(std::uint16_t label) const {
  if (label < detector_count) return detector_name(static_cast<detector>(label));
  const std::size_t columns = engine_->settings_.columns.size();
  if (label < detector_count + columns) return {};
  return engine_->settings_.patterns[label - detector_count - columns].name;
}

int shard_masker::on_content_match(unsigned id, unsigned long long from, unsigned long long to, unsigned,
                                   void* ctx) {
  auto* self = static_cast<shard_masker*>(ctx);
  const mask_engine::expression_info& x = self->engine_->expressions_[id];
  if (x.som) {
    if (to > from)
      self->found_.push_back({static_cast<std::uint32_t>(from), static_cast<std::uint32_t>(to), x.label});
    if (to >= self->scanning_.size())
      self->growing_from_ = std::min(self->growing_from_, static_cast<std::size_t>(from));
    return 0;
  }
  examined_range& seen = self->memo_[static_cast<std::size_t>(x.what)];
  if (seen.start < to && to <= seen.end) return 0;  // same token as a match already examined
  seen = extract(x.what, self->scanning_, static_cast<std::size_t>(to), x.label, self->found_);
  if (seen.end >= self->scanning_.size()) self->growing_from_ = std::min(self->growing_from_, seen.start);
  return 0;
}

int shard_masker::on_name_match(unsigned id, unsigned long long, unsigned long long, unsigned, void* ctx) {
  static_cast<shard_masker*>(ctx)->rule_matched_[id] = 1;
  return 0;
}

shard_masker::scan_result shard_masker::scan(std::string_view text, bool count) {
  found_.clear();
  merged_.clear();
  growing_from_ = std::numeric_limits<std::size_t>::max();
  if (!engine_->text_scan_ || text.empty()) return scan_result::none;
  if (text.size() > std::numeric_limits<std::uint32_t>::max()) return scan_result::failed;
  if (scratch_ != nullptr) {
    memo_.fill({});
    scanning_ = text;
    const hs_error_t err = hs_scan(engine_->content_->db, text.data(), static_cast<unsigned>(text.size()), 0,
                                   scratch_, on_content_match, this);
    if (err != HS_SUCCESS) return scan_result::failed;
  }
  scan_digit_runs(text, engine_->digits_, found_);
  if (found_.empty()) return scan_result::none;
  // Leftmost-longest: sort by start, longer first; an overlapping later
  // candidate extends the winner and keeps the winner's label.
  std::sort(found_.begin(), found_.end(), [](const candidate& a, const candidate& b) {
    return a.start != b.start ? a.start < b.start : a.end > b.end;
  });
  for (const candidate& c : found_) {
    if (!merged_.empty() && c.start < merged_.back().end) {
      merged_.back().end = std::max(merged_.back().end, c.end);
    } else {
      merged_.push_back(c);
    }
  }
  if (count)
    for (const candidate& c : merged_) ++hits_[c.label];
  return scan_result::found;
}

// --- plans --------------------------------------------------------------------

int shard_masker::rule_for(const result_column& column) {
  if (name_scratch_ == nullptr) return -1;
  std::fill(rule_matched_.begin(), rule_matched_.end(), 0);
  bool any = false;
  for (std::string_view name : {column.name, column.column}) {
    if (name.empty()) continue;
    const hs_error_t err = hs_scan(engine_->names_->db, name.data(), static_cast<unsigned>(name.size()), 0,
                                   name_scratch_, on_name_match, this);
    // A failed scan (it cannot, short of memory corruption) masks the
    // column with the first rule: fail closed.
    if (err != HS_SUCCESS) return 0;
    any = true;
  }
  if (!any) return -1;
  for (std::size_t i = 0; i < rule_matched_.size(); ++i) {
    if (!rule_matched_[i]) continue;
    const std::string& want = engine_->column_tables_[i];
    // A column the protocol could not tie to a table (an expression, or a
    // table created after the last catalog read) is not one of the rule's;
    // content detectors still scan it. Applying table
    // rules to every such column would mask every computed column of every
    // query wherever a rule says ".*".
    if (want.empty()) return static_cast<int>(i);
    if (column.table.empty()) continue;
    if (iequals(column.table, want)) return static_cast<int>(i);
    if (want.find('.') == std::string::npos) {
      const std::size_t dot = column.table.rfind('.');
      if (dot != std::string_view::npos && iequals(column.table.substr(dot + 1), want)) return static_cast<int>(i);
    }
  }
  return -1;
}

column_plan shard_masker::plan(const result_column& column) {
  column_plan p;
  p.type_oid = column.type_oid;
  p.binary = column.binary;
  if (const int rule = rule_for(column); rule >= 0) {
    p.style = engine_->settings_.columns[static_cast<std::size_t>(rule)].style;
    p.rule = static_cast<std::uint16_t>(rule);
    // "off": the rule exempts the column from all masking.
    p.how = p.style == mask_style::off ? column_plan::mode::pass : column_plan::mode::forced;
    return p;
  }
  const bool text = engine_->text_scan_;
  switch (classify(column.type_oid)) {
    case type_class::integer:
    case type_class::numeric:
      p.how = engine_->style(detector::credit_card) != mask_style::off ? column_plan::mode::numeric
                                                                        : column_plan::mode::pass;
      break;
    case type_class::inet:
      p.how = text && (engine_->style(detector::ipv4) != mask_style::off ||
                       engine_->style(detector::ipv6) != mask_style::off)
                  ? column_plan::mode::text
                  : column_plan::mode::pass;
      break;
    case type_class::pass:
    case type_class::one_byte:
      p.how = column_plan::mode::pass;
      break;
    default:
      p.how = text ? column_plan::mode::text : column_plan::mode::pass;
      break;
  }
  return p;
}

// --- rewriting ----------------------------------------------------------------

void shard_masker::write_hash(std::string_view piece, bool alnum_only, std::string& out) {
  // Separators do not change the hash: "4111 1111 ..." and "4111-1111-..."
  // are the same card and join as such.
  char buf[64];
  std::string_view data = piece;
  std::string normalized;
  if (alnum_only) {
    std::size_t n = 0;
    for (char c : piece)
      if (is_alnum(static_cast<unsigned char>(c))) {
        if (n < sizeof buf) buf[n] = c;
        ++n;
      }
    if (n <= sizeof buf) {
      data = std::string_view(buf, n);
    } else {
      for (char c : piece)
        if (is_alnum(static_cast<unsigned char>(c))) normalized += c;
      data = normalized;
    }
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  const std::string& key = engine_->hash_key_;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), md, &md_len);
  static constexpr char hex[] = "0123456789abcdef";
  out += "hash:";
  for (std::size_t i = 0; i < 8; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 0xf];
  }
}

void shard_masker::write_one(std::string_view piece, std::uint16_t label, std::string& out) {
  const mask_style style = style_of(label);
  const bool is_detector = label < detector_count;
  const auto d = static_cast<detector>(is_detector ? label : 0);
  if (style == mask_style::hash) {
    write_hash(piece, is_detector && keeps_last_four(d), out);
    return;
  }
  if (style == mask_style::partial && is_detector) {
    if (keeps_last_four(d)) {
      write_last_four(piece, out);
      return;
    }
    if (d == detector::email) {
      const std::size_t at = piece.rfind('@');
      if (at != std::string_view::npos) {
        out += "****";
        out.append(piece.substr(at));
        return;
      }
    }
  }
  // redact, null inside a larger value, and partial where nothing can be kept.
  const std::string_view name = label_name(label);
  if (name.empty()) {
    out += "[REDACTED]";
  } else {
    out += "[REDACTED:";
    out.append(name);
    out += ']';
  }
}

// A streamed match: the same length as the match. Partial keeps what it keeps
// in a whole value (last four, an email's domain); everything else, redact,
// hash and null included, becomes '*' (see fill_stars).
void shard_masker::write_fill(std::string_view piece, std::uint16_t label, std::string& out) {
  const bool is_detector = label < detector_count;
  if (style_of(label) == mask_style::partial && is_detector) {
    const auto d = static_cast<detector>(label);
    if (keeps_last_four(d)) {
      write_last_four(piece, out);
      return;
    }
    if (d == detector::email) {
      const std::size_t at = piece.rfind('@');
      if (at != std::string_view::npos) {
        out.append(at, '*');
        out.append(piece.substr(at));
        return;
      }
    }
  }
  fill_stars(piece, out);
}

// In free text (COPY rows, JSON strings) a match that spans framing bytes is
// rewritten piece by piece around them, and an escaped byte stays with its
// backslash: a PEM block in a COPY row keeps its "\n" escapes, so the row's
// fields stay where they were.
void shard_masker::write_match(std::string_view piece, std::uint16_t label, bool framed, std::string& out) {
  if (!framed) {
    write_one(piece, label, out);
    return;
  }
  std::size_t run = 0;
  std::size_t i = 0;
  while (i < piece.size()) {
    const auto c = static_cast<unsigned char>(piece[i]);
    if (!is_framing(c)) {
      ++i;
      continue;
    }
    if (i > run) write_one(piece.substr(run, i - run), label, out);
    out += static_cast<char>(c);
    ++i;
    if (c == '\\' && i < piece.size()) out += piece[i++];
    run = i;
  }
  if (i > run) write_one(piece.substr(run, i - run), label, out);
}

// Appends `text` with merged_ rewritten. False when the value cannot be
// rewritten and stay valid (strict kinds, JSON structure inside a match).
bool shard_masker::write_rewrite(std::string_view text, rewrite_kind kind, std::string& out) {
  if (kind == rewrite_kind::strict) return false;
  const std::size_t mark = out.size();
  std::size_t cursor = 0;
  bool in_string = false, escaped = false;  // JSON lexical state at `cursor`
  auto advance_json = [&](std::size_t to) {
    for (; cursor < to; ++cursor) {
      const char c = text[cursor];
      if (escaped) {
        escaped = false;
      } else if (in_string && c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = !in_string;
      }
    }
  };
  std::size_t copied = 0;
  for (const candidate& m : merged_) {
    out.append(text.substr(copied, m.start - copied));
    const std::string_view piece = text.substr(m.start, m.end - m.start);
    if (kind == rewrite_kind::json) {
      advance_json(m.start);
      const bool starts_in_string = in_string && !escaped;
      const bool inside_escape = escaped;
      // The match must leave the lexical state as it found it.
      advance_json(m.end);
      if (inside_escape || in_string != starts_in_string || escaped) {
        out.resize(mark);
        return false;
      }
      if (starts_in_string) {
        write_match(piece, m.label, true, out);
      } else {
        if (piece.find_first_of("\"\\") != std::string_view::npos) {
          out.resize(mark);
          return false;
        }
        // A bare number or word becomes a JSON string.
        out += '"';
        write_one(piece, m.label, out);
        out += '"';
      }
    } else {
      write_match(piece, m.label, kind == rewrite_kind::framed, out);
    }
    copied = m.end;
  }
  out.append(text.substr(copied));
  return true;
}

mask_outcome shard_masker::mask_text(std::span<const std::uint8_t> value, std::string& out) {
  bytes_scanned_ += value.size();
  const std::string_view text = as_chars(value);
  switch (scan(text)) {
    case scan_result::none: return mask_outcome::unchanged;
    case scan_result::failed: out += "[REDACTED]"; return mask_outcome::rewritten;
    case scan_result::found: break;
  }
  const bool ok = write_rewrite(text, rewrite_kind::framed, out);
  assert(ok);
  (void)ok;
  return mask_outcome::rewritten;
}

mask_outcome shard_masker::mask_value(const column_plan& plan, std::span<const std::uint8_t> value,
                                      std::string& out) {
  bytes_scanned_ += value.size();
  switch (plan.how) {
    case column_plan::mode::pass: return mask_outcome::unchanged;
    case column_plan::mode::numeric: return mask_numeric(plan, value, out);
    case column_plan::mode::forced: return mask_forced(plan, value, out);
    case column_plan::mode::text: return mask_scanned(plan, value, out);
  }
  return mask_outcome::null;
}

mask_outcome shard_masker::mask_scanned(const column_plan& plan, std::span<const std::uint8_t> value,
                                        std::string& out) {
  const type_class tc = classify(plan.type_oid);
  rewrite_kind kind = rewrite_kind::plain;
  std::string_view text = as_chars(value);
  std::string_view prefix;
  switch (tc) {
    case type_class::text: break;
    case type_class::json: kind = rewrite_kind::json; break;
    case type_class::jsonb:
      kind = rewrite_kind::json;
      if (plan.binary) {
        // jsonb's binary form: version 1, then the text.
        if (text.empty() || text[0] != 1) {
          kind = rewrite_kind::strict;
        } else {
          prefix = text.substr(0, 1);
          text.remove_prefix(1);
        }
      }
      break;
    case type_class::inet: kind = rewrite_kind::strict; break;  // "[REDACTED]" is no inet
    default:
      // Text arrays, enums, citext and other types: their text output is text;
      // their binary form has lengths and headers a rewrite would break.
      if (plan.binary) kind = rewrite_kind::strict;
      break;
  }
  switch (scan(text)) {
    case scan_result::none: return mask_outcome::unchanged;
    case scan_result::failed: return mask_outcome::null;
    case scan_result::found: break;
  }
  if (kind == rewrite_kind::plain && merged_.size() == 1 && merged_[0].start == 0 && merged_[0].end == text.size() &&
      style_of(merged_[0].label) == mask_style::null)
    return mask_outcome::null;
  const std::size_t mark = out.size();
  out.append(prefix);
  if (!write_rewrite(text, kind, out)) {
    out.resize(mark);
    return mask_outcome::null;
  }
  return mask_outcome::rewritten;
}

namespace {

// Zeroes every digit but the last four of [first, last) of `s`, in place.
void zero_but_last_four(std::string& s, std::size_t first, std::size_t last) {
  std::size_t digits = 0;
  for (std::size_t i = first; i < last; ++i) digits += is_digit(static_cast<unsigned char>(s[i]));
  std::size_t seen = 0;
  for (std::size_t i = first; i < last; ++i)
    if (is_digit(static_cast<unsigned char>(s[i])) && ++seen + 4 <= digits) s[i] = '0';
}

bool read_be_int(std::span<const std::uint8_t> v, std::int64_t& out) {
  if (v.size() != 2 && v.size() != 4 && v.size() != 8) return false;
  std::uint64_t u = 0;
  for (std::uint8_t b : v) u = (u << 8) | b;
  const unsigned bits = static_cast<unsigned>(v.size() * 8);
  if (bits < 64 && (u >> (bits - 1)) != 0) u |= ~std::uint64_t{0} << bits;  // sign-extend
  out = static_cast<std::int64_t>(u);
  return true;
}

void write_be_int(std::int64_t value, std::size_t width, std::string& out) {
  const auto u = static_cast<std::uint64_t>(value);
  for (std::size_t i = width; i-- > 0;) out += static_cast<char>((u >> (i * 8)) & 0xff);
}

// "-000000000001881.00" -> "-1881.00": PostgreSQL never writes leading
// zeros and some drivers refuse them (psycopg2 parses int8 with base 0).
void strip_leading_zeros(std::string& s, std::size_t from) {
  std::size_t i = from;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  std::size_t end = i;
  while (end < s.size() && s[end] == '0') ++end;
  if (end == s.size() || !(s[end] >= '0' && s[end] <= '9')) {
    if (end > i) --end;  // keep one zero before '.' or at the end
  }
  s.erase(i, end - i);
  if (s.compare(from, 2, "-0") == 0 && (s.size() == from + 2 || s[from + 2] == '.')) {
    bool zero = true;
    for (std::size_t k = from + 1; k < s.size(); ++k) zero &= s[k] == '0' || s[k] == '.';
    if (zero) s.erase(from, 1);
  }
}

// |v| mod 10000 with v's sign: the "last four digits" of an integer, which
// fits every integer width.
std::int64_t last_four(std::int64_t v) {
  const std::int64_t r = v % 10000;  // C++ keeps the dividend's sign
  return r;
}

// A numeric's text form whose integer part [first, int_end) is a card number.
bool numeric_card(std::string_view s, std::size_t& first, std::size_t& int_end) {
  std::size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  first = i;
  while (i < s.size() && is_digit(static_cast<unsigned char>(s[i]))) ++i;
  int_end = i;
  if (int_end - first < 13 || int_end - first > 19) return false;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && is_digit(static_cast<unsigned char>(s[i]))) ++i;
  }
  if (i != s.size()) return false;  // exponent, NaN, ...: not a card
  return plausible_card(s.substr(first, int_end - first));
}

// A binary int8 that holds a card number.
bool binary_card(std::span<const std::uint8_t> value, std::int64_t& v) {
  if (value.size() != 8 || !read_be_int(value, v)) return false;
  const std::uint64_t mag = v < 0 ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
  char digits[24];
  std::size_t n = 0;
  for (std::uint64_t m = mag; m != 0; m /= 10) digits[n++] = static_cast<char>('0' + m % 10);
  std::reverse(digits, digits + n);
  return plausible_card(std::string_view(digits, n));
}

}  // namespace

mask_outcome shard_masker::mask_numeric(const column_plan& plan, std::span<const std::uint8_t> value,
                                        std::string& out) {
  const mask_style style = engine_->style(detector::credit_card);
  const auto card_label = static_cast<std::uint16_t>(detector::credit_card);
  if (plan.binary) {
    // numeric's binary form (base-10000 digit groups) is passed: see docs.
    if (classify(plan.type_oid) != type_class::integer) return mask_outcome::unchanged;
    std::int64_t v = 0;
    if (!binary_card(value, v)) return mask_outcome::unchanged;
    ++hits_[card_label];
    if (style == mask_style::hash || style == mask_style::null) return mask_outcome::null;
    write_be_int(last_four(v), value.size(), out);
    return mask_outcome::rewritten;
  }
  const std::string_view s = as_chars(value);
  std::size_t first = 0, int_end = 0;
  if (!numeric_card(s, first, int_end)) return mask_outcome::unchanged;
  ++hits_[card_label];
  if (style == mask_style::hash || style == mask_style::null) return mask_outcome::null;
  std::string tail(s);
  zero_but_last_four(tail, first, int_end);
  strip_leading_zeros(tail, 0);
  out += tail;
  return mask_outcome::rewritten;
}

mask_outcome shard_masker::mask_forced(const column_plan& plan, std::span<const std::uint8_t> value,
                                       std::string& out) {
  const auto label = static_cast<std::uint16_t>(detector_count + plan.rule);
  ++hits_[label];
  const mask_style style = plan.style;
  if (style == mask_style::null) return mask_outcome::null;
  const std::string_view s = as_chars(value);
  const type_class tc = classify(plan.type_oid);
  switch (tc) {
    case type_class::integer: {
      if (style == mask_style::hash) return mask_outcome::null;  // a hash is no integer
      if (plan.binary) {
        std::int64_t v = 0;
        if (!read_be_int(value, v)) return mask_outcome::null;
        write_be_int(last_four(v), value.size(), out);
        return mask_outcome::rewritten;
      }
      std::string tail(s);
      zero_but_last_four(tail, 0, tail.size());
      strip_leading_zeros(tail, 0);
      out += tail;
      return mask_outcome::rewritten;
    }
    case type_class::numeric: {
      if (style == mask_style::hash || plan.binary) return mask_outcome::null;
      bool digits = false;
      for (char c : s) digits |= is_digit(static_cast<unsigned char>(c));
      if (!digits) return mask_outcome::null;  // NaN, Infinity
      std::string tail(s);
      zero_but_last_four(tail, 0, tail.size());
      strip_leading_zeros(tail, 0);
      out += tail;
      return mask_outcome::rewritten;
    }
    case type_class::text:
    case type_class::other:
      if (tc == type_class::other && plan.binary) return mask_outcome::null;
      if (style == mask_style::hash) {
        write_hash(s, false, out);
      } else if (style == mask_style::partial) {
        // Every character but the last four letters or digits becomes '*'
        // (one per UTF-8 code point); punctuation and spaces stay.
        std::size_t alnum = 0;
        for (char c : s) alnum += is_alnum(static_cast<unsigned char>(c));
        std::size_t seen = 0;
        for (std::size_t i = 0; i < s.size(); ++i) {
          const auto c = static_cast<unsigned char>(s[i]);
          if (is_alnum(c)) {
            out += ++seen + 4 > alnum ? static_cast<char>(c) : '*';
          } else if (c >= 0x80) {
            if ((c & 0xc0) != 0x80) out += '*';  // a lead byte: one '*' per code point
          } else if (is_framing(c)) {
            out += '*';
          } else {
            out += static_cast<char>(c);
          }
        }
      } else {
        out += "[REDACTED]";
      }
      return mask_outcome::rewritten;
    case type_class::json:
    case type_class::jsonb:
      if (tc == type_class::jsonb && plan.binary) out += '\x01';
      out += '"';
      if (style == mask_style::hash) {
        write_hash(s.substr(tc == type_class::jsonb && plan.binary ? 1 : 0), false, out);
      } else {
        out += "[REDACTED]";
      }
      out += '"';
      return mask_outcome::rewritten;
    default:
      // Dates, uuids, booleans, arrays, inet, "char", ...: no masked form is
      // a valid value of the type.
      return mask_outcome::null;
  }
}

// --- streamed values ------------------------------------------------------------

namespace {

// pass columns: the bytes as they are.
class copy_stream final : public value_stream {
 public:
  status feed(std::span<const std::uint8_t> in, std::string& out) override {
    out.append(as_chars(in));
    return status::ok();
  }
  status finish(std::string&) override { return status::ok(); }
  std::size_t held_bytes() const override { return 0; }
  bool rewritten() const override { return false; }
};

constexpr std::string_view pem_end = "-----END ";
constexpr std::string_view pem_tail = "PRIVATE KEY-----";
// "-----END ", at most 64 bytes naming the kind, the tail.
constexpr std::size_t pem_end_line_bytes_max = pem_end.size() + 64 + pem_tail.size();

std::string type_name(std::uint32_t oid) { return "type OID " + std::to_string(oid); }

}  // namespace

// Text scanned with the block-mode content database over (held bytes + one
// slice); bytes are released once no match can still reach them: they are at
// least stream_lag_bytes behind the input's end, no match straddles them and
// no extractor saw a token there run into the end of the held bytes.
class shard_masker::scan_stream final : public value_stream {
 public:
  scan_stream(shard_masker& m, bool strict, bool version_byte, std::uint32_t type_oid)
      : m_(m), strict_(strict), version_byte_(version_byte), type_oid_(type_oid) {}

  status feed(std::span<const std::uint8_t> in, std::string& out) override {
    m_.bytes_scanned_ += in.size();
    if (version_byte_ && !in.empty()) {
      // jsonb's binary form: version 1, then the text. Another version is not
      // known to be text: a match in it cannot be rewritten.
      version_byte_ = false;
      if (in[0] != 1) strict_ = true;
      out += static_cast<char>(in[0]);
      in = in.subspan(1);
    }
    while (!in.empty()) {
      const std::size_t n = std::min(in.size(), stream_slice_bytes);
      buf_.append(as_chars(in.first(n)));
      in = in.subspan(n);
      if (status s = step(false, out); !s) return s;
    }
    return status::ok();
  }
  status finish(std::string& out) override { return step(true, out); }
  std::size_t held_bytes() const override { return buf_.size(); }
  bool rewritten() const override { return rewritten_; }

 private:
  status step(bool final, std::string& out);
  bool find_pem_end(std::size_t from, std::size_t& end) const;
  void release(std::size_t to);

  shard_masker& m_;
  bool strict_;        // a match fails the stream (binary and structured values)
  bool version_byte_;  // the next byte is jsonb's version
  std::uint32_t type_oid_;
  std::string buf_;           // [0, context_): released, kept as context; then held
  std::size_t context_ = 0;
  bool in_pem_ = false;       // a private key block was released in part: masked to its END line
  bool rewritten_ = false;
};

// The end of the first private key END line at or after `from`.
bool shard_masker::scan_stream::find_pem_end(std::size_t from, std::size_t& end) const {
  const std::string_view text(buf_);
  for (std::size_t q = text.find(pem_end, from); q != std::string_view::npos; q = text.find(pem_end, q + 1)) {
    const std::size_t limit = std::min(text.size(), q + pem_end_line_bytes_max);
    const std::size_t t = text.substr(0, limit).find(pem_tail, q + pem_end.size());
    if (t != std::string_view::npos) {
      end = t + pem_tail.size();
      return true;
    }
  }
  return false;
}

void shard_masker::scan_stream::release(std::size_t to) {
  const std::size_t keep = std::min(to, stream_context_bytes);
  buf_.erase(0, to - keep);
  context_ = keep;
}

status shard_masker::scan_stream::step(bool final, std::string& out) {
  const auto pem_label = static_cast<std::uint16_t>(detector::private_key);
  for (;;) {
    const std::size_t held = context_;
    const std::size_t n = buf_.size();
    if (held == n) return status::ok();
    const std::string_view text(buf_);
    if (in_pem_) {
      std::size_t end = 0;
      if (find_pem_end(held, end)) {
        m_.write_fill(text.substr(held, end - held), pem_label, out);
        in_pem_ = false;
        release(end);
        continue;  // the rest is scanned as usual
      }
      // Everything up to what could be the start of an END line is key.
      const std::size_t to = final ? n : std::max(held, n > pem_end_line_bytes_max ? n - pem_end_line_bytes_max : 0);
      m_.write_fill(text.substr(held, to - held), pem_label, out);
      release(to);
      return status::ok();
    }
    if (m_.scan(text, false) == scan_result::failed)
      return {errc::io, "the scan of a streamed value failed"};
    std::size_t to = n;
    bool forced = false;
    if (!final) {
      const std::size_t lagged = std::max(held, n > stream_lag_bytes ? n - stream_lag_bytes : 0);
      to = std::min(lagged, std::max(held, m_.growing_from_));
      for (const candidate& c : m_.merged_)
        if (c.start < to && c.end > to) to = std::max<std::size_t>(held, c.start);
      if (n - to > stream_token_bytes_max) {
        // Longer than any detector's token but a PEM block's (or a policy
        // pattern's match): released masked as far as the lag allows.
        to = lagged;
        forced = true;
      }
    }
    std::size_t copied = held;
    for (const candidate& c : m_.merged_) {
      if (c.end <= held) continue;  // released before
      if (c.start >= to) break;
      if (strict_)
        return {errc::unsupported, "a value of " + type_name(type_oid_) +
                                       " in a row bigger than limits.masked_row_bytes_max holds a match, and its "
                                       "format cannot be rewritten in place"};
      const std::size_t s = std::max<std::size_t>(c.start, held);
      const std::size_t e = std::min<std::size_t>(c.end, to);
      out.append(text.substr(copied, s - copied));
      m_.write_fill(text.substr(s, e - s), c.label, out);
      if (c.start >= held) ++m_.hits_[c.label];  // counted once, when its start is released
      rewritten_ = true;
      copied = e;
    }
    out.append(text.substr(copied, to - copied));
    if (forced)
      for (const candidate& c : m_.found_)
        if (c.label == pem_label && c.start < to && c.end == n) in_pem_ = true;
    release(to);
    return status::ok();
  }
}

// A column rule on a text-like value: every byte becomes '*'; json stays a
// JSON string ("**...*") of the same length (binary jsonb keeps its version).
class shard_masker::fill_stream final : public value_stream {
 public:
  fill_stream(shard_masker& m, bool json, bool version_byte, std::uint16_t label)
      : m_(m), json_(json), version_byte_(version_byte), label_(label) {}

  status feed(std::span<const std::uint8_t> in, std::string& out) override {
    m_.bytes_scanned_ += in.size();
    if (version_byte_ && !in.empty()) {
      if (in[0] != 1) return {errc::unsupported, "a binary jsonb value of unknown version cannot be masked"};
      version_byte_ = false;
      out += '\x01';
      in = in.subspan(1);
    }
    if (in.empty()) return status::ok();
    rewritten_ = true;
    if (!json_) {
      out.append(in.size(), '*');
      return status::ok();
    }
    // The last byte is held back: it becomes the closing quote.
    const std::size_t ready = in.size() - 1 + (holding_ ? 1 : 0);
    for (std::size_t i = 0; i < ready; ++i) out += written_++ == 0 ? '"' : '*';
    holding_ = true;
    return status::ok();
  }
  status finish(std::string& out) override {
    if (holding_) out += written_ == 0 ? '0' : '"';  // one byte of JSON: a number
    holding_ = false;
    ++m_.hits_[label_];  // one per value, as for a whole one
    return status::ok();
  }
  std::size_t held_bytes() const override { return holding_ ? 1 : 0; }
  bool rewritten() const override { return rewritten_; }

 private:
  shard_masker& m_;
  bool json_;
  bool version_byte_;
  std::uint16_t label_;
  bool holding_ = false;
  std::uint64_t written_ = 0;
  bool rewritten_ = false;
};

// Integers and numerics in a streamed row, collected whole (they are small)
// and rewritten in the same width.
class shard_masker::number_stream final : public value_stream {
 public:
  number_stream(shard_masker& m, const column_plan& plan) : m_(m), plan_(plan) {}

  status feed(std::span<const std::uint8_t> in, std::string& out) override {
    (void)out;
    m_.bytes_scanned_ += in.size();
    if (value_.size() + in.size() > stream_number_bytes_max)
      return {errc::unsupported, "a value of " + type_name(plan_.type_oid) + " longer than " +
                                     std::to_string(stream_number_bytes_max) + " bytes"};
    value_.append(as_chars(in));
    return status::ok();
  }
  status finish(std::string& out) override {
    const std::string before = value_;
    if (status s = m_.number_in_place(plan_, value_); !s) return s;
    assert(value_.size() == before.size());
    rewritten_ = value_ != before;
    out += value_;
    value_.clear();
    return status::ok();
  }
  std::size_t held_bytes() const override { return value_.size(); }
  bool rewritten() const override { return rewritten_; }

 private:
  shard_masker& m_;
  column_plan plan_;
  std::string value_;
  bool rewritten_ = false;
};

// mask_numeric and mask_forced for integers and numerics, in the value's
// width: a NULL or a shorter number is not possible once the length is sent,
// so digits are zeroed (all of them for null and hash) and leading zeros stay.
status shard_masker::number_in_place(const column_plan& plan, std::string& value) {
  const type_class tc = classify(plan.type_oid);
  const auto bytes = std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(value.data()), value.size());
  if (plan.how == column_plan::mode::numeric) {
    const auto card_label = static_cast<std::uint16_t>(detector::credit_card);
    if (plan.binary) {
      std::int64_t v = 0;
      if (tc != type_class::integer || !binary_card(bytes, v)) return status::ok();
      ++hits_[card_label];
      std::string rewritten;
      write_be_int(last_four(v), value.size(), rewritten);
      value = std::move(rewritten);
      return status::ok();
    }
    std::size_t first = 0, int_end = 0;
    if (!numeric_card(value, first, int_end)) return status::ok();
    ++hits_[card_label];
    zero_but_last_four(value, first, int_end);
    return status::ok();
  }
  assert(plan.how == column_plan::mode::forced);
  ++hits_[detector_count + plan.rule];
  const bool all = plan.style == mask_style::null || plan.style == mask_style::hash;
  if (plan.binary) {
    std::int64_t v = 0;
    if (tc != type_class::integer || !read_be_int(bytes, v))
      return {errc::unsupported, "a column rule cannot mask a binary " + type_name(plan.type_oid) +
                                     " value in a row bigger than limits.masked_row_bytes_max"};
    std::string rewritten;
    write_be_int(all ? 0 : last_four(v), value.size(), rewritten);
    value = std::move(rewritten);
    return status::ok();
  }
  bool digits = false;
  for (char c : value) digits |= is_digit(static_cast<unsigned char>(c));
  if (!digits)  // NaN, Infinity: no number of that width is masked
    return {errc::unsupported, "a column rule cannot mask a " + type_name(plan.type_oid) + " value \"" +
                                   value.substr(0, 16) + "\" in a row bigger than limits.masked_row_bytes_max"};
  if (all) {
    for (char& c : value)
      if (is_digit(static_cast<unsigned char>(c))) c = '0';
  } else {
    zero_but_last_four(value, 0, value.size());
  }
  return status::ok();
}

result<std::unique_ptr<value_stream>> shard_masker::stream_value(const column_plan& plan) {
  const type_class tc = classify(plan.type_oid);
  switch (plan.how) {
    case column_plan::mode::pass:
      return std::unique_ptr<value_stream>(std::make_unique<copy_stream>());
    case column_plan::mode::numeric:
      return std::unique_ptr<value_stream>(std::make_unique<number_stream>(*this, plan));
    case column_plan::mode::text: {
      bool strict = false, version_byte = false;
      switch (tc) {
        case type_class::text:
        case type_class::json: break;
        case type_class::jsonb: version_byte = plan.binary; break;
        case type_class::inet: strict = true; break;
        default: strict = plan.binary; break;  // text arrays, enums, citext: text unless binary
      }
      return std::unique_ptr<value_stream>(std::make_unique<scan_stream>(*this, strict, version_byte, plan.type_oid));
    }
    case column_plan::mode::forced:
      break;
  }
  // Forced: counted when the value ends, so a stream made only to learn
  // whether the plan can stream (result_filter does, before a row) costs nothing.
  const auto label = static_cast<std::uint16_t>(detector_count + plan.rule);
  std::unique_ptr<value_stream> s;
  switch (tc) {
    case type_class::integer:
    case type_class::numeric:
      if (!(tc == type_class::numeric && plan.binary)) s = std::make_unique<number_stream>(*this, plan);
      break;
    case type_class::text: s = std::make_unique<fill_stream>(*this, false, false, label); break;
    case type_class::other:
      if (!plan.binary) s = std::make_unique<fill_stream>(*this, false, false, label);
      break;
    case type_class::json: s = std::make_unique<fill_stream>(*this, true, false, label); break;
    case type_class::jsonb: s = std::make_unique<fill_stream>(*this, true, plan.binary, label); break;
    default: break;
  }
  if (s == nullptr)
    return status{errc::unsupported, "column rule " + std::to_string(plan.rule) + " cannot mask a " +
                                         std::string(plan.binary ? "binary " : "") + type_name(plan.type_oid) +
                                         " value in place, and its row is bigger than limits.masked_row_bytes_max"};
  return s;
}

result<std::unique_ptr<value_stream>> shard_masker::stream_text() {
  return std::unique_ptr<value_stream>(std::make_unique<scan_stream>(*this, false, false, 0));
}

result<std::unique_ptr<agentgate::data_masker>> make_shard_masker(std::shared_ptr<const mask_engine> engine) {
  if (engine == nullptr) return status{errc::invalid_argument, "no masking engine"};
  auto m = std::make_unique<shard_masker>(std::move(engine));
  if (status s = m->init(); !s) return s;
  return std::unique_ptr<agentgate::data_masker>(std::move(m));
}

}  // namespace agentgate::masking
