#pragma once
// A bounded single-producer/single-consumer queue: the only way shards (and
// the control plane) talk to each other. One queue per (sender, receiver)
// pair, so no queue ever has two writers and no lock is needed.

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <vector>

namespace agentgate {

template <typename T>
class spsc_queue {
 public:
  explicit spsc_queue(size_t capacity) : slots_(round_up(capacity)), mask_(slots_.size() - 1) {}

  // Producer side. False when full: the caller decides (drop and count, or retry).
  bool push(T&& value) {
    const size_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_cache_ == slots_.size()) {
      head_cache_ = head_.load(std::memory_order_acquire);
      if (tail - head_cache_ == slots_.size()) return false;
    }
    slots_[tail & mask_] = std::move(value);
    tail_.store(tail + 1, std::memory_order_release);
    return true;
  }

  // Consumer side: nothing to pop right now.
  bool empty() {
    tail_cache_ = tail_.load(std::memory_order_acquire);
    return head_.load(std::memory_order_relaxed) == tail_cache_;
  }

  // Consumer side.
  std::optional<T> pop() {
    const size_t head = head_.load(std::memory_order_relaxed);
    if (head == tail_cache_) {
      tail_cache_ = tail_.load(std::memory_order_acquire);
      if (head == tail_cache_) return std::nullopt;
    }
    std::optional<T> out(std::move(slots_[head & mask_]));
    slots_[head & mask_] = T();
    head_.store(head + 1, std::memory_order_release);
    return out;
  }

 private:
  static size_t round_up(size_t n) {
    size_t p = 1;
    while (p < n) p <<= 1;
    return p;
  }

  std::vector<T> slots_;
  const size_t mask_;
  alignas(64) std::atomic<size_t> head_{0};
  size_t tail_cache_ = 0;  // consumer's view of tail_
  alignas(64) std::atomic<size_t> tail_{0};
  size_t head_cache_ = 0;  // producer's view of head_
};

}  // namespace agentgate
