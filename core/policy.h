#pragma once
// The policy document (docs/policy.md): its JSON schema, validation, and the
// decision it makes on a command's facts.
//
// A policy is parsed and indexed once on the control plane and is immutable
// afterwards, so every shard judges against the same snapshot without locks:
// sessions hold a std::shared_ptr<const policy> and pick up a new one between
// commands. Decisions hold views into the policy they came from; they are
// valid as long as that snapshot is.
//
// policy_store is the control plane's record of the running policy and its
// recent versions (GET|PUT /v1/policy, GET /v1/policy/versions). It is
// thread-safe and never on the data path.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/sql_facts.h"
#include "core/status.h"

namespace agentgate {

// Bounds on a document. Past them a document is refused, not truncated.
inline constexpr std::size_t policy_bytes_max = 1 << 20;  // same as the config API's body limit
inline constexpr std::size_t policy_rules_max = 10'000;
inline constexpr std::size_t policy_list_max = 1'000;       // entries in any one list or map
inline constexpr std::size_t policy_targets_max = 1'024;    // distinct target names, as in the config
inline constexpr std::size_t policy_errors_max = 100;       // reported; one more line says how many were cut
inline constexpr std::uint32_t policy_timeout_s_default = 300;
inline constexpr std::uint32_t policy_timeout_s_max = 86'400;
// A query holding more distinct require_approval rules than this is denied:
// the decision is computed without allocating, in a fixed array.
inline constexpr std::size_t policy_held_rules_max = 16;

enum class policy_action : std::uint8_t { allow, deny, require_approval };
std::string_view to_string(policy_action action);

// One validation problem. path points into the document the way a reader
// would write it ("rules[2].match.sql.statements[0]"); empty for the document
// as a whole (not JSON, too large, too many errors).
struct policy_error {
  std::string path;
  std::string message;
};

// The outcome for one command. rule_id names what decided: a rule's id, or a
// setting's place in the document ("default_action",
// "targets.pg-main.default_action", "parse_errors", "function_calls"); empty
// when nothing was judged (no statements). The views point into the policy
// (or at static text) and live as long as the policy snapshot does.
struct policy_decision {
  policy_action action = policy_action::allow;
  std::string_view rule_id;
  std::string_view message;                  // for the client: deny, and require_approval if the rule has one
  std::span<const std::string> approvers;    // require_approval: any one of these groups may approve
  std::uint32_t timeout_s = 0;               // require_approval: how long the command is held
  std::uint32_t statement_index = 0;         // index into the statements judged, of the one that decided
};

// What the rules look at, so the caller can build a classifier
// (masking::classifier_spec) that reports every fact a rule could match.
struct policy_references {
  std::vector<std::string> statement_kinds;  // upper-case command tags, sorted, unique
  std::vector<std::string> functions;        // lower-case, as written (maybe schema-qualified), sorted, unique
  bool tables = false;
  bool without_where = false;
  bool copy_program = false;
  bool writes = false;
  bool set_parameter = false;
};

// The masking section, validated for shape only; masking/ gives it meaning.
enum class mask_style : std::uint8_t { redact, partial, hash, null, off };
std::string_view to_string(mask_style style);

struct mask_detector_setting {
  std::string detector;  // one of known_mask_detectors()
  mask_style style = mask_style::redact;
};

struct mask_column_rule {
  std::string name_regex;  // matched against result column names
  std::string table;       // optional: "public.users" or "users"; empty for any
  mask_style style = mask_style::redact;
};

struct mask_pattern {
  std::string name;   // unique; not a detector's name
  std::string regex;  // syntax checked when masking compiles it
  mask_style style = mask_style::redact;
};

struct masking_settings {
  bool present = false;  // the document has a "masking" section
  std::vector<mask_detector_setting> detectors;  // document order
  std::vector<mask_column_rule> columns;
  std::vector<mask_pattern> patterns;
  std::string hash_key_file;  // required when any style is hash
};

// The detector names a masking section may configure.
std::span<const std::string_view> known_mask_detectors();
// The command tags rules may name: the classifier's (masking/sql_classifier.h
// is_known_statement_kind), mirrored here so core does not depend on masking.
// tests/masking/policy_kinds_test.cc keeps the two lists equal.
std::span<const std::string_view> known_statement_kinds();

class policy {
 public:
  // Validates and indexes a document. Every problem is appended to `errors`
  // (cleared first), up to policy_errors_max; any problem makes the result
  // an errc::invalid_argument status ("policy has N errors").
  static result<std::shared_ptr<const policy>> parse(std::string_view json, std::vector<policy_error>& errors);

