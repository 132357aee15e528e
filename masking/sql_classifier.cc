#include "masking/sql_classifier.h"

#include <hs.h>
#include <pg_query.h>
#include <simdjson.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "masking/hs_compiled.h"

#if defined(__SANITIZE_ADDRESS__)
#define AGENTGATE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AGENTGATE_ASAN 1
#endif
#endif
#if defined(AGENTGATE_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

namespace agentgate::masking {
namespace {

// ---------------------------------------------------------------------------
// Lexical facts about PostgreSQL's scanner (src/backend/parser/scan.l) that
// the fast path relies on. Each is conservative: where this code and the
// server could disagree, the text goes to the parser.

constexpr std::size_t identifier_bytes_max = 63;  // NAMEDATALEN - 1

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }
char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - ('a' - 'A')) : c; }

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

// scan.l: ident_cont is [A-Za-z\200-\377_0-9\$]. A keyword followed by one of
// these is the start of a longer identifier, not the keyword.
bool is_ident_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || u == '_' ||
         u == '$' || u >= 0x80;
}

// scan.l (PostgreSQL 15): space is [ \t\n\r\f]. Anything else is not skipped,
// which only ever sends text to the parser.
bool is_pg_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

// Skips whitespace and comments from `pos` the way the scanner's INITIAL
// state does: "--" to the end of the line (\n or \r), "/* */" nested.
// Returns npos for an unterminated block comment.
std::size_t skip_blank(std::string_view s, std::size_t pos) {
  while (pos < s.size()) {
    const char c = s[pos];
    if (is_pg_space(c)) {
      ++pos;
    } else if (c == '-' && pos + 1 < s.size() && s[pos + 1] == '-') {
      pos += 2;
      while (pos < s.size() && s[pos] != '\n' && s[pos] != '\r') ++pos;
    } else if (c == '/' && pos + 1 < s.size() && s[pos + 1] == '*') {
      std::size_t depth = 1;
      pos += 2;
      while (pos < s.size() && depth > 0) {
        if (s[pos] == '/' && pos + 1 < s.size() && s[pos + 1] == '*') {
          ++depth;
          pos += 2;
        } else if (s[pos] == '*' && pos + 1 < s.size() && s[pos + 1] == '/') {
          --depth;
          pos += 2;
        } else {
          ++pos;
        }
      }
      if (depth > 0) return std::string_view::npos;
    } else {
      break;
    }
  }
  return pos;
}

bool caseless_prefix(std::string_view s, std::size_t pos, std::string_view lower_word) {
  if (s.size() - pos < lower_word.size()) return false;
  for (std::size_t i = 0; i < lower_word.size(); ++i)
    if (ascii_lower(s[pos + i]) != lower_word[i]) return false;
  return true;
}

// The first token decides which grammar production a statement is. These four
// keywords (and "(") only start a SelectStmt, or, for WITH, an INSERT/UPDATE/
// DELETE whose keyword the prefilter catches.
bool starts_as_read(std::string_view s) {
  std::size_t pos = 0;
  for (;;) {
    pos = skip_blank(s, pos);
    if (pos == std::string_view::npos || pos >= s.size()) return false;
    if (s[pos] != '(') break;
    ++pos;
  }
  static constexpr std::array<std::string_view, 4> read_keywords = {"select", "values", "table", "with"};
  for (std::string_view kw : read_keywords) {
    if (!caseless_prefix(s, pos, kw)) continue;
    const std::size_t end = pos + kw.size();
    return end == s.size() || !is_ident_char(s[end]);
  }
  return false;
}

bool only_space_from(std::string_view s, std::size_t pos) {
  for (; pos < s.size(); ++pos)
    if (!is_pg_space(s[pos])) return false;
  return true;
}

// Keywords whose presence anywhere sends the text to the parser. The first
// five are what the soundness argument needs (a SELECT-led statement writes
// only through a data-modifying CTE or SELECT INTO); the rest are defence in
// depth: statement keywords that have no business in a plain read, so a flaw
// in the first-keyword argument still ends in a parse.
constexpr std::array<std::string_view, 23> trigger_keywords = {
    "insert", "update",  "delete",  "merge",  "into",   "copy",     "truncate", "drop",
    "alter",  "create",  "grant",   "revoke", "set",    "reset",    "do",       "call",
    "execute", "prepare", "listen", "notify", "vacuum", "reindex", "checkpoint"};

// Functions PostgreSQL 15's grammar calls for SQL syntax without their name
// being written (AT TIME ZONE -> timezone, TRIM -> btrim, x LIKE y ESCAPE z ->
// like_escape, TREAT(x AS integer) -> int4, ...): taken from gram.y's
// SystemFuncName() and SystemTypeName() uses. A rule on one of these names
// cannot be checked by looking for the name, so it turns the fast path off.
constexpr std::array<std::string_view, 31> grammar_implicit_functions = {
    "btrim",  "ltrim",    "rtrim",       "extract",   "is_normalized", "like_escape", "normalize",
    "overlaps", "overlay", "pg_collation_for", "position", "similar_to_escape", "substring",
    "timezone", "xmlexists", "bit", "bool", "bpchar", "float4", "float8", "int2", "int4", "int8",
    "interval", "numeric", "time", "timestamp", "timestamptz", "timetz", "varbit", "varchar"};

// Hyperscan wants regular expressions; names are written byte by byte as
// \xHH so no identifier character can mean something to the regex syntax.
std::string regex_literal(std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() * 4);
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || u == '_') {
      out += c;
    } else {
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 0xf];
    }
  }
  return out;
}

// A word as the scanner would see a keyword or identifier: not preceded by a
// letter or underscore (a digit may precede it: before PostgreSQL 15, "1INTO"
// lexed as 1 INTO), not followed by an identifier character. A 63-byte name
// gets no right boundary: the scanner truncates longer identifiers to it.
std::string word_pattern(std::string_view alternation, bool right_boundary) {
  std::string p = "(?:^|[^a-z_])(?:";
  p += alternation;
  p += ")";
  if (right_boundary) p += "(?:[^a-z0-9_$]|$)";
  return p;
}

// ---------------------------------------------------------------------------
// Command tags: a port of CreateCommandTag() (src/backend/tcop/utility.c)
// for raw parse trees.

struct fixed_tag {
  std::string_view node;
  std::string_view tag;
  bool writes;
};

constexpr fixed_tag fixed_tags[] = {
    {"InsertStmt", "INSERT", true},
    {"DeleteStmt", "DELETE", true},
    {"UpdateStmt", "UPDATE", true},
    {"MergeStmt", "MERGE", true},
    {"DeclareCursorStmt", "DECLARE CURSOR", false},
    {"CreateDomainStmt", "CREATE DOMAIN", true},
    {"CreateSchemaStmt", "CREATE SCHEMA", true},
    {"CreateStmt", "CREATE TABLE", true},
    {"CreateTableSpaceStmt", "CREATE TABLESPACE", true},
    {"DropTableSpaceStmt", "DROP TABLESPACE", true},
    {"AlterTableSpaceOptionsStmt", "ALTER TABLESPACE", true},
    {"CreateExtensionStmt", "CREATE EXTENSION", true},
    {"AlterExtensionStmt", "ALTER EXTENSION", true},
    {"AlterExtensionContentsStmt", "ALTER EXTENSION", true},
    {"CreateFdwStmt", "CREATE FOREIGN DATA WRAPPER", true},
    {"AlterFdwStmt", "ALTER FOREIGN DATA WRAPPER", true},
    {"CreateForeignServerStmt", "CREATE SERVER", true},
    {"AlterForeignServerStmt", "ALTER SERVER", true},
    {"CreateUserMappingStmt", "CREATE USER MAPPING", true},
    {"AlterUserMappingStmt", "ALTER USER MAPPING", true},
    {"DropUserMappingStmt", "DROP USER MAPPING", true},
    {"CreateForeignTableStmt", "CREATE FOREIGN TABLE", true},
    {"ImportForeignSchemaStmt", "IMPORT FOREIGN SCHEMA", true},
    {"TruncateStmt", "TRUNCATE TABLE", true},
    {"CommentStmt", "COMMENT", true},
    {"SecLabelStmt", "SECURITY LABEL", true},
    {"AlterDomainStmt", "ALTER DOMAIN", true},
    {"AlterDefaultPrivilegesStmt", "ALTER DEFAULT PRIVILEGES", true},
    {"CompositeTypeStmt", "CREATE TYPE", true},
    {"CreateEnumStmt", "CREATE TYPE", true},
    {"CreateRangeStmt", "CREATE TYPE", true},
    {"AlterEnumStmt", "ALTER TYPE", true},
    {"ViewStmt", "CREATE VIEW", true},
    {"IndexStmt", "CREATE INDEX", true},
    {"RuleStmt", "CREATE RULE", true},
    {"CreateSeqStmt", "CREATE SEQUENCE", true},
    {"AlterSeqStmt", "ALTER SEQUENCE", true},
    {"DoStmt", "DO", true},  // the body is opaque: assume the worst
    {"CreatedbStmt", "CREATE DATABASE", true},
    {"AlterDatabaseStmt", "ALTER DATABASE", true},
    {"AlterDatabaseRefreshCollStmt", "ALTER DATABASE", true},
    {"AlterDatabaseSetStmt", "ALTER DATABASE", true},
    {"DropdbStmt", "DROP DATABASE", true},
    {"NotifyStmt", "NOTIFY", false},
    {"ListenStmt", "LISTEN", false},
    {"UnlistenStmt", "UNLISTEN", false},
    {"LoadStmt", "LOAD", false},
    {"CallStmt", "CALL", true},  // so is the procedure's body
    {"ClusterStmt", "CLUSTER", false},
    {"ExplainStmt", "EXPLAIN", false},
    {"RefreshMatViewStmt", "REFRESH MATERIALIZED VIEW", true},
    {"AlterSystemStmt", "ALTER SYSTEM", true},
    {"VariableShowStmt", "SHOW", false},
    {"CreateTransformStmt", "CREATE TRANSFORM", true},
    {"CreateTrigStmt", "CREATE TRIGGER", true},
    {"CreateEventTrigStmt", "CREATE EVENT TRIGGER", true},
    {"AlterEventTrigStmt", "ALTER EVENT TRIGGER", true},
    {"CreatePLangStmt", "CREATE LANGUAGE", true},
    {"CreateRoleStmt", "CREATE ROLE", true},
    {"AlterRoleStmt", "ALTER ROLE", true},
    {"AlterRoleSetStmt", "ALTER ROLE", true},
    {"DropRoleStmt", "DROP ROLE", true},
    {"DropOwnedStmt", "DROP OWNED", true},
    {"ReassignOwnedStmt", "REASSIGN OWNED", true},
    {"LockStmt", "LOCK TABLE", false},
    {"ConstraintsSetStmt", "SET CONSTRAINTS", false},
    {"CheckPointStmt", "CHECKPOINT", false},
    {"ReindexStmt", "REINDEX", false},
    {"CreateConversionStmt", "CREATE CONVERSION", true},
    {"CreateCastStmt", "CREATE CAST", true},
    {"CreateOpClassStmt", "CREATE OPERATOR CLASS", true},
    {"CreateOpFamilyStmt", "CREATE OPERATOR FAMILY", true},
    {"AlterOpFamilyStmt", "ALTER OPERATOR FAMILY", true},
    {"AlterOperatorStmt", "ALTER OPERATOR", true},
    {"AlterTypeStmt", "ALTER TYPE", true},
    {"AlterTSDictionaryStmt", "ALTER TEXT SEARCH DICTIONARY", true},
    {"AlterTSConfigurationStmt", "ALTER TEXT SEARCH CONFIGURATION", true},
    {"CreatePolicyStmt", "CREATE POLICY", true},
    {"AlterPolicyStmt", "ALTER POLICY", true},
    {"CreateAmStmt", "CREATE ACCESS METHOD", true},
    {"CreatePublicationStmt", "CREATE PUBLICATION", true},
    {"AlterPublicationStmt", "ALTER PUBLICATION", true},
    {"CreateSubscriptionStmt", "CREATE SUBSCRIPTION", true},
    {"AlterSubscriptionStmt", "ALTER SUBSCRIPTION", true},
    {"DropSubscriptionStmt", "DROP SUBSCRIPTION", true},
    {"AlterCollationStmt", "ALTER COLLATION", true},
    {"PrepareStmt", "PREPARE", false},  // writes if its statement does
    {"ExecuteStmt", "EXECUTE", false},  // its statement was judged at PREPARE
    {"CreateStatsStmt", "CREATE STATISTICS", true},
    {"AlterStatsStmt", "ALTER STATISTICS", true},
};

