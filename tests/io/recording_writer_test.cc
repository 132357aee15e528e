// The segment writer and shard_recorder: watermarks, durability across a
// crash, disk failures (ENOSPC, EIO) and recovery from them, retention, and
// asynchronous fsync through the real io_uring.

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "io/recording/format.h"
#include "io/recording/replay.h"
#include "io/recording/shard_recorder.h"
#include "tests/io/memory_file_ops.h"

#include <set>

namespace agentgate::recording {
namespace {

using testing::memory_file_ops;
using testing::memory_fs;

void expect_watermarks(const recording_probe& p) {
  EXPECT_LE(p.synced, p.written);
  EXPECT_LE(p.written, p.appended);
}

std::unique_ptr<shard_recorder> open_recorder(memory_fs& fs, shard_recorder_options o) {
  auto r = shard_recorder::open(o, 0, std::make_unique<memory_file_ops>(fs));
  EXPECT_TRUE(r.is_ok()) << (r ? "" : r.error().message());
  return r ? std::move(*r) : nullptr;
}

// The writer stepped by hand on the test's thread (poll() runs its timers).
shard_recorder_options memory_options() {
  shard_recorder_options o;
  o.dir = "/rec";
  o.recover_interval_ms = 0;
  o.writer_thread = false;
  return o;
}

rec_command command(const session_id& id, uint64_t seq, const std::string& text) {
  rec_command c;
  c.id = id;
  c.unix_us = static_cast<int64_t>(seq);
  c.seq = seq;
  c.message_kind = 'Q';
  c.text = text;
  return c;
}

// Commands of all segments of the memory fs, in order.
std::vector<uint64_t> recorded_seqs(memory_fs& fs) {
  std::vector<uint64_t> seqs;
  memory_file_ops ops(fs);
  for (const auto& [path, f] : fs.files) {
    auto file = ops.open(path, open_mode::read_only);
    log_reader reader(**file, nullptr);
    log_record rec;
    event e;
    while (reader.next(rec))
      if (decode_event(rec.payload, e) && e.type == event_type::command) seqs.push_back(e.seq);
  }
  return seqs;
}

TEST(RecordingWriter, WatermarksAdvanceInOrder) {
  memory_fs fs;
  auto r = open_recorder(fs, memory_options());
  const session_id id = session_id::generate();
  fs.hold_syncs = true;
  ASSERT_TRUE(r->command(command(id, 1, "SELECT 1")));
  recording_probe p = r->probe();
  expect_watermarks(p);
  EXPECT_LT(p.written, p.appended) << "buffered until poll";
  r->poll(1000);  // writes, submits a sync that does not complete yet
  p = r->probe();
  expect_watermarks(p);
  EXPECT_EQ(p.written, p.appended);
  EXPECT_LT(p.synced, p.written);
  fs.hold_syncs = false;
  r->poll(1001);
  p = r->probe();
  EXPECT_EQ(p.synced, p.written);
  EXPECT_EQ(1u, p.events);
  EXPECT_GT(p.bytes_synced, 0u);
}

TEST(RecordingWriter, SyncedEventsSurviveACrash) {
  for (size_t keep : {size_t{0}, size_t{1}, size_t{7}, size_t{100}, size_t{5000}, size_t{1} << 20}) {
    memory_fs fs;
    shard_recorder_options o = memory_options();
    o.fsync_interval_ms = 10;
    auto r = open_recorder(fs, o);
    const session_id id = session_id::generate();
    uint64_t seq = 0;
    for (int i = 0; i < 200; ++i) ASSERT_TRUE(r->command(command(id, ++seq, std::string(300, 'x'))));
    r->poll(100);  // write + submit
    r->poll(101);  // reap
    ASSERT_EQ(r->probe().synced, r->probe().written);
    const uint64_t synced_seq = seq;
    for (int i = 0; i < 200; ++i) ASSERT_TRUE(r->command(command(id, ++seq, std::string(300, 'y'))));
    r->poll(102);  // written, not synced
    fs.crash(keep);
    // The process died: no destructor, no flush. The object is freed only
    // once the checks are done (LeakSanitizer), never used again.
    std::unique_ptr<shard_recorder> dead(r.release());
    auto again = open_recorder(fs, o);
    ASSERT_TRUE(again);
    std::vector<uint64_t> seqs = recorded_seqs(fs);
    ASSERT_GE(seqs.size(), synced_seq) << "keep " << keep;
    for (size_t i = 0; i < seqs.size(); ++i) ASSERT_EQ(i + 1, seqs[i]) << "keep " << keep;
  }
}

TEST(RecordingWriter, FsyncAlwaysSyncsBeforeReturning) {
  memory_fs fs;
  shard_recorder_options o = memory_options();
  o.fsync_always = true;
  auto r = open_recorder(fs, o);
  const session_id id = session_id::generate();
  for (uint64_t seq = 1; seq <= 20; ++seq) {
    ASSERT_TRUE(r->command(command(id, seq, "UPDATE t SET x = 1")));
    ASSERT_EQ(r->probe().synced, r->probe().appended);
  }
  fs.crash();
  std::unique_ptr<shard_recorder> dead(r.release());  // the process died; freed after the check
  EXPECT_EQ(20u, recorded_seqs(fs).size());
}

// Issue 10 item 14: with fsync_always a record counts only once synced. A
// sync that fails, also the one a segment roll does, makes the call false so
// the session refuses that very command.
TEST(RecordingWriter, FsyncAlwaysReportsAFailedSyncOnTheCommandItself) {
  memory_fs fs;
  shard_recorder_options o = memory_options();
  o.fsync_always = true;
  auto r = open_recorder(fs, o);
  const session_id id = session_id::generate();
  ASSERT_TRUE(r->command(command(id, 1, "SELECT 1")));
  fs.sync_errno = EIO;
  EXPECT_FALSE(r->command(command(id, 2, "DELETE FROM t")));
  EXPECT_FALSE(r->available());
  EXPECT_LT(r->probe().synced, r->probe().appended);
}

TEST(RecordingWriter, FsyncAlwaysReportsAFailedSyncAtASegmentRoll) {
  memory_fs fs;
  shard_recorder_options o = memory_options();
  o.fsync_always = true;
  o.segment_bytes = 32 * 1024;  // the smallest: this command rolls the segment
  auto r = open_recorder(fs, o);
  const session_id id = session_id::generate();
  fs.sync_errno = EIO;
  EXPECT_FALSE(r->command(command(id, 1, "DELETE FROM t -- " + std::string(40000, 'x'))));
  EXPECT_FALSE(r->available());
  EXPECT_GE(r->probe().sync_errors, 1u);
}

TEST(RecordingWriter, FsyncAlwaysReportsAFailedWriteOnTheCommandItself) {
  memory_fs fs;
  shard_recorder_options o = memory_options();
  o.fsync_always = true;
  auto r = open_recorder(fs, o);
  const session_id id = session_id::generate();
  ASSERT_TRUE(r->command(command(id, 1, "SELECT 1")));
  fs.space_left = 10;
  EXPECT_FALSE(r->command(command(id, 2, "DELETE FROM t")));
  EXPECT_FALSE(r->available());
}

// --- the writer thread (issue 10 item 14: the shard thread never runs the I/O) ---

// Blocks every write and sync while closed; remembers which threads did I/O.
struct io_gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = true;
  std::set<std::thread::id> threads;
  void pass() {
    std::unique_lock<std::mutex> lock(mu);
    threads.insert(std::this_thread::get_id());
    cv.wait(lock, [&] { return open; });
  }
  void set(bool o) {
    {
      std::lock_guard<std::mutex> lock(mu);
      open = o;
    }
    cv.notify_all();
  }
  bool io_on(std::thread::id id) {
    std::lock_guard<std::mutex> lock(mu);
    return threads.count(id) != 0;
  }
};

shard_recorder_options threaded_options() {
  shard_recorder_options o;
  o.dir = "/rec";
  o.recover_interval_ms = 0;
  o.writer_thread = true;
  return o;
}

TEST(RecordingWriterThread, CommandsNeverWaitForTheDiskInIntervalMode) {
  memory_fs fs;
  io_gate gate;
  auto r = open_recorder(fs, threaded_options());  // start-up I/O runs on the opener
  fs.on_io = [&] { gate.pass(); };
  gate.set(false);  // the disk hangs
  const session_id id = session_id::generate();
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t seq = 1; seq <= 100; ++seq) ASSERT_TRUE(r->command(command(id, seq, "SELECT 1")));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500));
  // Past the queue's bound a record cannot be appended: false at once, counted.
  bool refused = false;
  for (uint64_t seq = 101; seq <= 101 + shard_recorder::queue_entries_max && !refused; ++seq) {
    const auto a = std::chrono::steady_clock::now();
    refused = !r->command(command(id, seq, "SELECT 1"));
    EXPECT_LT(std::chrono::steady_clock::now() - a, std::chrono::milliseconds(200)) << "waited on the disk";
  }
  EXPECT_TRUE(refused);
  EXPECT_GE(r->probe().events_unrecorded, 1u);
  gate.set(true);
  ASSERT_TRUE(r->flush().is_ok());
  EXPECT_FALSE(gate.io_on(std::this_thread::get_id())) << "a write or sync ran on the caller's thread";
  EXPECT_FALSE(gate.threads.empty());
  r.reset();
  fs.on_io = nullptr;
  EXPECT_GE(recorded_seqs(fs).size(), 100u);
}

