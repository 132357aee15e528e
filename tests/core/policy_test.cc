#include "core/policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace agentgate {
namespace {

using groups_t = std::vector<std::string>;

const groups_t no_groups;
const groups_t analysts = {"analysts"};
const groups_t dba = {"dba"};

std::string dump(const std::vector<policy_error>& errors) {
  std::string out;
  for (const auto& e : errors) out += "\n  " + e.path + ": " + e.message;
  return out;
}

std::shared_ptr<const policy> must_parse(std::string_view json) {
  std::vector<policy_error> errors;
  auto p = policy::parse(json, errors);
  EXPECT_TRUE(p.is_ok()) << json << dump(errors);
  EXPECT_TRUE(errors.empty());
  return p.is_ok() ? p.value() : nullptr;
}

std::vector<policy_error> errors_of(std::string_view json) {
  std::vector<policy_error> errors;
  auto p = policy::parse(json, errors);
  EXPECT_FALSE(p.is_ok()) << json;
  if (!p.is_ok()) {
    EXPECT_EQ(p.error().code(), errc::invalid_argument);
    EXPECT_FALSE(errors.empty());
  }
  return errors;
}

bool has_error(const std::vector<policy_error>& errors, std::string_view path, std::string_view text) {
  return std::any_of(errors.begin(), errors.end(), [&](const policy_error& e) {
    return e.path == path && e.message.find(text) != std::string::npos;
  });
}

statement_facts stmt(std::string kind) {
  statement_facts f;
  f.kind = std::move(kind);
  return f;
}

statement_facts select_stmt() { return stmt("SELECT"); }

statement_facts write_stmt(std::string kind, std::vector<std::string> tables = {"t"}) {
  statement_facts f = stmt(std::move(kind));
  f.tables = std::move(tables);
  f.writes = true;
  return f;
}

statement_facts calls(std::vector<std::string> functions) {
  statement_facts f = select_stmt();
  f.functions = std::move(functions);
  return f;
}

statement_facts reads(std::vector<std::string> tables) {
  statement_facts f = select_stmt();
  f.tables = std::move(tables);
  return f;
}

policy_decision judge(const policy& p, std::vector<statement_facts> statements, const groups_t& groups = no_groups,
                      std::string_view target = "pg-main") {
  return p.evaluate(target, groups, statements);
}

// A policy whose only rule has `match_sql` as its SQL criteria and denies.
std::string deny_when(std::string_view match_sql) {
  return R"({"default_action": "allow", "rules": [{"id": "r", "match": {"sql": )" + std::string(match_sql) +
         R"(}, "action": "deny", "message": "no"}]})";
}

bool denied(const policy& p, statement_facts f, const groups_t& groups = no_groups) {
  return judge(p, {std::move(f)}, groups).action == policy_action::deny;
}

// __FILE__ is relative to the build directory when the build tree sits in
// the source tree ("../tests/core/policy_test.cc"), and ctest runs tests
// from a subdirectory of it: look upwards from the working directory.
std::filesystem::path examples_dir() {
  const std::filesystem::path source = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
  if (source.is_absolute()) return source / "appliance" / "examples";
  for (std::filesystem::path base = std::filesystem::current_path();; base = base.parent_path()) {
    const std::filesystem::path candidate = base / source / "appliance" / "examples";
    if (std::filesystem::is_directory(candidate) || base == base.parent_path()) return candidate;
  }
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---------------------------------------------------------------------------
// Documents that parse.

constexpr std::string_view design_example = R"({
    "default_action": "allow",
    "rules": [
      {"id": "no-drops", "targets": ["*"], "groups": ["*"],
       "match": {"sql": {"statements": ["DROP TABLE", "DROP DATABASE", "TRUNCATE TABLE"]}},
       "action": "deny", "message": "dropping data needs a change request"},
      {"id": "bulk-writes",
       "match": {"sql": {"statements": ["DELETE", "UPDATE"], "without_where": true}},
       "action": "require_approval", "approvers": ["dba"], "timeout_s": 300}
    ],
    "masking": {
      "detectors": {"credit_card": "partial", "email": "partial", "us_ssn": "redact"},
      "columns": [{"name": "(?i)password|secret", "style": "redact"}]
    }
  })";

TEST(policy_parse, design_md_example_parses_and_judges) {
  auto p = must_parse(design_example);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->text(), design_example);
  EXPECT_EQ(p->version(), 0u);
  EXPECT_EQ(p->rule_count(), 2u);

  auto d = judge(*p, {write_stmt("DROP TABLE")});
  EXPECT_EQ(d.action, policy_action::deny);
  EXPECT_EQ(d.rule_id, "no-drops");
  EXPECT_EQ(d.message, "dropping data needs a change request");

  statement_facts bulk = write_stmt("DELETE");
  bulk.without_where = true;
  d = judge(*p, {bulk});
  EXPECT_EQ(d.action, policy_action::require_approval);
  EXPECT_EQ(d.rule_id, "bulk-writes");
  ASSERT_EQ(d.approvers.size(), 1u);
  EXPECT_EQ(d.approvers[0], "dba");
  EXPECT_EQ(d.timeout_s, 300u);

  d = judge(*p, {write_stmt("DELETE")});  // with a WHERE
  EXPECT_EQ(d.action, policy_action::allow);
  EXPECT_EQ(d.rule_id, "default_action");

  const masking_settings& m = p->masking();
  EXPECT_TRUE(m.present);
  ASSERT_EQ(m.detectors.size(), 3u);
  EXPECT_EQ(m.detectors[0].detector, "credit_card");
  EXPECT_EQ(m.detectors[0].style, mask_style::partial);
  EXPECT_EQ(m.detectors[2].style, mask_style::redact);
  ASSERT_EQ(m.columns.size(), 1u);
  EXPECT_EQ(m.columns[0].name_regex, "(?i)password|secret");
  EXPECT_TRUE(m.columns[0].table.empty());
}

TEST(policy_parse, masking_section) {
  auto p = must_parse(R"({"default_action": "allow", "masking": {
      "detectors": {"us_ssn": "hash", "ipv4": "off", "jwt": "null"},
      "columns": [{"name": "(?i)^ssn$", "table": "Public.Customers", "style": "hash"}],
      "patterns": [{"name": "order_ref", "regex": "ORD-[0-9]{8}", "style": "partial"}],
      "hash_key_file": "/etc/agentgate/mask.key"}})");
  ASSERT_NE(p, nullptr);
  const masking_settings& m = p->masking();
  ASSERT_EQ(m.detectors.size(), 3u);
  EXPECT_EQ(m.detectors[0].detector, "us_ssn");
  EXPECT_EQ(m.detectors[0].style, mask_style::hash);
  EXPECT_EQ(m.detectors[1].style, mask_style::off);
  EXPECT_EQ(m.detectors[2].style, mask_style::null);
  ASSERT_EQ(m.columns.size(), 1u);
  EXPECT_EQ(m.columns[0].table, "public.customers");
  EXPECT_EQ(m.columns[0].style, mask_style::hash);
  ASSERT_EQ(m.patterns.size(), 1u);
  EXPECT_EQ(m.patterns[0].name, "order_ref");
  EXPECT_EQ(m.patterns[0].regex, "ORD-[0-9]{8}");
  EXPECT_EQ(m.hash_key_file, "/etc/agentgate/mask.key");
  // Masking alone references nothing SQL rules would.
  EXPECT_TRUE(p->references().statement_kinds.empty());
  EXPECT_FALSE(p->references().tables);

  p = must_parse(R"({"default_action": "allow", "masking": {}})");
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(p->masking().present);
  EXPECT_TRUE(p->masking().detectors.empty());
}

TEST(policy_parse, examples_parse_cleanly) {
  std::size_t seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(examples_dir())) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("policy-", 0) != 0 || entry.path().extension() != ".json") continue;
    SCOPED_TRACE(name);
    ++seen;
    auto p = must_parse(read_file(entry.path()));
    ASSERT_NE(p, nullptr);
    EXPECT_GT(p->rule_count(), 0u);
  }
  EXPECT_GE(seen, 2u);
}

