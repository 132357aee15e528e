#include "core/policy.h"
#include "core/text.h"

#include <openssl/evp.h>
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <chrono>
#include <ctime>
#include <limits>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace agentgate {
namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

// ---------------------------------------------------------------------------
// Vocabulary.

// Mirrors masking/sql_classifier.cc's known_tags() (fixed tags, DROP/ALTER of
// each object noun, computed tags). Sorted: looked up by binary search.
// tests/masking/policy_kinds_test.cc fails when the two drift apart.
constexpr std::array<std::string_view, 178> statement_kinds = {
    "ALTER AGGREGATE", "ALTER CAST", "ALTER COLLATION", "ALTER CONVERSION", "ALTER DATABASE",
    "ALTER DEFAULT PRIVILEGES", "ALTER DOMAIN", "ALTER EVENT TRIGGER", "ALTER EXTENSION",
    "ALTER FOREIGN DATA WRAPPER", "ALTER FOREIGN TABLE", "ALTER FUNCTION", "ALTER INDEX", "ALTER LANGUAGE",
    "ALTER LARGE OBJECT", "ALTER MATERIALIZED VIEW", "ALTER OPERATOR", "ALTER OPERATOR CLASS",
    "ALTER OPERATOR FAMILY", "ALTER POLICY", "ALTER PROCEDURE", "ALTER PUBLICATION", "ALTER ROLE",
    "ALTER ROUTINE", "ALTER RULE", "ALTER SCHEMA", "ALTER SEQUENCE", "ALTER SERVER", "ALTER STATISTICS",
    "ALTER SUBSCRIPTION", "ALTER SYSTEM", "ALTER TABLE", "ALTER TABLESPACE",
    "ALTER TEXT SEARCH CONFIGURATION", "ALTER TEXT SEARCH DICTIONARY", "ALTER TEXT SEARCH PARSER",
    "ALTER TEXT SEARCH TEMPLATE", "ALTER TRIGGER", "ALTER TYPE", "ALTER USER MAPPING", "ALTER VIEW",
    "ANALYZE", "BEGIN", "CALL", "CHECKPOINT", "CLOSE CURSOR", "CLOSE CURSOR ALL", "CLUSTER", "COMMENT",
    "COMMIT", "COMMIT PREPARED", "COPY", "CREATE ACCESS METHOD", "CREATE AGGREGATE", "CREATE CAST",
    "CREATE COLLATION", "CREATE CONVERSION", "CREATE DATABASE", "CREATE DOMAIN", "CREATE EVENT TRIGGER",
    "CREATE EXTENSION", "CREATE FOREIGN DATA WRAPPER", "CREATE FOREIGN TABLE", "CREATE FUNCTION",
    "CREATE INDEX", "CREATE LANGUAGE", "CREATE MATERIALIZED VIEW", "CREATE OPERATOR",
    "CREATE OPERATOR CLASS", "CREATE OPERATOR FAMILY", "CREATE POLICY", "CREATE PROCEDURE",
    "CREATE PUBLICATION", "CREATE ROLE", "CREATE RULE", "CREATE SCHEMA", "CREATE SEQUENCE", "CREATE SERVER",
    "CREATE STATISTICS", "CREATE SUBSCRIPTION", "CREATE TABLE", "CREATE TABLE AS", "CREATE TABLESPACE",
    "CREATE TEXT SEARCH CONFIGURATION", "CREATE TEXT SEARCH DICTIONARY", "CREATE TEXT SEARCH PARSER",
    "CREATE TEXT SEARCH TEMPLATE", "CREATE TRANSFORM", "CREATE TRIGGER", "CREATE TYPE",
    "CREATE USER MAPPING", "CREATE VIEW", "DEALLOCATE", "DEALLOCATE ALL", "DECLARE CURSOR", "DELETE",
    "DISCARD ALL", "DISCARD PLANS", "DISCARD SEQUENCES", "DISCARD TEMP", "DO", "DROP ACCESS METHOD",
    "DROP AGGREGATE", "DROP CAST", "DROP COLLATION", "DROP CONVERSION", "DROP DATABASE", "DROP DOMAIN",
    "DROP EVENT TRIGGER", "DROP EXTENSION", "DROP FOREIGN DATA WRAPPER", "DROP FOREIGN TABLE",
    "DROP FUNCTION", "DROP INDEX", "DROP LANGUAGE", "DROP MATERIALIZED VIEW", "DROP OPERATOR",
    "DROP OPERATOR CLASS", "DROP OPERATOR FAMILY", "DROP OWNED", "DROP POLICY", "DROP PROCEDURE",
    "DROP PUBLICATION", "DROP ROLE", "DROP ROUTINE", "DROP RULE", "DROP SCHEMA", "DROP SEQUENCE",
    "DROP SERVER", "DROP STATISTICS", "DROP SUBSCRIPTION", "DROP TABLE", "DROP TABLESPACE",
    "DROP TEXT SEARCH CONFIGURATION", "DROP TEXT SEARCH DICTIONARY", "DROP TEXT SEARCH PARSER",
    "DROP TEXT SEARCH TEMPLATE", "DROP TRANSFORM", "DROP TRIGGER", "DROP TYPE", "DROP USER MAPPING",
    "DROP VIEW", "EXECUTE", "EXPLAIN", "FETCH", "GRANT", "GRANT ROLE", "IMPORT FOREIGN SCHEMA", "INSERT",
    "LISTEN", "LOAD", "LOCK TABLE", "MERGE", "MOVE", "NOTIFY", "PREPARE", "PREPARE TRANSACTION",
    "REASSIGN OWNED", "REFRESH MATERIALIZED VIEW", "REINDEX", "RELEASE", "RESET", "REVOKE", "REVOKE ROLE",
    "ROLLBACK", "ROLLBACK PREPARED", "SAVEPOINT", "SECURITY LABEL", "SELECT", "SELECT INTO", "SET",
    "SET CONSTRAINTS", "SHOW", "START TRANSACTION", "TRUNCATE TABLE", "UNLISTEN", "UPDATE", "VACUUM",
};
static_assert(std::is_sorted(statement_kinds.begin(), statement_kinds.end()));

// Spellings people reach for that PostgreSQL tags differently: named in the
// error so a policy author does not have to read utility.c.
constexpr std::pair<std::string_view, std::string_view> kind_hints[] = {
    {"ABORT", "ROLLBACK"},          {"ALTER GROUP", "ALTER ROLE"},   {"ALTER USER", "ALTER ROLE"},
    {"CREATE GROUP", "CREATE ROLE"}, {"CREATE USER", "CREATE ROLE"}, {"DROP GROUP", "DROP ROLE"},
    {"DROP USER", "DROP ROLE"},     {"END", "COMMIT"},               {"LOCK", "LOCK TABLE"},
    {"TRUNCATE", "TRUNCATE TABLE"}, {"UPSERT", "INSERT"},            {"WITH", "SELECT"},
};