struct object_noun {
  std::string_view object_type;
  std::string_view noun;
  bool drop;   // DropStmt can name it (DROP <noun>)
  bool alter;  // AlterObjectTypeCommandTag() maps it (ALTER <noun>)
};

constexpr object_noun object_nouns[] = {
    {"OBJECT_ACCESS_METHOD", "ACCESS METHOD", true, false},
    {"OBJECT_AGGREGATE", "AGGREGATE", true, true},
    {"OBJECT_ATTRIBUTE", "TYPE", false, true},
    {"OBJECT_CAST", "CAST", true, true},
    {"OBJECT_COLLATION", "COLLATION", true, true},
    {"OBJECT_COLUMN", "TABLE", false, true},
    {"OBJECT_CONVERSION", "CONVERSION", true, true},
    {"OBJECT_DATABASE", "DATABASE", false, true},
    {"OBJECT_DOMAIN", "DOMAIN", true, true},
    {"OBJECT_DOMCONSTRAINT", "DOMAIN", false, true},
    {"OBJECT_EVENT_TRIGGER", "EVENT TRIGGER", true, true},
    {"OBJECT_EXTENSION", "EXTENSION", true, true},
    {"OBJECT_FDW", "FOREIGN DATA WRAPPER", true, true},
    {"OBJECT_FOREIGN_SERVER", "SERVER", true, true},
    {"OBJECT_FOREIGN_TABLE", "FOREIGN TABLE", true, true},
    {"OBJECT_FUNCTION", "FUNCTION", true, true},
    {"OBJECT_INDEX", "INDEX", true, true},
    {"OBJECT_LANGUAGE", "LANGUAGE", true, true},
    {"OBJECT_LARGEOBJECT", "LARGE OBJECT", false, true},
    {"OBJECT_MATVIEW", "MATERIALIZED VIEW", true, true},
    {"OBJECT_OPCLASS", "OPERATOR CLASS", true, true},
    {"OBJECT_OPERATOR", "OPERATOR", true, true},
    {"OBJECT_OPFAMILY", "OPERATOR FAMILY", true, true},
    {"OBJECT_POLICY", "POLICY", true, true},
    {"OBJECT_PROCEDURE", "PROCEDURE", true, true},
    {"OBJECT_PUBLICATION", "PUBLICATION", true, true},
    {"OBJECT_ROLE", "ROLE", false, true},
    {"OBJECT_ROUTINE", "ROUTINE", true, true},
    {"OBJECT_RULE", "RULE", true, true},
    {"OBJECT_SCHEMA", "SCHEMA", true, true},
    {"OBJECT_SEQUENCE", "SEQUENCE", true, true},
    {"OBJECT_SUBSCRIPTION", "SUBSCRIPTION", false, true},
    {"OBJECT_STATISTIC_EXT", "STATISTICS", true, true},
    {"OBJECT_TABCONSTRAINT", "TABLE", false, true},
    {"OBJECT_TABLE", "TABLE", true, true},
    {"OBJECT_TABLESPACE", "TABLESPACE", false, true},
    {"OBJECT_TRANSFORM", "TRANSFORM", true, false},
    {"OBJECT_TRIGGER", "TRIGGER", true, true},
    {"OBJECT_TSCONFIGURATION", "TEXT SEARCH CONFIGURATION", true, true},
    {"OBJECT_TSDICTIONARY", "TEXT SEARCH DICTIONARY", true, true},
    {"OBJECT_TSPARSER", "TEXT SEARCH PARSER", true, true},
    {"OBJECT_TSTEMPLATE", "TEXT SEARCH TEMPLATE", true, true},
    {"OBJECT_TYPE", "TYPE", true, true},
    {"OBJECT_VIEW", "VIEW", true, true},
};

// Tags produced by the field-dependent cases below, beyond DROP/ALTER <noun>.
constexpr std::string_view computed_tags[] = {
    "SELECT", "BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
    "PREPARE TRANSACTION", "COMMIT PREPARED", "ROLLBACK PREPARED", "CLOSE CURSOR",
    "CLOSE CURSOR ALL", "FETCH", "MOVE", "COPY", "GRANT", "REVOKE", "GRANT ROLE", "REVOKE ROLE",
    "CREATE AGGREGATE", "CREATE OPERATOR", "CREATE TYPE", "CREATE TEXT SEARCH PARSER",
    "CREATE TEXT SEARCH DICTIONARY", "CREATE TEXT SEARCH TEMPLATE",
    "CREATE TEXT SEARCH CONFIGURATION", "CREATE COLLATION", "CREATE FUNCTION", "CREATE PROCEDURE",
    "VACUUM", "ANALYZE", "SELECT INTO", "CREATE TABLE AS", "CREATE MATERIALIZED VIEW", "SET",
    "RESET", "DISCARD ALL", "DISCARD PLANS", "DISCARD TEMP", "DISCARD SEQUENCES", "DEALLOCATE",
    "DEALLOCATE ALL"};

const object_noun* find_noun(std::string_view object_type) {
  for (const auto& n : object_nouns)
    if (n.object_type == object_type) return &n;
  return nullptr;
}

const std::vector<std::string>& known_tags() {
  static const std::vector<std::string> tags = [] {
    std::vector<std::string> v;
    for (const auto& f : fixed_tags) v.emplace_back(f.tag);
    for (const auto& n : object_nouns) {
      if (n.drop) v.push_back("DROP " + std::string(n.noun));
      if (n.alter) v.push_back("ALTER " + std::string(n.noun));
    }
    for (auto t : computed_tags) v.emplace_back(t);
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
  }();
  return tags;
}

// ---------------------------------------------------------------------------
// The parse stack. libpg_query's tree output recurses once per nesting level
// of the parse tree, and a left-deep expression ("1+1+1+..." or "x::int::int
// ...") nests once per token: 200 KB of such text overflows an 8 MiB stack
// and takes the shard down. So the parser runs on a stack of its own, sized
// from the statement size bound and reserved (not committed) up front, with a
// guard page below it.

class parse_stack {
 public:
  ~parse_stack() {
    if (region_ != nullptr) munmap(region_, region_bytes_);
  }

  status reserve(std::size_t usable_bytes) {
    const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    usable_bytes = (usable_bytes + page - 1) / page * page;
    region_bytes_ = usable_bytes + page;
    void* p = mmap(nullptr, region_bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) return {errc::io, "cannot reserve the SQL parse stack: " + std::string(strerror(errno))};
    region_ = p;
    if (mprotect(region_, page, PROT_NONE) != 0) return {errc::io, "cannot protect the SQL parse stack's guard page"};
    stack_ = static_cast<char*>(region_) + page;
    stack_bytes_ = usable_bytes;
    return status::ok();
  }

  // Runs fn(arg) on this stack and returns when it has finished.
  void run(void (*fn)(void*), void* arg) {
    call_ = {fn, arg, this};
    getcontext(&fiber_);
    fiber_.uc_stack.ss_sp = stack_;
    fiber_.uc_stack.ss_size = stack_bytes_;
    fiber_.uc_link = nullptr;
    // makecontext passes ints; the pointer travels in two halves.
    const auto bits = reinterpret_cast<std::uintptr_t>(&call_);
    makecontext(&fiber_, reinterpret_cast<void (*)()>(&entry), 2, static_cast<unsigned>(bits & 0xffffffffu),
                static_cast<unsigned>(bits >> 32));
#if defined(AGENTGATE_ASAN)
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, stack_, stack_bytes_);
#endif
    swapcontext(&caller_, &fiber_);
#if defined(AGENTGATE_ASAN)
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
  }

  // Hands back the pages below the top keep_bytes (the stack grows down).
  void release_below(std::size_t keep_bytes) {
    if (keep_bytes >= stack_bytes_) return;
    madvise(stack_, stack_bytes_ - keep_bytes, MADV_DONTNEED);
  }

 private:
  struct call {
    void (*fn)(void*);
    void* arg;
    parse_stack* self;
  };

  static void entry(unsigned lo, unsigned hi) {
    auto* c = reinterpret_cast<call*>((static_cast<std::uintptr_t>(hi) << 32) | lo);
#if defined(AGENTGATE_ASAN)
    const void* caller_bottom = nullptr;
    std::size_t caller_bytes = 0;
    __sanitizer_finish_switch_fiber(nullptr, &caller_bottom, &caller_bytes);
#endif
    c->fn(c->arg);
    parse_stack* self = c->self;
#if defined(AGENTGATE_ASAN)
    // nullptr: this fiber is finished, its fake stack can go.
    __sanitizer_start_switch_fiber(nullptr, caller_bottom, caller_bytes);
#endif
    setcontext(&self->caller_);
  }

  void* region_ = nullptr;
  std::size_t region_bytes_ = 0;
  char* stack_ = nullptr;
  std::size_t stack_bytes_ = 0;
  ucontext_t caller_{};
  ucontext_t fiber_{};
  call call_{};
};