TEST(policy_parse, demo_policy_does_what_the_demo_says) {
  auto p = must_parse(read_file(examples_dir() / "policy-demo.json"));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(judge(*p, {write_stmt("DROP TABLE")}).action, policy_action::deny);
  EXPECT_EQ(judge(*p, {write_stmt("TRUNCATE TABLE")}).action, policy_action::deny);
  statement_facts bulk = write_stmt("UPDATE");
  bulk.without_where = true;
  auto d = judge(*p, {bulk});
  EXPECT_EQ(d.action, policy_action::require_approval);
  ASSERT_EQ(d.approvers.size(), 1u);
  EXPECT_EQ(d.approvers[0], "dba");
  for (const char* fn : {"pg_read_file", "pg_terminate_backend", "lo_export", "dblink_exec", "pg_catalog.set_config"})
    EXPECT_TRUE(denied(*p, calls({fn}))) << fn;
  statement_facts copy = stmt("COPY");
  copy.copy_program = true;
  EXPECT_TRUE(denied(*p, copy));
  for (const char* param : {"role", "session_authorization"}) {
    statement_facts set = stmt("SET");
    set.set_parameters = {param};
    EXPECT_TRUE(denied(*p, set)) << param;
  }
  EXPECT_EQ(judge(*p, {reads({"customers"})}).action, policy_action::allow);
  EXPECT_EQ(p->evaluate_parse_error("demo", no_groups).action, policy_action::deny);
  EXPECT_EQ(p->evaluate_function_call("demo", no_groups).action, policy_action::deny);
  EXPECT_TRUE(p->masking().present);
  EXPECT_FALSE(p->masking().detectors.empty());
}

TEST(policy_parse, readonly_policy_allows_reads_only) {
  auto p = must_parse(read_file(examples_dir() / "policy-readonly.json"));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(judge(*p, {reads({"orders"})}).action, policy_action::allow);
  EXPECT_EQ(judge(*p, {stmt("BEGIN"), reads({"orders"}), stmt("COMMIT")}).action, policy_action::allow);
  EXPECT_EQ(judge(*p, {write_stmt("INSERT")}).action, policy_action::deny);
  EXPECT_EQ(judge(*p, {write_stmt("INSERT")}).rule_id, "default_action");
  EXPECT_EQ(judge(*p, {stmt("LOCK TABLE")}).rule_id, "no-heavy-maintenance");
  EXPECT_TRUE(denied(*p, calls({"nextval"})));
}

// Issue 10: the facts the classifier now reports for the routes around the
// example policies' rules (tests/masking/sql_classifier_test.cc shows the
// classifier reports them; tests/integration/test_guardrail_bypasses.py runs
// them through the gateway).
TEST(policy_parse, demo_policy_denies_the_settings_routes) {
  auto p = must_parse(read_file(examples_dir() / "policy-demo.json"));
  ASSERT_NE(p, nullptr);
  // UPDATE pg_settings SET setting = 'off' WHERE name OPERATOR(pg_catalog.=) 'standard_conforming_strings'
  statement_facts update = write_stmt("UPDATE", {"pg_settings"});
  update.set_parameters = {"standard_conforming_strings"};
  EXPECT_EQ(judge(*p, {update}).rule_id, "no-parser-switches");
  // ... WHERE name = 'standard_conforming_strings' (a plain =), or 'standard' || '_conforming_strings'
  update.set_parameters = {"*"};
  EXPECT_TRUE(denied(*p, update));
  // The teams policy guards the same settings.
  auto teams = must_parse(read_file(examples_dir() / "policy-teams.json"));
  ASSERT_NE(teams, nullptr);
  EXPECT_EQ(judge(*teams, {update}).rule_id, "no-role-switch");
  update.set_parameters = {"client_encoding"};
  EXPECT_EQ(judge(*teams, {update}).rule_id, "no-parser-switches");
  statement_facts teams_aggregate = write_stmt("CREATE AGGREGATE", {});
  teams_aggregate.functions = {"set_config"};
  EXPECT_EQ(judge(*teams, {teams_aggregate}).rule_id, "no-set-config");
  // CREATE AGGREGATE a(text) (SFUNC = pg_catalog.set_config, ...)
  statement_facts aggregate = write_stmt("CREATE AGGREGATE", {});
  aggregate.functions = {"pg_catalog.set_config"};
  EXPECT_EQ(judge(*p, {aggregate}).rule_id, "no-dangerous-functions");
  // CREATE FUNCTION ... SET client_encoding = 'SJIS'
  statement_facts function = write_stmt("CREATE FUNCTION", {});
  function.set_parameters = {"client_encoding"};
  EXPECT_TRUE(denied(*p, function));
  // Ordinary writes still pass.
  EXPECT_EQ(judge(*p, {write_stmt("UPDATE")}).action, policy_action::allow);
}

TEST(policy_parse, readonly_policy_cannot_be_switched_to_read_write) {
  auto p = must_parse(read_file(examples_dir() / "policy-readonly.json"));
  ASSERT_NE(p, nullptr);
  // SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE, SET TRANSACTION
  // READ WRITE, BEGIN READ WRITE, START TRANSACTION READ WRITE.
  for (const auto& [kind, parameter] : std::vector<std::pair<std::string, std::string>>{
           {"SET", "default_transaction_read_only"},
           {"SET", "transaction_read_only"},
           {"BEGIN", "transaction_read_only"},
           {"START TRANSACTION", "transaction_read_only"}}) {
    statement_facts f = stmt(kind);
    f.set_parameters = {parameter};
    EXPECT_EQ(judge(*p, {f}).rule_id, "no-role-switch") << kind << " " << parameter;
  }
  statement_facts both = stmt("BEGIN");
  both.set_parameters = {"transaction_isolation", "transaction_read_only"};
  EXPECT_TRUE(denied(*p, both));
  // BEGIN READ ONLY and BEGIN ISOLATION LEVEL ... pass.
  EXPECT_EQ(judge(*p, {stmt("BEGIN")}).action, policy_action::allow);
  statement_facts isolation = stmt("BEGIN");
  isolation.set_parameters = {"transaction_isolation"};
  EXPECT_EQ(judge(*p, {isolation}).action, policy_action::allow);
  // Functions that write or change state from inside a SELECT.
  for (const char* fn : {"lo_creat", "lo_create", "lo_from_bytea", "lo_import", "lo_export", "lo_unlink", "lo_put",
                         "lowrite", "lo_truncate", "lo_truncate64", "nextval", "setval", "pg_terminate_backend",
                         "pg_cancel_backend", "pg_reload_conf", "pg_catalog.set_config", "pg_advisory_lock",
                         "pg_try_advisory_xact_lock_shared", "pg_switch_wal", "pg_logical_emit_message",
                         "pg_stat_reset", "brin_summarize_new_values", "dblink_send_query", "pg_sleep_for"})
    EXPECT_EQ(judge(*p, {calls({fn})}).rule_id, "no-dangerous-functions") << fn;
  for (const char* fn : {"lo_get", "loread", "lo_open", "currval", "pg_sequence_last_value", "now"})
    EXPECT_EQ(judge(*p, {calls({fn})}).action, policy_action::allow) << fn;
}

