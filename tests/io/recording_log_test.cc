// The segment format end to end: writer and reader round trips (records
// spanning blocks, segment rolls), recovery of a segment cut at every byte
// offset, and every byte flipped one at a time.

#include <gtest/gtest.h>

#include "core/log.h"
#include "io/recording/format.h"
#include "io/recording/log_reader.h"
#include "io/recording/segment_writer.h"
#include "tests/io/memory_file_ops.h"

namespace agentgate::recording {
namespace {

using testing::memory_file_ops;
using testing::memory_fs;

const std::string dir = "/rec/shard-0";

std::string payload(size_t n, int seed) {
  std::string p(n, '\0');
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<char>((i * 7 + static_cast<size_t>(seed) * 13) & 0xff);
  if (n > 0) p[0] = static_cast<char>(0x40 + seed % 64);  // never a file header's type
  return p;
}

writer_options small_options() {
  writer_options o;
  o.dir = dir;
  o.fsync_interval_ms = 0;
  o.recover_interval_ms = 0;
  return o;
}

std::unique_ptr<segment_writer> open_writer(memory_fs& fs, const writer_options& o, damage_fn report = nullptr) {
  auto w = segment_writer::open(o, 0, std::make_unique<memory_file_ops>(fs), std::move(report));
  EXPECT_TRUE(w.is_ok()) << (w ? "" : w.error().message());
  return w ? std::move(*w) : nullptr;
}

struct read_back {
  std::vector<std::string> payloads;  // without file headers
  std::vector<uint64_t> ends;         // in-file end of each record
  std::vector<damage> damages;
  uint64_t valid_end = 0;
};

read_back read_file(memory_fs& fs, const std::string& path, bool keep_headers = false) {
  read_back out;
  memory_file_ops ops(fs);
  auto f = ops.open(path, open_mode::read_only);
  EXPECT_TRUE(f.is_ok());
  log_reader reader(**f, [&](const damage& d) { out.damages.push_back(d); });
  log_record rec;
  while (reader.next(rec)) {
    if (!keep_headers && !rec.payload.empty() && rec.payload[0] == static_cast<char>(event_type::file_header))
      continue;
    out.payloads.emplace_back(rec.payload);
    out.ends.push_back(reader.valid_end());
  }
  EXPECT_TRUE(reader.io_error().is_ok());
  out.valid_end = reader.valid_end();
  return out;
}

TEST(RecordingLog, RoundTripAcrossBlocksAndSegments) {
  memory_fs fs;
  writer_options o = small_options();
  o.segment_bytes = 200 * 1024;
  auto w = open_writer(fs, o);
  std::vector<std::string> written;
  const size_t sizes[] = {0, 1, 100, block_bytes - 2 * header_bytes, block_bytes - header_bytes, block_bytes,
                          block_bytes + 1, 3 * block_bytes + 17, 100 * 1000};
  for (int round = 0; round < 12; ++round)
    for (size_t n : sizes) {
      written.push_back(payload(n, static_cast<int>(written.size())));
      ASSERT_TRUE(w->append(written.back(), false));
      if (written.size() % 5 == 0) w->poll(0);
    }
  ASSERT_TRUE(w->flush().is_ok());
  EXPECT_GT(w->segment_count(), 3u);
  const recording_probe p = w->probe();
  EXPECT_EQ(p.appended, p.written);
  EXPECT_EQ(p.written, p.synced);
  w.reset();

  std::vector<std::string> got;
  uint64_t expected_base = 0;
  for (const auto& [path, f] : fs.files) {
    uint64_t base = 0;
    ASSERT_TRUE(parse_segment_file_name(path.substr(dir.size() + 1), base)) << path;
    EXPECT_EQ(expected_base, base) << "segments are contiguous in the shard's log";
    expected_base = base + f->data.size();
    read_back r = read_file(fs, path, true);
    EXPECT_TRUE(r.damages.empty());
    ASSERT_FALSE(r.payloads.empty());
    file_header h;
    ASSERT_TRUE(decode_file_header(r.payloads[0], h));
    EXPECT_EQ(base, h.base_offset);
    got.insert(got.end(), r.payloads.begin() + 1, r.payloads.end());
  }
  ASSERT_EQ(written.size(), got.size());
  for (size_t i = 0; i < written.size(); ++i) ASSERT_TRUE(written[i] == got[i]) << i;
}

// A sample segment: small records and ones spanning block boundaries.
std::string sample_segment(memory_fs& fs, std::vector<std::string>& records) {
  auto w = open_writer(fs, small_options());
  const size_t sizes[] = {120, 40, 500, 20000, 90, 15000, 7, 32 * 1024, 300};
  for (size_t i = 0; i < std::size(sizes); ++i) {
    records.push_back(payload(sizes[i], static_cast<int>(i) + 1));
    EXPECT_TRUE(w->append(records.back(), false));
  }
  EXPECT_TRUE(w->flush().is_ok());
  w.reset();
  EXPECT_EQ(1u, fs.files.size());
  return fs.files.begin()->first;
}

TEST(RecordingLog, TruncatedAtEveryOffsetRecoversWholeRecordsOnly) {
  set_log_level(log_level::error);  // one warning per cut otherwise
  memory_fs sample_fs;
  std::vector<std::string> records;
  const std::string path = sample_segment(sample_fs, records);
  const std::string full = sample_fs.data(path);
  const read_back clean = read_file(sample_fs, path);
  ASSERT_TRUE(records == clean.payloads);
  ASSERT_GT(full.size(), 2 * block_bytes);

  for (size_t cut = 0; cut <= full.size(); ++cut) {
    memory_fs fs;
    fs.dirs = {"/rec", dir};
    fs.files[path] = std::make_shared<memory_fs::file_data>();
    fs.data(path) = full.substr(0, cut);
    read_back r = read_file(fs, path);
    size_t whole = 0;
    while (whole < records.size() && clean.ends[whole] <= cut) ++whole;
    ASSERT_EQ(whole, r.payloads.size()) << "cut " << cut;
    for (size_t i = 0; i < whole; ++i) ASSERT_TRUE(records[i] == r.payloads[i]) << "cut " << cut;
    for (const damage& d : r.damages) ASSERT_TRUE(d.torn_tail) << "cut " << cut << ": " << d.reason;

    // Recovery: the tail is cut to the last whole record and a new segment
    // follows it; reading both gives exactly the whole records.
    std::vector<damage> reported;
    auto w = open_writer(fs, small_options(), [&](const damage& d) { reported.push_back(d); });
    ASSERT_TRUE(w);
    for (const damage& d : reported) ASSERT_TRUE(d.torn_tail) << "cut " << cut;
    w.reset();
    std::vector<std::string> after;
    for (const auto& [p, f] : fs.files) {
      read_back rb = read_file(fs, p);
      ASSERT_TRUE(rb.damages.empty()) << "cut " << cut << " " << p;
      after.insert(after.end(), rb.payloads.begin(), rb.payloads.end());
    }
    ASSERT_EQ(whole, after.size()) << "cut " << cut;
  }
}

TEST(RecordingLog, EveryByteFlippedIsRecoveredOrReported) {
  memory_fs sample_fs;
  std::vector<std::string> records;
  const std::string path = sample_segment(sample_fs, records);
  const std::string full = sample_fs.data(path);
  const read_back clean = read_file(sample_fs, path, true);

  for (size_t at = 0; at < full.size(); ++at) {
    for (const char mask : {'\x01', '\x80', '\xff'}) {
      memory_fs fs;
      fs.dirs = {"/rec", dir};
      fs.files[path] = std::make_shared<memory_fs::file_data>();
      fs.data(path) = full;
      fs.data(path)[at] ^= mask;
      read_back r = read_file(fs, path, true);
      // Whatever is yielded is an original record, in order.
      size_t j = 0;
      for (const std::string& p : r.payloads) {
        while (j < clean.payloads.size() && clean.payloads[j] != p) ++j;
        ASSERT_LT(j, clean.payloads.size()) << "garbage yielded as valid, flip at " << at;
        ++j;
      }
      // A flip outside the zero-filled block trailers loses something, and
      // then it is reported.
      if (r.payloads.size() < clean.payloads.size()) {
        ASSERT_FALSE(r.damages.empty()) << "flip at " << at;
      }
      uint64_t lost = 0;
      for (const damage& d : r.damages) lost += d.bytes;
      if (!r.damages.empty()) {
        ASSERT_GT(lost, 0u);
      }
    }
    if (at % 4099 == 0) {  // recovery of a flipped segment never fails (sampled: it is slower)
      memory_fs fs;
      fs.dirs = {"/rec", dir};
      fs.files[path] = std::make_shared<memory_fs::file_data>();
      fs.data(path) = full;
      fs.data(path)[at] ^= '\x01';
      ASSERT_TRUE(open_writer(fs, small_options()));
    }
  }
}

TEST(RecordingLog, CorruptionInTheMiddleIsReportedAndReadingResumesAtTheNextBlock) {
  memory_fs fs;
  std::vector<std::string> records;
  const std::string path = sample_segment(fs, records);
  fs.data(path)[50] ^= 0x10;  // inside the first small records of block 0
  std::vector<damage> reported;
  read_back r = read_file(fs, path);
  ASSERT_EQ(1u, r.damages.size());
  EXPECT_FALSE(r.damages[0].torn_tail);
  EXPECT_EQ("checksum mismatch", r.damages[0].reason);
  EXPECT_GT(r.damages[0].bytes, 0u);
  ASSERT_FALSE(r.payloads.empty());
  EXPECT_TRUE(records.back() == r.payloads.back());

  // Recovery reports it, keeps the file as it is and writes a new segment.
  auto w = open_writer(fs, small_options(), [&](const damage& d) { reported.push_back(d); });
  ASSERT_EQ(1u, reported.size());
  EXPECT_FALSE(reported[0].torn_tail);
  EXPECT_EQ(2u, fs.files.size());
}

TEST(RecordingLog, ZeroFilledTailIsTorn) {
  memory_fs fs;
  std::vector<std::string> records;
  const std::string path = sample_segment(fs, records);
  const size_t size = fs.data(path).size();
  fs.data(path).append(10000, '\0');
  read_back r = read_file(fs, path);
  EXPECT_TRUE(records == r.payloads);
  ASSERT_EQ(1u, r.damages.size());
  EXPECT_TRUE(r.damages[0].torn_tail);
  auto w = open_writer(fs, small_options());
  EXPECT_EQ(size, fs.data(path).size());
}

}  // namespace
}  // namespace agentgate::recording