constexpr std::array<std::string_view, 16> mask_detectors = {
    "credit_card", "email",      "us_ssn",       "iban",         "phone",       "ipv4",
    "ipv6",        "aws_access_key", "aws_secret_key", "gcp_api_key", "github_token", "gitlab_token",
    "slack_token", "stripe_key", "jwt",          "private_key"};

constexpr std::size_t rule_id_chars_max = 64;
constexpr std::size_t target_name_chars_max = 64;
constexpr std::size_t group_chars_max = 256;
constexpr std::size_t text_chars_max = 1024;  // message, description: one readable error line
constexpr std::size_t identifier_bytes_max = 63;  // NAMEDATALEN - 1
constexpr std::size_t name_parts_max = 3;         // catalog.schema.name
constexpr std::size_t parameter_chars_max = 128;
constexpr std::size_t regex_chars_max = 4096;
constexpr std::size_t file_path_chars_max = 4096;
// Rule references kept by the evaluation index (a rule appears once per
// target and statement kind it names). 4 Mi entries is 16 MiB of indices.
constexpr std::size_t index_entries_max = std::size_t{1} << 22;

// Rule ids that would read like a setting in a decision's rule_id.
constexpr std::string_view reserved_rule_ids[] = {"default_action", "parse_errors", "function_calls"};

constexpr std::string_view default_deny_message = "no policy rule allows this statement";
constexpr std::string_view parse_error_message = "the gateway cannot parse this SQL, and the policy denies what it cannot read";
constexpr std::string_view function_call_message = "the FunctionCall protocol message is not allowed by the policy";
constexpr std::string_view approver_conflict_message =
    "the statements in this query need approval from different approver groups; send them one at a time";
constexpr std::string_view too_many_held_message =
    "too many statements in this query need approval under different rules; send them one at a time";

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }
char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - ('a' - 'A')) : c; }

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

std::string uppered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_upper(c);
  return out;
}

// Compares lower(a) with b, where b is already lower-case: facts as written
// against patterns normalised at parse time, without copying either.
int ci_compare(std::string_view a, std::string_view b) {
  const std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const auto x = static_cast<unsigned char>(ascii_lower(a[i]));
    const auto y = static_cast<unsigned char>(b[i]);
    if (x != y) return x < y ? -1 : 1;
  }
  if (a.size() == b.size()) return 0;
  return a.size() < b.size() ? -1 : 1;
}

// Whether the sorted, lower-case `set` holds `key` ignoring ASCII case.
bool ci_contains(const std::vector<std::string>& set, std::string_view key) {
  auto it = std::lower_bound(set.begin(), set.end(), key,
                             [](const std::string& e, std::string_view k) { return ci_compare(k, e) > 0; });
  return it != set.end() && ci_compare(key, *it) == 0;
}