// libpg_query's recursion grows with the SQL text: left-deep chains of
// 2-byte tokens ("+1+1...") need 48-64 bytes of stack per byte of SQL, with
// or without ASan (libpg_query is not instrumented). Doubled for a margin,
// plus a floor for everything else that runs there (the walk below is not
// recursive). Reserved, not committed: only a deep statement touches pages.
constexpr std::size_t parse_stack_bytes_per_sql_byte = 128;
constexpr std::size_t parse_stack_floor_bytes = 8 << 20;
constexpr std::size_t parse_stack_release_threshold_bytes = 64 << 10;  // SQL bytes
constexpr std::size_t parse_stack_keep_bytes = 256 << 10;
constexpr std::size_t json_keep_capacity_bytes = 1 << 20;

// ---------------------------------------------------------------------------
// The parse tree walk. libpg_query's JSON has nodes as {"TypeName": {fields}}
// where a field's type is the generic Node, and bare {fields} where the field
// has a concrete type (InsertStmt.relation is a RangeVar, CallStmt.funccall a
// FuncCall). So tables are found by their "relname" field and function calls
// by "funcname", whichever way the node is written.

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

std::string_view string_field(object o, std::string_view key) {
  std::string_view v;
  if (o.at_key(key).get_string().get(v) != simdjson::SUCCESS) return {};
  return v;
}

// pg_query omits false booleans.
bool bool_field(object o, std::string_view key) {
  bool v = false;
  if (o.at_key(key).get_bool().get(v) != simdjson::SUCCESS) return false;
  return v;
}

bool has_field(object o, std::string_view key) { return o.at_key(key).error() == simdjson::SUCCESS; }

// A Node wrapper: exactly one key, a node type name (capitalised; field names
// are not).
bool unwrap(element e, std::string_view& type, object& body) {
  object o;
  if (e.get_object().get(o) != simdjson::SUCCESS || o.size() != 1) return false;
  for (auto field : o) {
    if (field.key.empty() || field.key[0] < 'A' || field.key[0] > 'Z') return false;
    if (field.value.get_object().get(body) != simdjson::SUCCESS) return false;
    type = field.key;
    return true;
  }
  return false;
}

// [{"String": {"sval": "pg_catalog"}}, {"String": {"sval": "now"}}] -> "pg_catalog.now"
std::string dotted_name(array parts, std::size_t drop_last) {
  std::vector<std::string_view> names;
  for (element part : parts) {
    std::string_view type;
    object body;
    if (!unwrap(part, type, body) || type != "String") continue;
    names.push_back(string_field(body, "sval"));
  }
  std::string out;
  if (names.size() < drop_last) return out;
  names.resize(names.size() - drop_last);
  for (std::string_view n : names) {
    if (!out.empty()) out += '.';
    out += n;
  }
  return out;
}