TEST(policy_evaluate, unknowable_parameters_and_tables_fail_closed) {
  auto deny = must_parse(deny_when(R"({"set_parameters": ["standard_conforming_strings"]})"));
  statement_facts f = write_stmt("UPDATE", {"pg_settings"});
  f.set_parameters = {"*"};
  EXPECT_TRUE(denied(*deny, f));  // a deny rule on any parameter catches "*"
  f.set_parameters = {"work_mem"};
  EXPECT_FALSE(denied(*deny, f));
  f.set_parameters = {"work_mem", "standard_conforming_strings"};
  EXPECT_TRUE(denied(*deny, f));  // any of several

  // An allow rule must name every parameter, and never allows "*".
  auto allow = must_parse(R"({"default_action": "deny", "rules": [{"id": "tz", "match": {"sql":
      {"set_parameters": ["timezone", "transaction_isolation"]}}, "action": "allow"}]})");
  statement_facts set = stmt("SET");
  set.set_parameters = {"timezone"};
  EXPECT_EQ(judge(*allow, {set}).action, policy_action::allow);
  set.set_parameters = {"transaction_isolation", "transaction_read_only"};
  EXPECT_EQ(judge(*allow, {set}).action, policy_action::deny);
  set.set_parameters = {"*"};
  EXPECT_EQ(judge(*allow, {set}).action, policy_action::deny);

  // Tables: "*" (database_to_xml) and "<schema>.*" (schema_to_xml).
  auto tables = must_parse(deny_when(R"({"tables": ["public.payments"]})"));
  EXPECT_TRUE(denied(*tables, reads({"*"})));
  EXPECT_TRUE(denied(*tables, reads({"public.*"})));
  EXPECT_TRUE(denied(*tables, reads({"PUBLIC.*"})));
  EXPECT_FALSE(denied(*tables, reads({"billing.*"})));
  auto any_schema = must_parse(deny_when(R"({"tables": ["payments"]})"));
  EXPECT_TRUE(denied(*any_schema, reads({"billing.*"})));
  // An allow rule on tables does not match a statement that may read others.
  auto teams = must_parse(read_file(examples_dir() / "policy-teams.json"));
  ASSERT_NE(teams, nullptr);
  const groups_t payments = {"payments"};
  EXPECT_EQ(judge(*teams, {reads({"public.payments"})}, payments).action, policy_action::allow);
  EXPECT_EQ(judge(*teams, {reads({"public.payments", "*"})}, payments).rule_id, "payments-tables");
  EXPECT_EQ(judge(*teams, {reads({"*"})}).rule_id, "payments-tables");
  EXPECT_EQ(judge(*teams, {reads({"public.*"})}).rule_id, "payments-tables");
  EXPECT_EQ(judge(*teams, {reads({"orders"})}).action, policy_action::allow);
}

TEST(policy_parse, minimal_document_and_defaults) {
  auto p = must_parse(R"({"default_action": "deny"})");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->rule_count(), 0u);
  EXPECT_FALSE(p->masking().present);
  auto d = judge(*p, {select_stmt()});
  EXPECT_EQ(d.action, policy_action::deny);
  EXPECT_EQ(d.rule_id, "default_action");
  EXPECT_FALSE(d.message.empty());
  // parse_errors and function_calls default to deny: fail closed.
  d = p->evaluate_parse_error("pg-main", no_groups);
  EXPECT_EQ(d.action, policy_action::deny);
  EXPECT_EQ(d.rule_id, "parse_errors");
  EXPECT_FALSE(d.message.empty());
  d = p->evaluate_function_call("pg-main", no_groups);
  EXPECT_EQ(d.action, policy_action::deny);
  EXPECT_EQ(d.rule_id, "function_calls");

  p = must_parse(R"({"version": 1, "default_action": "allow", "rules": [],
                     "parse_errors": "allow", "function_calls": "allow"})");
  ASSERT_NE(p, nullptr);
  d = judge(*p, {select_stmt()});
  EXPECT_EQ(d.action, policy_action::allow);
  EXPECT_TRUE(d.message.empty());
  EXPECT_EQ(p->evaluate_parse_error("x", no_groups).action, policy_action::allow);
  EXPECT_EQ(p->evaluate_function_call("x", no_groups).action, policy_action::allow);
}

TEST(policy_parse, approval_timeout_defaults_to_300) {
  auto p = must_parse(R"({"default_action": "allow", "rules": [
      {"id": "held", "match": {"sql": {"statements": ["DELETE"]}}, "action": "require_approval",
       "approvers": ["dba", "dba", "security"]}]})");
  ASSERT_NE(p, nullptr);
  auto d = judge(*p, {write_stmt("DELETE")});
  EXPECT_EQ(d.action, policy_action::require_approval);
  EXPECT_EQ(d.timeout_s, policy_timeout_s_default);
  ASSERT_EQ(d.approvers.size(), 2u);  // duplicates dropped, order kept
  EXPECT_EQ(d.approvers[0], "dba");
  EXPECT_EQ(d.approvers[1], "security");
  EXPECT_TRUE(d.message.empty());
}

TEST(policy_parse, statement_kinds_are_case_insensitive) {
  auto p = must_parse(deny_when(R"({"statements": ["drop table", "Truncate Table"]})"));
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(denied(*p, stmt("DROP TABLE")));
  EXPECT_TRUE(denied(*p, stmt("TRUNCATE TABLE")));
  EXPECT_FALSE(denied(*p, stmt("DROP VIEW")));
}

// ---------------------------------------------------------------------------
// Validation: every error, with its path.

struct bad_case {
  const char* json;
  const char* path;
  const char* message;
};

