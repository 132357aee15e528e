#include "protocols/postgres/frame_stream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agentgate::pg {
namespace {

constexpr uint32_t frame_bytes_max = 2u << 20;

bytes as_bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }
std::string_view as_view(bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

std::string u16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }
std::string u32(uint32_t v) {
  std::string out;
  append_u32(out, v);
  return out;
}
std::string cstr(std::string_view s) { return std::string(s) + '\0'; }
std::string frame(char type, std::string_view body) {
  std::string out;
  append_frame(out, type, body);
  return out;
}

// ---- the sink ------------------------------------------------------------------

struct delivered {
  char type = 0;
  std::string bytes;  // reassembled: header included
  bool whole = false;
  size_t pieces = 0;
  bool in_place = false;  // a whole frame pointing into the buffer that was fed
};

// Reassembles what frame_stream delivers and checks the sink contract on the
// way: a piece's header matches its frame, the first piece starts with the
// header, pieces are never empty, nothing is interleaved with a streamed
// frame, and nothing at all arrives after a desync.
class recording_sink final : public frame_sink {
 public:
  std::vector<delivered> frames;
  int desyncs = 0;
  std::string desync_error;
  size_t stop_after_frames = 0;  // return false once this many frames have started; 0: never
  bytes fed;                     // the buffer of the current feed(), for in-place checks

  bool on_frame(const frame_header& h, bytes frame) override {
    EXPECT_EQ(desyncs, 0) << "frame after a desync";
    EXPECT_FALSE(streaming_) << "whole frame '" << h.type << "' inside a streamed frame";
    check_header(h, frame);
    EXPECT_EQ(frame.size(), h.frame_bytes());
    delivered d;
    d.type = h.type;
    d.bytes.assign(as_view(frame));
    d.whole = true;
    d.pieces = 1;
    d.in_place = !fed.empty() && frame.data() >= fed.data() &&
                 frame.data() + frame.size() <= fed.data() + fed.size();
    frames.push_back(std::move(d));
    return keep_going();
  }

  bool on_frame_piece(const frame_header& h, bytes piece, bool first, bool last) override {
    EXPECT_EQ(desyncs, 0) << "piece after a desync";
    EXPECT_FALSE(piece.empty()) << "empty piece";
    if (first) {
      EXPECT_FALSE(streaming_) << "a new streamed frame before the last piece of the previous one";
      check_header(h, piece);
      frames.push_back({h.type, {}, false, 0, false});
      streaming_ = true;
    } else {
      EXPECT_TRUE(streaming_) << "a piece that is not first outside a streamed frame";
      if (frames.empty()) return false;
    }
    delivered& d = frames.back();
    EXPECT_EQ(d.type, h.type);
    d.bytes.append(as_view(piece));
    ++d.pieces;
    EXPECT_LE(d.bytes.size(), h.frame_bytes()) << "pieces longer than the frame";
    if (last) {
      EXPECT_EQ(d.bytes.size(), h.frame_bytes()) << "last piece before the end of the frame";
      streaming_ = false;
    } else {
      EXPECT_LT(d.bytes.size(), h.frame_bytes()) << "the frame is complete but last is false";
    }
    return !first || keep_going();
  }

  void on_desync(const char* error) override {
    ++desyncs;
    desync_error = error ? error : "";
  }

  bool streaming() const { return streaming_; }

 private:
  // The first bytes of a frame or a first piece are the header h describes.
  static void check_header(const frame_header& h, bytes start) {
    ASSERT_GE(start.size(), header_bytes) << "a frame's first bytes must hold its whole header";
    EXPECT_EQ(static_cast<char>(start[0]), h.type);
    EXPECT_EQ(read_u32(start.data() + 1), h.length);
  }
  bool keep_going() const { return stop_after_frames == 0 || frames.size() < stop_after_frames; }

  bool streaming_ = false;
};

// ---- streams ---------------------------------------------------------------------

struct test_stream {
  direction dir;
  std::vector<std::string> frames;