std::string_view last_part(std::string_view name) {
  const auto dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

bool is_false_word(std::string_view v) {
  // Exact spellings only: any other value is read as true (conservative).
  return v == "false" || v == "off" || v == "no" || v == "0";
}

// EXPLAIN runs its statement only with ANALYZE.
bool explain_analyzes(object explain) {
  array options;
  if (explain.at_key("options").get_array().get(options) != simdjson::SUCCESS) return false;
  for (element opt : options) {
    std::string_view type;
    object body;
    if (!unwrap(opt, type, body) || type != "DefElem") continue;
    if (string_field(body, "defname") != "analyze") continue;
    std::string_view arg_type;
    object arg;
    element arg_element;
    if (body.at_key("arg").get(arg_element) != simdjson::SUCCESS) return true;
    if (unwrap(arg_element, arg_type, arg) && arg_type == "String" && is_false_word(string_field(arg, "sval")))
      continue;
    return true;
  }
  return false;
}

// The value of a string constant as the server will read it: an A_Const
// string (the parser has already decoded E'', U&'', dollar quotes and
// adjacent literals), through casts that keep every byte (text, varchar or
// unknown without a length; regclass where a table is named). Anything else,
// an operator (|| can be redefined through search_path), a column, a
// parameter, a function, is not a constant. A NULL constant sets is_null.
//
// A cast's type must be written pg_catalog.text (the grammar writes varchar,
// character varying, ... that way itself): an unqualified "text" is looked
// up through search_path, and a client's own type of that name can carry
// an implicit cast to pg_catalog.text whose function returns other SQL.
// Where the value only adds a name to the facts (a regclass constant), any
// schema is taken (reporting more is safe).
enum class cast_schemas : std::uint8_t { pg_catalog_only, any };

bool constant_string(element e, bool allow_regclass, cast_schemas schemas, std::string_view& out, bool& is_null) {
  for (int casts = 0; casts < 8; ++casts) {
    std::string_view type;
    object body;
    if (!unwrap(e, type, body)) return false;
    if (type == "A_Const") {
      if (bool_field(body, "isnull")) {
        is_null = true;
        return true;
      }
      object sval;
      if (body.at_key("sval").get_object().get(sval) != simdjson::SUCCESS) return false;
      out = string_field(sval, "sval");
      return true;
    }
    if (type != "TypeCast") return false;
    object type_name;
    array names;
    if (body.at_key("typeName").get_object().get(type_name) != simdjson::SUCCESS ||
        type_name.at_key("names").get_array().get(names) != simdjson::SUCCESS)
      return false;
    if (has_field(type_name, "typmods") || has_field(type_name, "arrayBounds") || bool_field(type_name, "setof"))
      return false;
    const std::string name = dotted_name(names, 0);
    const std::string_view last = last_part(name);
    const bool pg_catalog = name.size() != last.size() && name.substr(0, name.size() - last.size()) == "pg_catalog.";
    if (!pg_catalog && (schemas == cast_schemas::pg_catalog_only || name.size() != last.size())) return false;
    if (last != "text" && last != "varchar" && last != "unknown" && !(allow_regclass && last == "regclass"))
      return false;
    if (body.at_key("arg").get(e) != simdjson::SUCCESS) return false;
  }
  return false;
}

// regclassin(): a table named in a string ('Public."Payments"'), read as the
// server reads it (stringToQualifiedNameList): dot-separated identifiers,
// unquoted ones folded to lower case (ASCII: the server encoding is UTF-8),
// quoted ones as written with "" for ", each cut to 63 bytes, blanks around
// them skipped. False for what names no table by name: an OID ('16384'),
// "-", or text the server rejects.
bool parse_regclass(std::string_view s, std::string& out) {
  out.clear();
  if (s.empty() || s == "-") return false;
  if (std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  std::size_t pos = 0;
  std::size_t parts = 0;
  auto skip_space = [&] {
    while (pos < s.size() && is_pg_space(s[pos])) ++pos;
  };
  skip_space();
  for (;;) {
    std::string part;
    if (pos < s.size() && s[pos] == '"') {
      ++pos;
      for (;;) {
        if (pos >= s.size()) return false;  // unterminated
        if (s[pos] == '"') {
          if (pos + 1 < s.size() && s[pos + 1] == '"') {
            part += '"';
            pos += 2;
            continue;
          }
          ++pos;
          break;
        }
        part += s[pos++];
      }
      if (part.empty()) return false;
    } else {
      while (pos < s.size() && s[pos] != '.' && !is_pg_space(s[pos])) part += ascii_lower(s[pos++]);
      if (part.empty()) return false;
    }
    if (part.size() > identifier_bytes_max) {
      std::size_t cut = identifier_bytes_max;
      while (cut > 0 && (static_cast<unsigned char>(part[cut]) & 0xc0) == 0x80) --cut;  // a UTF-8 boundary
      part.resize(cut);
    }
    if (++parts > 3) return false;
    if (!out.empty()) out += '.';
    out += part;
    skip_space();
    if (pos >= s.size()) return true;
    if (s[pos] != '.') return false;
    ++pos;
    skip_space();
  }
}

// Built-ins that read tables or run SQL the call itself does not name
// (PostgreSQL 15's pg_proc, plus the dblink and pageinspect extensions).
// Matched by the last part of the name, as rules match functions.
enum class hidden_read : std::uint8_t {
  sql_text,  // runs the SQL text in argument `position` / named `param`
  sql_last,  // dblink family: runs its last non-boolean argument
  table,     // reads the table named by a regclass (or text) argument
  schema,    // reads every table of the schema named by its argument
  database,  // reads every table
  cursor,    // reads a cursor opened earlier, by a statement it cannot name
};

struct hidden_read_function {
  std::string_view name;
  hidden_read what;
  std::string_view param;  // the argument's name, for named notation
  std::size_t position;
};

constexpr hidden_read_function hidden_read_functions[] = {
    {"query_to_xml", hidden_read::sql_text, "query", 0},
    {"query_to_xmlschema", hidden_read::sql_text, "query", 0},
    {"query_to_xml_and_xmlschema", hidden_read::sql_text, "query", 0},
    {"ts_stat", hidden_read::sql_text, "query", 0},
    {"ts_rewrite", hidden_read::sql_text, "", 1},  // ts_rewrite(tsquery, select text)
    {"dblink", hidden_read::sql_last, "", 0},
    {"dblink_exec", hidden_read::sql_last, "", 0},
    {"dblink_open", hidden_read::sql_last, "", 0},
    {"dblink_send_query", hidden_read::sql_last, "", 0},
    {"table_to_xml", hidden_read::table, "tbl", 0},
    {"table_to_xmlschema", hidden_read::table, "tbl", 0},
    {"table_to_xml_and_xmlschema", hidden_read::table, "tbl", 0},
    {"get_raw_page", hidden_read::table, "relname", 0},
    {"schema_to_xml", hidden_read::schema, "schema", 0},
    {"schema_to_xmlschema", hidden_read::schema, "schema", 0},
    {"schema_to_xml_and_xmlschema", hidden_read::schema, "schema", 0},
    {"database_to_xml", hidden_read::database, "", 0},
    {"database_to_xmlschema", hidden_read::database, "", 0},
    {"database_to_xml_and_xmlschema", hidden_read::database, "", 0},
    {"cursor_to_xml", hidden_read::cursor, "cursor", 0},
    {"cursor_to_xmlschema", hidden_read::cursor, "cursor", 0},
};

const hidden_read_function* find_hidden_read(std::string_view last) {
  for (const auto& f : hidden_read_functions)
    if (f.name == last) return &f;
  return nullptr;
}

// Definitions that name functions the server will call later under another
// name (an aggregate's transition function, an operator's function, a type's
// input function, ...): DefElem names, by the statement that holds them.
constexpr std::string_view function_defelems[] = {
    // CREATE AGGREGATE (sfunc1: the pre-8.2 spelling, still accepted)
    "sfunc", "sfunc1", "finalfunc", "combinefunc", "serialfunc", "deserialfunc", "msfunc", "minvfunc",
    "mfinalfunc",
    // CREATE/ALTER OPERATOR
    "function", "procedure", "restrict", "join",
    // CREATE/ALTER TYPE (base types)
    "input", "output", "receive", "send", "typmod_in", "typmod_out", "analyze", "subscript",
    // CREATE TYPE ... AS RANGE
    "subtype_diff", "canonical",
    // CREATE TEXT SEARCH PARSER / TEMPLATE
    "start", "gettoken", "end", "headline", "lextypes", "init", "lexize",
    // CREATE/ALTER FOREIGN DATA WRAPPER
    "handler", "validator",
    // CREATE/ALTER FUNCTION ... SUPPORT
    "support"};

bool names_a_function(std::string_view defname) {
  return std::find(std::begin(function_defelems), std::end(function_defelems), defname) !=
         std::end(function_defelems);
}

// Walks the tree without recursion: the JSON nests as deep as the statement
// does (its bound, parse_tree_depth_max, is in the tens of thousands), and a
// frame per level would make the stack this needs depend on the compiler and
// the sanitizers. Pending work lives in a vector instead, visited in document
// order so nested statements are listed as they are written.
//
// Names are added to their entry and to every entry enclosing it as they are
// found, stopping at the first that has them already (an entry holds all its
// descendants' names, so its ancestors do too): the work is one step per
// (entry, name) pair reported, which names_max bounds, never a copy of a
// child's list into its parent at each level.
//
// SQL given as text to a built-in (query_to_xml('select ...')) and the body
// of a LANGUAGE sql function are parsed after the tree they sit in has been
// walked (the JSON parser holds one tree at a time), as statements nested in
// the entry that holds them.
class tree_walker {
 public:
  // A constant SQL text found in the tree, to be parsed once it is walked.
  struct sql_text {
    std::string text;
    std::string source;  // for messages: "query_to_xml", "the body of function f"
    std::size_t owner;
    bool executes;
    std::uint32_t depth;  // how many SQL texts enclose it
  };

  static constexpr std::uint32_t sql_text_depth_max = 8;

  tree_walker(classification& out, const classifier_spec& spec) : out_(out), spec_(spec) {}

  // Fills out_.statements from the tree's "stmts". False (with out_.parse_error
  // set) when the tree breaks a bound or holds a statement we do not know.
  bool walk_root(element root) {
    array stmts;
    if (root.at_key("stmts").get_array().get(stmts) != simdjson::SUCCESS) return fail("parse tree without statements");
    std::uint32_t index = 0;
    for (element raw : stmts) {
      object raw_stmt;
      element stmt;
      if (raw.get_object().get(raw_stmt) != simdjson::SUCCESS) return fail("malformed parse tree");
      if (raw_stmt.at_key("stmt").get(stmt) != simdjson::SUCCESS) continue;  // an empty statement
      std::string_view type;
      object body;
      if (!unwrap(stmt, type, body)) return fail("malformed parse tree");
      open_statement(type, body, index, no_parent, true);
      drain();
      if (failed_) return false;
      ++index;
    }
    return true;
  }

  // The next SQL text to parse, in the order they were found.
  bool next_text(sql_text& t) {
    if (next_text_ >= texts_.size()) return false;
    t = std::move(texts_[next_text_++]);
    return true;
  }

  // Walks the parse tree of a text next_text() handed out: its statements
  // are nested in the entry that held the text.
  bool walk_text(element root, const sql_text& t) {
    array stmts;
    if (root.at_key("stmts").get_array().get(stmts) != simdjson::SUCCESS) return fail("parse tree without statements");
    text_depth_ = t.depth;
    for (element raw : stmts) {
      object raw_stmt;
      element stmt;
      if (raw.get_object().get(raw_stmt) != simdjson::SUCCESS) return fail("malformed parse tree");
      if (raw_stmt.at_key("stmt").get(stmt) != simdjson::SUCCESS) continue;
      std::string_view type;
      object body;
      if (!unwrap(stmt, type, body)) return fail("malformed parse tree");
      if (t.executes) {
        open_statement(type, body, entry(t.owner).top_level_index, t.owner, true);
      } else {
        pending_.push_back({false, false, t.owner, stmt});
      }
      drain();
      if (failed_) return false;
    }
    return true;
  }

  // Writes each entry's names and parameters, sorted and unique.
  void finish() {
    for (std::size_t i = 0; i < out_.statements.size(); ++i) {
      statement_facts& f = out_.statements[i];
      for (std::uint32_t id : names_[i].tables) f.tables.push_back(*interned_[id]);
      for (std::uint32_t id : names_[i].functions) f.functions.push_back(*interned_[id]);
      std::sort(f.tables.begin(), f.tables.end());
      std::sort(f.functions.begin(), f.functions.end());
      std::sort(f.set_parameters.begin(), f.set_parameters.end());
      f.set_parameters.erase(std::unique(f.set_parameters.begin(), f.set_parameters.end()), f.set_parameters.end());
    }
  }

 private:
  static constexpr std::size_t no_parent = static_cast<std::size_t>(-1);

  bool fail(std::string message) {
    if (!failed_) {
      failed_ = true;
      out_.parse_error = std::move(message);
    }
    return false;
  }

  // One unit of pending work: visit an element on behalf of an entry (the
  // innermost statement enclosing it), or close an entry once everything
  // below it has been visited.
  struct work {
    bool close;
    bool executes;      // false below a plain EXPLAIN: nothing there runs
    std::size_t owner;  // entry index
    element e;
  };

  enum class name_kind : std::uint64_t { table = 0, function = 1 };

  struct entry_names {
    std::vector<std::uint32_t> tables;
    std::vector<std::uint32_t> functions;
  };

  statement_facts& entry(std::size_t i) { return out_.statements[i]; }

  void drain() {
    while (!pending_.empty() && !failed_) {
      const work w = pending_.back();
      pending_.pop_back();
      if (w.close) {
        close(w.owner);
      } else {
        visit(w);
      }
    }
    pending_.clear();
  }

  // Visits run last-in first-out; pushing a container's children and then
  // reversing them keeps document order.
  void push_children_in_order(std::size_t mark) {
    std::reverse(pending_.begin() + static_cast<std::ptrdiff_t>(mark), pending_.end());
  }

  // Adds an entry for one statement and schedules its walk and its close.
  void open_statement(std::string_view type, object body, std::uint32_t top, std::size_t parent, bool executes) {
    if (failed_) return;
    if (out_.statements.size() >= spec_.statements_max) {
      fail("too many statements (more than " + std::to_string(spec_.statements_max) + ")");
      return;
    }
    const std::size_t idx = out_.statements.size();
    out_.statements.emplace_back();
    parents_.push_back(parent);
    names_.emplace_back();
    entry(idx).top_level_index = top;
    entry(idx).nested = parent != no_parent;
    if (!describe(type, body, idx)) return;

    pending_.push_back({true, executes, idx, element()});
    element query;
    const bool has_query = body.at_key("query").get(query) == simdjson::SUCCESS;
    if (type == "PrepareStmt" && has_query) {
      open_inner_statement(query, idx, executes);
    } else if (type == "ExplainStmt" && has_query) {
      if (explain_analyzes(body)) {
        open_inner_statement(query, idx, executes);
      } else {
        // Plain EXPLAIN plans without running: its tables and functions are
        // still reported (constant folding can call functions), but nothing
        // inside counts as a statement that runs.
        pending_.push_back({false, false, idx, query});
      }
    } else {
      fields(body, type, idx, executes);
    }
  }

  // PREPARE's and EXPLAIN ANALYZE's statement is a statement of its own.
  void open_inner_statement(element query, std::size_t owner, bool executes) {
    std::string_view type;
    object inner;
    if (executes && unwrap(query, type, inner)) {
      open_statement(type, inner, entry(owner).top_level_index, owner, executes);
    } else {
      pending_.push_back({false, executes, owner, query});
    }
  }

  // Hands the fact that it writes to the enclosing entries. An ancestor that
  // already writes has passed it on, or will when it closes.
  void close(std::size_t idx) {
    if (!entry(idx).writes) return;
    for (std::size_t p = parents_[idx]; p != no_parent && !entry(p).writes; p = parents_[p]) entry(p).writes = true;
  }

  void add_name(name_kind kind, std::string name, std::size_t owner) {
    if (name.empty() || failed_) return;
    auto [it, fresh] = ids_.try_emplace(std::move(name), static_cast<std::uint32_t>(interned_.size()));
    if (fresh) interned_.push_back(&it->first);
    const std::uint64_t id = it->second;
    for (std::size_t e = owner; e != no_parent; e = parents_[e]) {
      const std::uint64_t key = (static_cast<std::uint64_t>(e) << 33) | (static_cast<std::uint64_t>(kind) << 32) | id;
      if (!pairs_.insert(key).second) return;
      auto& list = kind == name_kind::table ? names_[e].tables : names_[e].functions;
      list.push_back(static_cast<std::uint32_t>(id));
      if (++names_count_ > spec_.names_max) {
        fail("statement too complex: it names more than " + std::to_string(spec_.names_max) +
             " tables and functions (counted once per enclosing statement)");
        return;
      }
    }
  }

  void add_parameter(std::string name, std::size_t owner) {
    if (!name.empty()) entry(owner).set_parameters.push_back(std::move(name));
  }

  void visit(const work& w) {
    if (++nodes_ > spec_.walk_nodes_max) {
      fail("statement too complex: its parse tree has more than " + std::to_string(spec_.walk_nodes_max) + " nodes");
      return;
    }
    switch (w.e.type()) {
      case simdjson::dom::element_type::ARRAY: {
        array a;
        if (w.e.get_array().get(a) != simdjson::SUCCESS) return;
        const std::size_t mark = pending_.size();
        for (element item : a) {
          const auto t = item.type();
          if (t == simdjson::dom::element_type::ARRAY || t == simdjson::dom::element_type::OBJECT)
            pending_.push_back({false, w.executes, w.owner, item});
        }
        push_children_in_order(mark);
        return;
      }
      case simdjson::dom::element_type::OBJECT: {
        std::string_view type;
        object body;
        if (unwrap(w.e, type, body)) {
          node(type, body, w);
        } else {
          object o;
          if (w.e.get_object().get(o) == simdjson::SUCCESS) fields(o, {}, w.owner, w.executes);
        }
        return;
      }
      default:
        return;
    }
  }

  void node(std::string_view type, object body, const work& w) {
    // Leaves: nothing below them names a table or a function.
    if (type == "String" || type == "Integer" || type == "Float" || type == "Boolean" ||
        type == "BitString" || type == "A_Const" || type == "ColumnRef" || type == "ParamRef" ||
        type == "A_Star")
      return;
    const bool dml = type == "InsertStmt" || type == "UpdateStmt" || type == "DeleteStmt" || type == "MergeStmt";
    if (dml && w.executes) {
      open_statement(type, body, entry(w.owner).top_level_index, w.owner, w.executes);
      return;
    }
    if (type == "FuncCall") {
      function_call(body, w);
    } else if (type == "TypeCast") {
      type_cast(body, w.owner);
    } else if (type == "VariableSetStmt") {
      // CREATE/ALTER FUNCTION ... SET x = v: set while the function runs.
      set_names(body, w.owner);
    }
    fields(body, type, w.owner, w.executes);
  }

  // Takes what this object says directly and schedules its children.
  void fields(object o, std::string_view type, std::size_t owner, bool executes) {
    if (!type.empty()) definition_functions(type, o, owner, executes);
    const std::size_t mark = pending_.size();
    for (auto field : o) {
      if (field.key == "relname") {
        add_table(o, owner);
      } else if (field.key == "funcname" && type != "CreateFunctionStmt") {
        array parts;
        if (field.value.get_array().get(parts) == simdjson::SUCCESS) add_function(dotted_name(parts, 0), owner);
      } else if (field.key == "objects" && type == "DropStmt") {
        add_dropped_relations(o, field.value, owner);
      } else {
        const auto t = field.value.type();
        if (t == simdjson::dom::element_type::ARRAY || t == simdjson::dom::element_type::OBJECT)
          pending_.push_back({false, executes, owner, field.value});
      }
    }
    push_children_in_order(mark);
  }

  void add_table(object range_var, std::size_t owner) {
    std::string name;
    for (std::string_view key : {"catalogname", "schemaname", "relname"}) {
      const std::string_view part = string_field(range_var, key);
      if (part.empty()) continue;
      if (!name.empty()) name += '.';
      name += part;
    }
    // A view over pg_settings is updatable, and an UPDATE of it runs the
    // view's set_config rule: it is a way to set any parameter later.
    if (string_field(range_var, "relname") == "pg_settings" && entry(owner).kind == "CREATE VIEW")
      add_parameter("*", owner);
    add_name(name_kind::table, std::move(name), owner);
  }

  void add_function(std::string name, std::size_t owner) {
    if (name.empty()) return;
    for (char& c : name) c = ascii_lower(c);
    add_name(name_kind::function, std::move(name), owner);
  }

  // A function a definition names (not a call): the server calls it later,
  // under the aggregate's, operator's, cast's or type's name. One that runs
  // SQL given as text would then run text the gateway never sees.
  void add_defined_function(std::string name, std::size_t owner) {
    if (name.empty()) return;
    for (char& c : name) c = ascii_lower(c);
    if (const hidden_read_function* h = find_hidden_read(last_part(name));
        h != nullptr && h->what != hidden_read::table && h->what != hidden_read::schema &&
        h->what != hidden_read::database) {
      fail("a definition names " + std::string(h->name) +
           ", which runs SQL given to it as text: what it would run cannot be seen");
      return;
    }
    add_name(name_kind::function, std::move(name), owner);
  }

  // A DefElem's argument naming a function: a type-like name (SFUNC = s.f),
  // a string (SFUNC = 'f', taken verbatim) or a name list (HANDLER h).
  void add_defined_function(element arg, std::size_t owner) {
    std::string_view type;
    object body;
    if (!unwrap(arg, type, body)) return;
    array names;
    if (type == "TypeName" && body.at_key("names").get_array().get(names) == simdjson::SUCCESS) {
      add_defined_function(dotted_name(names, 0), owner);
    } else if (type == "List" && body.at_key("items").get_array().get(names) == simdjson::SUCCESS) {
      add_defined_function(dotted_name(names, 0), owner);
    } else if (type == "String") {
      add_defined_function(std::string(string_field(body, "sval")), owner);
    }
  }

  void add_defined_functions(object o, std::string_view list_key, std::size_t owner) {
    array list;
    if (o.at_key(list_key).get_array().get(list) != simdjson::SUCCESS) return;
    for (element item : list) {
      std::string_view type;
      object def;
      element arg;
      if (!unwrap(item, type, def) || type != "DefElem") continue;
      if (!names_a_function(string_field(def, "defname"))) continue;
      if (def.at_key("arg").get(arg) == simdjson::SUCCESS) add_defined_function(arg, owner);
    }
  }

  void add_object_function(object o, std::string_view key, std::size_t owner) {
    object with_args;
    array names;
    if (o.at_key(key).get_object().get(with_args) == simdjson::SUCCESS &&
        with_args.at_key("objname").get_array().get(names) == simdjson::SUCCESS)
      add_defined_function(dotted_name(names, 0), owner);
  }

  void add_name_list_function(object o, std::string_view key, std::size_t owner) {
    array names;
    if (o.at_key(key).get_array().get(names) == simdjson::SUCCESS) add_defined_function(dotted_name(names, 0), owner);
  }

  // Functions named by definitions, and the SQL body of a LANGUAGE sql
  // function (parsed as statements nested in the CREATE FUNCTION, as a
  // BEGIN ATOMIC body is).
  void definition_functions(std::string_view type, object o, std::size_t owner, bool executes) {
    if (type == "DefineStmt") {
      add_defined_functions(o, "definition", owner);
    } else if (type == "CreateRangeStmt") {
      add_defined_functions(o, "params", owner);
    } else if (type == "AlterOperatorStmt" || type == "AlterTypeStmt") {
      add_defined_functions(o, "options", owner);
    } else if (type == "CreateFdwStmt" || type == "AlterFdwStmt") {
      add_defined_functions(o, "func_options", owner);
    } else if (type == "AlterFunctionStmt") {
      add_defined_functions(o, "actions", owner);
    } else if (type == "CreateFunctionStmt") {
      add_defined_functions(o, "options", owner);
      sql_function_body(o, owner, executes);
    } else if (type == "CreateCastStmt") {
      add_object_function(o, "func", owner);
    } else if (type == "CreateTransformStmt") {
      add_object_function(o, "fromsql", owner);
      add_object_function(o, "tosql", owner);
    } else if (type == "CreateOpClassItem") {
      std::int64_t item_type = 0;
      if (o.at_key("itemtype").get_int64().get(item_type) == simdjson::SUCCESS && item_type == 2)  // OPCLASS_ITEM_FUNCTION
        add_object_function(o, "name", owner);
    } else if (type == "CreateConversionStmt") {
      add_name_list_function(o, "func_name", owner);
    } else if (type == "CreatePLangStmt") {
      add_name_list_function(o, "plhandler", owner);
      add_name_list_function(o, "plinline", owner);
      add_name_list_function(o, "plvalidator", owner);
    } else if (type == "CreateAmStmt") {
      add_name_list_function(o, "handler_name", owner);
    }
  }

  void sql_function_body(object o, std::size_t owner, bool executes) {
    array options;
    if (o.at_key("options").get_array().get(options) != simdjson::SUCCESS) return;
    std::string_view language;
    element body;
    bool has_body = false;
    for (element item : options) {
      std::string_view type;
      object def;
      element arg;
      if (!unwrap(item, type, def) || type != "DefElem" || def.at_key("arg").get(arg) != simdjson::SUCCESS) continue;
      const std::string_view name = string_field(def, "defname");
      std::string_view arg_type;
      object arg_body;
      if (!unwrap(arg, arg_type, arg_body)) continue;
      if (name == "language" && arg_type == "String") language = string_field(arg_body, "sval");
      if (name == "as") {
        body = arg;
        has_body = true;
      }
    }
    if (!has_body || lowered(language) != "sql") return;
    std::string_view type;
    object list;
    array items;
    if (!unwrap(body, type, list) || type != "List" || list.at_key("items").get_array().get(items) != simdjson::SUCCESS ||
        items.size() != 1)
      return;  // two strings would be a C function's file and symbol
    for (element item : items) {
      object str;
      if (unwrap(item, type, str) && type == "String")
        queue_text(string_field(str, "sval"), "the body of a LANGUAGE sql function", owner, executes);
    }
  }

  void queue_text(std::string_view text, std::string source, std::size_t owner, bool executes) {
    if (failed_) return;
    if (text_depth_ + 1 > sql_text_depth_max) {
      fail("SQL text nests too deeply (in " + source + ")");
      return;
    }
    if (text.find('\0') != std::string_view::npos) {
      fail("SQL text given to " + source + " contains a NUL byte");
      return;
    }
    text_bytes_ += text.size();
    if (text_bytes_ > spec_.statement_bytes_max) {
      fail("statement too large: SQL given as text adds more than " + std::to_string(spec_.statement_bytes_max) +
           " bytes");
      return;
    }
    texts_.push_back({std::string(text), std::move(source), owner, executes, text_depth_ + 1});
  }

  // The argument of a call by position, or by name (query => '...'). False
  // when it cannot be told which argument the server will bind to it.
  static bool argument(object call, std::string_view param, std::size_t position, element& out) {
    if (bool_field(call, "func_variadic")) return false;
    array args;
    if (call.at_key("args").get_array().get(args) != simdjson::SUCCESS) return false;
    std::size_t i = 0;
    for (element a : args) {
      std::string_view type;
      object body;
      if (unwrap(a, type, body) && type == "NamedArgExpr") {
        if (!param.empty() && string_field(body, "name") == param) return body.at_key("arg").get(out) == simdjson::SUCCESS;
        ++i;
        continue;
      }
      if (i == position) {
        out = a;
        return true;
      }
      ++i;
    }
    return false;
  }

  // dblink(conn, sql [, fail_on_error]) and its kin: the SQL is the last
  // argument that is not a boolean constant. Named notation is refused.
  static bool last_text_argument(object call, element& out) {
    if (bool_field(call, "func_variadic")) return false;
    array args;
    if (call.at_key("args").get_array().get(args) != simdjson::SUCCESS) return false;
    std::vector<element> positional;
    for (element a : args) {
      std::string_view type;
      object body;
      if (unwrap(a, type, body) && type == "NamedArgExpr") return false;
      positional.push_back(a);
    }
    while (!positional.empty()) {
      std::string_view type;
      object body;
      if (unwrap(positional.back(), type, body) && type == "A_Const" && has_field(body, "boolval")) {
        positional.pop_back();
        continue;
      }
      break;
    }
    if (positional.empty()) return false;
    out = positional.back();
    return true;
  }

  void function_call(object call, const work& w) {
    array parts;
    if (call.at_key("funcname").get_array().get(parts) != simdjson::SUCCESS) return;
    const std::string name = lowered(dotted_name(parts, 0));
    const std::string_view last = last_part(name);
    if (last == "regclass" || last == "to_regclass") {
      element arg;
      std::string_view text;
      bool is_null = false;
      std::string table;
      if (argument(call, "", 0, arg) && constant_string(arg, true, cast_schemas::any, text, is_null) && !is_null &&
          parse_regclass(text, table))
        add_name(name_kind::table, std::move(table), w.owner);
      return;
    }
    const hidden_read_function* h = find_hidden_read(last);
    if (h == nullptr) return;
    element arg;
    std::string_view text;
    bool is_null = false;
    switch (h->what) {
      case hidden_read::sql_text:
      case hidden_read::sql_last: {
        const bool found = h->what == hidden_read::sql_last ? last_text_argument(call, arg)
                           : h->name == "ts_rewrite"       ? argument_count(call) == 2 && argument(call, "", 1, arg)
                                                           : argument(call, h->param, h->position, arg);
        if (h->name == "ts_rewrite" && argument_count(call) != 2) return;  // ts_rewrite(tsquery, tsquery, tsquery)
        if (!found || !constant_string(arg, false, cast_schemas::pg_catalog_only, text, is_null)) {
          fail(std::string(h->name) + " is given SQL text that is not a constant: what it runs cannot be seen");
          return;
        }
        if (!is_null) queue_text(text, std::string(h->name), w.owner, w.executes);
        return;
      }
      case hidden_read::table: {
        std::string table;
        if (argument(call, h->param, h->position, arg) &&
            constant_string(arg, true, cast_schemas::pg_catalog_only, text, is_null) &&
            (is_null || parse_regclass(text, table))) {
          add_name(name_kind::table, std::move(table), w.owner);
        } else if (spec_.tables) {
          fail(std::string(h->name) + " reads a table that is not named by a constant: which one cannot be seen");
        }
        return;
      }
      case hidden_read::schema: {
        if (argument(call, h->param, h->position, arg) &&
            constant_string(arg, false, cast_schemas::pg_catalog_only, text, is_null)) {
          // A name argument is taken verbatim: no case folding, no quotes.
          if (!is_null) add_name(name_kind::table, std::string(text) + ".*", w.owner);
        } else {
          add_name(name_kind::table, "*", w.owner);
        }
        return;
      }
      case hidden_read::database:
        add_name(name_kind::table, "*", w.owner);
        return;
      case hidden_read::cursor:
        // The cursor may have been opened by a statement this session never
        // showed the gateway (inside a function, or under an earlier policy).
        if (spec_.tables) fail(std::string(h->name) + " reads a cursor: which tables it reads cannot be seen");
        return;
    }
  }

  static std::size_t argument_count(object call) {
    array args;
    if (call.at_key("args").get_array().get(args) != simdjson::SUCCESS) return 0;
    return args.size();
  }

  // 'payments'::regclass (and CAST(... AS regclass), regclass 'payments')
  // names a table; a regclass cast of anything else is an OID lookup that
  // reads nothing.
  void type_cast(object cast, std::size_t owner) {
    object type_name;
    array names;
    if (cast.at_key("typeName").get_object().get(type_name) != simdjson::SUCCESS ||
        type_name.at_key("names").get_array().get(names) != simdjson::SUCCESS)
      return;
    const std::string name = dotted_name(names, 0);
    if (last_part(name) != "regclass") return;
    element arg;
    std::string_view text;
    bool is_null = false;
    std::string table;
    if (cast.at_key("arg").get(arg) == simdjson::SUCCESS &&
        constant_string(arg, true, cast_schemas::any, text, is_null) && !is_null &&
        parse_regclass(text, table))
      add_name(name_kind::table, std::move(table), owner);
  }

  // DROP TABLE a.b names its relations as lists of strings, not RangeVars;
  // DROP TRIGGER/RULE/POLICY name ON table: all but the last part.
  void add_dropped_relations(object drop, element objects, std::size_t owner) {
    const std::string_view remove_type = string_field(drop, "removeType");
    std::size_t drop_last = 0;
    if (remove_type == "OBJECT_TRIGGER" || remove_type == "OBJECT_RULE" || remove_type == "OBJECT_POLICY") {
      drop_last = 1;
    } else if (remove_type != "OBJECT_TABLE" && remove_type != "OBJECT_VIEW" && remove_type != "OBJECT_MATVIEW" &&
               remove_type != "OBJECT_FOREIGN_TABLE" && remove_type != "OBJECT_SEQUENCE" &&
               remove_type != "OBJECT_INDEX") {
      return;
    }
    array list;
    if (objects.get_array().get(list) != simdjson::SUCCESS) return;
    for (element item : list) {
      std::string_view type;
      object body;
      array parts;
      if (!unwrap(item, type, body) || type != "List") continue;
      if (body.at_key("items").get_array().get(parts) != simdjson::SUCCESS) continue;
      add_name(name_kind::table, dotted_name(parts, drop_last), owner);
    }
  }

  // Sets kind and the statement's own properties. False for a statement this
  // classifier does not know: it fails closed rather than guess.
  bool describe(std::string_view type, object body, std::size_t idx) {
    statement_facts& f = entry(idx);
    for (const auto& t : fixed_tags) {
      if (t.node != type) continue;
      f.kind = t.tag;
      f.writes = t.writes;
      if (type == "UpdateStmt" || type == "DeleteStmt") f.without_where = !has_field(body, "whereClause");
      if (type == "AlterRoleSetStmt" || type == "AlterDatabaseSetStmt" || type == "AlterSystemStmt") {
        object set;
        if (body.at_key("setstmt").get_object().get(set) == simdjson::SUCCESS) set_names(set, idx);
      }
      if (type == "InsertStmt" || type == "UpdateStmt" || type == "DeleteStmt" || type == "MergeStmt")
        settings_write(type, body, idx);
      return true;
    }
    if (type == "SelectStmt") {
      f.kind = "SELECT";
      f.writes = has_field(body, "intoClause");  // SELECT INTO creates a table
      return true;
    }
    if (type == "CopyStmt") {
      f.kind = "COPY";
      f.copy_program = bool_field(body, "is_program");
      f.writes = bool_field(body, "is_from");
      if (f.writes) settings_write(type, body, idx);
      return true;
    }
    if (type == "VariableSetStmt") {
      const std::string_view kind = string_field(body, "kind");
      f.kind = (kind == "VAR_RESET" || kind == "VAR_RESET_ALL") ? "RESET" : "SET";
      set_names(body, idx);
      return true;
    }
    if (type == "TransactionStmt") {
      if (!transaction_tag(string_field(body, "kind"), f)) return fail("unrecognised transaction statement");
      transaction_modes(body, "options", "", idx);
      return true;
    }
    return describe_computed(type, body, f) || fail("unrecognised statement: " + std::string(type));
  }

  // The parameters a SET/RESET (or the SET of ALTER ROLE/DATABASE/SYSTEM
  // and of a function) sets. SET TRANSACTION and SET SESSION CHARACTERISTICS
  // set the transaction_* and default_transaction_* parameters.
  void set_names(object set, std::size_t idx) {
    const std::string_view kind = string_field(set, "kind");
    if (kind == "VAR_RESET_ALL") {
      add_parameter("all", idx);
      return;
    }
    const std::string name = lowered(string_field(set, "name"));
    if (kind != "VAR_SET_MULTI") {
      add_parameter(name.empty() ? "*" : name, idx);
      return;
    }
    if (name == "transaction") {
      transaction_modes(set, "args", "", idx);
    } else if (name == "session characteristics") {
      transaction_modes(set, "args", "default_", idx);
    } else if (name == "transaction snapshot") {
      add_parameter("transaction_snapshot", idx);
    } else {
      add_parameter("*", idx);
    }
  }

  // BEGIN/START TRANSACTION/SET TRANSACTION modes, as the DefElems the
  // grammar makes of them (transaction_isolation, transaction_read_only,
  // transaction_deferrable). READ ONLY is not reported: it can only switch
  // the read-only safety net on, and clients send it for every read-only
  // transaction (BEGIN READ ONLY).
  void transaction_modes(object o, std::string_view list_key, std::string_view prefix, std::size_t idx) {
    array list;
    if (o.at_key(list_key).get_array().get(list) != simdjson::SUCCESS) return;
    for (element item : list) {
      std::string_view type;
      object def;
      if (!unwrap(item, type, def) || type != "DefElem") {
        add_parameter("*", idx);
        continue;
      }
      const std::string_view name = string_field(def, "defname");
      if (name == "transaction_read_only" && read_only_mode(def)) continue;
      add_parameter(std::string(prefix) + lowered(name), idx);
    }
  }

  static bool read_only_mode(object def) {
    element arg;
    std::string_view type;
    object a;
    object ival;
    std::int64_t v = 0;
    return def.at_key("arg").get(arg) == simdjson::SUCCESS && unwrap(arg, type, a) && type == "A_Const" &&
           a.at_key("ival").get_object().get(ival) == simdjson::SUCCESS &&
           ival.at_key("ival").get_int64().get(v) == simdjson::SUCCESS && v == 1;
  }

  // A write to the pg_settings view sets parameters: its UPDATE rule calls
  // set_config(). Which ones is known only from a WHERE that pins the name
  // to constants; otherwise "*".
  void settings_write(std::string_view type, object body, std::size_t idx) {
    object relation;
    if (body.at_key("relation").get_object().get(relation) != simdjson::SUCCESS) return;
    if (string_field(relation, "relname") != "pg_settings") return;
    std::vector<std::string> names;
    if ((type == "UpdateStmt" || type == "DeleteStmt") && !has_field(body, "fromClause") &&
        !has_field(body, "usingClause")) {
      std::string_view alias = "pg_settings";
      object alias_node;
      if (relation.at_key("alias").get_object().get(alias_node) == simdjson::SUCCESS)
        alias = string_field(alias_node, "aliasname");
      element where;
      if (body.at_key("whereClause").get(where) == simdjson::SUCCESS) pinned_names(where, alias, names);
    }
    if (names.empty()) names.emplace_back("*");
    for (auto& n : names) add_parameter(std::move(n), idx);
  }

  // name OPERATOR(pg_catalog.=) 'x' (either way round), name IN ('x', 'y')
  // with that operator, or an AND with one of those among its arguments: the
  // names the rows can have. Empty when the WHERE does not pin them. A plain
  // "=" is looked up through search_path, and a client's own = (text, text)
  // in a schema searched first could match other rows: not a pin.
  static void pinned_names(element where, std::string_view alias, std::vector<std::string>& names) {
    std::string_view type;
    object body;
    if (!unwrap(where, type, body)) return;
    if (type == "BoolExpr") {
      if (string_field(body, "boolop") != "AND_EXPR") return;
      array args;
      if (body.at_key("args").get_array().get(args) != simdjson::SUCCESS) return;
      for (element a : args) {
        pinned_names(a, alias, names);
        if (!names.empty()) return;
      }
      return;
    }
    if (type != "A_Expr") return;
    const std::string_view kind = string_field(body, "kind");
    array op;
    if (body.at_key("name").get_array().get(op) != simdjson::SUCCESS) return;
    const std::string op_name = dotted_name(op, 0);
    if (op_name != "pg_catalog.=") return;
    element lexpr;
    element rexpr;
    if (body.at_key("lexpr").get(lexpr) != simdjson::SUCCESS || body.at_key("rexpr").get(rexpr) != simdjson::SUCCESS)
      return;
    if (kind == "AEXPR_OP") {
      if (!is_name_column(lexpr, alias)) std::swap(lexpr, rexpr);
      std::string_view value;
      bool is_null = false;
      if (is_name_column(lexpr, alias) && constant_string(rexpr, false, cast_schemas::pg_catalog_only, value, is_null) && !is_null)
        names.push_back(lowered(value));
      return;
    }
    if (kind != "AEXPR_IN" || !is_name_column(lexpr, alias)) return;
    std::string_view list_type;
    object list;
    array items;
    if (!unwrap(rexpr, list_type, list) || list_type != "List" ||
        list.at_key("items").get_array().get(items) != simdjson::SUCCESS)
      return;
    std::vector<std::string> values;
    for (element item : items) {
      std::string_view value;
      bool is_null = false;
      if (!constant_string(item, false, cast_schemas::pg_catalog_only, value, is_null)) return;
      if (!is_null) values.push_back(lowered(value));
    }
    if (values.empty()) return;
    names = std::move(values);
  }

  // pg_settings' column "name", unqualified or qualified by the relation's
  // name or alias.
  static bool is_name_column(element e, std::string_view alias) {
    std::string_view type;
    object body;
    array fields;
    if (!unwrap(e, type, body) || type != "ColumnRef" || body.at_key("fields").get_array().get(fields) != simdjson::SUCCESS)
      return false;
    std::vector<std::string_view> parts;
    for (element part : fields) {
      std::string_view t;
      object s;
      if (!unwrap(part, t, s) || t != "String") return false;
      parts.push_back(string_field(s, "sval"));
    }
    if (parts.size() == 1) return parts[0] == "name";
    return parts.size() == 2 && parts[0] == alias && parts[1] == "name";
  }

  bool noun_tag(std::string_view verb, std::string_view object_type, bool drop, statement_facts& f) {
    const object_noun* n = find_noun(object_type);
    if (n == nullptr || (drop ? !n->drop : !n->alter)) return false;
    f.kind = std::string(verb) + " " + std::string(n->noun);
    f.writes = true;
    return true;
  }

  bool describe_computed(std::string_view type, object body, statement_facts& f) {
    if (type == "DropStmt") return noun_tag("DROP", string_field(body, "removeType"), true, f);
    if (type == "AlterTableStmt" || type == "AlterTableMoveAllStmt")
      return noun_tag("ALTER", string_field(body, "objtype"), false, f);
    if (type == "AlterObjectSchemaStmt" || type == "AlterOwnerStmt" || type == "AlterObjectDependsStmt")
      return noun_tag("ALTER", string_field(body, "objectType"), false, f);
    if (type == "RenameStmt") {
      const std::string_view rename = string_field(body, "renameType");
      return noun_tag("ALTER", rename == "OBJECT_COLUMN" ? string_field(body, "relationType") : rename, false, f);
    }
    if (type == "AlterFunctionStmt") {
      const std::string_view objtype = string_field(body, "objtype");
      if (objtype != "OBJECT_FUNCTION" && objtype != "OBJECT_PROCEDURE" && objtype != "OBJECT_ROUTINE") return false;
      return noun_tag("ALTER", objtype, false, f);
    }
    if (type == "DefineStmt") {
      const std::string_view kind = string_field(body, "kind");
      const object_noun* n = find_noun(kind);
      static constexpr std::string_view definable[] = {"OBJECT_AGGREGATE",     "OBJECT_OPERATOR",
                                                       "OBJECT_TYPE",          "OBJECT_TSPARSER",
                                                       "OBJECT_TSDICTIONARY",  "OBJECT_TSTEMPLATE",
                                                       "OBJECT_TSCONFIGURATION", "OBJECT_COLLATION"};
      if (n == nullptr || std::find(std::begin(definable), std::end(definable), kind) == std::end(definable))
        return false;
      f.kind = "CREATE " + std::string(n->noun);
      f.writes = true;
      return true;
    }
    f.writes = true;
    if (type == "GrantStmt") {
      f.kind = bool_field(body, "is_grant") ? "GRANT" : "REVOKE";
      return true;
    }
    if (type == "GrantRoleStmt") {
      f.kind = bool_field(body, "is_grant") ? "GRANT ROLE" : "REVOKE ROLE";
      return true;
    }
    if (type == "CreateFunctionStmt") {
      f.kind = bool_field(body, "is_procedure") ? "CREATE PROCEDURE" : "CREATE FUNCTION";
      return true;
    }
    if (type == "CreateTableAsStmt") {
      const std::string_view objtype = string_field(body, "objtype");
      if (objtype == "OBJECT_MATVIEW") {
        f.kind = "CREATE MATERIALIZED VIEW";
      } else if (objtype == "OBJECT_TABLE") {
        f.kind = bool_field(body, "is_select_into") ? "SELECT INTO" : "CREATE TABLE AS";
      } else {
        return false;
      }
      return true;
    }
    f.writes = false;
    if (type == "ClosePortalStmt") {
      f.kind = has_field(body, "portalname") ? "CLOSE CURSOR" : "CLOSE CURSOR ALL";
      return true;
    }
    if (type == "FetchStmt") {
      f.kind = bool_field(body, "ismove") ? "MOVE" : "FETCH";
      return true;
    }
    if (type == "VacuumStmt") {
      f.kind = bool_field(body, "is_vacuumcmd") ? "VACUUM" : "ANALYZE";
      return true;
    }
    if (type == "DeallocateStmt") {
      f.kind = has_field(body, "name") ? "DEALLOCATE" : "DEALLOCATE ALL";
      return true;
    }
    if (type == "DiscardStmt") {
      const std::string_view target = string_field(body, "target");
      if (target == "DISCARD_ALL") f.kind = "DISCARD ALL";
      else if (target == "DISCARD_PLANS") f.kind = "DISCARD PLANS";
      else if (target == "DISCARD_TEMP") f.kind = "DISCARD TEMP";
      else if (target == "DISCARD_SEQUENCES") f.kind = "DISCARD SEQUENCES";
      else return false;
      return true;
    }
    return false;
  }

  static bool transaction_tag(std::string_view kind, statement_facts& f) {
    static constexpr std::pair<std::string_view, std::string_view> tags[] = {
        {"TRANS_STMT_BEGIN", "BEGIN"},
        {"TRANS_STMT_START", "START TRANSACTION"},
        {"TRANS_STMT_COMMIT", "COMMIT"},
        {"TRANS_STMT_ROLLBACK", "ROLLBACK"},
        {"TRANS_STMT_ROLLBACK_TO", "ROLLBACK"},
        {"TRANS_STMT_SAVEPOINT", "SAVEPOINT"},
        {"TRANS_STMT_RELEASE", "RELEASE"},
        {"TRANS_STMT_PREPARE", "PREPARE TRANSACTION"},
        {"TRANS_STMT_COMMIT_PREPARED", "COMMIT PREPARED"},
        {"TRANS_STMT_ROLLBACK_PREPARED", "ROLLBACK PREPARED"},
    };
    for (const auto& [k, tag] : tags) {
      if (k != kind) continue;
      f.kind = tag;
      f.writes = false;
      return true;
    }
    return false;
  }

  classification& out_;
  const classifier_spec& spec_;
  std::vector<work> pending_;
  std::vector<std::size_t> parents_;  // per entry: the entry it is nested in, or no_parent
  std::vector<entry_names> names_;    // per entry: ids into interned_
  std::unordered_map<std::string, std::uint32_t> ids_;
  std::vector<const std::string*> interned_;
  std::unordered_set<std::uint64_t> pairs_;  // (entry, kind, id) already reported
  std::size_t names_count_ = 0;              // pairs reported, for the whole text
  std::size_t nodes_ = 0;
  std::vector<sql_text> texts_;
  std::size_t next_text_ = 0;
  std::size_t text_bytes_ = 0;
  std::uint32_t text_depth_ = 0;  // of the tree being walked
  bool failed_ = false;
};

}  // namespace

// ---------------------------------------------------------------------------

bool calls_function(const statement_facts& facts, std::string_view name) {
  const std::string wanted = lowered(last_part(name));
  for (const auto& f : facts.functions)
    if (last_part(f) == wanted) return true;
  return false;
}

bool is_known_statement_kind(std::string_view kind) {
  const auto& tags = known_tags();
  return std::binary_search(tags.begin(), tags.end(), kind);
}

struct sql_classifier::hs_state : hs_compiled {};

namespace {

constexpr unsigned must_parse_id = 0;
constexpr unsigned semicolon_id = 1;

struct scan_context {
  std::string_view sql;
  bool must_parse = false;
};

int on_prefilter_match(unsigned id, unsigned long long /*from*/, unsigned long long to, unsigned /*flags*/,
                       void* ctx) {
  auto* c = static_cast<scan_context*>(ctx);
  // A ';' followed by nothing but whitespace ends the only statement (pgbench
  // sends "SELECT ...;"). Comments after it are not allowed: whether "--"
  // starts one depends on whether the ';' was inside a string.
  if (id == semicolon_id && only_space_from(c->sql, static_cast<std::size_t>(to))) return 0;
  c->must_parse = true;
  return 1;  // stop scanning: one reason is enough
}

status validate_spec(classifier_spec& spec, std::vector<std::string>& prefilter_names, bool& implicit_function) {
  if (spec.statement_bytes_max == 0 || spec.statement_bytes_max > (1u << 30))
    return {errc::invalid_argument, "statement_bytes_max must be between 1 and 1 GiB"};
  if (spec.statements_max == 0 || spec.statements_max > (1u << 20))
    return {errc::invalid_argument, "statements_max must be between 1 and 1048576"};
  if (spec.parse_tree_bytes_max < 4096 || spec.parse_tree_depth_max < 64 || spec.parse_tree_depth_max > (1u << 20))
    return {errc::invalid_argument, "parse tree bounds out of range"};
  if (spec.names_max == 0 || spec.names_max > (1u << 24) || spec.walk_nodes_max < 64 || spec.walk_nodes_max > (1u << 30))
    return {errc::invalid_argument, "names_max or walk_nodes_max out of range"};
  for (auto& kind : spec.statement_kinds) {
    for (char& c : kind) c = ascii_upper(c);
    if (!is_known_statement_kind(kind)) return {errc::invalid_argument, "unknown statement kind \"" + kind + "\""};
  }
  implicit_function = false;
  for (auto& fn : spec.functions) {
    fn = lowered(fn);
    const std::string_view name = last_part(fn);
    if (name.empty() || name.size() > identifier_bytes_max ||
        name.find_first_of(std::string_view("\"\0", 2)) != std::string_view::npos)
      return {errc::invalid_argument, "function name \"" + fn + "\" can never match an identifier"};
    if (std::find(grammar_implicit_functions.begin(), grammar_implicit_functions.end(), name) !=
        grammar_implicit_functions.end())
      implicit_function = true;
    prefilter_names.emplace_back(name);
  }
  std::sort(prefilter_names.begin(), prefilter_names.end());
  prefilter_names.erase(std::unique(prefilter_names.begin(), prefilter_names.end()), prefilter_names.end());
  return status::ok();
}

}  // namespace

sql_classifier::sql_classifier(classifier_spec spec) : spec_(std::move(spec)) {}
sql_classifier::~sql_classifier() = default;

result<std::shared_ptr<const sql_classifier>> sql_classifier::build(const classifier_spec& input) {
  classifier_spec spec = input;
  std::vector<std::string> names;
  bool implicit_function = false;
  if (status s = validate_spec(spec, names, implicit_function); !s) return s;

  std::shared_ptr<sql_classifier> c(new sql_classifier(std::move(spec)));
  c->fast_path_ = c->spec_.fast_path && !c->spec_.tables && !implicit_function;
  if (!c->fast_path_) return std::shared_ptr<const sql_classifier>(std::move(c));

  std::vector<std::string> patterns;
  std::vector<unsigned> ids;
  std::string keywords;
  for (auto kw : trigger_keywords) {
    if (!keywords.empty()) keywords += '|';
    keywords += kw;
  }
  // Built-ins that run SQL given as a string: the string can spell a
  // function name in escapes (E'\\x73et_config'), so the text is parsed.
  for (const auto& h : hidden_read_functions) {
    if (h.what != hidden_read::sql_text && h.what != hidden_read::sql_last) continue;
    keywords += '|';
    keywords += h.name;
  }
  patterns.push_back(word_pattern(keywords, true));
  ids.push_back(must_parse_id);
  std::string bounded_names;
  for (const auto& n : names) {
    if (n.size() == identifier_bytes_max) {
      patterns.push_back(word_pattern(regex_literal(n), false));
      ids.push_back(must_parse_id);
      continue;
    }
    if (!bounded_names.empty()) bounded_names += '|';
    bounded_names += regex_literal(n);
  }
  if (!bounded_names.empty()) {
    patterns.push_back(word_pattern(bounded_names, true));
    ids.push_back(must_parse_id);
  }
  patterns.push_back("u&");  // U&"..." identifiers spell names in escapes
  ids.push_back(must_parse_id);
  patterns.push_back("\\x00");  // the parser reads a C string: refused there
  ids.push_back(must_parse_id);
  patterns.push_back(";");
  ids.push_back(semicolon_id);

  std::vector<const char*> expressions;
  std::vector<unsigned> flags;
  for (const auto& p : patterns) {
    expressions.push_back(p.c_str());
    flags.push_back(HS_FLAG_CASELESS | HS_FLAG_SINGLEMATCH);
  }
  c->hs_ = std::make_unique<hs_state>();
  hs_compile_error_t* compile_error = nullptr;
  if (hs_compile_multi(expressions.data(), flags.data(), ids.data(), static_cast<unsigned>(expressions.size()),
                       HS_MODE_BLOCK, nullptr, &c->hs_->db, &compile_error) != HS_SUCCESS) {
    std::string message = "SQL prefilter does not compile: ";
    message += compile_error != nullptr ? compile_error->message : "unknown error";
    hs_free_compile_error(compile_error);
    return status{errc::invalid_argument, std::move(message)};
  }
  if (hs_alloc_scratch(c->hs_->db, &c->hs_->prototype) != HS_SUCCESS)
    return status{errc::io, "cannot allocate Hyperscan scratch for the SQL prefilter"};
  return std::shared_ptr<const sql_classifier>(std::move(c));
}

// ---------------------------------------------------------------------------

struct sql_scanner::parser_state {
  parse_stack stack;
  std::string text;  // NUL-terminated copy for libpg_query
  simdjson::dom::parser json;
  classification* out = nullptr;
  const classifier_spec* spec = nullptr;

  void reset_json() {
    json = simdjson::dom::parser(spec->parse_tree_bytes_max);
    // Sets the depth bound. Should it fail, the next parse allocates on
    // demand, with simdjson's default depth: still bounded.
    const simdjson::error_code ignored = json.allocate(64 << 10, spec->parse_tree_depth_max);
    (void)ignored;
  }

  // Runs on the parse stack.
  static void parse_and_walk(void* self) { static_cast<parser_state*>(self)->parse_and_walk(); }

  void parse_and_walk() {
    PgQueryParseResult r = pg_query_parse(text.c_str());
    if (r.error != nullptr) {
      out->parse_error = r.error->message != nullptr ? r.error->message : "syntax error";
      out->parse_error += " (at byte " + std::to_string(r.error->cursorpos) + ")";
      pg_query_free_parse_result(r);
      return;
    }
    element root;
    if (!parse_json(r, root)) return;
    tree_walker walker(*out, *spec);
    bool ok = walker.walk_root(root);
    tree_walker::sql_text t;
    while (ok && walker.next_text(t)) {
      PgQueryParseResult inner = pg_query_parse(t.text.c_str());
      if (inner.error != nullptr) {
        out->parse_error = "in the SQL text given to " + t.source + ": " +
                           (inner.error->message != nullptr ? inner.error->message : "syntax error");
        pg_query_free_parse_result(inner);
        ok = false;
        break;
      }
      if (!parse_json(inner, root)) {
        ok = false;
        break;
      }
      ok = walker.walk_text(root, t);
    }
    if (ok) walker.finish();
    out->parsed = ok;
    if (!out->parsed) out->statements.clear();
  }

  // Reads libpg_query's JSON tree into the DOM (replacing the last one) and
  // frees the parse result.
  bool parse_json(PgQueryParseResult& r, element& root) {
    const std::size_t tree_bytes = r.parse_tree != nullptr ? std::strlen(r.parse_tree) : 0;
    if (tree_bytes > spec->parse_tree_bytes_max) {
      pg_query_free_parse_result(r);
      out->parse_error = "statement's parse tree is too large";
      return false;
    }
    const auto err = json.parse(r.parse_tree, tree_bytes, true).get(root);
    pg_query_free_parse_result(r);
    if (err != simdjson::SUCCESS) {
      out->parse_error = err == simdjson::DEPTH_ERROR ? "statement nests too deeply"
                                                      : std::string("unreadable parse tree: ") +
                                                            simdjson::error_message(err);
      return false;
    }
    return true;
  }
};

sql_scanner::sql_scanner(std::shared_ptr<const sql_classifier> classifier) : classifier_(std::move(classifier)) {}

sql_scanner::~sql_scanner() {
  if (scratch_ != nullptr) hs_free_scratch(static_cast<hs_scratch_t*>(scratch_));
}

result<std::unique_ptr<sql_scanner>> sql_scanner::create(std::shared_ptr<const sql_classifier> classifier) {
  if (classifier == nullptr) return status{errc::invalid_argument, "no SQL classifier"};
  std::unique_ptr<sql_scanner> s(new sql_scanner(std::move(classifier)));
  const classifier_spec& spec = s->classifier_->spec();
  if (s->classifier_->hs_ != nullptr) {
    hs_scratch_t* scratch = nullptr;
    if (hs_clone_scratch(s->classifier_->hs_->prototype, &scratch) != HS_SUCCESS)
      return status{errc::io, "cannot clone Hyperscan scratch for the SQL prefilter"};
    s->scratch_ = scratch;
  }
  s->parser_ = std::make_unique<parser_state>();
  s->parser_->spec = &spec;
  s->parser_->reset_json();
  const std::size_t stack_bytes =
      parse_stack_floor_bytes + spec.statement_bytes_max * parse_stack_bytes_per_sql_byte;
  if (status st = s->parser_->stack.reserve(stack_bytes); !st) return st;
  s->parser_->text.reserve(4096);
  return s;
}

bool sql_scanner::needs_parse(std::string_view sql) {
  if (!starts_as_read(sql)) return true;
  scan_context ctx{sql};
  const hs_error_t err = hs_scan(classifier_->hs_->db, sql.data(), static_cast<unsigned>(sql.size()), 0,
                                 static_cast<hs_scratch_t*>(scratch_), on_prefilter_match, &ctx);
  // HS_SCAN_TERMINATED is our callback stopping early; any other failure
  // proves nothing, so it parses.
  if (err != HS_SUCCESS) return true;
  return ctx.must_parse;
}

classification sql_scanner::classify(std::string_view sql) {
  classification out;
  classify(sql, out);
  return out;
}

void sql_scanner::classify(std::string_view sql, classification& out) {
  if (sql.size() <= classifier_->spec().statement_bytes_max && classifier_->fast_path_ && !needs_parse(sql)) {
    out.parsed = true;
    out.parse_error.clear();
    out.fast_path = true;
    out.statements.resize(1);
    statement_facts& f = out.statements.front();
    f.kind = "SELECT";
    f.tables.clear();
    f.functions.clear();
    f.without_where = f.copy_program = f.writes = f.nested = false;
    f.set_parameters.clear();
    f.top_level_index = 0;
    return;
  }
  classify_full(sql, out);
}

void sql_scanner::classify_full(std::string_view sql, classification& out) {
  out.parsed = false;
  out.parse_error.clear();
  out.statements.clear();
  out.fast_path = false;
  const classifier_spec& spec = classifier_->spec();
  if (sql.size() > spec.statement_bytes_max) {
    out.parse_error = "statement too large (more than " + std::to_string(spec.statement_bytes_max) + " bytes)";
    return;
  }
  if (sql.find('\0') != std::string_view::npos) {
    out.parse_error = "statement contains a NUL byte";
    return;
  }
  parser_->text.assign(sql);
  parser_->out = &out;
  parser_->stack.run(&parser_state::parse_and_walk, parser_.get());
  parser_->out = nullptr;
  // One big statement must not pin its memory for the shard's lifetime.
  if (sql.size() > parse_stack_release_threshold_bytes) parser_->stack.release_below(parse_stack_keep_bytes);
  if (parser_->json.capacity() > json_keep_capacity_bytes) parser_->reset_json();
  if (parser_->text.capacity() > json_keep_capacity_bytes) {
    parser_->text.clear();
    parser_->text.shrink_to_fit();
  }
}

}  // namespace agentgate::masking
