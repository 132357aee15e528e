#pragma once
// The control plane's view of the running shards: policy swaps, metrics and
// session listings, each done by message to every shard (never by reading a
// shard's state from another thread), plus the config API routes over them.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "appliance/admin_server.h"
#include "appliance/guard.h"
#include "core/policy.h"
#include "io/recording/shard_recorder.h"
#include "io/uring_shard.h"
#include "protocols/postgres/session.h"

namespace agentgate {

struct shard_parts {
  io::uring_shard* shard = nullptr;
  std::vector<pg::pg_session_factory*> factories;  // one per target
  policy_guard* guard = nullptr;                    // null without a policy
  recording::shard_recorder* recorder = nullptr;    // null without recording
};

class control_plane {
 public:
  // recording_dir: recording.dir, empty when recording is off.
  control_plane(std::vector<shard_parts> shards, policy_store& store, std::string recording_dir = {});

  // Runs fn(i) on shard i's thread for every shard and waits (bounded) for all.
  // False if some shard did not answer in time (fn may still run there later:
  // it must own or share what it touches).
  bool run_on_all_shards(const std::function<void(unsigned)>& fn);

  // Builds the classifier and per-shard scanners for a validated policy (off
  // the data path) and swaps them into every shard. Sessions use the new
  // version from their next command. Returns the shards that have not
  // applied it within the answer timeout (empty: in force everywhere); they
  // will (the swap is never dropped), unless a newer one replaces it first.
  result<std::vector<unsigned>> publish(std::shared_ptr<const policy> rules);
  // Shards (with a guard) whose policy in force is not this version.
  std::vector<unsigned> shards_without(uint64_t version) const;

  // How long a fan-out waits for the shards; tests shorten it.
  void set_answer_timeout_ms(uint32_t ms) { answer_timeout_ms_ = ms; }

  std::string metrics_text();
  // Extra metrics from other control-plane parts (approvals), appended to /metrics.
  void add_metrics_source(std::function<void(std::string&)> source) { metrics_sources_.push_back(std::move(source)); }
  std::string sessions_json();
  // The recorded sessions of every shard, newest first (GET
  // /v1/sessions?state=recorded), and one page of a session's events
  // (GET /v1/sessions/{id}/events?after=N&limit=M).
  result<std::string> recorded_sessions_json(size_t limit);
  result<std::string> session_events_json(const std::string& id, size_t after, size_t limit);

  // GET /healthz, /metrics, /openapi.yaml, GET|PUT /v1/policy,
  // GET /v1/policy/versions, GET /v1/sessions.
  void register_routes(admin_server& server);

 private:
  template <typename T>
  struct fan_out;
  // Asks every shard fn(i) on its own thread and waits up to the answer
  // timeout: answers[i] is empty for a shard that did not answer in time. The
  // answers are owned by the fan-out, shared with the tasks, so a late shard
  // writes into live memory. slot(i): the task's slot for latest_wins.
  template <typename T>
  std::vector<std::optional<T>> ask_all_shards(std::function<T(unsigned)> fn, control_delivery delivery,
                                               const std::function<const void*(unsigned)>& slot = {});
  result<std::vector<unsigned>> publish_locked(std::shared_ptr<const policy> rules);

  std::vector<shard_parts> shards_;
  policy_store& store_;
  std::string recording_dir_;
  std::mutex publish_mutex_;  // one policy swap at a time, stored and published in order
  // applied_[i]: the policy version shard i has swapped in (written by its thread).
  std::unique_ptr<std::atomic<uint64_t>[]> applied_;
  uint32_t answer_timeout_ms_ = 2000;
  std::vector<std::function<void(std::string&)>> metrics_sources_;  // set before the API starts
};

}  // namespace agentgate