  std::string bytes() const {
    std::string out;
    for (const auto& f : frames) out += f;
    return out;
  }
  size_t largest_non_streamable() const {
    size_t m = 0;
    for (const auto& f : frames)
      if (!is_streamable(dir, f[0])) m = std::max(m, f.size());
    return m;
  }
};

std::string row_description(int columns) {
  std::string b = u16(static_cast<uint16_t>(columns));
  for (int i = 0; i < columns; ++i) {
    b += cstr("col" + std::to_string(i));
    b += u32(16384) + u16(static_cast<uint16_t>(i + 1));  // table oid, attribute number
    b += u32(i == 0 ? 23 : 25) + u16(i == 0 ? 4 : 0xffff) + u32(0xffffffffu) + u16(0);
  }
  return frame('T', b);
}

std::string data_row(const std::vector<std::optional<std::string>>& columns) {
  std::string b = u16(static_cast<uint16_t>(columns.size()));
  for (const auto& c : columns) b += c ? u32(static_cast<uint32_t>(c->size())) + *c : u32(0xffffffffu);
  return frame('D', b);
}

std::string bytes_of(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 7);
  return s;
}

// A few hundred bytes of what a server says after login and to a query.
test_stream backend_stream() {
  test_stream s{direction::backend, {}};
  s.frames.push_back(frame('S', cstr("client_encoding") + cstr("UTF8")));
  s.frames.push_back(frame('K', u32(4242) + u32(0x5eedf00d)));
  s.frames.push_back(frame('Z', "I"));
  s.frames.push_back(row_description(5));
  s.frames.push_back(data_row({}));  // zero columns
  s.frames.push_back(data_row({std::string("1"), std::string("alice"), std::nullopt, std::string(""),
                               bytes_of(40, 'a')}));
  for (int i = 2; i < 6; ++i)
    s.frames.push_back(data_row({std::to_string(i), bytes_of(i * 5, 'b'), std::string("x"),
                                 std::nullopt, bytes_of(i, 'c')}));
  s.frames.push_back(data_row({std::string("7"), bytes_of(120, 'd'), std::nullopt, std::nullopt,
                               std::string("z")}));
  s.frames.push_back(frame('C', cstr("SELECT 7")));
  s.frames.push_back(frame('N', "SNOTICE" + std::string(1, '\0') + "C00000" + '\0' + "Mhi" + '\0' + '\0'));
  s.frames.push_back(frame('A', u32(4242) + cstr("jobs") + cstr("42")));
  s.frames.push_back(frame('H', std::string(1, '\0') + u16(1) + u16(0)));  // CopyOutResponse
  s.frames.push_back(frame('d', "1\talice\n"));
  s.frames.push_back(frame('d', bytes_of(30, 'e')));
  s.frames.push_back(frame('c', ""));
  s.frames.push_back(frame('C', cstr("COPY 2")));
  s.frames.push_back(frame('Z', "T"));
  return s;
}

// A few hundred bytes of what a client says: simple and extended queries, COPY.
test_stream frontend_stream() {
  test_stream s{direction::frontend, {}};
  s.frames.push_back(frame('Q', cstr("SELECT 1;")));
  s.frames.push_back(frame('P', cstr("s1") + cstr("SELECT abalance FROM pgbench_accounts WHERE aid = $1") +
                                    u16(1) + u32(23)));
  s.frames.push_back(frame('B', cstr("") + cstr("s1") + u16(1) + u16(0) + u16(1) + u32(5) + "12345" +
                                    u16(1) + u16(0)));
  s.frames.push_back(frame('D', "P" + cstr("")));
  s.frames.push_back(frame('E', cstr("") + u32(0)));
  s.frames.push_back(frame('S', ""));
  s.frames.push_back(frame('Q', cstr("COPY t FROM STDIN;")));
  s.frames.push_back(frame('d', "1\talice\n"));
  s.frames.push_back(frame('d', bytes_of(150, 'f')));
  s.frames.push_back(frame('d', "3\tcarol\n"));
  s.frames.push_back(frame('c', ""));
  s.frames.push_back(frame('H', ""));
  s.frames.push_back(frame('C', "S" + cstr("s1")));
  s.frames.push_back(frame('X', ""));
  return s;
}

