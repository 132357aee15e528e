#pragma once
// A real io_uring shard on its own thread, with no listeners, for tests of
// what the control plane posts to it; and a task that stalls it until told
// (as one long command would).

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/config.h"
#include "io/uring_shard.h"

namespace agentgate::testing {

class gate {
 public:
  void wait() {
    std::unique_lock<std::mutex> lock(mu_);
    entered_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  // Until the stalled task has started.
  bool wait_entered(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return entered_; });
  }
  void open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false;
  bool open_ = false;
};

class stall_task final : public shard_task {
 public:
  explicit stall_task(gate& g) : gate_(g) {}
  void run(shard_services&) override { gate_.wait(); }

 private:
  gate& gate_;
};

class running_shards {
 public:
  explicit running_shards(unsigned count) {
    config_.io.pin_threads = false;
    config_.io.ring_entries = 64;
    config_.io.recv_buffers = 16;
    group_.shards.assign(count, nullptr);
    for (unsigned i = 0; i < count; ++i) {
      shards_.push_back(std::make_unique<io::uring_shard>(i, -1, config_, std::vector<io::listener_spec>{}, group_));
      group_.shards[i] = shards_.back().get();
    }
    for (unsigned i = 0; i < count; ++i)
      threads_.emplace_back([this, i] {
        if (const status st = shards_[i]->init(); !st) {
          ADD_FAILURE() << "shard init: " << st.message();
          return;
        }
        shards_[i]->run(stop_);
      });
  }
  ~running_shards() {
    stop_.store(true);
    for (auto& t : threads_) t.join();
  }
  io::uring_shard& operator[](unsigned i) { return *shards_[i]; }
  size_t size() const { return shards_.size(); }

 private:
  gateway_config config_;
  io::shard_group group_;
  std::vector<std::unique_ptr<io::uring_shard>> shards_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// Polls until done() or the timeout.
template <typename F>
bool eventually(F done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

}  // namespace agentgate::testing
