#pragma once
// The clocks the gateway reads: monotonic for timeouts and intervals, wall
// time for what people read (recordings, token expiry).

#include <time.h>

#include <cstdint>

namespace agentgate {

inline int64_t monotonic_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

inline int64_t unix_us() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

// Seconds, from the coarse clock (a few ms stale, no system call cost).
inline int64_t unix_s_coarse() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return ts.tv_sec;
}

}  // namespace agentgate