TEST(policy_validation, each_error_names_its_path) {
  const bad_case cases[] = {
      // The document.
      {R"([])", "", "expected an object"},
      {R"({"default_action": "allow",)", "", "not valid JSON"},
      {R"({})", "default_action", "required"},
      {R"({"default_action": "maybe"})", "default_action", "expected allow or deny"},
      {R"({"default_action": "require_approval"})", "default_action", "expected allow or deny"},
      {R"({"default_action": "allow", "version": 2})", "version", "unsupported schema version 2"},
      {R"({"default_action": "allow", "version": "1"})", "version", "expected an integer"},
      {R"({"default_action": "allow", "version": 1.0})", "version", "expected an integer"},
      {R"({"default_action": "allow", "parse_errors": "ignore"})", "parse_errors", "expected allow or deny"},
      {R"({"default_action": "allow", "function_calls": true})", "function_calls", "expected a string"},
      {R"({"default_action": "allow", "colour": "blue"})", "colour", "unknown key"},
      {R"({"default_action": "allow", "default_action": "deny"})", "default_action", "duplicate key"},
      {R"({"default_action": "allow", "odd key": 1})", "[\"odd key\"]", "unknown key"},
      // targets
      {R"({"default_action": "allow", "targets": []})", "targets", "expected an object"},
      {R"({"default_action": "allow", "targets": {"bad name!": {}}})", "targets[\"bad name!\"]", "target name"},
      {R"({"default_action": "allow", "targets": {"pg": {"default_action": "nope"}}})",
       "targets.pg.default_action", "expected allow or deny"},
      {R"({"default_action": "allow", "targets": {"pg": {"parse_errors": 1}}})", "targets.pg.parse_errors",
       "expected a string"},
      {R"({"default_action": "allow", "targets": {"pg": {"rules": []}}})", "targets.pg.rules", "unknown key"},
      {R"({"default_action": "allow", "targets": {"pg": "deny"}})", "targets.pg", "expected an object"},
      // rules
      {R"({"default_action": "allow", "rules": {}})", "rules", "expected an array"},
      {R"({"default_action": "allow", "rules": [1]})", "rules[0]", "expected an object"},
      {R"({"default_action": "allow", "rules": [{"action": "allow"}]})", "rules[0].id", "required"},
      {R"({"default_action": "allow", "rules": [{"id": "a b", "action": "allow"}]})", "rules[0].id", "rule id"},
      {R"({"default_action": "allow", "rules": [{"id": "", "action": "allow"}]})", "rules[0].id", "rule id"},
      {R"({"default_action": "allow", "rules": [{"id": 7, "action": "allow"}]})", "rules[0].id", "expected a string"},
      {R"({"default_action": "allow", "rules": [{"id": "default_action", "action": "allow"}]})", "rules[0].id",
       "reserved"},
      {R"({"default_action": "allow", "rules": [{"id": "targets.pg.x", "action": "allow"}]})", "rules[0].id",
       "reserved"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow"}, {"id": "a", "action": "allow"}]})",
       "rules[1].id", "duplicate rule id \"a\" (also at rules[0].id)"},
      {R"({"default_action": "allow", "rules": [{"id": "a"}]})", "rules[0].action", "required"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "block"}]})", "rules[0].action",
       "expected one of allow, deny, require_approval"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "deny"}]})", "rules[0].message",
       "required for deny"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "deny", "message": ""}]})", "rules[0].message",
       "between 1 and 1024 bytes"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "deny", "message": "a\u0000b"}]})",
       "rules[0].message", "control characters"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "description": 3}]})",
       "rules[0].description", "expected a string"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "priority": 3}]})",
       "rules[0].priority", "unknown key"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "require_approval"}]})", "rules[0].approvers",
       "require_approval needs at least one approver group"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "require_approval", "approvers": []}]})",
       "rules[0].approvers", "empty list"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "require_approval", "approvers": ["*"]}]})",
       "rules[0].approvers[0]", "must name groups"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "require_approval", "approvers": [""]}]})",
       "rules[0].approvers[0]", "group"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "approvers": ["dba"]}]})",
       "rules[0].approvers", "only for require_approval"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "deny", "message": "m", "timeout_s": 5}]})",
       "rules[0].timeout_s", "only for require_approval"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "require_approval", "approvers": ["d"],
           "timeout_s": 0}]})",
       "rules[0].timeout_s", "between 1 and 86400"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "require_approval", "approvers": ["d"],
           "timeout_s": 86401}]})",
       "rules[0].timeout_s", "between 1 and 86400"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "require_approval", "approvers": ["d"],
           "timeout_s": -1}]})",
       "rules[0].timeout_s", "between 1 and 86400"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "targets": []}]})",
       "rules[0].targets", "empty list"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "targets": "*"}]})",
       "rules[0].targets", "expected an array of strings"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "targets": ["*", "pg"]}]})",
       "rules[0].targets[0]", "must be the only entry"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "targets": ["pg", 3]}]})",
       "rules[0].targets[1]", "expected a string"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "targets": ["pg main"]}]})",
       "rules[0].targets[0]", "target name"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "groups": ["dba", "*"]}]})",
       "rules[0].groups[1]", "must be the only entry"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "groups": ["a\tb"]}]})",
       "rules[0].groups[0]", "group"},
      // match
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "match": []}]})", "rules[0].match",
       "expected an object"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "match": {"http": {}}}]})",
       "rules[0].match.http", "unknown key"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "match": {"sql": []}}]})",
       "rules[0].match.sql", "expected an object"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "match": {"sql": {"kind": []}}}]})",
       "rules[0].match.sql.kind", "unknown key"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"statements": ["DELETE", "DROP TABEL"]}}}]})",
       "rules[0].match.sql.statements[1]", "unknown statement kind \"DROP TABEL\""},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"statements": ["TRUNCATE"]}}}]})",
       "rules[0].match.sql.statements[0]", "PostgreSQL tags it \"TRUNCATE TABLE\""},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"statements": ["CREATE USER"]}}}]})",
       "rules[0].match.sql.statements[0]", "\"CREATE ROLE\""},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"statements": ["DROP"]}}}]})",
       "rules[0].match.sql.statements[0]", "did you mean \"DROP ACCESS METHOD\""},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"statements": []}}}]})",
       "rules[0].match.sql.statements", "empty list"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"functions": ["pg_catalog."]}}}]})",
       "rules[0].match.sql.functions[0]", "1 to 63 bytes"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"functions": ["a.b.c.d"]}}}]})",
       "rules[0].match.sql.functions[0]", "at most three parts"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"functions": ["\"Quoted\""]}}}]})",
       "rules[0].match.sql.functions[0]", "without quotes"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"functions": ["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]}}}]})",
       "rules[0].match.sql.functions[0]", "1 to 63 bytes"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"tables": ["public..users"]}}}]})",
       "rules[0].match.sql.tables[0]", "1 to 63 bytes"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"tables": ["my table"]}}}]})",
       "rules[0].match.sql.tables[0]", "without quotes or spaces"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"set_parameters": ["search path"]}}}]})",
       "rules[0].match.sql.set_parameters[0]", "parameter"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"without_where": "yes"}}}]})",
       "rules[0].match.sql.without_where", "expected true or false"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"copy_program": 1}}}]})",
       "rules[0].match.sql.copy_program", "expected true or false"},
      {R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
           "match": {"sql": {"writes": null}}}]})",
       "rules[0].match.sql.writes", "expected true or false"},
      // masking
      {R"({"default_action": "allow", "masking": []})", "masking", "expected an object"},
      {R"({"default_action": "allow", "masking": {"detector": {}}})", "masking.detector", "unknown key"},
      {R"({"default_action": "allow", "masking": {"detectors": {"passport": "redact"}}})",
       "masking.detectors.passport", "unknown detector"},
      {R"({"default_action": "allow", "masking": {"detectors": {"email": "scramble"}}})", "masking.detectors.email",
       "expected one of redact, partial, hash, null, off"},
      {R"({"default_action": "allow", "masking": {"detectors": {"email": "hash"}}})", "masking.hash_key_file",
       "required when a style is hash (used at masking.detectors.email)"},
      {R"({"default_action": "allow", "masking": {"hash_key_file": ""}})", "masking.hash_key_file", "file path"},
      {R"({"default_action": "allow", "masking": {"hash_key_file": "keys/hash.key"}})", "masking.hash_key_file",
       "absolute file path"},
      {R"({"default_action": "allow", "masking": {"columns": {}}})", "masking.columns", "expected an array"},
      {R"({"default_action": "allow", "masking": {"columns": [{"style": "redact"}]}})", "masking.columns[0].name",
       "required"},
      {R"({"default_action": "allow", "masking": {"columns": [{"name": "x"}]}})", "masking.columns[0].style",
       "required"},
      {R"({"default_action": "allow", "masking": {"columns": [{"name": "", "style": "redact"}]}})",
       "masking.columns[0].name", "regular expression"},
      {R"({"default_action": "allow", "masking": {"columns": [{"name": "x", "table": "a b", "style": "redact"}]}})",
       "masking.columns[0].table", "table"},
      {R"({"default_action": "allow", "masking": {"columns": [{"name": "x", "style": "redact", "when": 1}]}})",
       "masking.columns[0].when", "unknown key"},
      {R"({"default_action": "allow", "masking": {"patterns": [{"name": "p", "style": "redact"}]}})",
       "masking.patterns[0].regex", "required"},
      {R"({"default_action": "allow", "masking": {"patterns": [{"name": "email", "regex": "x", "style": "redact"}]}})",
       "masking.patterns[0].name", "detector's name"},
      {R"({"default_action": "allow", "masking": {"patterns": [{"name": "p", "regex": "x", "style": "redact"},
                                                                {"name": "p", "regex": "y", "style": "redact"}]}})",
       "masking.patterns[1].name", "duplicate pattern name"},
      {R"({"default_action": "allow", "masking": {"patterns": [{"name": "p", "regex": "x", "style": "hash"}]}})",
       "masking.hash_key_file", "masking.patterns[0].style"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.json);
    auto errors = errors_of(c.json);
    EXPECT_TRUE(has_error(errors, c.path, c.message))
        << "want " << c.path << ": " << c.message << "; got" << dump(errors);
  }
}

TEST(policy_validation, every_error_is_reported) {
  auto errors = errors_of(R"({
    "version": 3,
    "default_action": "sometimes",
    "rules": [
      {"id": "ok", "action": "allow"},
      {"id": "ok", "action": "deny"},
      {"id": "b", "action": "require_approval", "match": {"sql": {"statements": ["SELEKT"], "functions": []}}},
      {"id": "c", "action": "allow", "colour": 1}
    ],
    "masking": {"detectors": {"passport": "redact"}}
  })");
  EXPECT_TRUE(has_error(errors, "version", "unsupported schema version 3")) << dump(errors);
  EXPECT_TRUE(has_error(errors, "default_action", "expected allow or deny")) << dump(errors);
  EXPECT_TRUE(has_error(errors, "rules[1].id", "duplicate rule id")) << dump(errors);
  EXPECT_TRUE(has_error(errors, "rules[1].message", "required for deny")) << dump(errors);
  EXPECT_TRUE(has_error(errors, "rules[2].match.sql.statements[0]", "unknown statement kind")) << dump(errors);
  EXPECT_TRUE(has_error(errors, "rules[2].match.sql.functions", "empty list")) << dump(errors);
  EXPECT_TRUE(has_error(errors, "rules[2].approvers", "approver group")) << dump(errors);
  EXPECT_TRUE(has_error(errors, "rules[3].colour", "unknown key")) << dump(errors);
  EXPECT_TRUE(has_error(errors, "masking.detectors.passport", "unknown detector")) << dump(errors);
  EXPECT_EQ(errors.size(), 9u) << dump(errors);

  std::vector<policy_error> out;
  auto refused = policy::parse(R"({"default_action": 1, "x": 2})", out);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.error().message(), "policy has 2 errors");
  const std::string json = policy_errors_json(refused.error(), out);
  EXPECT_EQ(json,
            R"({"error": "policy has 2 errors", "errors": [{"path": "default_action", "message": "expected a string"}, )"
            R"({"path": "x", "message": "unknown key"}]})");
}

