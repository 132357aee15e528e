#pragma once
// Reading whole recording directories back: the session index, transcripts
// (text, JSON lines, asciicast v2) and verification. Used by `agentgate
// replay`, `agentgate recordings verify` and the config API's
// GET /v1/sessions and GET /v1/sessions/{id}/events.
//
// Off the data path: these read files with blocking I/O and scan every
// segment of every shard (there is no session index on disk yet). Read-only:
// damage is reported, never repaired. Output is bounded by bytes_max.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/recording.h"
#include "core/status.h"
#include "io/recording/format.h"
#include "io/recording/log_reader.h"

namespace agentgate::recording {

struct session_summary {
  session_id id;
  int shard = 0;
  std::string protocol, target, subject, email, client_address, database, user;
  int64_t start_unix_us = 0;  // 0 when its session_start was lost (retention, damage)
  int64_t last_unix_us = 0;   // of its last event
  bool ended = false;
  std::string end_reason;
  uint64_t commands = 0;  // command events recorded
  uint64_t bytes_from_client = 0, bytes_to_client = 0;  // from session_end
  uint64_t recorded_bytes = 0;  // payload bytes of its events
};

// Sessions of every shard under dir, by start time. At most sessions_max
// (the newest are kept).
result<std::vector<session_summary>> list_sessions(const std::string& dir, size_t sessions_max = 100000);
std::string session_summary_json(const session_summary& s);
// {"sessions":[...]}
std::string sessions_json(const std::vector<session_summary>& sessions);

// Every event of one session in recording order; f returns false to stop.
// errc::invalid_argument if dir has no shard directories.
status for_each_event(const std::string& dir, const session_id& id, const std::function<bool(const event&)>& f);

// One JSON object per event (schema: docs/recording-format.md).
std::string event_json(const event& e);
// errc::invalid_argument: no such session; errc::limit: more than bytes_max.
result<std::string> session_events_jsonl(const std::string& dir, const session_id& id,
                                         size_t bytes_max = 64u << 20);

enum class transcript_format { text, jsonl, asciicast };
result<std::string> session_transcript(const std::string& dir, const session_id& id, transcript_format format,
                                       size_t bytes_max = 256u << 20);

// Verification of every segment under dir.
struct segment_status {
  std::string path;
  int shard = -1;
  uint64_t base = 0;
  uint64_t bytes = 0;
  uint64_t records = 0;
  uint64_t torn_bytes = 0;
  uint64_t corrupt_bytes = 0;
  std::vector<damage> damages;
  std::string problem;  // a bad or missing file header, an unreadable file
};
result<std::vector<segment_status>> verify_dir(const std::string& dir);

}  // namespace agentgate::recording
