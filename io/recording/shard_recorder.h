#pragma once
// agentgate::session_recorder (core/recording.h) over one shard's
// segment_writer: encodes each event (io/recording/format.h) and appends it.
//
// Owned by one shard and used only on its thread; one per shard, writing
// <dir>/shard-<N>/. The shard calls poll(now_ms) every ~20 ms.
//
// fsync_always: command, decision, result and session_end are written and
// fdatasync'd before the call returns; session_start becomes durable with the
// session's next event. Otherwise they are durable within fsync_interval_ms
// (or fsync_bytes) and the shard never waits for the disk.

#include <cstdint>
#include <memory>
#include <string>

#include "core/recording.h"
#include "core/status.h"
#include "io/recording/segment_writer.h"

namespace agentgate::recording {

enum class on_failure { fail_closed, fail_open };

struct shard_recorder_options {
  std::string dir;  // recording.dir; this shard writes <dir>/shard-<shard>/
  int shard = 0;
  uint64_t segment_bytes = 64ull << 20;
  uint32_t fsync_interval_ms = 100;
  uint64_t fsync_bytes = 0;  // 0: by interval only
  bool fsync_always = false;
  uint64_t result_bytes_max = 1u << 20;  // rows kept per command
  on_failure failure = on_failure::fail_closed;
  retention_options retention;
  uint32_t recover_interval_ms = 1000;
};

class shard_recorder final : public session_recorder {
 public:
  // Recovers the shard's directory (damage is logged and given to report)
  // and opens a new segment. now_ms: the clock later passed to poll().
  static agentgate::result<std::unique_ptr<shard_recorder>> open(const shard_recorder_options& options, int64_t now_ms,
                                                      std::unique_ptr<file_ops> ops = nullptr,
                                                      damage_fn report = nullptr);

  bool session_start(const rec_session_start& e) override;
  bool command(const rec_command& e) override;
  bool decision(const rec_decision& e) override;
  bool result(const rec_result& e) override;
  bool session_end(const rec_session_end& e) override;
  bool available() const override { return writer_->available(); }
  bool fail_open() const override { return failure_ == on_failure::fail_open; }
  std::string_view failure_reason() const override { return writer_->failure_reason(); }
  uint64_t result_bytes_max() const override { return result_bytes_max_; }

  void poll(int64_t now_ms) { writer_->poll(now_ms); }
  // Writes and syncs what is buffered, blocking: for shutdown.
  status flush() { return writer_->flush(); }
  const recording_probe& probe() const { return writer_->probe(); }
  segment_writer& writer() { return *writer_; }

 private:
  shard_recorder(std::unique_ptr<segment_writer> writer, const shard_recorder_options& options);
  template <typename E>
  bool record(const E& e, bool durable);

  std::unique_ptr<segment_writer> writer_;
  uint64_t result_bytes_max_;
  on_failure failure_;
  std::string scratch_;  // one encoded event; capacity kept between events
};

}  // namespace agentgate::recording
