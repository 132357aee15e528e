#pragma once
// The shard's command inspector: the SQL classifier's per-shard scanner in
// front of the current policy snapshot. A new policy version arrives as a
// whole (policy + scanner built for it on the control plane) and replaces
// the old one between two commands, so no command is judged half by one
// version and half by another.

#include <memory>

#include "core/inspector.h"
#include "core/masking.h"
#include "core/policy.h"
#include "masking/sql_classifier.h"

namespace agentgate {

// One policy version, ready for one shard.
struct guard_snapshot {
  std::shared_ptr<const policy> rules;
  std::unique_ptr<masking::sql_scanner> scanner;
  std::shared_ptr<data_masker> masker;  // this shard's, over the version's mask_engine
};

// Builds the classifier for a policy (control plane) and one scanner per shard.
result<std::vector<guard_snapshot>> build_guard_snapshots(std::shared_ptr<const policy> rules,
                                                          unsigned shard_count);

// The config's policy_file at start: read, put into store (its first
// version) and built as build_guard_snapshots. An error's message starts
// "policy_file: " and, for a bad policy, lists every problem.
result<std::vector<guard_snapshot>> load_policy_file(policy_store& store, const std::string& path,
                                                     unsigned shard_count);

class policy_guard final : public command_inspector {
 public:
  explicit policy_guard(guard_snapshot snapshot);
  // Shard thread only.
  void install(guard_snapshot snapshot);
  uint64_t version() const;
  // The shard's masker slot: sessions read it at each result's start, so a
  // result in progress keeps the masker it began with.
  const std::shared_ptr<data_masker>& masker() const { return masker_; }

  const policy_decision& inspect_sql(std::string_view target, const session_identity& who,
                                     std::string_view sql) override;
  const policy_decision& inspect_function_call(std::string_view target,
                                               const session_identity& who) override;
  std::span<const statement_facts> last_statements() const override { return classification_.statements; }
  std::string_view parse_error() const override {
    return classification_.parsed ? std::string_view() : std::string_view(classification_.parse_error);
  }

 private:
  guard_snapshot current_;
  std::shared_ptr<data_masker> masker_;
  masking::classification classification_;  // reused: no allocation per command
  policy_decision decision_;
};

}  // namespace agentgate
