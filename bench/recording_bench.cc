// Recording throughput per shard (bench/recording_bench.cc).
//
// BM_Append/<dir>: realistic events (a ~200-byte command, an allow decision,
//   a result with ~8 KiB of DataRows) appended by one shard_recorder, poll()
//   every 64 events as the shard does. /dev/shm measures the writer itself
//   (page cache, fsync is free); /tmp (the root file system) includes the
//   asynchronous fdatasync every fsync_interval_ms (100).
// BM_DiskSequential: the file system's own rate for 256 MiB: plain 256 KiB
//   pwrites and one fdatasync at the end; compare BM_AppendDisk256MiB (the
//   recorder writing the same volume to /tmp, fsync every 100 ms, and a final
//   flush), whose ratio to it is the recorder's cost over the disk.
// BM_Verify1GiB / BM_Recover1GiB: reading back 1 GiB of segments (verify_dir)
//   and a writer's start-up recovery of them, on /dev/shm (page cache).
//
// Run: build-r/bin/recording_bench --benchmark_min_time=2

#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "core/log.h"
#include "io/recording/replay.h"
#include "io/recording/shard_recorder.h"

namespace {

namespace rec = agentgate::recording;
using agentgate::session_id;

std::string data_row(int i) {
  std::string out;
  auto put = [&](uint32_t v, int bytes) {
    for (int k = bytes - 1; k >= 0; --k) out.push_back(static_cast<char>(v >> (8 * k)));
  };
  const std::string fields[] = {std::to_string(i), "customer-" + std::to_string(i * 7919),
                                "c***" + std::to_string(i) + "@example.com", "2024-05-01 12:00:00+00",
                                "4111 **** **** 1111"};
  put(5, 2);
  for (const std::string& f : fields) {
    put(static_cast<uint32_t>(f.size()), 4);
    out += f;
  }
  return out;
}

struct workload {
  session_id id = session_id::generate();
  std::string sql;
  std::string rows;
  std::vector<std::string> columns{"id", "name", "email", "created_at", "card"};
  std::vector<std::pair<std::string, uint64_t>> masked{{"email", 100}, {"credit_card", 100}};
  workload() {
    sql = "SELECT c.id, c.name, c.email, c.created_at, p.card FROM customers c JOIN payments p ON p.customer_id = "
          "c.id WHERE c.created_at > now() - interval '1 day' ORDER BY c.id LIMIT 100 /* agent */";
    for (int i = 0; rows.size() < 8 * 1024; ++i) rows += data_row(i);
  }
  // Bytes of payload per command round.
  size_t round(rec::shard_recorder& r, uint64_t seq) {
    r.command(agentgate::rec_command{id, 1, seq, 'Q', sql, "SELECT", {}});
    r.decision(agentgate::rec_decision{id, 2, seq, "allow", "", "", ""});
    agentgate::rec_result res;
    res.id = id;
    res.seq = seq;
    res.columns = columns;
    res.rows = rows;
    res.rows_total = 100;
    res.duration_us = 1234;
    res.command_tag = "SELECT 100";
    res.masked = masked;
    r.result(res);
    return sql.size() + rows.size() + 200;
  }
};

void BM_Append(benchmark::State& state, const char* root) {
  agentgate::set_log_level(agentgate::log_level::error);
  const std::string dir = std::string(root) + "/agentgate-bench-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  rec::shard_recorder_options o;
  o.dir = dir;
  o.retention.bytes = 2ull << 30;  // bounded on tmpfs
  auto r = rec::shard_recorder::open(o, 0);
  if (!r) {
    state.SkipWithError(r.error().message().c_str());
    return;
  }
  workload w;
  uint64_t seq = 0;
  int64_t now_ms = 0;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    w.round(**r, ++seq);
    if (seq % 64 == 0) {
      now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
      (*r)->poll(now_ms);
    }
  }
  const rec::recording_probe p = (*r)->probe();
  state.counters["synced_MiB"] = static_cast<double>(p.bytes_synced) / (1 << 20);
  state.counters["unrecorded"] = static_cast<double>(p.events_unrecorded);
  state.SetBytesProcessed(static_cast<int64_t>(p.bytes_appended));
  state.SetItemsProcessed(static_cast<int64_t>(seq));
  r->reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK_CAPTURE(BM_Append, dev_shm, "/dev/shm")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Append, tmp_disk, "/tmp")->Unit(benchmark::kMillisecond)->UseRealTime();

// The same volume as BM_Append's 256 MiB, by plain pwrite + fdatasync.
void BM_DiskSequential(benchmark::State& state) {
  const std::string path = "/tmp/agentgate-bench-seq-" + std::to_string(getpid());
  std::string chunk(256 * 1024, 'x');
  const size_t total = 256u << 20;
  for (auto _ : state) {
    int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    for (size_t off = 0; off < total; off += chunk.size()) {
      if (pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off)) < 0) state.SkipWithError("pwrite");
    }
    fdatasync(fd);
    close(fd);
  }
  unlink(path.c_str());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * total));
}
BENCHMARK(BM_DiskSequential)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

// The recorder writing the same 256 MiB to /tmp and syncing it all at the end.
void BM_AppendDisk256MiB(benchmark::State& state) {
  agentgate::set_log_level(agentgate::log_level::error);
  workload w;
  for (auto _ : state) {
    const std::string dir = "/tmp/agentgate-bench-disk-" + std::to_string(getpid());
    std::filesystem::remove_all(dir);
    rec::shard_recorder_options o;
    o.dir = dir;
    auto r = rec::shard_recorder::open(o, 0);
    uint64_t seq = 0;
    const auto start = std::chrono::steady_clock::now();
    while ((*r)->probe().bytes_appended < (256u << 20)) {
      w.round(**r, ++seq);
      if (seq % 64 == 0)
        (*r)->poll(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count());
    }
    (void)(*r)->flush();
    state.PauseTiming();
    r->reset();
    std::filesystem::remove_all(dir);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * (256u << 20)));
}
BENCHMARK(BM_AppendDisk256MiB)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

const std::string& gib_of_segments() {
  static const std::string dir = [] {
    agentgate::set_log_level(agentgate::log_level::error);
    std::string d = "/dev/shm/agentgate-bench-gib-" + std::to_string(getpid());
    std::filesystem::remove_all(d);
    rec::shard_recorder_options o;
    o.dir = d;
    auto r = rec::shard_recorder::open(o, 0);
    workload w;
    uint64_t seq = 0;
    while ((*r)->probe().bytes_appended < (1ull << 30)) {
      w.round(**r, ++seq);
      if (seq % 64 == 0) (*r)->poll(static_cast<int64_t>(seq));
    }
    (void)(*r)->flush();
    return d;
  }();
  return dir;
}

void BM_Verify1GiB(benchmark::State& state) {
  const std::string& dir = gib_of_segments();
  uint64_t bytes = 0;
  for (auto _ : state) {
    auto segments = rec::verify_dir(dir);
    bytes = 0;
    for (const auto& s : *segments) bytes += s.bytes;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_Verify1GiB)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

void BM_Recover1GiB(benchmark::State& state) {
  const std::string& dir = gib_of_segments();
  for (auto _ : state) {
    rec::writer_options o;
    o.dir = dir + "/shard-0";
    auto w = rec::segment_writer::open(o, 0);
    if (!w) state.SkipWithError(w.error().message().c_str());
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_Recover1GiB)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace
