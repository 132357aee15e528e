// PostgreSQL framing on the hot path: splitting a result set into frames as
// the socket delivers it, the header check alone, and the Query grammar check.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "protocols/postgres/codec.h"
#include "protocols/postgres/frame_stream.h"

namespace agentgate::pg {
namespace {

constexpr uint32_t frame_bytes_max = 64u << 20;  // the default limit
constexpr size_t recv_chunk_bytes = 16 * 1024;
constexpr size_t stream_bytes_target = 4u << 20;

bytes as_bytes(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

// Counts what a relay would forward; a desync here is a bug in the bench.
class counting_sink final : public frame_sink {
 public:
  uint64_t frames = 0;
  uint64_t pieces = 0;

  bool on_frame(const frame_header&, bytes frame) override {
    ++frames;
    benchmark::DoNotOptimize(frame.data());
    return true;
  }
  bool on_frame_piece(const frame_header&, bytes piece, bool first, bool) override {
    frames += first ? 1 : 0;
    ++pieces;
    benchmark::DoNotOptimize(piece.data());
    return true;
  }
  void on_desync(const char* error) override {
    fprintf(stderr, "codec_bench: unexpected desync: %s\n", error);
    std::abort();
  }
};

// Like a relay: copies every byte it is handed into a send buffer. Framing
// itself reads only the 5 header bytes of each frame, so the counting sink
// above measures framing alone and its bytes/s is not a memory bandwidth.
class copying_sink final : public frame_sink {
 public:
  uint64_t frames = 0;

  bool on_frame(const frame_header&, bytes frame) override {
    ++frames;
    return copy(frame);
  }
  bool on_frame_piece(const frame_header&, bytes piece, bool first, bool) override {
    frames += first ? 1 : 0;
    return copy(piece);
  }
  void on_desync(const char* error) override {
    fprintf(stderr, "codec_bench: unexpected desync: %s\n", error);
    std::abort();
  }

 private:
  bool copy(bytes b) {
    if (out_.size() + b.size() > out_.capacity()) out_.clear();
    out_.append(reinterpret_cast<const char*>(b.data()), b.size());
    benchmark::DoNotOptimize(out_.data());
    return true;
  }
  std::string out_ = std::string(256 * 1024, '\0');
};

// DataRows of 5 columns, each frame about row_bytes long, up to ~4 MiB (at
// least 4 rows), closed by CommandComplete and ReadyForQuery.
struct row_stream {
  std::string data;
  std::vector<size_t> offsets;  // start of every frame
};

row_stream make_row_stream(size_t row_bytes) {
  // DataRow: 5 header bytes, int16 count, then per column int32 length + value.
  const size_t value_bytes = (row_bytes - 7) / 5 - 4;
  std::string row_body;
  row_body.push_back(0);
  row_body.push_back(5);
  for (int c = 0; c < 5; ++c) {
    append_u32(row_body, static_cast<uint32_t>(value_bytes));
    for (size_t i = 0; i < value_bytes; ++i) row_body.push_back(static_cast<char>('a' + (i + c) % 26));
  }
  row_stream s;
  const size_t rows = std::max<size_t>(4, stream_bytes_target / (row_body.size() + 5));
  for (size_t r = 0; r < rows; ++r) {
    s.offsets.push_back(s.data.size());
    append_frame(s.data, 'D', row_body);
  }
  s.offsets.push_back(s.data.size());
  append_frame(s.data, 'C', std::string("SELECT ") + std::to_string(rows) + '\0');
  s.offsets.push_back(s.data.size());
  append_frame(s.data, 'Z', "I");
  return s;
}

// Arg: approximate DataRow frame size.
void BM_frame_stream_datarows(benchmark::State& state) {
  const row_stream s = make_row_stream(static_cast<size_t>(state.range(0)));
  const bytes all = as_bytes(s.data);
  counting_sink sink;
  for (auto _ : state) {
    frame_stream fs(direction::backend, frame_bytes_max);
    for (size_t at = 0; at < all.size(); at += recv_chunk_bytes) {
      const size_t n = std::min(recv_chunk_bytes, all.size() - at);
      if (!fs.feed(all.subspan(at, n), sink)) state.SkipWithError("feed failed");
    }
  }
  const auto iterations = static_cast<int64_t>(state.iterations());
  state.SetBytesProcessed(iterations * static_cast<int64_t>(s.data.size()));
  state.SetItemsProcessed(iterations * static_cast<int64_t>(s.offsets.size()));
  state.counters["frames/s"] =
      benchmark::Counter(static_cast<double>(sink.frames), benchmark::Counter::kIsRate);
  state.counters["pieces_per_frame"] =
      static_cast<double>(sink.pieces) / static_cast<double>(std::max<uint64_t>(sink.frames, 1));
  state.counters["frame_bytes"] = static_cast<double>(s.offsets[1] - s.offsets[0]);
}
BENCHMARK(BM_frame_stream_datarows)->Arg(100)->Arg(1024)->Arg(1 << 20);

// The same, with a sink that copies every byte out as a relay would.
void BM_frame_stream_datarows_copied(benchmark::State& state) {
  const row_stream s = make_row_stream(static_cast<size_t>(state.range(0)));
  const bytes all = as_bytes(s.data);
  copying_sink sink;
  for (auto _ : state) {
    frame_stream fs(direction::backend, frame_bytes_max);
    for (size_t at = 0; at < all.size(); at += recv_chunk_bytes) {
      const size_t n = std::min(recv_chunk_bytes, all.size() - at);
      if (!fs.feed(all.subspan(at, n), sink)) state.SkipWithError("feed failed");
    }
  }
  const auto iterations = static_cast<int64_t>(state.iterations());
  state.SetBytesProcessed(iterations * static_cast<int64_t>(s.data.size()));
  state.SetItemsProcessed(iterations * static_cast<int64_t>(s.offsets.size()));
  state.counters["frames/s"] =
      benchmark::Counter(static_cast<double>(sink.frames), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_frame_stream_datarows_copied)->Arg(100)->Arg(1024)->Arg(1 << 20);

// The header check alone, once per frame of a stream of ~100-byte rows.
void BM_decode_header(benchmark::State& state) {
  const row_stream s = make_row_stream(100);
  const bytes all = as_bytes(s.data);
  for (auto _ : state) {
    for (size_t off : s.offsets) {
      const header_result h = decode_header(direction::backend, all.subspan(off), frame_bytes_max);
      benchmark::DoNotOptimize(h);
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(s.offsets.size()));
}
BENCHMARK(BM_decode_header);

void BM_validate_query(benchmark::State& state) {
  std::string body = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;";
  body.push_back('\0');
  const bytes b = as_bytes(body);
  for (auto _ : state) {
    const char* error = validate_frontend_body('Q', b);
    benchmark::DoNotOptimize(error);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(body.size()));
}
BENCHMARK(BM_validate_query);

// pgbench -M extended: Bind of an unnamed portal to a prepared statement, one
// text parameter.
void BM_validate_bind(benchmark::State& state) {
  std::string body;
  body.push_back('\0');                    // portal
  body.append("P0_1");                     // statement
  body.push_back('\0');
  body.append(std::string("\0\0\0\x01", 4));  // no formats; 1 parameter
  append_u32(body, 5);
  body.append("12345");
  body.append(std::string("\0\0", 2));     // no result formats
  const bytes b = as_bytes(body);
  if (validate_frontend_body('B', b) != nullptr) state.SkipWithError("bad Bind in the bench");
  for (auto _ : state) {
    const char* error = validate_frontend_body('B', b);
    benchmark::DoNotOptimize(error);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_validate_bind);

}  // namespace
}  // namespace agentgate::pg