TEST(RecordingWriterThread, FsyncAlwaysReturnsTheWritersVerdict) {
  memory_fs fs;
  io_gate gate;
  shard_recorder_options o = threaded_options();
  o.fsync_always = true;
  o.recover_interval_ms = 600000;  // stays unavailable for the test
  auto r = open_recorder(fs, o);
  fs.on_io = [&] { gate.pass(); };
  const session_id id = session_id::generate();
  for (uint64_t seq = 1; seq <= 5; ++seq) ASSERT_TRUE(r->command(command(id, seq, "UPDATE t SET x = 1")));
  ASSERT_TRUE(r->flush().is_ok());  // the probe is the writer's snapshot as of its last round
  EXPECT_EQ(r->probe().synced, r->probe().appended);
  EXPECT_FALSE(gate.io_on(std::this_thread::get_id()));
  fs.sync_errno = EIO;
  EXPECT_FALSE(r->command(command(id, 6, "DELETE FROM t")));
  EXPECT_FALSE(r->available());
  EXPECT_NE(std::string::npos, r->failure_reason().find("Input/output error")) << r->failure_reason();
  EXPECT_FALSE(r->command(command(id, 7, "DELETE FROM t")));
  r.reset();
  fs.sync_errno = 0;
  fs.on_io = nullptr;
  fs.crash();
  const std::vector<uint64_t> seqs = recorded_seqs(fs);
  EXPECT_EQ(seqs, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
}

TEST(RecordingWriterThread, FsyncAlwaysRefusesWhileTheDiskHangs) {
  memory_fs fs;
  io_gate gate;
  shard_recorder_options o = threaded_options();
  o.fsync_always = true;
  o.verdict_wait_ms = 100;
  auto r = open_recorder(fs, o);
  fs.on_io = [&] { gate.pass(); };
  const session_id id = session_id::generate();
  ASSERT_TRUE(r->command(command(id, 1, "SELECT 1")));
  gate.set(false);
  EXPECT_FALSE(r->command(command(id, 2, "DELETE FROM t")));  // after verdict_wait_ms
  EXPECT_FALSE(r->available());
  EXPECT_NE(std::string::npos, r->failure_reason().find("has not completed")) << r->failure_reason();
  const auto a = std::chrono::steady_clock::now();
  EXPECT_FALSE(r->command(command(id, 3, "DELETE FROM t")));
  EXPECT_LT(std::chrono::steady_clock::now() - a, std::chrono::milliseconds(50)) << "refused at once while stalled";
  gate.set(true);
  for (int i = 0; i < 1000 && !r->available(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(r->available());
  EXPECT_TRUE(r->command(command(id, 4, "SELECT 2")));
  r.reset();
  fs.on_io = nullptr;
}

struct verdicts final : record_waiter {
  std::vector<std::pair<uint64_t, bool>> got;
  void on_recorded(uint64_t ticket, bool recorded) override { got.emplace_back(ticket, recorded); }
};

// The hook for a session that holds its command until the record is
// durable: submit_command returns at once, the verdict comes from poll().
TEST(RecordingWriterThread, SubmittedCommandsHearTheirVerdictFromPoll) {
  memory_fs fs;
  io_gate gate;
  shard_recorder_options o = threaded_options();
  o.fsync_always = true;
  auto r = open_recorder(fs, o);
  fs.on_io = [&] { gate.pass(); };
  gate.set(false);
  verdicts w;
  const session_id id = session_id::generate();
  EXPECT_TRUE(r->durable_later());
  const uint64_t t1 = r->submit_command(command(id, 1, "UPDATE t SET x = 1"), &w);
  ASSERT_NE(0u, t1);
  const uint64_t t2 = r->submit_command(command(id, 2, "UPDATE t SET x = 2"), &w);
  r->forget(t2);  // its session went away
  r->poll(1);
  EXPECT_TRUE(w.got.empty()) << "not durable while the disk hangs";
  gate.set(true);
  for (int i = 0; i < 1000 && w.got.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    r->poll(2);
  }
  ASSERT_EQ(w.got.size(), 1u);
  EXPECT_EQ(w.got[0], std::make_pair(t1, true));
  fs.sync_errno = EIO;
  const uint64_t t3 = r->submit_command(command(id, 3, "DELETE FROM t"), &w);
  ASSERT_NE(0u, t3);
  for (int i = 0; i < 1000 && w.got.size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    r->poll(3);
  }
  ASSERT_EQ(w.got.size(), 2u);
  EXPECT_EQ(w.got[1], std::make_pair(t3, false));
  r.reset();
  fs.on_io = nullptr;
}

TEST(RecordingWriter, NoSpaceMakesItUnavailableUntilRecovered) {
  memory_fs fs;
  auto r = open_recorder(fs, memory_options());
  const session_id id = session_id::generate();
  ASSERT_TRUE(r->command(command(id, 1, "SELECT 1")));
  r->poll(1);
  r->poll(2);
  fs.space_left = 100;
  uint64_t seq = 1;
  for (int i = 0; i < 10; ++i) (void)r->command(command(id, ++seq, std::string(50, 'z')));
  r->poll(3);  // the write hits ENOSPC
  EXPECT_FALSE(r->available());
  EXPECT_NE(std::string::npos, r->failure_reason().find("No space left")) << r->failure_reason();
  EXPECT_EQ(1u, r->probe().write_errors);
  EXPECT_GE(r->probe().events_unrecorded, 10u);
  EXPECT_FALSE(r->command(command(id, ++seq, "SELECT 2")));
  r->poll(4);  // still full: the new segment's header cannot be written
  EXPECT_FALSE(r->available());

  fs.space_left = UINT64_MAX;
  r->poll(5);
  ASSERT_TRUE(r->available());
  EXPECT_TRUE(r->failure_reason().empty());
  EXPECT_EQ(1u, r->probe().recoveries);
  ASSERT_TRUE(r->command(command(id, 100, "SELECT 3")));
  ASSERT_TRUE(r->flush().is_ok());
  expect_watermarks(r->probe());
  r.reset();
  // The torn tail of the failed segment was cut; everything left reads clean.
  memory_file_ops ops(fs);
  for (const auto& [path, f] : fs.files) {
    auto file = ops.open(path, open_mode::read_only);
    bool damaged = false;
    log_reader reader(**file, [&](const damage&) { damaged = true; });
    log_record rec;
    while (reader.next(rec)) {
    }
    EXPECT_FALSE(damaged) << path;
  }
  std::vector<uint64_t> seqs = recorded_seqs(fs);
  ASSERT_FALSE(seqs.empty());
  EXPECT_EQ(1u, seqs.front());
  EXPECT_EQ(100u, seqs.back());
}

TEST(RecordingWriter, FsyncErrorMakesItUnavailableUntilRecovered) {
  memory_fs fs;
  shard_recorder_options o = memory_options();
  o.failure = on_failure::fail_open;
  o.recover_interval_ms = 500;
  auto r = open_recorder(fs, o);
  EXPECT_TRUE(r->fail_open());
  const session_id id = session_id::generate();
  ASSERT_TRUE(r->command(command(id, 1, "SELECT 1")));
  fs.sync_errno = EIO;
  r->poll(1000);
  r->poll(1001);
  EXPECT_FALSE(r->available());
  EXPECT_NE(std::string::npos, r->failure_reason().find("Input/output error")) << r->failure_reason();
  EXPECT_GE(r->probe().sync_errors, 1u);
  EXPECT_GE(r->probe().events_unrecorded, 1u);
  r->poll(1100);
  EXPECT_FALSE(r->available()) << "retried only every recover_interval_ms";
  fs.sync_errno = 0;
  r->poll(1600);
  EXPECT_TRUE(r->available());
  EXPECT_TRUE(r->command(command(id, 2, "SELECT 2")));
}

TEST(RecordingWriter, RetentionBySizeKeepsTheActiveSegment) {
  memory_fs fs;
  shard_recorder_options o = memory_options();
  o.segment_bytes = 64 * 1024;
  o.retention.bytes = 256 * 1024;
  auto r = open_recorder(fs, o);
  const session_id id = session_id::generate();
  for (uint64_t seq = 1; seq <= 2000; ++seq) {
    ASSERT_TRUE(r->command(command(id, seq, std::string(1000, 'r'))));
    if (seq % 50 == 0) r->poll(static_cast<int64_t>(seq));
  }
  r->poll(5000);
  EXPECT_GT(r->probe().segments_removed, 0u);
  uint64_t total = 0;
  for (const auto& [path, f] : fs.files) total += f->data.size();
  EXPECT_LE(total, o.retention.bytes + o.segment_bytes + 2 * 1024);
  std::vector<uint64_t> seqs = recorded_seqs(fs);
  ASSERT_FALSE(seqs.empty());
  EXPECT_EQ(2000u, seqs.back()) << "the newest events are kept";
}

TEST(RecordingWriter, RetentionByAge) {
  memory_fs fs;
  shard_recorder_options o = memory_options();
  o.segment_bytes = 64 * 1024;
  {
    auto r = open_recorder(fs, o);
    const session_id id = session_id::generate();
    for (uint64_t seq = 1; seq <= 300; ++seq) ASSERT_TRUE(r->command(command(id, seq, std::string(1000, 'a'))));
  }
  const size_t before = fs.files.size();
  ASSERT_GT(before, 3u);
  for (auto& [path, f] : fs.files) f->mtime_ms = 1000;  // 1970: far older than an hour
  o.retention.hours = 1;
  auto r = open_recorder(fs, o);
  r->poll(1);
  EXPECT_EQ(1u, fs.files.size()) << "only the new, active segment is left";
  EXPECT_EQ(before, r->probe().segments_removed);
}

TEST(RecordingWriter, RealFilesWithAsynchronousFsync) {
  const std::string dir = std::filesystem::temp_directory_path() / ("agentgate-rec-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  shard_recorder_options o;
  o.dir = dir;
  o.shard = 1;
  o.fsync_interval_ms = 0;
  auto opened = shard_recorder::open(o, 0);
  ASSERT_TRUE(opened.is_ok()) << opened.error().message();
  auto& r = *opened;
  const session_id id = session_id::generate();
  for (uint64_t seq = 1; seq <= 100; ++seq) ASSERT_TRUE(r->command(command(id, seq, "SELECT now()")));
  for (int i = 0; i < 500 && r->probe().synced < r->probe().appended; ++i) {
    r->poll(i + 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(r->probe().appended, r->probe().synced);
  opened.value().reset();
  auto segments = verify_dir(dir);
  ASSERT_TRUE(segments.is_ok());
  ASSERT_EQ(1u, segments->size());
  EXPECT_EQ(101u, (*segments)[0].records);
  EXPECT_TRUE((*segments)[0].damages.empty());
  EXPECT_TRUE((*segments)[0].problem.empty()) << (*segments)[0].problem;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace agentgate::recording