// ---- feeding at split points ------------------------------------------------------

// Feeds data cut at the given offsets (ascending, inside (0, size)) and checks
// everything the stream promises for a well-formed input.
void feed_and_check(const test_stream& s, const std::vector<size_t>& cuts, size_t buffered_max) {
  const std::string data = s.bytes();
  frame_stream fs(s.dir, frame_bytes_max);
  recording_sink sink;
  size_t at = 0;
  for (size_t i = 0; i <= cuts.size(); ++i) {
    const size_t end = i < cuts.size() ? cuts[i] : data.size();
    const bytes piece = as_bytes(data).subspan(at, end - at);
    sink.fed = piece;
    EXPECT_TRUE(fs.feed(piece, sink)) << "feed " << i;
    EXPECT_LE(fs.buffered_bytes(), buffered_max) << "after feed " << i << " ending at " << end;
    EXPECT_EQ(fs.mid_frame(), sink.streaming()) << "after feed " << i;
    at = end;
  }
  EXPECT_FALSE(fs.desynced());
  EXPECT_EQ(sink.desyncs, 0);
  EXPECT_EQ(fs.buffered_bytes(), 0u);
  EXPECT_FALSE(fs.mid_frame());
  ASSERT_EQ(sink.frames.size(), s.frames.size());

  size_t start = 0;
  for (size_t i = 0; i < s.frames.size(); ++i) {
    const std::string& want = s.frames[i];
    const delivered& got = sink.frames[i];
    const size_t end = start + want.size();
    const bool split = std::any_of(cuts.begin(), cuts.end(), [&](size_t c) { return c > start && c < end; });
    SCOPED_TRACE(testing::Message() << "frame " << i << " '" << want[0] << "' [" << start << ", " << end
                                    << ")" << (split ? " split" : ""));
    EXPECT_EQ(got.type, want[0]);
    EXPECT_TRUE(got.bytes == want) << "reassembled frame differs";
    // Whole when it fits one feed; split streamable frames come in pieces from
    // their header; split non-streamable frames are collected and come whole.
    // A frame that is only a header (an empty CopyData) may come either way,
    // as long as its one piece is also its last.
    const bool pieced = split && is_streamable(s.dir, want[0]);
    if (want.size() > header_bytes) {
      EXPECT_EQ(got.whole, !pieced);
      if (pieced) {
        EXPECT_GE(got.pieces, 2u);
      }
    } else if (!pieced) {
      EXPECT_TRUE(got.whole);
    }
    if (got.whole && !split) {
      EXPECT_TRUE(got.in_place) << "a frame inside one feed must be delivered without a copy";
    }
    start = end;
  }
}

void check_every_split(const test_stream& s) {
  const std::string data = s.bytes();
  const size_t bound = s.largest_non_streamable() + header_bytes;
  feed_and_check(s, {}, bound);  // all in one feed
  for (size_t cut = 1; cut < data.size(); ++cut) {
    SCOPED_TRACE(testing::Message() << "cut at " << cut);
    feed_and_check(s, {cut}, bound);
    if (testing::Test::HasFailure()) return;  // one broken split tells enough
  }
  std::vector<size_t> every;
  for (size_t cut = 1; cut < data.size(); ++cut) every.push_back(cut);
  SCOPED_TRACE("one byte at a time");
  feed_and_check(s, every, bound);
}

TEST(FrameStream, BackendStreamAtEverySplit) {
  const test_stream s = backend_stream();
  ASSERT_GT(s.bytes().size(), 400u);
  check_every_split(s);
}

TEST(FrameStream, FrontendStreamAtEverySplit) {
  const test_stream s = frontend_stream();
  ASSERT_GT(s.bytes().size(), 300u);
  check_every_split(s);
}

