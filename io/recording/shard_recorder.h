#pragma once
// agentgate::session_recorder (core/recording.h) over one shard's
// segment_writer: encodes each event (io/recording/format.h) and appends it.
//
// Owned by one shard and used only on its thread; one per shard, writing
// <dir>/shard-<N>/.
//
// Writer thread (writer_thread, the default): the segment_writer and every
// file operation (pwritev, fdatasync, segment rolls, recovery, retention)
// run on the recorder's own thread. The shard thread only encodes an event
// and hands it over through a bounded single-producer queue
// (queue_entries_max events, queue_bytes_max bytes). A full queue is
// waited on for at most queue_wait_ms_max (a burst), then the record is one
// that could not be appended (false, counted unrecorded): a stuck disk
// never holds the shard thread longer than that. The writer thread polls itself every poll_interval_ms; the shard's
// poll() only delivers outcomes to waiters. Without the thread (tests that
// need to step the writer by hand), everything runs in the calling thread.
//
// Durability:
// - Interval mode: an event is accepted (true) once queued; it is written
//   at once and synced within fsync_interval_ms (or fsync_bytes). A later
//   failure makes available() false and counts what was lost.
// - fsync_always: command, decision, result and session_end must be synced
//   before the command they record goes on. The synchronous calls
//   (command() ...) wait for the writer thread's verdict and return it: the
//   shard thread waits for the disk there, as before, but never runs the
//   I/O. submit_command() is the asynchronous form for a session that holds
//   its command until the record is durable (as an approval hold does): it
//   returns a ticket at once and the verdict reaches the waiter from poll()
//   on the shard thread. session_start becomes durable with the session's
//   next event.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "core/recording.h"
#include "core/spsc_queue.h"
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
  bool writer_thread = true;  // false: file I/O in the caller's thread (tests)
  // fsync_always: a verdict not back within this is a record not made (the
  // disk hangs); until the writer moves again the recorder is unavailable.
  uint32_t verdict_wait_ms = 5000;
};

class shard_recorder final : public session_recorder {
 public:
  static constexpr size_t queue_entries_max = 4096;
  static constexpr uint64_t queue_bytes_max = 16ull << 20;
  static constexpr uint32_t poll_interval_ms = 20;
  // A full queue is waited on this long at most, then the record is refused.
  static constexpr int64_t queue_wait_ms_max = 10;


  // Recovers the shard's directory (damage is logged and given to report)
  // and opens a new segment. now_ms: the clock later passed to poll().
  static agentgate::result<std::unique_ptr<shard_recorder>> open(const shard_recorder_options& options, int64_t now_ms,
                                                      std::unique_ptr<file_ops> ops = nullptr,
                                                      damage_fn report = nullptr);
  ~shard_recorder() override;
  shard_recorder(const shard_recorder&) = delete;
  shard_recorder& operator=(const shard_recorder&) = delete;

  bool session_start(const rec_session_start& e) override;
  bool command(const rec_command& e) override;
  bool decision(const rec_decision& e) override;
  bool result(const rec_result& e) override;
  bool session_end(const rec_session_end& e) override;
  bool available() const override;
  bool fail_open() const override { return failure_ == on_failure::fail_open; }
  std::string_view failure_reason() const override;
  uint64_t result_bytes_max() const override { return result_bytes_max_; }

  // The command's record handed to the writer without waiting. 0: it could
  // not even be queued (unavailable, queue full): refuse the command now.
  // Otherwise `waiter` hears on_recorded(ticket, ...) from a later poll()
  // (with fsync_always once synced, else once written), exactly once,
  // unless forget() is called first.
  uint64_t submit_command(const rec_command& e, record_waiter* waiter) override;
  // The waiter is going away (its session ended): no call for this ticket.
  void forget(uint64_t ticket) override;
  // With the writer thread and fsync_always: the session should submit and
  // hold rather than wait in command().
  bool durable_later() const override { return fsync_always_ && thread_.joinable(); }

  // On the shard thread, regularly: delivers verdicts to waiters (and
  // without the writer thread, runs the writer's timers).
  void poll(int64_t now_ms);
  // Writes and syncs what is queued, blocking: for shutdown and tests.
  status flush();
  recording_probe probe() const;

 private:
  struct request {
    enum class kind : uint8_t { event, flush, stop };
    kind what = kind::event;
    std::string payload;
    bool durable = false;
    uint64_t ticket = 0;  // nonzero: report the outcome
  };
  struct notice {
    uint64_t ticket = 0;
    bool recorded = false;
  };

  shard_recorder(std::unique_ptr<segment_writer> writer, const shard_recorder_options& options);
  template <typename E>
  bool record(const E& e, bool durable);
  bool enqueue(std::string&& payload, bool durable, uint64_t ticket);
  void wake_writer();
  bool wait_for(uint64_t ticket);
  bool stalled() const;
  void run();
  void publish();
  void deliver(const notice& n);

  std::unique_ptr<segment_writer> writer_;  // the writer thread's (or the caller's without one)
  uint64_t result_bytes_max_;
  on_failure failure_;
  bool fsync_always_;
  uint32_t verdict_wait_ms_;
  std::string scratch_;  // one encoded event; capacity kept between events

  // Shard side.
  uint64_t next_ticket_ = 1;
  uint64_t unqueued_ = 0;  // events refused because the queue was full
  std::unordered_map<uint64_t, record_waiter*> waiters_;
  std::deque<notice> early_;  // verdicts popped while waiting for another
  mutable std::string reason_;  // failure_reason()'s storage
  uint64_t stalled_at_ = UINT64_MAX;  // processed_ when a verdict did not come back in time

  // Between the two threads.
  std::unique_ptr<spsc_queue<request>> requests_;
  std::unique_ptr<spsc_queue<notice>> notices_;
  std::atomic<uint64_t> processed_{0};  // requests the writer thread has handled
  std::atomic<uint64_t> queued_bytes_{0};
  std::atomic<size_t> queued_{0};
  std::atomic<bool> available_{true};
  std::atomic<bool> wake_{false};
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;    // the writer thread waits here for work
  std::mutex notice_mu_;
  std::condition_variable notice_cv_;  // a synchronous caller waits here for its verdict
  std::atomic<uint64_t> flushed_{0};   // flush requests done
  status flush_status_;
  mutable std::mutex published_mu_;  // cold: failure reason and probe snapshot
  std::string published_reason_;
  recording_probe published_probe_;
  std::thread thread_;
  uint64_t flush_requests_ = 0;
};

}  // namespace agentgate::recording
