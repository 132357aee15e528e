// Policy evaluation cost per command, against a realistic 20-rule policy:
// the plain SELECT every shard judges most (fast-path facts: no tables, no
// functions), a parsed SELECT with tables and functions, a held DELETE, a
// three-statement string, and a target with rules of its own.

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/policy.h"

namespace {

using namespace agentgate;

// 20 rules: what policy-demo.json does, plus per-target and per-group rules.
constexpr std::string_view twenty_rules = R"({
  "version": 1,
  "default_action": "allow",
  "targets": {"orders-prod": {"default_action": "deny"}},
  "rules": [
    {"id": "no-drops", "match": {"sql": {"statements": ["DROP TABLE", "DROP SCHEMA", "DROP DATABASE", "TRUNCATE TABLE"]}},
     "action": "deny", "message": "dropping data needs a change request"},
    {"id": "no-role-switch", "match": {"sql": {"set_parameters": ["role", "session_authorization"]}},
     "action": "deny", "message": "no role switching"},
    {"id": "no-parser-switches", "match": {"sql": {"set_parameters": ["standard_conforming_strings", "client_encoding"]}},
     "action": "deny", "message": "fixed"},
    {"id": "no-dangerous-functions", "match": {"sql": {"functions": ["pg_read_file", "pg_read_binary_file", "pg_ls_dir",
       "pg_terminate_backend", "pg_cancel_backend", "lo_import", "lo_export", "dblink", "dblink_exec", "set_config"]}},
     "action": "deny", "message": "function not allowed"},
    {"id": "no-copy-program", "match": {"sql": {"copy_program": true}}, "action": "deny", "message": "no"},
    {"id": "no-server-admin", "match": {"sql": {"statements": ["ALTER SYSTEM", "LOAD", "CREATE EXTENSION"]}},
     "action": "deny", "message": "no"},
    {"id": "privileges", "match": {"sql": {"statements": ["CREATE ROLE", "ALTER ROLE", "DROP ROLE", "GRANT", "REVOKE",
       "GRANT ROLE", "REVOKE ROLE"]}}, "action": "require_approval", "approvers": ["dba"], "timeout_s": 600},
    {"id": "bulk-writes", "match": {"sql": {"statements": ["DELETE", "UPDATE"], "without_where": true}},
     "action": "require_approval", "approvers": ["dba"]},
    {"id": "opaque-code", "match": {"sql": {"statements": ["DO", "CALL"]}}, "action": "require_approval",
     "approvers": ["dba"]},
    {"id": "payments-reads", "groups": ["payments"], "match": {"sql": {"tables": ["public.payments"], "writes": false}},
     "action": "allow"},
    {"id": "payments", "match": {"sql": {"tables": ["public.payments", "public.cards"]}}, "action": "deny",
     "message": "payments team only"},
    {"id": "interns-read-only", "groups": ["interns"], "match": {"sql": {"writes": true}}, "action": "deny",
     "message": "read only"},
    {"id": "audit-log", "match": {"sql": {"tables": ["audit.log"], "writes": true}}, "action": "deny",
     "message": "append-only"},
    {"id": "prod-reads", "targets": ["orders-prod"], "match": {"sql": {"writes": false}}, "action": "allow"},
    {"id": "prod-writes", "targets": ["orders-prod"], "groups": ["oncall"], "match": {"sql": {"writes": true}},
     "action": "require_approval", "approvers": ["oncall", "dba"]},
    {"id": "prod-dba", "targets": ["orders-prod"], "groups": ["dba"], "action": "allow"},
    {"id": "no-listen", "match": {"sql": {"statements": ["LISTEN", "NOTIFY"]}}, "action": "deny", "message": "no"},
    {"id": "no-maintenance", "match": {"sql": {"statements": ["VACUUM", "CLUSTER", "REINDEX", "CHECKPOINT"]}},
     "action": "deny", "message": "no"},
    {"id": "no-prepared-xacts", "match": {"sql": {"statements": ["PREPARE TRANSACTION", "COMMIT PREPARED"]}},
     "action": "deny", "message": "no"},
    {"id": "no-sleep", "match": {"sql": {"functions": ["pg_sleep", "pg_sleep_for"]}}, "action": "deny",
     "message": "no"}
  ]
})";

std::shared_ptr<const policy> load() {
  std::vector<policy_error> errors;
  auto p = policy::parse(twenty_rules, errors);
  if (!p.is_ok() || p.value()->rule_count() != 20) std::abort();
  return p.value();
}

const std::vector<std::string> groups = {"engineering", "oncall", "dba-readonly"};

void run(benchmark::State& state, std::string_view target, const std::vector<statement_facts>& statements,
         policy_action expected) {
  auto p = load();
  if (p->evaluate(target, groups, statements).action != expected) std::abort();
  for (auto _ : state) {
    policy_decision d = p->evaluate(target, groups, statements);
    benchmark::DoNotOptimize(d);
  }
  state.SetItemsProcessed(state.iterations());
}

statement_facts select_facts() {
  statement_facts f;
  f.kind = "SELECT";
  return f;
}

// What the classifier's fast path reports for a plain SELECT.
void BM_evaluate_plain_select(benchmark::State& state) {
  run(state, "orders-staging", {select_facts()}, policy_action::allow);
}
BENCHMARK(BM_evaluate_plain_select);

// A parsed SELECT naming three tables and calling two functions.
void BM_evaluate_select_with_tables_and_functions(benchmark::State& state) {
  statement_facts f = select_facts();
  f.tables = {"public.orders", "customers", "public.order_items"};
  f.functions = {"count", "pg_catalog.lower"};
  run(state, "orders-staging", {f}, policy_action::allow);
}
BENCHMARK(BM_evaluate_select_with_tables_and_functions);

void BM_evaluate_select_on_target_with_rules(benchmark::State& state) {
  run(state, "orders-prod", {select_facts()}, policy_action::allow);
}
BENCHMARK(BM_evaluate_select_on_target_with_rules);

void BM_evaluate_held_delete(benchmark::State& state) {
  statement_facts f;
  f.kind = "DELETE";
  f.tables = {"orders"};
  f.writes = true;
  f.without_where = true;
  run(state, "orders-staging", {f}, policy_action::require_approval);
}
BENCHMARK(BM_evaluate_held_delete);

// BEGIN; UPDATE ... WHERE ...; COMMIT
void BM_evaluate_three_statements(benchmark::State& state) {
  statement_facts begin;
  begin.kind = "BEGIN";
  statement_facts update;
  update.kind = "UPDATE";
  update.tables = {"pgbench_accounts"};
  update.writes = true;
  update.top_level_index = 1;
  statement_facts commit;
  commit.kind = "COMMIT";
  commit.top_level_index = 2;
  run(state, "orders-staging", {begin, update, commit}, policy_action::allow);
}
BENCHMARK(BM_evaluate_three_statements);

void BM_parse_twenty_rule_policy(benchmark::State& state) {
  for (auto _ : state) {
    std::vector<policy_error> errors;
    auto p = policy::parse(twenty_rules, errors);
    benchmark::DoNotOptimize(p);
  }
}
BENCHMARK(BM_parse_twenty_rule_policy);

}  // namespace