// Three feeds: every pair of cuts over a shorter stream.
TEST(FrameStream, FrontendStreamAtEveryPairOfSplits) {
  test_stream s = frontend_stream();
  s.frames.erase(s.frames.begin() + 8);  // the 155-byte CopyData
  const std::string data = s.bytes();
  const size_t bound = s.largest_non_streamable() + header_bytes;
  for (size_t a = 1; a < data.size(); ++a) {
    for (size_t b = a + 1; b < data.size(); ++b) {
      SCOPED_TRACE(testing::Message() << "cuts at " << a << " and " << b);
      feed_and_check(s, {a, b}, bound);
      if (testing::Test::HasFailure()) return;
    }
  }
}

test_stream big_row_stream() {
  test_stream s = backend_stream();
  const std::string big = data_row({std::string("8"), bytes_of(1u << 20, 'g')});
  s.frames.insert(s.frames.end() - 2, big);  // before CommandComplete, ReadyForQuery
  return s;
}

TEST(FrameStream, MebibyteDataRowStreamsFromItsHeader) {
  const test_stream s = big_row_stream();
  const std::string data = s.bytes();
  const size_t bound = s.largest_non_streamable() + header_bytes;
  ASSERT_LT(bound, 1024u);  // the 1 MiB row is never held

  size_t big_start = 0;
  for (size_t i = 0; s.frames[i].size() < (1u << 20); ++i) big_start += s.frames[i].size();
  const size_t big_end = big_start + s.frames[s.frames.size() - 3].size();

  feed_and_check(s, {}, bound);
  // Cuts in and around the big row's header and end, and one in its middle.
  for (size_t d = 0; d < 12; ++d) {
    feed_and_check(s, {big_start - 3 + d}, bound);
    feed_and_check(s, {big_end - 6 + d}, bound);
  }
  feed_and_check(s, {big_start + 2, big_start + 4, big_start + (1u << 19), big_end - 1}, bound);
  // Chunked like a socket would deliver it.
  for (size_t chunk : {size_t{7}, size_t{4096}, size_t{16384}, size_t{65536 + 3}}) {
    SCOPED_TRACE(testing::Message() << "chunks of " << chunk);
    std::vector<size_t> cuts;
    for (size_t c = chunk; c < data.size(); c += chunk) cuts.push_back(c);
    feed_and_check(s, cuts, bound);
  }
}

TEST(FrameStream, MebibyteDataRowOneByteAtATime) {
  const test_stream s = big_row_stream();
  const std::string data = s.bytes();
  frame_stream fs(direction::backend, frame_bytes_max);
  recording_sink sink;
  size_t buffered_peak = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    ASSERT_TRUE(fs.feed(as_bytes(data).subspan(i, 1), sink));
    buffered_peak = std::max(buffered_peak, fs.buffered_bytes());
  }
  EXPECT_LE(buffered_peak, s.largest_non_streamable() + header_bytes);
  ASSERT_EQ(sink.frames.size(), s.frames.size());
  for (size_t i = 0; i < s.frames.size(); ++i) {
    EXPECT_TRUE(sink.frames[i].bytes == s.frames[i]) << i;
    EXPECT_EQ(sink.frames[i].whole, !is_streamable(direction::backend, s.frames[i][0])) << i;
  }
  const delivered& big = sink.frames[s.frames.size() - 3];
  EXPECT_EQ(big.pieces, big.bytes.size() - header_bytes + 1);  // the header, then byte by byte
}

