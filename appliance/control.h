#pragma once
// The control plane's view of the running shards: policy swaps, metrics and
// session listings, each done by message to every shard (never by reading a
// shard's state from another thread), plus the config API routes over them.

#include <functional>
#include <memory>
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
  // False if some shard did not answer in time.
  bool run_on_all_shards(const std::function<void(unsigned)>& fn);

  // Builds the classifier and per-shard scanners for a validated policy (off
  // the data path) and swaps them into every shard. Sessions use the new
  // version from their next command.
  status publish(std::shared_ptr<const policy> rules);

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
  std::vector<shard_parts> shards_;
  policy_store& store_;
  std::string recording_dir_;
  std::mutex publish_mutex_;  // one policy swap at a time
  std::vector<std::function<void(std::string&)>> metrics_sources_;  // set before the API starts
};

}  // namespace agentgate
