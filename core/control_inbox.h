#pragma once
// A shard's inbox from the control plane (policy and key swaps, approval
// verdicts, metrics questions). Owned by one shard; post() from any
// control-plane thread, drain() from the shard's thread only.
//
// A lock-free ring carries the usual traffic. When the shard falls behind
// (one long command keeps it from draining) and the ring is full, tasks are
// not dropped: they go to an overflow list, by their control_delivery:
// reliable ones are kept, a latest_wins one replaces the waiting task of the
// same slot, a best_effort one is refused. Once the overflow holds a task,
// every later task goes there too, so tasks run in the order they were
// posted (a policy swap never runs after the one that replaced it).
//
// The overflow's size is bounded by kind, not by count here: latest_wins by
// the number of slots, reliable verdicts by the approvals service's pending
// limits. The shard takes the lock only while the overflow holds something.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/shard.h"
#include "core/spsc_queue.h"

namespace agentgate {

struct control_inbox_probe {
  uint64_t overflowed = 0;  // tasks that waited in the overflow
  uint64_t superseded = 0;  // latest_wins tasks replaced before they ran
  uint64_t refused = 0;     // best_effort tasks refused while the shard was behind
};

class control_inbox {
 public:
  explicit control_inbox(size_t ring_capacity) : ring_(ring_capacity) {}
  control_inbox(const control_inbox&) = delete;
  control_inbox& operator=(const control_inbox&) = delete;

  // Any control-plane thread. False only for a best_effort task that did not
  // fit; the task is destroyed then.
  bool post(std::unique_ptr<shard_task> task) {
    std::unique_ptr<shard_task> dropped;  // destroyed after the lock: it may own anything
    std::lock_guard<std::mutex> lock(mu_);
    if (overflow_.empty() && ring_.push(std::move(task))) return true;
    // push() leaves task untouched when the ring is full.
    switch (task->delivery()) {
      case control_delivery::best_effort:
        ++refused_;
        dropped = std::move(task);
        return false;
      case control_delivery::latest_wins:
        if (const void* slot = task->slot(); slot != nullptr) {
          auto it = std::find_if(overflow_.begin(), overflow_.end(), [&](const std::unique_ptr<shard_task>& t) {
            return t->delivery() == control_delivery::latest_wins && t->slot() == slot;
          });
          if (it != overflow_.end()) {
            dropped = std::move(*it);
            overflow_.erase(it);
            ++superseded_;
          }
        }
        break;
      case control_delivery::reliable:
        break;
    }
    overflow_.push_back(std::move(task));
    ++overflowed_;
    overflowing_.store(true, std::memory_order_release);
    return true;
  }

  // The shard's thread: runs up to budget tasks from the ring, then, once the
  // ring is empty, everything in the overflow. Returns how many ran.
  size_t drain(shard_services& shard, size_t budget) {
    size_t ran = 0;
    while (ran < budget) {
      std::optional<std::unique_ptr<shard_task>> task = ring_.pop();
      if (!task) break;
      (*task)->run(shard);
      ++ran;
    }
    if (!overflowing_.load(std::memory_order_acquire)) return ran;
    std::vector<std::unique_ptr<shard_task>> taken;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Producers push to the ring only under this lock and only while the
      // overflow is empty, so whatever the ring holds now is older than the
      // overflow: it runs first (next pass).
      if (!ring_.empty()) return ran;
      taken.swap(overflow_);
      overflowing_.store(false, std::memory_order_relaxed);
    }
    for (std::unique_ptr<shard_task>& t : taken) t->run(shard);
    return ran + taken.size();
  }

  // Any thread.
  control_inbox_probe probe() {
    std::lock_guard<std::mutex> lock(mu_);
    return {overflowed_, superseded_, refused_};
  }

 private:
  spsc_queue<std::unique_ptr<shard_task>> ring_;  // producers: under mu_, one at a time
  std::mutex mu_;
  std::vector<std::unique_ptr<shard_task>> overflow_;  // under mu_
  std::atomic<bool> overflowing_{false};               // overflow_ is not empty
  uint64_t overflowed_ = 0;                            // under mu_, as the two below
  uint64_t superseded_ = 0;
  uint64_t refused_ = 0;
};

}  // namespace agentgate