TEST(FrameStream, MidFrameOnlyBetweenPieces) {
  const std::string row = data_row({bytes_of(100, 'h')});
  frame_stream fs(direction::backend, frame_bytes_max);
  recording_sink sink;
  EXPECT_TRUE(fs.feed(as_bytes(row).first(3), sink));
  EXPECT_FALSE(fs.mid_frame());  // only a partial header: nothing delivered yet
  EXPECT_TRUE(sink.frames.empty());
  EXPECT_EQ(fs.buffered_bytes(), 3u);
  EXPECT_TRUE(fs.feed(as_bytes(row).subspan(3, 2), sink));
  EXPECT_TRUE(fs.mid_frame());
  ASSERT_EQ(sink.frames.size(), 1u);
  EXPECT_EQ(sink.frames[0].bytes, row.substr(0, 5));  // the header alone, first
  EXPECT_EQ(fs.buffered_bytes(), 0u);
  EXPECT_TRUE(fs.feed(as_bytes(row).subspan(5, 50), sink));
  EXPECT_TRUE(fs.mid_frame());
  EXPECT_TRUE(fs.feed(as_bytes(row).subspan(55), sink));
  EXPECT_FALSE(fs.mid_frame());
  EXPECT_EQ(sink.frames[0].bytes, row);
  EXPECT_EQ(sink.frames[0].pieces, 3u);
}

// An empty CopyData is a legal 5-byte frame. Split inside its header, it is
// streamed, and its only piece must also be its last.
TEST(FrameStream, EmptyCopyDataSplitInItsHeaderIsFinished) {
  for (direction dir : {direction::frontend, direction::backend}) {
    test_stream s{dir, {frame('d', "before"), frame('d', ""), frame('c', "")}};
    s.frames.push_back(dir == direction::backend ? frame('Z', "I") : frame('S', ""));
    const size_t bound = s.largest_non_streamable() + header_bytes;
    const size_t empty_start = s.frames[0].size();
    for (size_t cut = empty_start + 1; cut < empty_start + header_bytes; ++cut) {
      SCOPED_TRACE(testing::Message() << (dir == direction::backend ? "backend" : "frontend") << ", cut at "
                                      << cut);
      feed_and_check(s, {cut}, bound);
    }
  }
}

// ---- desync ----------------------------------------------------------------------

struct desync_case {
  const char* name;
  direction dir;
  std::vector<std::string> good_before;
  std::string bad;  // at least its header
  const char* error;
};

std::vector<desync_case> desync_cases() {
  const test_stream fe = frontend_stream();
  const test_stream be = backend_stream();
  std::vector<std::string> fe_before(fe.frames.begin(), fe.frames.begin() + 9);  // ends with CopyData
  std::vector<std::string> be_before(be.frames.begin(), be.frames.begin() + 10);  // ends with DataRow
  return {
      {"backend-only type from a client", direction::frontend, fe_before, frame('T', u16(0)),
       "unknown message type"},
      {"frontend-only type from a server", direction::backend, be_before, frame('Q', cstr("x")),
       "unknown message type"},
      {"garbage type byte", direction::backend, be_before, std::string("\xff\0\0\0\x08\0\0\0\0", 9),
       "unknown message type"},
      {"length below 4", direction::frontend, fe_before, "Q" + u32(3) + "x", "invalid message length"},
      {"Sync with a body", direction::frontend, fe_before, frame('S', "x"),
       "invalid message length for its type"},
      {"ReadyForQuery of length 6", direction::backend, be_before, frame('Z', "II"),
       "invalid message length for its type"},
      {"DataRow over frame_bytes_max", direction::backend, be_before, "D" + u32(frame_bytes_max + 1) + u16(1),
       "message exceeds frame_bytes_max"},
      {"CopyData over frame_bytes_max", direction::frontend, fe_before,
       "d" + u32(0x7fffffff) + "copy data", "message exceeds frame_bytes_max"},
      {"Query over frame_bytes_max", direction::frontend, fe_before, "Q" + u32(frame_bytes_max + 1) + "SELE",
       "message exceeds frame_bytes_max"},
  };
}