TEST(policy_validation, errors_are_capped_with_a_count) {
  std::string doc = R"({"default_action": "allow", "rules": [)";
  for (int i = 0; i < 150; ++i) doc += std::string(i ? "," : "") + R"({"id": "r)" + std::to_string(i) + R"(", "action": "x"})";
  doc += "]}";
  std::vector<policy_error> errors;
  auto p = policy::parse(doc, errors);
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.error().message(), "policy has 150 errors");
  ASSERT_EQ(errors.size(), policy_errors_max + 1);
  EXPECT_EQ(errors.back().path, "");
  EXPECT_EQ(errors.back().message, "50 more errors not shown");
}

TEST(policy_validation, limits) {
  // Document size.
  std::string big = R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "description": ")" +
                    std::string(policy_bytes_max, 'x') + R"("}]})";
  auto errors = errors_of(big);
  EXPECT_TRUE(has_error(errors, "", "larger than 1048576 bytes")) << dump(errors);

  // Rules.
  std::string many = R"({"default_action": "allow", "rules": [)";
  for (std::size_t i = 0; i <= policy_rules_max; ++i) many += std::string(i ? "," : "") + "{}";
  many += "]}";
  errors = errors_of(many);
  EXPECT_TRUE(has_error(errors, "rules", "more than 10000 rules")) << dump(errors);

  // List length.
  std::string list = R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow", "groups": [)";
  for (std::size_t i = 0; i <= policy_list_max; ++i) list += std::string(i ? "," : "") + "\"g\"";
  list += "]}]}";
  errors = errors_of(list);
  EXPECT_TRUE(has_error(errors, "rules[0].groups", "more than 1000 entries")) << dump(errors);

  // Distinct target names.
  std::string targets = R"({"default_action": "allow", "rules": [)";
  for (std::size_t i = 0; i <= policy_targets_max; ++i)
    targets += std::string(i ? "," : "") + R"({"id": "r)" + std::to_string(i) + R"(", "action": "allow", "targets": ["t)" +
               std::to_string(i) + R"("]})";
  targets += "]}";
  errors = errors_of(targets);
  EXPECT_TRUE(has_error(errors, "rules[1024].targets[0]", "more than 1024 distinct target names")) << dump(errors);

  // Text lengths.
  errors = errors_of(R"({"default_action": "allow", "rules": [{"id": ")" + std::string(65, 'a') + R"(", "action": "allow"}]})");
  EXPECT_TRUE(has_error(errors, "rules[0].id", "1 to 64")) << dump(errors);
  errors = errors_of(R"({"default_action": "allow", "rules": [{"id": "a", "action": "deny", "message": ")" +
                     std::string(1025, 'm') + R"("}]})");
  EXPECT_TRUE(has_error(errors, "rules[0].message", "between 1 and 1024 bytes")) << dump(errors);
}

TEST(policy_validation, index_size_is_bounded) {
  // 30 rules, each for 1000 targets and every statement kind: 5.3 M index
  // entries from a 300 KB document.
  std::string targets, kinds;
  for (int i = 0; i < 1000; ++i) targets += std::string(i ? "," : "") + "\"t" + std::to_string(i) + "\"";
  for (auto k : known_statement_kinds()) kinds += std::string(kinds.empty() ? "" : ",") + "\"" + std::string(k) + "\"";
  std::string doc = R"({"default_action": "allow", "rules": [)";
  for (int i = 0; i < 30; ++i)
    doc += std::string(i ? "," : "") + R"({"id": "r)" + std::to_string(i) + R"(", "action": "allow", "targets": [)" +
           targets + R"(], "match": {"sql": {"statements": [)" + kinds + "]}}}";
  doc += "]}";
  ASSERT_LT(doc.size(), policy_bytes_max);
  auto errors = errors_of(doc);
  EXPECT_TRUE(has_error(errors, "rules", "too many target and statement combinations")) << dump(errors);
}

TEST(policy_validation, descriptions_may_span_lines) {
  EXPECT_NE(must_parse(R"({"default_action": "allow", "rules": [{"id": "a", "action": "allow",
                           "description": "line one\nline two\tindented"}]})"),
            nullptr);
  auto errors = errors_of(R"({"default_action": "allow", "rules": [{"id": "a", "action": "deny",
                             "message": "line one\nline two"}]})");
  EXPECT_TRUE(has_error(errors, "rules[0].message", "control characters")) << dump(errors);
}

// ---------------------------------------------------------------------------
// Evaluation.

TEST(policy_evaluate, rules_in_document_order_first_match_decides) {
  auto p = must_parse(R"({"default_action": "deny", "rules": [
      {"id": "allow-deletes-with-where", "match": {"sql": {"statements": ["DELETE"], "without_where": false}},
       "action": "allow"},
      {"id": "no-deletes", "match": {"sql": {"statements": ["DELETE"]}}, "action": "deny", "message": "no"},
      {"id": "everything-else", "match": {}, "action": "allow"}]})");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(judge(*p, {write_stmt("DELETE")}).rule_id, "allow-deletes-with-where");
  statement_facts all = write_stmt("DELETE");
  all.without_where = true;
  EXPECT_EQ(judge(*p, {all}).rule_id, "no-deletes");
  EXPECT_EQ(judge(*p, {select_stmt()}).rule_id, "everything-else");
}

TEST(policy_evaluate, empty_match_and_missing_match_match_every_statement) {
  for (const char* rule : {R"("match": {})", R"("match": {"sql": {}})", R"("description": "no match key")"}) {
    auto p = must_parse(std::string(R"({"default_action": "allow", "rules": [{"id": "all", )") + rule +
                        R"(, "action": "deny", "message": "closed"}]})");
    ASSERT_NE(p, nullptr);
    for (auto f : {select_stmt(), write_stmt("INSERT"), stmt("SET"), stmt("BEGIN")}) {
      auto d = judge(*p, {f});
      EXPECT_EQ(d.action, policy_action::deny) << rule << " " << f.kind;
      EXPECT_EQ(d.rule_id, "all");
    }
  }
}

TEST(policy_evaluate, no_statements_is_allowed) {
  auto p = must_parse(R"({"default_action": "deny"})");
  ASSERT_NE(p, nullptr);
  auto d = judge(*p, {});
  EXPECT_EQ(d.action, policy_action::allow);
  EXPECT_TRUE(d.rule_id.empty());
}

TEST(policy_evaluate, per_target_default) {
  auto p = must_parse(R"({"default_action": "allow",
      "targets": {"prod": {"default_action": "deny"}, "dev": {"parse_errors": "allow", "function_calls": "allow"},
                  "pg.main": {"default_action": "deny"}},
      "rules": [{"id": "reads", "targets": ["prod"], "match": {"sql": {"writes": false}}, "action": "allow"}]})");
  ASSERT_NE(p, nullptr);
  auto d = judge(*p, {write_stmt("INSERT")}, no_groups, "prod");
  EXPECT_EQ(d.action, policy_action::deny);
  EXPECT_EQ(d.rule_id, "targets.prod.default_action");
  EXPECT_EQ(judge(*p, {select_stmt()}, no_groups, "prod").rule_id, "reads");
  d = judge(*p, {write_stmt("INSERT")}, no_groups, "pg.main");
  EXPECT_EQ(d.action, policy_action::deny);
  EXPECT_EQ(d.rule_id, "targets[\"pg.main\"].default_action");
  // Other targets: the document's default.
  d = judge(*p, {write_stmt("INSERT")}, no_groups, "staging");
  EXPECT_EQ(d.action, policy_action::allow);
  EXPECT_EQ(d.rule_id, "default_action");
  d = judge(*p, {write_stmt("INSERT")}, no_groups, "dev");
  EXPECT_EQ(d.action, policy_action::allow);
  EXPECT_EQ(d.rule_id, "default_action");
  // Per-target parse_errors and function_calls, falling back to the document's.
  d = p->evaluate_parse_error("dev", no_groups);
  EXPECT_EQ(d.action, policy_action::allow);
  EXPECT_EQ(d.rule_id, "targets.dev.parse_errors");
  EXPECT_EQ(p->evaluate_function_call("dev", no_groups).rule_id, "targets.dev.function_calls");
  EXPECT_EQ(p->evaluate_function_call("dev", no_groups).action, policy_action::allow);
  EXPECT_EQ(p->evaluate_parse_error("prod", no_groups).action, policy_action::deny);
  EXPECT_EQ(p->evaluate_parse_error("prod", no_groups).rule_id, "parse_errors");
  EXPECT_EQ(p->evaluate_function_call("other", no_groups).action, policy_action::deny);
}

