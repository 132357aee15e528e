#pragma once
// SQL statement classification for the guardrails: what each statement in a
// query string is (PostgreSQL's own command tag), which tables it touches,
// which functions it calls by name, and the properties policy rules look at.
//
// Two paths. A Hyperscan prefilter over the raw text proves, for plain reads,
// that nothing any rule of this policy version could match is present; those
// skip the parser (the fast path). Everything else goes through libpg_query,
// PostgreSQL 15's own grammar, and its parse tree is walked. The prefilter is
// built from what the policy's rules reference, so it must be rebuilt with
// each policy version. The soundness argument is in docs/sql-classification.md.
//
// Ownership: sql_classifier is built once per policy version on the control
// plane and is immutable, so any number of shards share it. sql_scanner is
// owned by exactly one shard (its Hyperscan scratch, parser buffers and parse
// stack are not thread-safe); it keeps its classifier alive through a
// shared_ptr, so a policy swap replaces the scanner, never mutates it.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/sql_facts.h"
#include "core/status.h"

namespace agentgate::masking {

// statement_facts lives in core (core/sql_facts.h) so that policies can be
// judged without depending on the classifier.
using agentgate::statement_facts;

struct classification {
  // False when the text could not be classified: a syntax error, or a bound
  // exceeded. The policy layer denies such text by default (fail closed).
  bool parsed = false;
  std::string parse_error;
  std::vector<statement_facts> statements;
  // True when the prefilter proved that no rule could care and the parser was
  // skipped. Facts are then those of one plain SELECT: complete for every
  // rule of this policy version, not a full description (no tables, no
  // functions the rules do not reference).
  bool fast_path = false;
};

// What the policy's rules can look at. Anything not listed here may be
// missing from fast-path results.
struct classifier_spec {
  // Command tags rules match. Validated (and upper-cased) by build(): a
  // misspelt tag is refused rather than silently never matching.
  std::vector<std::string> statement_kinds;
  // Function names rules match, optionally schema-qualified (the schema is
  // ignored). Their last parts go into the prefilter.
  std::vector<std::string> functions;
  // Some rule matches on tables: the fast path cannot report them, so every
  // statement is parsed.
  bool tables = false;
  // Today these do not narrow the prefilter: the keywords they depend on
  // (UPDATE, DELETE, COPY, INTO, SET, ...) always send text to the parser.
  // They say what rules look at, so a narrower prefilter can come later
  // without changing callers.
  bool without_where = false;
  bool copy_program = false;
  bool writes = false;
  bool set_parameter = false;
  // False: always parse (for a policy that wants every syntax error denied,
  // which the fast path does not check; see docs/sql-classification.md).
  bool fast_path = true;

  std::size_t statement_bytes_max = 1 << 20;  // longer text: parsed=false, "statement too large"
  std::size_t statements_max = 1000;          // entries, nested ones included
  // libpg_query's JSON tree is 20-150x the SQL text; a bigger tree is refused
  // rather than parsed into a DOM.
  std::size_t parse_tree_bytes_max = 64 << 20;
  std::size_t parse_tree_depth_max = 32768;  // JSON nesting of the tree
  // Names (tables plus functions) reported across all entries of one text,
  // every statement in it and SQL given as text included. An entry's names
  // include its nested entries', so a name k levels down counts k+1 times:
  // this bounds what the classifier builds and what the policy then reads,
  // whatever the shape. One bound per text, not per statement, so that many
  // statements cannot multiply it. Past it: parsed=false, "statement too
  // complex".
  std::size_t names_max = 131072;
  // Parse-tree values the walk may visit for one text (SQL given as text to
  // query_to_xml & co. included). Past it: parsed=false, "statement too complex".
  std::size_t walk_nodes_max = 4 << 20;
};

// Whether `name` (optionally schema-qualified) matches a function the
// statement calls. Only the last parts are compared: which schema an
// unqualified call resolves to depends on search_path, so a rule on
// pg_catalog.pg_read_file must catch pg_read_file(...) and vice versa.
bool calls_function(const statement_facts& facts, std::string_view name);

// Whether `kind` is a command tag this classifier can report.
bool is_known_statement_kind(std::string_view kind);

class sql_classifier {
 public:
  // Compiles the prefilter. Refuses unknown statement kinds and function
  // names that could never match (empty, longer than PostgreSQL's 63-byte
  // identifiers, or holding characters no identifier has).
  static result<std::shared_ptr<const sql_classifier>> build(const classifier_spec& spec);

  ~sql_classifier();
  sql_classifier(const sql_classifier&) = delete;
  sql_classifier& operator=(const sql_classifier&) = delete;

  const classifier_spec& spec() const { return spec_; }
  // False when the rules make a fast path impossible (a rule on tables, a
  // function the grammar can call without naming it, or spec.fast_path off).
  bool fast_path_enabled() const { return fast_path_; }

 private:
  friend class sql_scanner;
  struct hs_state;
  explicit sql_classifier(classifier_spec spec);

  classifier_spec spec_;
  bool fast_path_ = false;
  std::unique_ptr<hs_state> hs_;
};

class sql_scanner {
 public:
  // One per shard. Allocates the shard's Hyperscan scratch and reserves (but
  // does not touch) the stack the parser runs on.
  static result<std::unique_ptr<sql_scanner>> create(std::shared_ptr<const sql_classifier> classifier);

  ~sql_scanner();
  sql_scanner(const sql_scanner&) = delete;
  sql_scanner& operator=(const sql_scanner&) = delete;

  classification classify(std::string_view sql);
  // Same, reusing `out`'s allocations (the hot path).
  void classify(std::string_view sql, classification& out);
  // Always parses: for tests and for callers that need every fact.
  void classify_full(std::string_view sql, classification& out);

  const sql_classifier& classifier() const { return *classifier_; }

 private:
  struct parser_state;
  explicit sql_scanner(std::shared_ptr<const sql_classifier> classifier);
  bool needs_parse(std::string_view sql);

  std::shared_ptr<const sql_classifier> classifier_;
  void* scratch_ = nullptr;  // hs_scratch_t*, owned
  std::unique_ptr<parser_state> parser_;
};

}  // namespace agentgate::masking
