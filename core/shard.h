#pragma once
// What a shard offers the protocol code running on it, whatever the I/O
// backend: its identity, messages to other shards, and sessions that start
// from the gateway's side (e.g. forwarding a CancelRequest upstream).

#include <cstdint>
#include <memory>

#include "core/session.h"

namespace agentgate {

class shard_services;

// What the control plane's inbox does with a task when the shard is behind
// (its ring of control tasks is full, e.g. while one command stalls it).
enum class control_delivery : uint8_t {
  // Kept until the shard runs it, in order: an approval's verdict (bounded
  // by the pending-approval limits), anything whose loss would hang or
  // mislead. The default.
  reliable,
  // Kept, but a newer task with the same slot() replaces one still waiting:
  // swaps of a whole state (policy, signing keys, certificate), where only
  // the latest matters. At most one per slot waits, so this is bounded.
  latest_wins,
  // Refused (post_from_control returns false): questions whose asker has its
  // own timeout (metrics, session listings) and periodic nudges.
  best_effort,
};

// Work for one shard, created on another (or by the control plane) and run
// on the target shard's thread.
class shard_task {
 public:
  virtual ~shard_task() = default;
  virtual void run(shard_services& shard) = 0;
  virtual control_delivery delivery() const { return control_delivery::reliable; }
  // latest_wins only: tasks standing for the same state share a slot (any
  // stable address, e.g. the object they swap into).
  virtual const void* slot() const { return nullptr; }
};

class shard_services {
 public:
  virtual ~shard_services() = default;
  virtual int shard_id() const = 0;
  virtual int shard_count() const = 0;
  // Queues task for shard `target` (may be this one). False if that shard's
  // inbox from this sender is full; the task is dropped then.
  virtual bool post(int target, std::unique_ptr<shard_task> task) = 0;
  // The same from a control-plane thread (e.g. an approval's verdict). Never
  // drops a reliable or latest_wins task (see control_delivery): false only
  // for a best_effort task that found the shard behind.
  virtual bool post_from_control(std::unique_ptr<shard_task> task) = 0;
  // Starts a session with only an upstream side; the handler connects it.
  virtual void start_outbound(std::unique_ptr<session_handler> handler) = 0;
};

}  // namespace agentgate