TEST(policy_evaluate, groups_wildcard_and_specific) {
  auto p = must_parse(R"({"default_action": "allow", "rules": [
      {"id": "dba-may-drop", "groups": ["dba", "platform"], "match": {"sql": {"statements": ["DROP TABLE"]}},
       "action": "allow"},
      {"id": "no-drops", "groups": ["*"], "match": {"sql": {"statements": ["DROP TABLE"]}}, "action": "deny",
       "message": "no"},
      {"id": "interns", "groups": ["interns"], "match": {"sql": {"writes": true}}, "action": "deny",
       "message": "read only"}]})");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(judge(*p, {write_stmt("DROP TABLE")}, dba).action, policy_action::allow);
  EXPECT_EQ(judge(*p, {write_stmt("DROP TABLE")}, groups_t{"x", "platform"}).action, policy_action::allow);
  EXPECT_EQ(judge(*p, {write_stmt("DROP TABLE")}, analysts).rule_id, "no-drops");
  EXPECT_EQ(judge(*p, {write_stmt("DROP TABLE")}, no_groups).rule_id, "no-drops");  // "*" matches no groups too
  EXPECT_EQ(judge(*p, {write_stmt("DROP TABLE")}, groups_t{"DBA"}).rule_id, "no-drops");  // case-sensitive
  EXPECT_EQ(judge(*p, {write_stmt("INSERT")}, groups_t{"interns"}).rule_id, "interns");
  EXPECT_EQ(judge(*p, {write_stmt("INSERT")}, analysts).action, policy_action::allow);
}

TEST(policy_evaluate, targets_filter) {
  auto p = must_parse(R"({"default_action": "allow", "rules": [
      {"id": "prod-only", "targets": ["prod", "prod-eu"], "match": {"sql": {"statements": ["DELETE"]}},
       "action": "deny", "message": "no"},
      {"id": "everywhere", "targets": ["*"], "match": {"sql": {"statements": ["TRUNCATE TABLE"]}},
       "action": "deny", "message": "no"}]})");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(judge(*p, {write_stmt("DELETE")}, no_groups, "prod").rule_id, "prod-only");
  EXPECT_EQ(judge(*p, {write_stmt("DELETE")}, no_groups, "prod-eu").rule_id, "prod-only");
  EXPECT_EQ(judge(*p, {write_stmt("DELETE")}, no_groups, "staging").action, policy_action::allow);
  EXPECT_EQ(judge(*p, {write_stmt("DELETE")}, no_groups, "PROD").action, policy_action::allow);
  EXPECT_EQ(judge(*p, {write_stmt("TRUNCATE TABLE")}, no_groups, "staging").rule_id, "everywhere");
  EXPECT_EQ(judge(*p, {write_stmt("TRUNCATE TABLE")}, no_groups, "prod").rule_id, "everywhere");
}

// Target-specific and wildcard rules interleave in document order.
TEST(policy_evaluate, target_and_wildcard_rules_keep_document_order) {
  auto p = must_parse(R"({"default_action": "deny", "rules": [
      {"id": "w1", "match": {"sql": {"statements": ["INSERT"]}}, "action": "deny", "message": "w1"},
      {"id": "t1", "targets": ["prod"], "match": {"sql": {"statements": ["INSERT", "UPDATE"]}}, "action": "allow"},
      {"id": "t2", "targets": ["prod"], "action": "deny", "message": "t2"},
      {"id": "w2", "match": {"sql": {"statements": ["UPDATE", "DELETE"]}}, "action": "allow"},
      {"id": "w3", "action": "allow"}]})");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(judge(*p, {write_stmt("INSERT")}, no_groups, "prod").rule_id, "w1");
  EXPECT_EQ(judge(*p, {write_stmt("UPDATE")}, no_groups, "prod").rule_id, "t1");
  EXPECT_EQ(judge(*p, {write_stmt("DELETE")}, no_groups, "prod").rule_id, "t2");
  EXPECT_EQ(judge(*p, {write_stmt("DELETE")}, no_groups, "dev").rule_id, "w2");
  EXPECT_EQ(judge(*p, {select_stmt()}, no_groups, "prod").rule_id, "t2");
  EXPECT_EQ(judge(*p, {select_stmt()}, no_groups, "dev").rule_id, "w3");
}

TEST(policy_evaluate, statements_criterion) {
  auto p = must_parse(deny_when(R"({"statements": ["DROP TABLE", "GRANT ROLE", "SELECT INTO"]})"));
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(denied(*p, stmt("DROP TABLE")));
  EXPECT_TRUE(denied(*p, stmt("GRANT ROLE")));
  EXPECT_TRUE(denied(*p, stmt("SELECT INTO")));
  EXPECT_FALSE(denied(*p, stmt("GRANT")));
  EXPECT_FALSE(denied(*p, stmt("DROP VIEW")));
  EXPECT_FALSE(denied(*p, stmt("drop table")));  // facts carry PostgreSQL's upper-case tags
}

TEST(policy_evaluate, functions_compare_the_last_part_both_ways) {
  auto qualified = must_parse(deny_when(R"({"functions": ["pg_catalog.pg_read_file"]})"));
  auto bare = must_parse(deny_when(R"({"functions": ["PG_TERMINATE_BACKEND", "lo_export"]})"));
  ASSERT_NE(qualified, nullptr);
  ASSERT_NE(bare, nullptr);
  // Rule qualified, call bare or qualified (either schema: search_path decides).
  EXPECT_TRUE(denied(*qualified, calls({"pg_read_file"})));
  EXPECT_TRUE(denied(*qualified, calls({"pg_catalog.pg_read_file"})));
  EXPECT_TRUE(denied(*qualified, calls({"evil.pg_read_file"})));
  EXPECT_TRUE(denied(*qualified, calls({"now", "lower", "pg_read_file"})));
  EXPECT_FALSE(denied(*qualified, calls({"pg_read_binary_file"})));
  EXPECT_FALSE(denied(*qualified, calls({"pg_read_file_x"})));
  EXPECT_FALSE(denied(*qualified, select_stmt()));
  // Rule bare (any case), call qualified.
  EXPECT_TRUE(denied(*bare, calls({"pg_catalog.pg_terminate_backend"})));
  EXPECT_TRUE(denied(*bare, calls({"pg_terminate_backend"})));
  EXPECT_TRUE(denied(*bare, calls({"mydb.pg_catalog.lo_export"})));
  EXPECT_FALSE(denied(*bare, calls({"lo_import"})));
  // Any statement kind: a function in an UPDATE counts too.
  statement_facts update = write_stmt("UPDATE");
  update.functions = {"lo_export"};
  EXPECT_TRUE(denied(*bare, update));
}

TEST(policy_evaluate, tables_match_case_insensitively_with_schema_rules) {
  auto qualified = must_parse(deny_when(R"({"tables": ["Public.Users"]})"));
  auto bare = must_parse(deny_when(R"({"tables": ["payments", "audit.log"]})"));
  ASSERT_NE(qualified, nullptr);
  ASSERT_NE(bare, nullptr);
  // A qualified pattern matches that schema, and unqualified names (which
  // search_path may resolve to it), but not another schema.
  EXPECT_TRUE(denied(*qualified, reads({"public.users"})));
  EXPECT_TRUE(denied(*qualified, reads({"users"})));
  EXPECT_TRUE(denied(*qualified, reads({"Users"})));
  EXPECT_TRUE(denied(*qualified, reads({"mydb.public.users"})));
  EXPECT_TRUE(denied(*qualified, reads({"orders", "users"})));
  EXPECT_FALSE(denied(*qualified, reads({"audit.users"})));
  EXPECT_FALSE(denied(*qualified, reads({"users2"})));
  EXPECT_FALSE(denied(*qualified, reads({"public.users_archive"})));
  EXPECT_FALSE(denied(*qualified, select_stmt()));
  // A bare pattern matches that name in any schema.
  EXPECT_TRUE(denied(*bare, reads({"payments"})));
  EXPECT_TRUE(denied(*bare, reads({"billing.payments"})));
  EXPECT_TRUE(denied(*bare, reads({"audit.log"})));
  EXPECT_TRUE(denied(*bare, reads({"log"})));
  EXPECT_FALSE(denied(*bare, reads({"public.log"})));
}