  ~policy();
  policy(const policy&) = delete;
  policy& operator=(const policy&) = delete;

  const std::string& text() const { return text_; }  // the document as submitted
  std::uint64_t version() const { return version_; }  // assigned by policy_store; 0 if never stored

  // Judges each statement on its own: the first rule (in document order)
  // that applies to the target and groups and whose match holds decides;
  // if none does, the target's default_action, else the document's. The
  // strictest outcome over all statements wins (deny > require_approval >
  // allow); among denials the first. Several require_approval outcomes are
  // combined as docs/policy.md describes. No statements: allow.
  // Wildcards in the facts (a "*" parameter, a "*" or "<schema>.*" table:
  // names the classifier could not see) match deny and require_approval
  // rules on any name they may stand for and never an allow rule; an allow
  // rule on parameters must list every parameter the statement sets.
  // Does not allocate.
  policy_decision evaluate(std::string_view target, std::span<const std::string> groups,
                           std::span<const statement_facts> statements) const;
  // SQL the classifier could not read (a syntax error, a bound exceeded):
  // the target's parse_errors setting, else the document's (default deny).
  // The caller adds the parser's message to what it tells the client.
  policy_decision evaluate_parse_error(std::string_view target, std::span<const std::string> groups) const;
  // The legacy FunctionCall protocol message: function_calls (default deny).
  policy_decision evaluate_function_call(std::string_view target, std::span<const std::string> groups) const;

  const policy_references& references() const { return references_; }
  const masking_settings& masking() const { return masking_; }
  std::size_t rule_count() const;

 private:
  friend class policy_store;
  struct state;
  policy();
  static result<std::shared_ptr<policy>> parse_mutable(std::string_view json, std::vector<policy_error>& errors);

  std::string text_;
  std::uint64_t version_ = 0;
  policy_references references_;
  masking_settings masking_;
  std::unique_ptr<state> state_;
};

// One accepted version, ready for GET /v1/policy/versions.
struct policy_version_info {
  std::uint64_t version = 0;
  std::int64_t created_unix_ms = 0;
  std::string sha256_hex;    // of the document's text as accepted
  std::string submitted_by;  // "file" (policy_file at start), "api" (PUT /v1/policy), ...
  std::size_t bytes = 0;
  std::size_t rules = 0;
  bool active = false;  // the running version
};

class policy_store {
 public:
  static constexpr std::size_t history_default = 100;
  static constexpr std::size_t submitted_by_chars_max = 256;

  explicit policy_store(std::size_t history_max = history_default);

  // Validates `text`; if good, it becomes the running policy with the next
  // version number (1, 2, ...). If bad, `errors` lists every problem and the
  // running policy stays.
  result<std::shared_ptr<const policy>> put(std::string text, std::string submitted_by,
                                            std::vector<policy_error>& errors);
  std::shared_ptr<const policy> current() const;  // null before the first put
  std::vector<policy_version_info> versions() const;  // newest first, at most history_max

 private:
  mutable std::mutex mu_;
  std::size_t history_max_;
  std::uint64_t next_version_ = 1;
  std::shared_ptr<const policy> current_;
  std::deque<policy_version_info> history_;  // newest at the front
};

// JSON renderings for the config API.
// {"error": "policy has N errors", "errors": [{"path": ..., "message": ...}, ...]}, from
// what policy::parse or policy_store::put refused with.
std::string policy_errors_json(const status& refusal, std::span<const policy_error> errors);
// {"version": 4, "created_at": "2026-03-02T10:15:00Z", "source": "api", "sha256": "...",
//  "active": true, "bytes": 1234, "rules": 7}
std::string policy_version_json(const policy_version_info& info);

}  // namespace agentgate