// Whatever the cuts, frames before the bad header are delivered, on_desync is
// called once, no byte of the bad frame or anything after it is delivered,
// and the stream refuses all later input.
void desync_and_check(const desync_case& c, const std::vector<size_t>& cuts) {
  std::string data;
  for (const auto& f : c.good_before) data += f;
  const size_t bad_header_end = data.size() + header_bytes;
  data += c.bad;
  const std::string after = frame(c.dir == direction::backend ? 'Z' : 'S', c.dir == direction::backend ? "I" : "");
  data += after;  // a well-formed frame behind the bad one
  frame_stream fs(c.dir, frame_bytes_max);
  recording_sink sink;
  size_t at = 0;
  for (size_t i = 0; i <= cuts.size(); ++i) {
    const size_t end = i < cuts.size() ? cuts[i] : data.size();
    const bool ok = fs.feed(as_bytes(data).subspan(at, end - at), sink);
    // The feed that completes the bad header is the one that fails.
    EXPECT_EQ(ok, end < bad_header_end) << "feed " << i << " of [" << at << ", " << end << ")";
    EXPECT_EQ(fs.desynced(), end >= bad_header_end);
    at = end;
  }
  EXPECT_EQ(sink.desyncs, 1);
  EXPECT_EQ(sink.desync_error, c.error);
  EXPECT_EQ(fs.buffered_bytes(), 0u);
  ASSERT_EQ(sink.frames.size(), c.good_before.size());
  for (size_t i = 0; i < c.good_before.size(); ++i) EXPECT_TRUE(sink.frames[i].bytes == c.good_before[i]) << i;
  // Later feeds deliver nothing and do not report again.
  EXPECT_FALSE(fs.feed(as_bytes(after), sink));
  EXPECT_FALSE(fs.feed(as_bytes(data), sink));
  EXPECT_EQ(sink.desyncs, 1);
  EXPECT_EQ(sink.frames.size(), c.good_before.size());
}

TEST(FrameStream, DesyncInOneFeedDeliversWhatCameBefore) {
  for (const desync_case& c : desync_cases()) {
    SCOPED_TRACE(c.name);
    desync_and_check(c, {});
  }
}

TEST(FrameStream, DesyncAtEverySplit) {
  for (const desync_case& c : desync_cases()) {
    size_t size = c.bad.size() + 5;
    for (const auto& f : c.good_before) size += f.size();
    for (size_t cut = 1; cut < size; ++cut) {
      SCOPED_TRACE(testing::Message() << c.name << ", cut at " << cut);
      desync_and_check(c, {cut});
    }
    std::vector<size_t> every;
    for (size_t cut = 1; cut < size; ++cut) every.push_back(cut);
    SCOPED_TRACE(testing::Message() << c.name << ", one byte at a time");
    desync_and_check(c, every);
  }
}

TEST(FrameStream, DesyncAfterAStreamedFrame) {
  // A big DataRow delivered in pieces, then garbage: the row completes, the
  // garbage is refused, mid_frame() is false so an error can still be sent.
  const std::string row = data_row({bytes_of(5000, 'i')});
  frame_stream fs(direction::backend, frame_bytes_max);
  recording_sink sink;
  EXPECT_TRUE(fs.feed(as_bytes(row).first(100), sink));
  EXPECT_TRUE(fs.mid_frame());
  const std::string rest = row.substr(100) + "Q" + u32(8) + "abcd";
  EXPECT_FALSE(fs.feed(as_bytes(rest), sink));
  EXPECT_FALSE(fs.mid_frame());
  EXPECT_TRUE(fs.desynced());
  EXPECT_EQ(sink.desyncs, 1);
  ASSERT_EQ(sink.frames.size(), 1u);
  EXPECT_EQ(sink.frames[0].bytes, row);
}