TEST(policy_evaluate, flag_criteria_match_true_and_false) {
  auto no_where = must_parse(deny_when(R"({"without_where": true})"));
  auto program = must_parse(deny_when(R"({"copy_program": true})"));
  auto writes = must_parse(deny_when(R"({"writes": true})"));
  auto reads_only = must_parse(deny_when(R"({"writes": false})"));
  ASSERT_TRUE(no_where && program && writes && reads_only);

  statement_facts del = write_stmt("DELETE");
  EXPECT_FALSE(denied(*no_where, del));
  del.without_where = true;
  EXPECT_TRUE(denied(*no_where, del));

  statement_facts copy = stmt("COPY");
  EXPECT_FALSE(denied(*program, copy));
  copy.copy_program = true;
  EXPECT_TRUE(denied(*program, copy));

  EXPECT_TRUE(denied(*writes, write_stmt("INSERT")));
  EXPECT_FALSE(denied(*writes, select_stmt()));
  EXPECT_TRUE(denied(*reads_only, select_stmt()));
  EXPECT_FALSE(denied(*reads_only, write_stmt("INSERT")));
}

TEST(policy_evaluate, set_parameters) {
  auto p = must_parse(deny_when(R"({"set_parameters": ["Role", "session_authorization", "myext.setting"]})"));
  ASSERT_NE(p, nullptr);
  for (const char* kind : {"SET", "RESET", "ALTER ROLE", "ALTER SYSTEM"}) {
    statement_facts f = stmt(kind);
    f.set_parameters = {"role"};
    EXPECT_TRUE(denied(*p, f)) << kind;
  }
  statement_facts f = stmt("SET");
  f.set_parameters = {"session_authorization"};
  EXPECT_TRUE(denied(*p, f));
  f.set_parameters = {"myext.setting"};
  EXPECT_TRUE(denied(*p, f));
  f.set_parameters = {"search_path"};
  EXPECT_FALSE(denied(*p, f));
  f.set_parameters = {"all"};  // RESET ALL matches only a rule that lists "all"
  EXPECT_FALSE(denied(*p, f));
  f.set_parameters.clear();
  EXPECT_FALSE(denied(*p, f));
}

TEST(policy_evaluate, all_criteria_must_hold) {
  auto p = must_parse(deny_when(
      R"({"statements": ["DELETE", "UPDATE"], "tables": ["orders"], "without_where": true, "writes": true})"));
  ASSERT_NE(p, nullptr);
  statement_facts f = write_stmt("DELETE", {"public.orders"});
  f.without_where = true;
  EXPECT_TRUE(denied(*p, f));
  f.tables = {"customers"};
  EXPECT_FALSE(denied(*p, f));
  f.tables = {"orders"};
  f.without_where = false;
  EXPECT_FALSE(denied(*p, f));
  f.without_where = true;
  f.kind = "INSERT";
  EXPECT_FALSE(denied(*p, f));
}

TEST(policy_evaluate, strictest_outcome_over_statements_wins) {
  auto p = must_parse(design_example);
  ASSERT_NE(p, nullptr);
  // SELECT 1; DROP TABLE t
  auto d = judge(*p, {select_stmt(), write_stmt("DROP TABLE")});
  EXPECT_EQ(d.action, policy_action::deny);
  EXPECT_EQ(d.rule_id, "no-drops");
  EXPECT_EQ(d.statement_index, 1u);
  // The first denial is reported, whatever comes after.
  statement_facts bulk = write_stmt("DELETE");
  bulk.without_where = true;
  d = judge(*p, {bulk, write_stmt("TRUNCATE TABLE"), write_stmt("DROP TABLE")});
  EXPECT_EQ(d.action, policy_action::deny);
  EXPECT_EQ(d.statement_index, 1u);
  // require_approval beats allow.
  d = judge(*p, {select_stmt(), bulk, select_stmt()});
  EXPECT_EQ(d.action, policy_action::require_approval);
  EXPECT_EQ(d.statement_index, 1u);
  // All allowed: the first statement's decision.
  d = judge(*p, {select_stmt(), write_stmt("INSERT")});
  EXPECT_EQ(d.action, policy_action::allow);
  EXPECT_EQ(d.statement_index, 0u);
}

TEST(policy_evaluate, nested_statements_are_judged_too) {
  auto p = must_parse(design_example);
  ASSERT_NE(p, nullptr);
  // WITH d AS (DELETE FROM t) SELECT 1: a SELECT with writes and a nested
  // DELETE without WHERE.
  statement_facts outer = select_stmt();
  outer.writes = true;
  outer.tables = {"t"};
  statement_facts inner = write_stmt("DELETE");
  inner.without_where = true;
  inner.nested = true;
  auto d = judge(*p, {outer, inner});
  EXPECT_EQ(d.action, policy_action::require_approval);
  EXPECT_EQ(d.rule_id, "bulk-writes");
  EXPECT_EQ(d.statement_index, 1u);
}

TEST(policy_evaluate, several_approvals_need_an_approver_every_rule_accepts) {
  auto p = must_parse(R"({"default_action": "allow", "rules": [
      {"id": "deletes", "match": {"sql": {"statements": ["DELETE"]}}, "action": "require_approval",
       "approvers": ["dba", "security"], "timeout_s": 600, "message": "deletes"},
      {"id": "updates", "match": {"sql": {"statements": ["UPDATE"]}}, "action": "require_approval",
       "approvers": ["dba"], "timeout_s": 120, "message": "updates"},
      {"id": "grants", "match": {"sql": {"statements": ["GRANT"]}}, "action": "require_approval",
       "approvers": ["security"], "timeout_s": 60},
      {"id": "inserts", "match": {"sql": {"statements": ["INSERT"]}}, "action": "require_approval",
       "approvers": ["security", "dba"]}]})");
  ASSERT_NE(p, nullptr);
  // The same rule twice: its approvers.
  auto d = judge(*p, {write_stmt("DELETE"), write_stmt("DELETE")});
  EXPECT_EQ(d.action, policy_action::require_approval);
  EXPECT_EQ(d.rule_id, "deletes");
  EXPECT_EQ(d.approvers.size(), 2u);
  EXPECT_EQ(d.statement_index, 0u);
  // dba may approve UPDATE, and is one of the groups DELETE accepts: the
  // narrower list decides, with the shortest timeout.
  d = judge(*p, {write_stmt("DELETE"), write_stmt("UPDATE")});
  EXPECT_EQ(d.action, policy_action::require_approval);
  EXPECT_EQ(d.rule_id, "updates");
  EXPECT_EQ(d.message, "updates");
  ASSERT_EQ(d.approvers.size(), 1u);
  EXPECT_EQ(d.approvers[0], "dba");
  EXPECT_EQ(d.timeout_s, 120u);
  EXPECT_EQ(d.statement_index, 1u);
  // Same groups in another order: the first.
  d = judge(*p, {write_stmt("INSERT"), write_stmt("DELETE")});
  EXPECT_EQ(d.rule_id, "inserts");
  EXPECT_EQ(d.timeout_s, 300u);
  // UPDATE wants dba, GRANT wants security: no single group satisfies both.
  d = judge(*p, {write_stmt("UPDATE"), select_stmt(), stmt("GRANT")});
  EXPECT_EQ(d.action, policy_action::deny);
  EXPECT_EQ(d.rule_id, "updates");
  EXPECT_NE(d.message.find("different approver groups"), std::string_view::npos);
  EXPECT_TRUE(d.approvers.empty());
  // A denial still beats it all.
  d = judge(*p, {write_stmt("UPDATE"), stmt("GRANT")}, no_groups);
  EXPECT_EQ(d.action, policy_action::deny);
}

