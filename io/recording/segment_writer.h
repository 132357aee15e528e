#pragma once
// The append-only segment writer of one shard's recording
// (docs/recording-format.md).
//
// Contract:
// - Owned and used by exactly one thread, its shard_recorder's writer
//   thread (or, without one, the shard's); no locks, no shared state. Each
//   writer has its own file_ops and so its own small io_uring.
// - append() frames a record (LevelDB log framing, CRC-32C) into a bounded
//   buffer (buffer_bytes); the buffer is written with one pwritev when it
//   fills and at every poll(). Records never span segments; a segment rolls
//   once it holds segment_bytes.
// - Durability, three watermarks as shard log offsets (Redpanda's
//   appended / written / fsynced): synced <= written <= appended, always.
//   In interval mode (fsync_always false) fdatasync is submitted to the
//   io_uring every fsync_interval_ms and every fsync_bytes written, and its
//   completion is reaped without blocking in poll() and append(). With fsync_always,
//   append(..., durable=true) writes and fdatasyncs before it returns.
// - poll(now_ms) must be called regularly (the shard does every ~20 ms): it
//   writes buffered records, starts syncs, reaps them, applies retention and
//   retries after a failure.
// - Failures: a failed write, sync, roll or file creation makes the writer
//   unavailable (available() false, failure_reason() says why, logged once).
//   Events appended since the last completed sync are counted unrecorded (they
//   may or may not be on disk), as is every append refused while
//   unavailable. Every recover_interval_ms poll() tries to recover: it waits
//   for no sync, cuts the torn tail of the failed segment and opens a NEW
//   segment; the writer is available again when that works.
// - Start-up (open) recovers every segment of the directory: torn tails are
//   cut, damage in the middle is reported through damage_fn and kept; the
//   writer then always starts a new segment. Segment base offsets only grow;
//   after a failure they may skip the bytes that were lost.
// - Retention (poll): the oldest whole segments go when older than
//   retention.hours or while all segments together exceed retention.bytes;
//   never the segment being written.
// - Memory: buffer_bytes plus one encoded record at a time.

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "io/recording/file_ops.h"
#include "io/recording/log_reader.h"

namespace agentgate::recording {

struct retention_options {
  uint32_t hours = 0;  // 0: no age limit
  uint64_t bytes = 0;  // 0: no size limit
};

struct writer_options {
  std::string dir;  // this shard's directory: <recording.dir>/shard-<N>
  int shard = 0;
  uint64_t segment_bytes = 64ull << 20;
  uint32_t fsync_interval_ms = 100;
  uint64_t fsync_bytes = 0;  // 0: by interval only
  bool fsync_always = false;
  retention_options retention;
  size_t buffer_bytes = 256 * 1024;  // at least 2 blocks
  uint32_t recover_interval_ms = 1000;
};

// Counters for metrics, kept beside the writer (one per shard).
struct recording_probe {
  // Watermarks: shard log offsets (segment base + position in it).
  uint64_t appended = 0;
  uint64_t written = 0;
  uint64_t synced = 0;
  // Since start.
  uint64_t bytes_appended = 0;
  uint64_t bytes_written = 0;
  uint64_t bytes_synced = 0;
  uint64_t events = 0;             // appended
  uint64_t events_unrecorded = 0;  // refused or lost to a failure
  uint64_t write_errors = 0;
  uint64_t sync_errors = 0;
  uint64_t segments_created = 0;
  uint64_t segments_removed = 0;
  uint64_t recoveries = 0;       // back to available after a failure
  uint64_t damaged_bytes = 0;    // found by recovery (torn or corrupt)
};

std::string segment_file_name(uint64_t base_offset);  // 20 digits + ".seg"
bool parse_segment_file_name(std::string_view name, uint64_t& base_offset);
std::string shard_dir_name(int shard);  // "shard-<N>"

class segment_writer {
 public:
  // Creates the directory if needed, recovers its segments and opens a new
  // one. ops null: the real file system. report may be empty (damage is
  // logged either way).
  static result<std::unique_ptr<segment_writer>> open(const writer_options& options, int64_t now_ms,
                                                      std::unique_ptr<file_ops> ops = nullptr,
                                                      damage_fn report = nullptr);
  ~segment_writer();
  segment_writer(const segment_writer&) = delete;
  segment_writer& operator=(const segment_writer&) = delete;

  // Appends one record. False: not recorded (unavailable, or this append
  // failed), counted in events_unrecorded. durable: with fsync_always,
  // synced before returning.
  bool append(std::string_view payload, bool durable);
  void poll(int64_t now_ms);
  // Writes and syncs everything, blocking (shutdown, tests).
  status flush();

  bool available() const { return available_; }
  std::string_view failure_reason() const { return failure_reason_; }
  const recording_probe& probe() const { return probe_; }
  const writer_options& options() const { return options_; }
  // Segments on disk, oldest first (the last one is being written).
  size_t segment_count() const { return segments_.size(); }

 private:
  struct segment_info {
    uint64_t base = 0;
    uint64_t bytes = 0;
    std::string path;
    int64_t closed_wall_ms = 0;  // 0 while being written
  };
  struct sync_entry {
    uint64_t cookie = 0;
    uint64_t target = 0;  // the written watermark it makes durable
    uint64_t events = 0;  // events appended when it was submitted
    std::shared_ptr<segment_file> file;
    bool done = false;
    status result;
  };

  segment_writer(const writer_options& options, std::unique_ptr<file_ops> ops, damage_fn report);
  status recover_dir();
  status open_segment(uint64_t base);
  bool frame(std::string_view payload);
  bool write_out();
  void submit_sync(std::shared_ptr<segment_file> file, uint64_t target);
  void sync_now();
  void reap(bool wait);
  bool roll();
  void fail(const std::string& reason);
  void try_recover();
  void apply_retention();
  uint64_t segment_pos() const { return file_pos_ + buf_.size(); }

  writer_options options_;
  std::unique_ptr<file_ops> ops_;
  damage_fn report_;
  recording_probe probe_;
  uint64_t start_offset_ = 0;

  std::deque<segment_info> segments_;
  std::shared_ptr<segment_file> active_;
  uint64_t base_ = 0;      // of the active segment
  uint64_t file_pos_ = 0;  // bytes of the active segment written
  std::string buf_;        // bytes of the active segment at file_pos_, not yet written

  std::deque<sync_entry> syncs_;  // in submission order, at most sync_depth_max
  std::vector<sync_completion> completions_;
  uint64_t next_cookie_ = 1;
  uint64_t sync_requested_ = 0;  // written watermark of the last submitted sync
  uint64_t events_total_ = 0;
  uint64_t events_synced_ = 0;

  int64_t now_ms_ = 0;
  int64_t last_sync_ms_ = 0;
  int64_t next_recover_ms_ = 0;
  bool available_ = false;
  std::string failure_reason_;
};

}  // namespace agentgate::recording