TEST(FrameStream, OversizedLengthDesyncsBeforeAnyByteIsDelivered) {
  for (direction dir : {direction::frontend, direction::backend}) {
    for (char type : {'d', 'Q', 'D'}) {
      if (!is_known_type(dir, type)) continue;
      SCOPED_TRACE(testing::Message() << "type " << type);
      const std::string huge = std::string(1, type) + u32(1025) + std::string(2000, 'x');
      for (size_t cut : {size_t{1}, size_t{4}, size_t{5}, size_t{6}, size_t{1030}, huge.size()}) {
        frame_stream fs(dir, 1024);
        recording_sink sink;
        const bool first_ok = fs.feed(as_bytes(huge).first(cut), sink);
        EXPECT_EQ(first_ok, cut < header_bytes);
        if (cut < huge.size()) (void)fs.feed(as_bytes(huge).subspan(cut), sink);
        EXPECT_TRUE(sink.frames.empty()) << "cut at " << cut;
        EXPECT_EQ(sink.desyncs, 1);
        EXPECT_EQ(sink.desync_error, "message exceeds frame_bytes_max");
      }
      // Exactly frame_bytes_max is accepted.
      frame_stream fs(dir, 1024);
      recording_sink sink;
      const std::string max_frame = std::string(1, type) + u32(1024) + std::string(1020, '\0');
      EXPECT_TRUE(fs.feed(as_bytes(max_frame), sink));
      EXPECT_EQ(sink.frames.size(), 1u);
    }
  }
}

// ---- the sink stops -----------------------------------------------------------------

TEST(FrameStream, SinkReturningFalseStopsDelivery) {
  const test_stream s = frontend_stream();
  const std::string data = s.bytes();
  for (size_t stop = 1; stop <= s.frames.size(); ++stop) {
    frame_stream fs(direction::frontend, frame_bytes_max);
    recording_sink sink;
    sink.stop_after_frames = stop;
    EXPECT_FALSE(fs.feed(as_bytes(data), sink)) << stop;
    EXPECT_EQ(sink.frames.size(), stop);
    EXPECT_EQ(sink.desyncs, 0);
    EXPECT_FALSE(fs.desynced());
  }
}

TEST(FrameStream, SinkReturningFalseOnAPieceStopsDelivery) {
  const std::string row = data_row({bytes_of(1000, 'j')});
  const std::string data = row + frame('C', cstr("SELECT 1")) + frame('Z', "I");
  frame_stream fs(direction::backend, frame_bytes_max);
  recording_sink sink;
  sink.stop_after_frames = 1;
  EXPECT_FALSE(fs.feed(as_bytes(data).first(10), sink));  // first piece refused
  ASSERT_EQ(sink.frames.size(), 1u);
  EXPECT_EQ(sink.frames[0].bytes, row.substr(0, 10));
  EXPECT_FALSE(sink.frames[0].whole);
}

TEST(FrameStream, SinkReturningFalseOnACollectedFrameStopsDelivery) {
  // A Query split across feeds is collected, then delivered whole; the sink
  // stops there and the Sync behind it in the same feed is not delivered.
  const std::string q = frame('Q', cstr("SELECT 1"));
  const std::string data = q + frame('S', "");
  frame_stream fs(direction::frontend, frame_bytes_max);
  recording_sink sink;
  sink.stop_after_frames = 1;
  EXPECT_TRUE(fs.feed(as_bytes(data).first(7), sink));
  EXPECT_FALSE(fs.feed(as_bytes(data).subspan(7), sink));
  ASSERT_EQ(sink.frames.size(), 1u);
  EXPECT_EQ(sink.frames[0].bytes, q);
  EXPECT_TRUE(sink.frames[0].whole);
}

TEST(FrameStream, BufferedBytesAreBoundedByTheLargestCollectedFrame) {
  // A 100 KiB Query collected one 1 KiB feed at a time holds exactly what has
  // arrived; once delivered, nothing is held.
  const std::string q = frame('Q', std::string(100 * 1024, 'q') + '\0');
  frame_stream fs(direction::frontend, frame_bytes_max);
  recording_sink sink;
  for (size_t at = 0; at < q.size(); at += 1024) {
    const size_t n = std::min<size_t>(1024, q.size() - at);
    EXPECT_TRUE(fs.feed(as_bytes(q).subspan(at, n), sink));
    if (at + n < q.size()) {
      EXPECT_EQ(fs.buffered_bytes(), at + n);
    }
  }
  EXPECT_EQ(fs.buffered_bytes(), 0u);
  ASSERT_EQ(sink.frames.size(), 1u);
  EXPECT_TRUE(sink.frames[0].bytes == q);
}

}  // namespace
}  // namespace agentgate::pg