TEST(policy_evaluate, too_many_distinct_held_rules_is_denied) {
  std::string doc = R"({"default_action": "allow", "rules": [)";
  std::vector<statement_facts> statements;
  for (std::size_t i = 0; i <= policy_held_rules_max; ++i) {
    doc += std::string(i ? "," : "") + R"({"id": "r)" + std::to_string(i) +
           R"(", "match": {"sql": {"tables": ["t)" + std::to_string(i) +
           R"("]}}, "action": "require_approval", "approvers": ["dba"]})";
    statements.push_back(reads({"t" + std::to_string(i)}));
  }
  doc += "]}";
  auto p = must_parse(doc);
  ASSERT_NE(p, nullptr);
  std::vector<statement_facts> fewer(statements.begin(), statements.end() - 1);
  EXPECT_EQ(judge(*p, fewer).action, policy_action::require_approval);
  auto d = judge(*p, statements);
  EXPECT_EQ(d.action, policy_action::deny);
  EXPECT_EQ(d.rule_id, "r0");
  EXPECT_NE(d.message.find("too many"), std::string_view::npos);
}

TEST(policy_evaluate, decisions_live_as_long_as_the_policy) {
  // Views point into the snapshot, which a shared_ptr keeps alive.
  policy_decision d;
  std::shared_ptr<const policy> keep;
  {
    keep = must_parse(design_example);
    ASSERT_NE(keep, nullptr);
    d = judge(*keep, {write_stmt("DROP TABLE")});
  }
  EXPECT_EQ(std::string(d.message), "dropping data needs a change request");
}

// ---------------------------------------------------------------------------
// What the rules reference.

TEST(policy_references, union_over_rules) {
  auto p = must_parse(R"({"default_action": "allow", "rules": [
      {"id": "a", "match": {"sql": {"statements": ["delete", "DROP TABLE"], "without_where": true}}, "action": "allow"},
      {"id": "b", "match": {"sql": {"functions": ["PG_CATALOG.PG_READ_FILE", "lo_export"], "statements": ["DELETE"]}},
       "action": "allow"},
      {"id": "c", "match": {"sql": {"writes": false}}, "action": "allow"}]})");
  ASSERT_NE(p, nullptr);
  const policy_references& r = p->references();
  EXPECT_EQ(r.statement_kinds, (std::vector<std::string>{"DELETE", "DROP TABLE"}));
  EXPECT_EQ(r.functions, (std::vector<std::string>{"lo_export", "pg_catalog.pg_read_file"}));
  EXPECT_TRUE(r.without_where);
  EXPECT_TRUE(r.writes);
  EXPECT_FALSE(r.tables);
  EXPECT_FALSE(r.copy_program);
  EXPECT_FALSE(r.set_parameter);

  p = must_parse(R"({"default_action": "allow", "rules": [
      {"id": "a", "match": {"sql": {"tables": ["x"], "copy_program": true, "set_parameters": ["role"]}},
       "action": "allow"}]})");
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(p->references().tables);
  EXPECT_TRUE(p->references().copy_program);
  EXPECT_TRUE(p->references().set_parameter);
  EXPECT_TRUE(p->references().statement_kinds.empty());
}

TEST(policy_vocabulary, lists_and_names) {
  auto kinds = known_statement_kinds();
  EXPECT_TRUE(std::is_sorted(kinds.begin(), kinds.end()));
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "TRUNCATE TABLE"), kinds.end());
  EXPECT_EQ(known_mask_detectors().size(), 16u);
  EXPECT_EQ(to_string(policy_action::allow), "allow");
  EXPECT_EQ(to_string(policy_action::deny), "deny");
  EXPECT_EQ(to_string(policy_action::require_approval), "require_approval");
  EXPECT_EQ(to_string(mask_style::null), "null");
}

// ---------------------------------------------------------------------------
// The store.

TEST(policy_store, versions_and_history) {
  policy_store store(3);
  EXPECT_EQ(store.current(), nullptr);
  EXPECT_TRUE(store.versions().empty());

  std::vector<policy_error> errors;
  auto first = store.put(R"({"default_action": "allow"})", "file", errors);
  ASSERT_TRUE(first.is_ok());
  EXPECT_EQ(first.value()->version(), 1u);
  EXPECT_EQ(store.current(), first.value());

  // A bad document leaves the running policy and the history alone.
  auto bad = store.put(R"({"default_action": "perhaps"})", "api", errors);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_TRUE(has_error(errors, "default_action", "expected allow or deny"));
  EXPECT_EQ(store.current(), first.value());
  EXPECT_EQ(store.versions().size(), 1u);

  for (int i = 0; i < 4; ++i) {
    auto p = store.put(R"({"default_action": "deny", "rules": [{"id": "r", "action": "allow"}]})", "api", errors);
    ASSERT_TRUE(p.is_ok());
    EXPECT_TRUE(errors.empty());
    EXPECT_EQ(p.value()->version(), 2u + i);
  }
  EXPECT_EQ(store.current()->version(), 5u);
  auto versions = store.versions();
  ASSERT_EQ(versions.size(), 3u);  // bounded
  EXPECT_EQ(versions[0].version, 5u);
  EXPECT_EQ(versions[1].version, 4u);
  EXPECT_EQ(versions[2].version, 3u);
  EXPECT_TRUE(versions[0].active);
  EXPECT_FALSE(versions[1].active);
  EXPECT_EQ(versions[0].submitted_by, "api");
  EXPECT_EQ(versions[0].rules, 1u);
  EXPECT_EQ(versions[0].bytes, std::string(R"({"default_action": "deny", "rules": [{"id": "r", "action": "allow"}]})").size());
  EXPECT_EQ(versions[0].sha256_hex, versions[1].sha256_hex);  // same text
  EXPECT_EQ(versions[0].sha256_hex.size(), 64u);
  EXPECT_GT(versions[0].created_unix_ms, 1'600'000'000'000);
}

TEST(policy_store, sha256_and_json) {
  policy_store store;
  std::vector<policy_error> errors;
  // sha256 of the exact bytes submitted.
  ASSERT_TRUE(store.put("{\"default_action\":\"allow\"}", "file", errors).is_ok());
  auto v = store.versions();
  ASSERT_EQ(v.size(), 1u);
  // printf '{"default_action":"allow"}' | sha256sum
  EXPECT_EQ(v[0].sha256_hex, "62048ddf4051f0fe246ff5f8443abe43d8404954415899c795e7ff8d7e8e0e95");
  v[0].created_unix_ms = 1772446500000;  // 2026-03-02T10:15:00Z
  v[0].submitted_by = "api \"x\"";
  EXPECT_EQ(policy_version_json(v[0]),
            R"({"version": 1, "created_at": "2026-03-02T10:15:00Z", "source": "api \"x\"", )"
            R"("sha256": "62048ddf4051f0fe246ff5f8443abe43d8404954415899c795e7ff8d7e8e0e95", "active": true, )"
            R"("bytes": 26, "rules": 0})");
}

TEST(policy_store, long_submitter_is_cut) {
  policy_store store;
  std::vector<policy_error> errors;
  ASSERT_TRUE(store.put(R"({"default_action": "allow"})", std::string(1000, 'x'), errors).is_ok());
  EXPECT_EQ(store.versions()[0].submitted_by.size(), policy_store::submitted_by_chars_max);
}

TEST(policy_store, concurrent_puts_get_distinct_versions) {
  policy_store store(1000);
  constexpr int threads = 4, puts = 50;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&store] {
      for (int i = 0; i < puts; ++i) {
        std::vector<policy_error> errors;
        auto p = store.put(R"({"default_action": "allow"})", "api", errors);
        EXPECT_TRUE(p.is_ok());
        auto cur = store.current();
        EXPECT_NE(cur, nullptr);
      }
    });
  }
  for (auto& w : workers) w.join();
  auto versions = store.versions();
  ASSERT_EQ(versions.size(), static_cast<std::size_t>(threads * puts));
  std::set<std::uint64_t> seen;
  for (const auto& v : versions) seen.insert(v.version);
  EXPECT_EQ(seen.size(), versions.size());
  EXPECT_EQ(*seen.rbegin(), static_cast<std::uint64_t>(threads * puts));
  EXPECT_EQ(store.current()->version(), static_cast<std::uint64_t>(threads * puts));
}

}  // namespace
}  // namespace agentgate
