#include "appliance/guard.h"

#include <cstdio>

#include "masking/data_masker.h"

namespace agentgate {

result<std::vector<guard_snapshot>> build_guard_snapshots(std::shared_ptr<const policy> rules,
                                                          unsigned shard_count) {
  const policy_references& refs = rules->references();
  masking::classifier_spec spec;
  spec.statement_kinds = refs.statement_kinds;
  spec.functions = refs.functions;
  spec.tables = refs.tables;
  spec.without_where = refs.without_where;
  spec.copy_program = refs.copy_program;
  spec.writes = refs.writes;
  spec.set_parameter = refs.set_parameter;
  // A policy that denies what the parser rejects must see every parse error,
  // so nothing may skip the parser then... except that the fast path only
  // admits plain reads, which the server itself rejects when malformed.
  result<std::shared_ptr<const masking::sql_classifier>> classifier = masking::sql_classifier::build(spec);
  if (!classifier) return classifier.error();
  result<std::shared_ptr<const masking::mask_engine>> engine = masking::mask_engine::build(rules->masking());
  if (!engine) return engine.error();
  std::vector<guard_snapshot> out;
  for (unsigned i = 0; i < shard_count; ++i) {
    result<std::unique_ptr<masking::sql_scanner>> scanner = masking::sql_scanner::create(*classifier);
    if (!scanner) return scanner.error();
    result<std::unique_ptr<data_masker>> masker = masking::make_shard_masker(*engine);
    if (!masker) return masker.error();
    out.push_back(guard_snapshot{rules, std::move(*scanner), std::shared_ptr<data_masker>(std::move(*masker))});
  }
  return out;
}

result<std::vector<guard_snapshot>> load_policy_file(policy_store& store, const std::string& path,
                                                     unsigned shard_count) {
  std::string text;
  FILE* f = fopen(path.c_str(), "rb");
  if (f == nullptr) return status(errc::invalid_argument, "policy_file: cannot open " + path);
  char buf[65536];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  fclose(f);
  std::vector<policy_error> errors;
  result<std::shared_ptr<const policy>> rules = store.put(text, "policy_file", errors);
  if (!rules) {
    std::string all;
    for (const policy_error& e : errors)
      all += (all.empty() ? "" : "; ") + (e.path.empty() ? e.message : e.path + ": " + e.message);
    return status(errc::invalid_argument, "policy_file: " + all);
  }
  result<std::vector<guard_snapshot>> snapshots = build_guard_snapshots(*rules, shard_count);
  if (!snapshots) return status(snapshots.error().code(), "policy_file: " + snapshots.error().message());
  return snapshots;
}

policy_guard::policy_guard(guard_snapshot snapshot) : current_(std::move(snapshot)) {
  masker_ = std::move(current_.masker);
}

void policy_guard::install(guard_snapshot snapshot) {
  current_ = std::move(snapshot);
  masker_ = std::move(current_.masker);
}

uint64_t policy_guard::version() const { return current_.rules->version(); }

const policy_decision& policy_guard::inspect_sql(std::string_view target, const session_identity& who,
                                                 std::string_view sql) {
  current_.scanner->classify(sql, classification_);
  decision_ = classification_.parsed
                  ? current_.rules->evaluate(target, who.groups, classification_.statements)
                  : current_.rules->evaluate_parse_error(target, who.groups);
  return decision_;
}

const policy_decision& policy_guard::inspect_function_call(std::string_view target,
                                                           const session_identity& who) {
  decision_ = current_.rules->evaluate_function_call(target, who.groups);
  return decision_;
}

}  // namespace agentgate
