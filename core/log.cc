#include "core/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace agentgate {
namespace {

std::atomic<uint8_t> g_level{static_cast<uint8_t>(log_level::info)};
thread_local int t_shard = -1;

const char* level_name(log_level level) {
  switch (level) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warn: return "warn";
    case log_level::error: return "error";
  }
  return "?";
}

}  // namespace

void set_log_level(log_level level) { g_level.store(static_cast<uint8_t>(level)); }

bool parse_log_level(std::string_view name, log_level* out) {
  if (name == "debug") *out = log_level::debug;
  else if (name == "info") *out = log_level::info;
  else if (name == "warn") *out = log_level::warn;
  else if (name == "error") *out = log_level::error;
  else return false;
  return true;
}

bool log_enabled(log_level level) {
  return static_cast<uint8_t>(level) >= g_level.load(std::memory_order_relaxed);
}

void set_log_shard(int shard_id) { t_shard = shard_id; }

void log_write(log_level level, const char* fmt, ...) {
  char line[2048];
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc{};
  gmtime_r(&ts.tv_sec, &utc);
  int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                   utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                   utc.tm_sec, ts.tv_nsec / 1000000, level_name(level));
  if (t_shard >= 0) n += snprintf(line + n, sizeof(line) - n, "[shard %d] ", t_shard);
  va_list args;
  va_start(args, fmt);
  int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, args);
  va_end(args);
  if (m < 0) m = 0;
  n += m;
  if (n > static_cast<int>(sizeof(line)) - 2) n = sizeof(line) - 2;
  line[n++] = '\n';
  ssize_t ignored = ::write(STDERR_FILENO, line, n);
  (void)ignored;
}

bool log_budget::allow(uint64_t now_ms, uint64_t& suppressed) {
  if (refilled_at_ms_ == 0 || now_ms < refilled_at_ms_) refilled_at_ms_ = now_ms;
  if (refill_ms_ > 0 && now_ms - refilled_at_ms_ >= refill_ms_) {
    const uint64_t earned = (now_ms - refilled_at_ms_) / refill_ms_;
    tokens_ = static_cast<uint32_t>(std::min<uint64_t>(burst_, tokens_ + earned));
    refilled_at_ms_ += earned * refill_ms_;
  }
  if (tokens_ == 0) {
    ++suppressed_;
    return false;
  }
  --tokens_;
  suppressed = take_suppressed();
  return true;
}

}  // namespace agentgate
