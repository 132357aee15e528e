#pragma once
// What a shard offers the protocol code running on it, whatever the I/O
// backend: its identity, messages to other shards, and sessions that start
// from the gateway's side (e.g. forwarding a CancelRequest upstream).

#include <memory>

#include "core/session.h"

namespace agentgate {

class shard_services;

// Work for one shard, created on another (or by the control plane) and run
// on the target shard's thread.
class shard_task {
 public:
  virtual ~shard_task() = default;
  virtual void run(shard_services& shard) = 0;
};

class shard_services {
 public:
  virtual ~shard_services() = default;
  virtual int shard_id() const = 0;
  virtual int shard_count() const = 0;
  // Queues task for shard `target` (may be this one). False if that shard's
  // inbox from this sender is full; the task is dropped then.
  virtual bool post(int target, std::unique_ptr<shard_task> task) = 0;
  // The same from a control-plane thread (e.g. an approval's verdict).
  virtual bool post_from_control(std::unique_ptr<shard_task> task) = 0;
  // Starts a session with only an upstream side; the handler connects it.
  virtual void start_outbound(std::unique_ptr<session_handler> handler) = 0;
};

}  // namespace agentgate