std::string_view last_part(std::string_view name) {
  const auto dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

// "db.public.users" -> "public"; "users" -> "".
std::string_view schema_part(std::string_view name) {
  const auto dot = name.rfind('.');
  if (dot == std::string_view::npos) return {};
  const std::string_view qualifier = name.substr(0, dot);
  return last_part(qualifier);
}

bool has_control_char(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-';
}

// [A-Za-z0-9_.-]{1,max}: rule ids, target names, pattern names.
bool is_name(std::string_view s, std::size_t max) {
  return !s.empty() && s.size() <= max && std::all_of(s.begin(), s.end(), is_name_char);
}



bool is_plain_key(std::string_view key) {
  return !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// Paths read like the JSON they point into: rules[2].match.sql.statements[0];
// a key that is not a plain word is quoted: targets["pg.main"].
std::string key_path(const std::string& parent, std::string_view key) {
  if (!is_plain_key(key)) return parent + "[" + quote_for_message(key) + "]";
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

std::string index_path(const std::string& parent, std::size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}



struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

template <typename V>
using string_map = std::unordered_map<std::string, V, string_hash, std::equal_to<>>;

// ---------------------------------------------------------------------------
// The compiled form.

enum class tri : std::int8_t { any = -1, no = 0, yes = 1 };

bool tri_holds(tri want, bool have) { return want == tri::any || (want == tri::yes) == have; }

struct table_pattern {
  std::string schema;  // lower-case; empty: any schema
  std::string name;    // lower-case
};

struct rule {
  std::string id;
  std::string message;
  policy_action action = policy_action::allow;
  std::vector<std::string> approvers;         // document order, unique
  std::vector<std::string> approvers_sorted;  // for the subset test between held rules
  std::uint32_t timeout_s = 0;

  bool any_target = true;
  std::vector<std::string> targets;
  bool any_group = true;
  std::vector<std::string> groups;  // sorted, unique, case-sensitive

  // Criteria. Statement kinds are not here: the index only offers a rule for
  // the kinds it names.
  std::vector<std::string> kinds;           // upper-case; empty: any
  std::vector<std::string> functions;       // last parts, lower-case, sorted, unique
  std::vector<table_pattern> tables;        // sorted by name
  std::vector<std::string> set_parameters;  // lower-case, sorted, unique
  tri without_where = tri::any;
  tri copy_program = tri::any;
  tri writes = tri::any;
};

struct setting {
  policy_action action = policy_action::deny;
  std::string id;  // where in the document it was set
};

// The rules that can apply to one target (or, for the wildcard scope, to
// every target), by statement kind. Lists hold rule indices, ascending.
struct scope {
  std::vector<std::uint32_t> any_kind;
  string_map<std::vector<std::uint32_t>> by_kind;
  setting default_action;
  setting parse_errors;
  setting function_calls;
};

bool groups_match(const rule& r, std::span<const std::string> groups) {
  if (r.any_group) return true;
  for (const auto& g : groups)
    if (std::binary_search(r.groups.begin(), r.groups.end(), g)) return true;
  return false;
}

// A wildcard stands for names the classifier could not see: "*" or
// "<schema>.*" among the tables (schema_to_xml, database_to_xml), "*" among
// the parameters (a write to pg_settings that does not pin the name). A deny
// or require_approval rule on a name it may stand for matches; an allow rule
// does not (fail closed).
bool is_wildcard_table(std::string_view t) { return last_part(t) == "*"; }

bool tables_match(const rule& r, const statement_facts& f) {
  const bool allow = r.action == policy_action::allow;
  if (allow && std::any_of(f.tables.begin(), f.tables.end(), [](const std::string& t) { return is_wildcard_table(t); }))
    return false;
  for (const auto& t : f.tables) {
    const std::string_view name = last_part(t);
    const std::string_view schema = schema_part(t);
    if (name == "*") {
      for (const auto& p : r.tables)
        if (p.schema.empty() || schema.empty() || ci_compare(schema, p.schema) == 0) return true;
      continue;
    }
    auto it = std::lower_bound(r.tables.begin(), r.tables.end(), name, [](const table_pattern& p, std::string_view n) {
      return ci_compare(n, p.name) > 0;
    });
    for (; it != r.tables.end() && ci_compare(name, it->name) == 0; ++it)
      if (it->schema.empty() || schema.empty() || ci_compare(schema, it->schema) == 0) return true;
  }
  return false;
}

// A statement can set several parameters (SET TRANSACTION ISOLATION LEVEL
// SERIALIZABLE, READ WRITE). A deny or require_approval rule matches if it
// names any of them, or the statement may set one it cannot name ("*"); an
// allow rule only if it names every one.
bool parameters_match(const rule& r, const statement_facts& f) {
  if (f.set_parameters.empty()) return false;
  if (r.action == policy_action::allow) {
    for (const auto& p : f.set_parameters)
      if (p == "*" || !ci_contains(r.set_parameters, p)) return false;
    return true;
  }
  for (const auto& p : f.set_parameters)
    if (p == "*" || ci_contains(r.set_parameters, p)) return true;
  return false;
}

bool functions_match(const rule& r, const statement_facts& f) {
  for (const auto& fn : f.functions)
    if (ci_contains(r.functions, last_part(fn))) return true;
  return false;
}

// Cheapest tests first: flags, then groups, then the lists.
bool rule_matches(const rule& r, const statement_facts& f, std::span<const std::string> groups) {
  if (!tri_holds(r.without_where, f.without_where) || !tri_holds(r.copy_program, f.copy_program) ||
      !tri_holds(r.writes, f.writes))
    return false;
  if (!groups_match(r, groups)) return false;
  if (!r.set_parameters.empty() && !parameters_match(r, f)) return false;
  if (!r.functions.empty() && !functions_match(r, f)) return false;
  if (!r.tables.empty() && !tables_match(r, f)) return false;
  return true;
}

}  // namespace

struct policy::state {
  std::vector<rule> rules;
  scope wildcard;            // rules for every target, and the document's settings
  std::vector<scope> named;  // rules naming a target, and its settings
  string_map<std::uint32_t> named_index;

  const scope* find_scope(std::string_view target) const {
    if (named_index.empty()) return nullptr;
    auto it = named_index.find(target);
    return it == named_index.end() ? nullptr : &named[it->second];
  }

  static std::span<const std::uint32_t> kind_list(const scope& s, std::string_view kind) {
    if (s.by_kind.empty()) return {};
    auto it = s.by_kind.find(kind);
    if (it == s.by_kind.end()) return {};
    return it->second;
  }

  // The first rule in document order that matches: a merge of the (at most
  // four) ascending candidate lists, so only rules that can apply to this
  // target and statement kind are looked at.
  const rule* first_match(const scope* target, const statement_facts& f, std::span<const std::string> groups) const {
    std::array<std::span<const std::uint32_t>, 4> lists;
    std::size_t n = 0;
    lists[n++] = wildcard.any_kind;
    lists[n++] = kind_list(wildcard, f.kind);
    if (target != nullptr) {
      lists[n++] = target->any_kind;
      lists[n++] = kind_list(*target, f.kind);
    }
    std::array<std::size_t, 4> pos{};
    for (;;) {
      std::size_t best = n;
      std::uint32_t best_rule = std::numeric_limits<std::uint32_t>::max();
      for (std::size_t i = 0; i < n; ++i) {
        if (pos[i] < lists[i].size() && lists[i][pos[i]] < best_rule) {
          best = i;
          best_rule = lists[i][pos[i]];
        }
      }
      if (best == n) return nullptr;
      ++pos[best];
      const rule& r = rules[best_rule];
      if (rule_matches(r, f, groups)) return &r;
    }
  }
};

namespace {

// ---------------------------------------------------------------------------
// Validation: a walk over the DOM that records every problem with its path
// and keeps going, so one PUT shows the author everything to fix.

class checker {
 public:
  explicit checker(std::vector<policy_error>& errors) : errors_(errors) {}

  void fail(const std::string& path, std::string message) {
    ++count_;
    if (errors_.size() < policy_errors_max) errors_.push_back({path, std::move(message)});
  }
  std::size_t count() const { return count_; }

  void finish() {
    if (count_ > errors_.size())
      errors_.push_back({"", std::to_string(count_ - errors_.size()) + " more errors not shown"});
  }

  // Walks an object's members in document order. simdjson's DOM keeps
  // duplicate keys; a document where the second "action" silently wins was
  // not reviewed as written, so duplicates are refused.
  template <typename Handler>
  bool members(element value, const std::string& path, Handler&& handle) {
    object obj;
    if (value.get_object().get(obj) != simdjson::SUCCESS) {
      fail(path, "expected an object");
      return false;
    }
    std::unordered_set<std::string_view> seen;
    for (auto member : obj) {
      std::string member_path = key_path(path, member.key);
      if (!seen.insert(member.key).second) {
        fail(member_path, "duplicate key");
        continue;
      }
      handle(member.key, member.value, member_path);
    }
    return true;
  }

  void unknown_key(const std::string& path) { fail(path, "unknown key"); }

  bool string(element value, const std::string& path, std::string_view& out) {
    if (value.get_string().get(out) == simdjson::SUCCESS) return true;
    fail(path, "expected a string");
    return false;
  }

  bool boolean(element value, const std::string& path, bool& out) {
    if (value.get_bool().get(out) == simdjson::SUCCESS) return true;
    fail(path, "expected true or false");
    return false;
  }

  // JSON has one number type; integers must be written as integers so that
  // 300.5 or 3e2 is refused rather than rounded.
  bool integer(element value, const std::string& path, std::uint64_t lo, std::uint64_t hi, std::uint64_t& out) {
    std::uint64_t v = 0;
    bool ok = false;
    if (value.type() == element_type::UINT64) {
      ok = value.get_uint64().get(v) == simdjson::SUCCESS;
    } else if (value.type() == element_type::INT64) {
      std::int64_t s = 0;
      ok = value.get_int64().get(s) == simdjson::SUCCESS && s >= 0;
      v = static_cast<std::uint64_t>(s);
    }
    if (ok && v >= lo && v <= hi) {
      out = v;
      return true;
    }
    fail(path, "expected an integer between " + std::to_string(lo) + " and " + std::to_string(hi));
    return false;
  }

  bool action(element value, const std::string& path, bool approval_allowed, policy_action& out) {
    std::string_view s;
    if (!string(value, path, s)) return false;
    if (s == "allow") {
      out = policy_action::allow;
    } else if (s == "deny") {
      out = policy_action::deny;
    } else if (s == "require_approval" && approval_allowed) {
      out = policy_action::require_approval;
    } else {
      fail(path, approval_allowed ? "expected one of allow, deny, require_approval" : "expected allow or deny");
      return false;
    }
    return true;
  }

  bool style(element value, const std::string& path, mask_style& out) {
    static constexpr std::pair<std::string_view, mask_style> styles[] = {
        {"redact", mask_style::redact}, {"partial", mask_style::partial}, {"hash", mask_style::hash},
        {"null", mask_style::null},     {"off", mask_style::off}};
    std::string_view s;
    if (!string(value, path, s)) return false;
    for (const auto& [name, st] : styles) {
      if (name != s) continue;
      out = st;
      return true;
    }
    fail(path, "expected one of redact, partial, hash, null, off");
    return false;
  }

  // Free text shown to people: bounded, and without control characters (a
  // NUL would cut a PostgreSQL ErrorResponse field short). Descriptions are
  // only read in the document, so they may have line breaks and tabs.
  bool text(element value, const std::string& path, std::string& out, bool multi_line = false) {
    std::string_view s;
    if (!string(value, path, s)) return false;
    if (s.empty() || s.size() > text_chars_max) {
      fail(path, "expected between 1 and " + std::to_string(text_chars_max) + " bytes");
      return false;
    }
    const bool bad = std::any_of(s.begin(), s.end(), [&](char c) {
      const auto u = static_cast<unsigned char>(c);
      if (multi_line && (c == '\n' || c == '\t')) return false;
      return u < 0x20 || u == 0x7f;
    });
    if (bad) {
      fail(path, multi_line ? "control characters other than line breaks and tabs are not allowed"
                            : "control characters are not allowed");
      return false;
    }
    out = s;
    return true;
  }

  // A non-empty, bounded array of strings; `each` validates one entry. An
  // empty any-of list can never match: that is a mistake, not a rule.
  template <typename Each>
  void string_list(element value, const std::string& path, Each&& each) {
    array items;
    if (value.get_array().get(items) != simdjson::SUCCESS) {
      fail(path, "expected an array of strings");
      return;
    }
    const std::size_t size = items.size();
    if (size == 0) {
      fail(path, "empty list: it can never match (leave the key out to match anything)");
      return;
    }
    if (size > policy_list_max) {
      fail(path, "more than " + std::to_string(policy_list_max) + " entries");
      return;
    }
    std::size_t i = 0;
    for (element item : items) {
      const std::string item_path = index_path(path, i++);
      std::string_view s;
      if (string(item, item_path, s)) each(s, item_path);
    }
  }

  // A dotted SQL name as rules write it: 1 to 3 parts, each a 1-63 byte
  // identifier. Quoting is not supported (matching ignores case anyway).
  bool sql_name(std::string_view s, const std::string& path, std::string_view what) {
    std::size_t parts = 0;
    std::size_t start = 0;
    for (;;) {
      const std::size_t dot = s.find('.', start);
      const std::string_view part = s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
      ++parts;
      if (part.empty() || part.size() > identifier_bytes_max) {
        fail(path, std::string(what) + " " + quote_for_message(s) + ": each dot-separated part must be 1 to 63 bytes");
        return false;
      }
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
    if (parts > name_parts_max) {
      fail(path, std::string(what) + " " + quote_for_message(s) + ": at most three parts (database.schema.name)");
      return false;
    }
    if (has_control_char(s) || s.find_first_of("\" ") != std::string_view::npos) {
      fail(path, std::string(what) + " " + quote_for_message(s) + ": write names without quotes or spaces");
      return false;
    }
    return true;
  }

 private:
  std::vector<policy_error>& errors_;
  std::size_t count_ = 0;
};

std::string kind_hint(std::string_view kind) {
  for (const auto& [wrong, right] : kind_hints)
    if (wrong == kind) return std::string("; PostgreSQL tags it \"") + std::string(right) + "\"";
  // "DROP" alone, "CREATE" alone: list a few of the tags it starts.
  std::string prefix = std::string(kind) + " ";
  std::string hint;
  std::size_t shown = 0;
  for (auto k : statement_kinds) {
    if (k.substr(0, prefix.size()) != prefix) continue;
    if (shown == 3) {
      hint += ", ...";
      break;
    }
    hint += shown == 0 ? "; did you mean " : ", ";
    hint += "\"" + std::string(k) + "\"";
    ++shown;
  }
  return hint;
}

bool is_known_kind(std::string_view kind) {
  return std::binary_search(statement_kinds.begin(), statement_kinds.end(), kind);
}

bool is_known_detector(std::string_view name) {
  return std::find(mask_detectors.begin(), mask_detectors.end(), name) != mask_detectors.end();
}

template <typename T>
void sort_unique(std::vector<T>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

// Reads a document into a policy under construction.
class builder {
 public:
  builder(checker& check, policy_references& refs, masking_settings& masking, std::vector<rule>& rules)
      : check_(check), refs_(refs), masking_(masking), rules_(rules) {}

  void document(element root) {
    bool seen_default = false;
    if (!check_.members(root, "", [&](std::string_view key, element value, const std::string& path) {
          if (key == "version") {
            std::uint64_t v = 0;
            if (check_.integer(value, path, 0, std::numeric_limits<std::int64_t>::max(), v) && v != 1)
              check_.fail(path, "unsupported schema version " + std::to_string(v) + "; this gateway reads version 1");
          } else if (key == "default_action") {
            seen_default = true;
            check_.action(value, path, false, document_.default_action.action);
          } else if (key == "parse_errors") {
            check_.action(value, path, false, document_.parse_errors.action);
          } else if (key == "function_calls") {
            check_.action(value, path, false, document_.function_calls.action);
          } else if (key == "targets") {
            targets(value, path);
          } else if (key == "rules") {
            rules(value, path);
          } else if (key == "masking") {
            masking(value, path);
          } else {
            check_.unknown_key(path);
          }
        }))
      return;
    // A missing default_action is refused rather than guessed: allow is the
    // wrong guess for a guardrail, deny the wrong one for a first rollout.
    if (!seen_default) check_.fail("default_action", "required: allow or deny");
  }

  // Scopes, settings and references, once the rules are read.
  void compile(scope& wildcard, std::vector<scope>& named, string_map<std::uint32_t>& named_index) {
    document_.default_action.id = "default_action";
    document_.parse_errors.id = "parse_errors";
    document_.function_calls.id = "function_calls";
    wildcard.default_action = document_.default_action;
    wildcard.parse_errors = document_.parse_errors;
    wildcard.function_calls = document_.function_calls;

    auto scope_for = [&](const std::string& target) -> scope& {
      auto [it, added] = named_index.try_emplace(target, static_cast<std::uint32_t>(named.size()));
      if (added) {
        scope s;
        s.default_action = document_.default_action;
        s.parse_errors = document_.parse_errors;
        s.function_calls = document_.function_calls;
        named.push_back(std::move(s));
      }
      return named[it->second];
    };
    for (auto& t : target_settings_) {
      scope& s = scope_for(t.name);
      const std::string base = key_path("targets", t.name);
      if (t.has_default) s.default_action = {t.default_action, key_path(base, "default_action")};
      if (t.has_parse_errors) s.parse_errors = {t.parse_errors, key_path(base, "parse_errors")};
      if (t.has_function_calls) s.function_calls = {t.function_calls, key_path(base, "function_calls")};
    }
    sort_unique(refs_.statement_kinds);
    sort_unique(refs_.functions);
    // Counted before anything is built: 1 MiB of targets x kinds lists could
    // otherwise ask for hundreds of megabytes of index.
    std::size_t entries = 0;
    for (const rule& r : rules_)
      entries += (r.any_target ? 1 : r.targets.size()) * std::max<std::size_t>(1, r.kinds.size());
    if (entries > index_entries_max) {
      check_.fail("rules", "the rules name too many target and statement combinations (" + std::to_string(entries) +
                               "; at most " + std::to_string(index_entries_max) + ")");
      return;
    }
    for (std::uint32_t i = 0; i < rules_.size(); ++i) {
      const rule& r = rules_[i];
      auto add = [&](scope& s) {
        if (r.kinds.empty()) {
          s.any_kind.push_back(i);
          return;
        }
        for (const auto& k : r.kinds) s.by_kind[k].push_back(i);
      };
      if (r.any_target) {
        add(wildcard);
      } else {
        for (const auto& t : r.targets) add(scope_for(t));
      }
    }
  }

 private:
  struct target_setting {
    std::string name;
    bool has_default = false, has_parse_errors = false, has_function_calls = false;
    policy_action default_action = policy_action::deny;
    policy_action parse_errors = policy_action::deny;
    policy_action function_calls = policy_action::deny;
  };

  void note_target(std::string_view name, const std::string& path) {
    if (target_names_.size() >= policy_targets_max && !target_names_.contains(std::string(name))) {
      if (!too_many_targets_) check_.fail(path, "more than " + std::to_string(policy_targets_max) + " distinct target names");
      too_many_targets_ = true;
      return;
    }
    target_names_.insert(std::string(name));
  }

  bool target_name(std::string_view s, const std::string& path) {
    if (!is_name(s, target_name_chars_max)) {
      check_.fail(path, "target name " + quote_for_message(s) + ": expected 1 to 64 of A-Z a-z 0-9 _ . -");
      return false;
    }
    note_target(s, path);
    return true;
  }

  void targets(element value, const std::string& path) {
    object obj;
    if (value.get_object().get(obj) == simdjson::SUCCESS && obj.size() > policy_list_max) {
      check_.fail(path, "more than " + std::to_string(policy_list_max) + " targets");
      return;
    }
    check_.members(value, path, [&](std::string_view name, element settings, const std::string& tpath) {
      if (!target_name(name, tpath)) return;
      target_setting t;
      t.name = name;
      check_.members(settings, tpath, [&](std::string_view key, element v, const std::string& p) {
        if (key == "default_action") {
          t.has_default = check_.action(v, p, false, t.default_action);
        } else if (key == "parse_errors") {
          t.has_parse_errors = check_.action(v, p, false, t.parse_errors);
        } else if (key == "function_calls") {
          t.has_function_calls = check_.action(v, p, false, t.function_calls);
        } else {
          check_.unknown_key(p);
        }
      });
      target_settings_.push_back(std::move(t));
    });
  }

  void rules(element value, const std::string& path) {
    array items;
    if (value.get_array().get(items) != simdjson::SUCCESS) {
      check_.fail(path, "expected an array of rules");
      return;
    }
    if (items.size() > policy_rules_max) {
      check_.fail(path, "more than " + std::to_string(policy_rules_max) + " rules");
      return;
    }
    rules_.reserve(items.size());
    std::size_t i = 0;
    for (element item : items) one_rule(item, index_path(path, i++));
  }

  void one_rule(element value, const std::string& path) {
    rule r;
    // seen_*: the key is present (a bad value was reported where it is);
    // have_*: present and valid.
    bool seen_id = false, seen_action = false, have_action = false, seen_message = false;
    bool have_approvers = false, have_timeout = false;
    std::string approvers_path, timeout_path;
    if (!check_.members(value, path, [&](std::string_view key, element v, const std::string& p) {
          if (key == "id") {
            seen_id = true;
            rule_id(v, p, r.id);
          } else if (key == "description") {
            std::string ignored;
            check_.text(v, p, ignored, true);
          } else if (key == "targets") {
            r.any_target = wildcard_list(v, p, r.targets, true);
          } else if (key == "groups") {
            r.any_group = wildcard_list(v, p, r.groups, false);
            sort_unique(r.groups);
          } else if (key == "match") {
            match(v, p, r);
          } else if (key == "action") {
            seen_action = true;
            have_action = check_.action(v, p, true, r.action);
          } else if (key == "message") {
            seen_message = true;
            check_.text(v, p, r.message);
          } else if (key == "approvers") {
            have_approvers = true;
            approvers_path = p;
            approvers(v, p, r);
          } else if (key == "timeout_s") {
            have_timeout = true;
            timeout_path = p;
            std::uint64_t t = 0;
            if (check_.integer(v, p, 1, policy_timeout_s_max, t)) r.timeout_s = static_cast<std::uint32_t>(t);
          } else {
            check_.unknown_key(p);
          }
        }))
      return;
    if (!seen_id) check_.fail(key_path(path, "id"), "required");
    if (!seen_action) check_.fail(key_path(path, "action"), "required: allow, deny or require_approval");
    if (have_action) {
      if (r.action == policy_action::deny && !seen_message)
        check_.fail(key_path(path, "message"), "required for deny: the client is told why");
      if (r.action == policy_action::require_approval) {
        if (!have_approvers) check_.fail(key_path(path, "approvers"), "require_approval needs at least one approver group");
        if (!have_timeout) r.timeout_s = policy_timeout_s_default;
      } else {
        if (have_approvers) check_.fail(approvers_path, "only for require_approval");
        if (have_timeout) check_.fail(timeout_path, "only for require_approval");
      }
    }
    rules_.push_back(std::move(r));
  }

  bool rule_id(element value, const std::string& path, std::string& out) {
    std::string_view s;
    if (!check_.string(value, path, s)) return false;
    if (!is_name(s, rule_id_chars_max)) {
      check_.fail(path, "rule id " + quote_for_message(s) + ": expected 1 to 64 of A-Z a-z 0-9 _ . -");
      return false;
    }
    for (auto reserved : reserved_rule_ids) {
      if (s != reserved) continue;
      check_.fail(path, "rule id " + quote_for_message(s) + " is reserved: decisions name the setting " + std::string(reserved));
      return false;
    }
    if (s.substr(0, 8) == "targets.") {
      check_.fail(path, "rule id " + quote_for_message(s) + ": ids starting with \"targets.\" are reserved for target settings");
      return false;
    }
    auto [it, added] = rule_ids_.try_emplace(std::string(s), path);
    if (!added) {
      check_.fail(path, "duplicate rule id " + quote_for_message(s) + " (also at " + it->second + ")");
      return false;
    }
    out = s;
    return true;
  }

  // ["*"] or names. Returns whether the list is the wildcard.
  bool wildcard_list(element value, const std::string& path, std::vector<std::string>& out, bool targets) {
    bool wildcard = false;
    std::size_t count = 0;
    std::string star_path;
    check_.string_list(value, path, [&](std::string_view s, const std::string& p) {
      ++count;
      if (s == "*") {
        wildcard = true;
        star_path = p;
        return;
      }
      if (targets) {
        if (target_name(s, p)) out.emplace_back(s);
      } else if (group_name(s, p)) {
        out.emplace_back(s);
      }
    });
    if (wildcard && count > 1) check_.fail(star_path, "\"*\" must be the only entry");
    sort_unique(out);
    return wildcard;
  }

  bool group_name(std::string_view s, const std::string& path) {
    if (s.empty() || s.size() > group_chars_max || has_control_char(s)) {
      check_.fail(path, "group " + quote_for_message(s) + ": expected 1 to 256 bytes without control characters");
      return false;
    }
    return true;
  }

  void approvers(element value, const std::string& path, rule& r) {
    check_.string_list(value, path, [&](std::string_view s, const std::string& p) {
      if (s == "*") {
        check_.fail(p, "approvers must name groups: \"*\" would let anyone approve");
        return;
      }
      if (!group_name(s, p)) return;
      if (std::find(r.approvers.begin(), r.approvers.end(), s) == r.approvers.end()) r.approvers.emplace_back(s);
    });
    r.approvers_sorted = r.approvers;
    std::sort(r.approvers_sorted.begin(), r.approvers_sorted.end());
  }

  void match(element value, const std::string& path, rule& r) {
    check_.members(value, path, [&](std::string_view key, element v, const std::string& p) {
      if (key == "sql") {
        sql_match(v, p, r);
      } else {
        check_.unknown_key(p);
      }
    });
  }

  void flag(element value, const std::string& path, tri& out, bool& ref) {
    bool b = false;
    if (!check_.boolean(value, path, b)) return;
    out = b ? tri::yes : tri::no;
    ref = true;
  }

  void sql_match(element value, const std::string& path, rule& r) {
    check_.members(value, path, [&](std::string_view key, element v, const std::string& p) {
      if (key == "statements") {
        check_.string_list(v, p, [&](std::string_view s, const std::string& ip) {
          std::string kind = uppered(s);
          if (!is_known_kind(kind)) {
            check_.fail(ip, "unknown statement kind " + quote_for_message(s) + kind_hint(kind));
            return;
          }
          refs_.statement_kinds.push_back(kind);
          r.kinds.push_back(std::move(kind));
        });
        sort_unique(r.kinds);
      } else if (key == "functions") {
        check_.string_list(v, p, [&](std::string_view s, const std::string& ip) {
          if (!check_.sql_name(s, ip, "function")) return;
          std::string name = lowered(s);
          r.functions.emplace_back(last_part(name));
          refs_.functions.push_back(std::move(name));
        });
        sort_unique(r.functions);
      } else if (key == "tables") {
        check_.string_list(v, p, [&](std::string_view s, const std::string& ip) {
          if (!check_.sql_name(s, ip, "table")) return;
          const std::string name = lowered(s);
          r.tables.push_back({std::string(schema_part(name)), std::string(last_part(name))});
        });
        std::sort(r.tables.begin(), r.tables.end(),
                  [](const table_pattern& a, const table_pattern& b) { return a.name < b.name; });
        refs_.tables = true;
      } else if (key == "set_parameters") {
        check_.string_list(v, p, [&](std::string_view s, const std::string& ip) {
          const std::string name = lowered(s);
          const bool ok = !name.empty() && name.size() <= parameter_chars_max &&
                          std::all_of(name.begin(), name.end(), [](char c) {
                            return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
                          });
          if (!ok) {
            check_.fail(ip, "parameter " + quote_for_message(s) + ": expected 1 to 128 of a-z 0-9 _ .");
            return;
          }
          r.set_parameters.push_back(name);
        });
        sort_unique(r.set_parameters);
        refs_.set_parameter = true;
      } else if (key == "without_where") {
        flag(v, p, r.without_where, refs_.without_where);
      } else if (key == "copy_program") {
        flag(v, p, r.copy_program, refs_.copy_program);
      } else if (key == "writes") {
        flag(v, p, r.writes, refs_.writes);
      } else {
        check_.unknown_key(p);
      }
    });
  }

  // --- masking -------------------------------------------------------------

  void masking(element value, const std::string& path) {
    masking_.present = true;
    std::string hash_path;
    if (!check_.members(value, path, [&](std::string_view key, element v, const std::string& p) {
          if (key == "detectors") {
            detectors(v, p, hash_path);
          } else if (key == "columns") {
            columns(v, p, hash_path);
          } else if (key == "patterns") {
            patterns(v, p, hash_path);
          } else if (key == "hash_key_file") {
            std::string_view s;
            if (!check_.string(v, p, s)) return;
            // Absolute: a policy PUT over the API has no directory that a
            // relative path could be relative to.
            if (s.empty() || s.size() > file_path_chars_max || has_control_char(s) || s.front() != '/') {
              check_.fail(p, "expected an absolute file path of at most 4096 bytes");
              return;
            }
            masking_.hash_key_file = s;
          } else {
            check_.unknown_key(p);
          }
        }))
      return;
    // Without a key, the hash of a 9-digit SSN or a 16-digit card number is
    // reversed by hashing every candidate.
    if (!hash_path.empty() && masking_.hash_key_file.empty())
      check_.fail(key_path(path, "hash_key_file"), "required when a style is hash (used at " + hash_path + ")");
  }

  void note_style(mask_style style, const std::string& path, std::string& hash_path) {
    if (style == mask_style::hash && hash_path.empty()) hash_path = path;
  }

  void detectors(element value, const std::string& path, std::string& hash_path) {
    check_.members(value, path, [&](std::string_view name, element v, const std::string& p) {
      if (!is_known_detector(name)) {
        std::string known;
        for (auto d : mask_detectors) known += (known.empty() ? "" : ", ") + std::string(d);
        check_.fail(p, "unknown detector; known: " + known);
        return;
      }
      mask_detector_setting d;
      d.detector = name;
      if (!check_.style(v, p, d.style)) return;
      note_style(d.style, p, hash_path);
      masking_.detectors.push_back(std::move(d));
    });
  }

  bool regex(element value, const std::string& path, std::string& out) {
    std::string_view s;
    if (!check_.string(value, path, s)) return false;
    if (s.empty() || s.size() > regex_chars_max || s.find('\0') != std::string_view::npos) {
      check_.fail(path, "expected a regular expression of 1 to 4096 bytes");
      return false;
    }
    out = s;
    return true;
  }

  // An array of objects, bounded; `each` reads one.
  template <typename Each>
  void object_list(element value, const std::string& path, Each&& each) {
    array items;
    if (value.get_array().get(items) != simdjson::SUCCESS) {
      check_.fail(path, "expected an array of objects");
      return;
    }
    if (items.size() > policy_list_max) {
      check_.fail(path, "more than " + std::to_string(policy_list_max) + " entries");
      return;
    }
    std::size_t i = 0;
    for (element item : items) each(item, index_path(path, i++));
  }

  void columns(element value, const std::string& path, std::string& hash_path) {
    object_list(value, path, [&](element item, const std::string& ipath) {
      mask_column_rule c;
      bool have_name = false, have_style = false;
      if (!check_.members(item, ipath, [&](std::string_view key, element v, const std::string& p) {
            if (key == "name") {
              have_name = true;
              regex(v, p, c.name_regex);
            } else if (key == "table") {
              std::string_view s;
              if (check_.string(v, p, s) && check_.sql_name(s, p, "table")) c.table = lowered(s);
            } else if (key == "style") {
              have_style = true;
              if (check_.style(v, p, c.style)) note_style(c.style, p, hash_path);
            } else {
              check_.unknown_key(p);
            }
          }))
        return;
      if (!have_name) check_.fail(key_path(ipath, "name"), "required: a regular expression over column names");
      if (!have_style) check_.fail(key_path(ipath, "style"), "required");
      masking_.columns.push_back(std::move(c));
    });
  }

  void patterns(element value, const std::string& path, std::string& hash_path) {
    std::unordered_map<std::string, std::string> names;
    object_list(value, path, [&](element item, const std::string& ipath) {
      mask_pattern m;
      bool have_name = false, have_regex = false, have_style = false;
      if (!check_.members(item, ipath, [&](std::string_view key, element v, const std::string& p) {
            if (key == "name") {
              have_name = true;
              std::string_view s;
              if (!check_.string(v, p, s)) return;
              if (!is_name(s, rule_id_chars_max)) {
                check_.fail(p, "pattern name " + quote_for_message(s) + ": expected 1 to 64 of A-Z a-z 0-9 _ . -");
              } else if (is_known_detector(s)) {
                check_.fail(p, "pattern name " + quote_for_message(s) + " is a detector's name");
              } else if (auto [it, added] = names.try_emplace(std::string(s), p); !added) {
                check_.fail(p, "duplicate pattern name " + quote_for_message(s) + " (also at " + it->second + ")");
              } else {
                m.name = s;
              }
            } else if (key == "regex") {
              have_regex = true;
              regex(v, p, m.regex);
            } else if (key == "style") {
              have_style = true;
              if (check_.style(v, p, m.style)) note_style(m.style, p, hash_path);
            } else {
              check_.unknown_key(p);
            }
          }))
        return;
      if (!have_name) check_.fail(key_path(ipath, "name"), "required");
      if (!have_regex) check_.fail(key_path(ipath, "regex"), "required");
      if (!have_style) check_.fail(key_path(ipath, "style"), "required");
      masking_.patterns.push_back(std::move(m));
    });
  }

  checker& check_;
  policy_references& refs_;
  masking_settings& masking_;
  std::vector<rule>& rules_;
  struct {
    setting default_action{policy_action::deny, {}};
    setting parse_errors{policy_action::deny, {}};
    setting function_calls{policy_action::deny, {}};
  } document_;
  bool too_many_targets_ = false;
  std::vector<target_setting> target_settings_;
  std::unordered_set<std::string> target_names_;
  std::unordered_map<std::string, std::string> rule_ids_;  // id -> where first seen
};

policy_decision rule_decision(const rule& r, std::uint32_t index) {
  policy_decision d;
  d.action = r.action;
  d.rule_id = r.id;
  d.message = r.message;
  if (r.action == policy_action::require_approval) {
    d.approvers = r.approvers;
    d.timeout_s = r.timeout_s;
  }
  d.statement_index = index;
  return d;
}

policy_decision setting_decision(const setting& s, std::string_view deny_message, std::uint32_t index) {
  policy_decision d;
  d.action = s.action;
  d.rule_id = s.id;
  if (s.action == policy_action::deny) d.message = deny_message;
  d.statement_index = index;
  return d;
}

std::string sha256_hex(std::string_view text) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  // Cannot fail for SHA-256 on a memory buffer short of OpenSSL being broken.
  const int ok = EVP_Digest(text.data(), text.size(), md, &md_len, EVP_sha256(), nullptr);
  assert(ok == 1 && md_len == 32);
  (void)ok;
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(md_len * 2);
  for (unsigned int i = 0; i < md_len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 0xf];
  }
  return out;
}

std::string utc_time(std::int64_t unix_ms) {
  const std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

}  // namespace

// ---------------------------------------------------------------------------

std::string_view to_string(policy_action action) {
  switch (action) {
    case policy_action::allow: return "allow";
    case policy_action::deny: return "deny";
    case policy_action::require_approval: return "require_approval";
  }
  return "deny";
}

std::string_view to_string(mask_style style) {
  switch (style) {
    case mask_style::redact: return "redact";
    case mask_style::partial: return "partial";
    case mask_style::hash: return "hash";
    case mask_style::null: return "null";
    case mask_style::off: return "off";
  }
  return "redact";
}

std::span<const std::string_view> known_mask_detectors() { return mask_detectors; }
std::span<const std::string_view> known_statement_kinds() { return statement_kinds; }

policy::policy() = default;
policy::~policy() = default;

std::size_t policy::rule_count() const { return state_->rules.size(); }

result<std::shared_ptr<policy>> policy::parse_mutable(std::string_view json, std::vector<policy_error>& errors) {
  errors.clear();
  checker check(errors);
  auto refuse = [&]() -> status {
    check.finish();
    const std::size_t n = check.count();
    return {errc::invalid_argument, "policy has " + std::to_string(n) + (n == 1 ? " error" : " errors")};
  };
  if (json.size() > policy_bytes_max) {
    check.fail("", "the document is larger than " + std::to_string(policy_bytes_max) + " bytes");
    return refuse();
  }
  simdjson::dom::parser parser;
  const simdjson::padded_string padded(json);
  element root;
  if (auto err = parser.parse(padded).get(root); err != simdjson::SUCCESS) {
    check.fail("", std::string("not valid JSON: ") + simdjson::error_message(err));
    return refuse();
  }

  std::shared_ptr<policy> p(new policy());
  p->state_ = std::make_unique<state>();
  builder b(check, p->references_, p->masking_, p->state_->rules);
  b.document(root);
  b.compile(p->state_->wildcard, p->state_->named, p->state_->named_index);
  if (check.count() > 0) return refuse();
  p->text_ = json;
  return p;
}

result<std::shared_ptr<const policy>> policy::parse(std::string_view json, std::vector<policy_error>& errors) {
  auto p = parse_mutable(json, errors);
  if (!p) return p.error();
  return std::shared_ptr<const policy>(std::move(p.value()));
}

policy_decision policy::evaluate(std::string_view target, std::span<const std::string> groups,
                                 std::span<const statement_facts> statements) const {
  const state& s = *state_;
  const scope* named = s.find_scope(target);
  const scope& settings = named != nullptr ? *named : s.wildcard;

  // Held statements, one entry per distinct rule, in statement order.
  struct held_rule {
    std::uint32_t rule;
    std::uint32_t statement;
  };
  std::array<held_rule, policy_held_rules_max> held;
  std::size_t held_count = 0;
  bool held_overflow = false;
  std::uint32_t timeout_s = std::numeric_limits<std::uint32_t>::max();
  policy_decision first_allow;
  bool have_allow = false;

  for (std::uint32_t i = 0; i < statements.size(); ++i) {
    const rule* r = s.first_match(named, statements[i], groups);
    const policy_action action = r != nullptr ? r->action : settings.default_action.action;
    if (action == policy_action::deny)
      return r != nullptr ? rule_decision(*r, i) : setting_decision(settings.default_action, default_deny_message, i);
    if (action == policy_action::allow) {
      if (!have_allow) {
        first_allow = r != nullptr ? rule_decision(*r, i) : setting_decision(settings.default_action, {}, i);
        have_allow = true;
      }
      continue;
    }
    assert(r != nullptr);  // defaults are allow or deny
    const auto index = static_cast<std::uint32_t>(r - s.rules.data());
    timeout_s = std::min(timeout_s, r->timeout_s);
    bool seen = false;
    for (std::size_t h = 0; h < held_count && !seen; ++h) seen = held[h].rule == index;
    if (seen) continue;
    if (held_count == held.size()) {
      held_overflow = true;
      continue;
    }
    held[held_count++] = {index, i};
  }
  if (held_count == 0) return first_allow;

  const rule& first = s.rules[held[0].rule];
  if (held_overflow) {
    policy_decision d = rule_decision(first, held[0].statement);
    d.action = policy_action::deny;
    d.message = too_many_held_message;
    d.approvers = {};
    d.timeout_s = 0;
    return d;
  }
  // One approval releases the whole query, so its approver must be someone
  // every held rule would accept. Anyone in a rule whose approver groups are
  // all listed by every other held rule qualifies; a union would let a rule's
  // approvers release statements another rule reserved for someone else.
  for (std::size_t a = 0; a < held_count; ++a) {
    const rule& candidate = s.rules[held[a].rule];
    bool narrowest = true;
    for (std::size_t b = 0; b < held_count && narrowest; ++b) {
      const rule& other = s.rules[held[b].rule];
      narrowest = std::includes(other.approvers_sorted.begin(), other.approvers_sorted.end(),
                                candidate.approvers_sorted.begin(), candidate.approvers_sorted.end());
    }
    if (!narrowest) continue;
    policy_decision d = rule_decision(candidate, held[a].statement);
    d.timeout_s = timeout_s;
    return d;
  }
  policy_decision d = rule_decision(first, held[0].statement);
  d.action = policy_action::deny;
  d.message = approver_conflict_message;
  d.approvers = {};
  d.timeout_s = 0;
  return d;
}

policy_decision policy::evaluate_parse_error(std::string_view target, std::span<const std::string> groups) const {
  (void)groups;  // rules do not look at unparsable text; kept for per-group settings later
  const scope* named = state_->find_scope(target);
  return setting_decision(named != nullptr ? named->parse_errors : state_->wildcard.parse_errors, parse_error_message, 0);
}

policy_decision policy::evaluate_function_call(std::string_view target, std::span<const std::string> groups) const {
  (void)groups;
  const scope* named = state_->find_scope(target);
  return setting_decision(named != nullptr ? named->function_calls : state_->wildcard.function_calls,
                          function_call_message, 0);
}

// ---------------------------------------------------------------------------

policy_store::policy_store(std::size_t history_max) : history_max_(history_max == 0 ? 1 : history_max) {}

result<std::shared_ptr<const policy>> policy_store::put(std::string text, std::string submitted_by,
                                                        std::vector<policy_error>& errors) {
  // Parsing and indexing happen outside the lock: a large document must not
  // stall GET /v1/policy.
  auto parsed = policy::parse_mutable(text, errors);
  if (!parsed) return parsed.error();
  std::shared_ptr<policy> p = std::move(parsed.value());
  if (submitted_by.size() > submitted_by_chars_max) submitted_by.resize(submitted_by_chars_max);

  policy_version_info info;
  info.created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  info.sha256_hex = sha256_hex(p->text());
  info.submitted_by = std::move(submitted_by);
  info.bytes = p->text().size();
  info.rules = p->rule_count();

  std::lock_guard lock(mu_);
  p->version_ = next_version_++;
  info.version = p->version_;
  history_.push_front(std::move(info));
  while (history_.size() > history_max_) history_.pop_back();
  current_ = std::move(p);
  return current_;
}

std::shared_ptr<const policy> policy_store::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

std::vector<policy_version_info> policy_store::versions() const {
  std::lock_guard lock(mu_);
  std::vector<policy_version_info> out(history_.begin(), history_.end());
  for (auto& v : out) v.active = current_ != nullptr && v.version == current_->version();
  return out;
}

std::string policy_errors_json(const status& refusal, std::span<const policy_error> errors) {
  std::string out = "{\"error\": ";
  append_json_string(out, refusal.message());
  out += ", \"errors\": [";
  for (std::size_t i = 0; i < errors.size(); ++i) {
    if (i > 0) out += ", ";
    out += "{\"path\": ";
    append_json_string(out, errors[i].path);
    out += ", \"message\": ";
    append_json_string(out, errors[i].message);
    out += "}";
  }
  out += "]}";
  return out;
}

std::string policy_version_json(const policy_version_info& info) {
  std::string out = "{\"version\": " + std::to_string(info.version) + ", \"created_at\": ";
  append_json_string(out, utc_time(info.created_unix_ms));
  out += ", \"source\": ";
  append_json_string(out, info.submitted_by);
  out += ", \"sha256\": ";
  append_json_string(out, info.sha256_hex);
  out += ", \"active\": ";
  out += info.active ? "true" : "false";
  out += ", \"bytes\": " + std::to_string(info.bytes) + ", \"rules\": " + std::to_string(info.rules) + "}";
  return out;
}

}  // namespace agentgate
