#pragma once
// Minimal leveled logging to stderr, one line per call, prefixed with the
// time, the level and the shard that wrote it. Lines are written with a single
// write(2) so lines from different shards never interleave.

#include <cstdint>
#include <string_view>

namespace agentgate {

enum class log_level : uint8_t { debug = 0, info = 1, warn = 2, error = 3 };

void set_log_level(log_level level);
bool parse_log_level(std::string_view name, log_level* out);
bool log_enabled(log_level level);
// The shard running on this thread; -1 for the main thread.
void set_log_shard(int shard_id);

void log_write(log_level level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// A token bucket for one noisy source of lines (a session's denials, which a
// client can provoke as fast as it can send): up to burst lines at once, then
// one per refill_ms. Lines over budget are counted, not written; the next
// line let through says how many were held back. Owned by one thread.
class log_budget {
 public:
  explicit log_budget(uint32_t burst = 20, uint32_t refill_ms = 1000) : burst_(burst), refill_ms_(refill_ms), tokens_(burst) {}

  // True if a line may be written at now_ms; then suppressed is set to the
  // lines held back since the last one written (and the count restarts).
  bool allow(uint64_t now_ms, uint64_t& suppressed);
  // Lines held back since the last one written (e.g. to say so at the end).
  uint64_t take_suppressed() {
    const uint64_t n = suppressed_;
    suppressed_ = 0;
    return n;
  }

 private:
  uint32_t burst_;
  uint32_t refill_ms_;
  uint32_t tokens_;
  uint64_t refilled_at_ms_ = 0;
  uint64_t suppressed_ = 0;
};

}  // namespace agentgate

#define AG_LOG(level, ...)                                                   \
  do {                                                                       \
    if (::agentgate::log_enabled(level)) ::agentgate::log_write(level, __VA_ARGS__); \
  } while (0)
#define AG_DEBUG(...) AG_LOG(::agentgate::log_level::debug, __VA_ARGS__)
#define AG_INFO(...) AG_LOG(::agentgate::log_level::info, __VA_ARGS__)
#define AG_WARN(...) AG_LOG(::agentgate::log_level::warn, __VA_ARGS__)
#define AG_ERROR(...) AG_LOG(::agentgate::log_level::error, __VA_ARGS__)
