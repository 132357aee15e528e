#pragma once
// Splits one direction of a PostgreSQL byte stream into frames.
//
// A frame that is wholly inside one feed() is handed to the sink in place,
// without a copy. A frame split across feeds is collected (bounded by
// frame_bytes_max) unless its type is streamable (DataRow, CopyData): those
// go to the sink piece by piece from their header on, so a 1 GB row never
// sits in memory. After a desync the stream refuses all further input: it
// never reads payload as lengths again.

#include <string>

#include "protocols/postgres/codec.h"

namespace agentgate::pg {

class frame_sink {
 public:
  virtual ~frame_sink() = default;
  // A whole frame, header included. Return false to stop feeding.
  virtual bool on_frame(const frame_header& header, bytes frame) = 0;
  // A piece of a streamed frame: the first piece starts with the header, the
  // last one ends the frame. Return false to stop feeding.
  virtual bool on_frame_piece(const frame_header& header, bytes piece, bool first, bool last) = 0;
  virtual void on_desync(const char* error) = 0;
};

class frame_stream {
 public:
  frame_stream(direction dir, uint32_t frame_bytes_max, size_t held_bytes_max = 1u << 20)
      : dir_(dir), frame_bytes_max_(frame_bytes_max), held_bytes_max_(held_bytes_max) {}

  // Streamable frames up to this many bytes (header included) are collected
  // and delivered whole, like any other frame; bigger ones still stream.
  // Masking sets it: a row must be whole to be rewritten. 0: stream all.
  void set_collect_bytes_max(size_t n) { collect_bytes_max_ = n; }

  // Feeds bytes; false if the sink stopped or the stream desynced.
  bool feed(bytes data, frame_sink& sink);

  // True between the first and the last piece of a frame already delivered
  // in part: nothing else may be injected into the peer's stream then.
  bool mid_frame() const { return stream_left_ > 0; }
  bool desynced() const { return desynced_; }
  size_t buffered_bytes() const { return partial_.size() + held_.size(); }

  // Called by the sink from on_frame: no frame after this one is delivered
  // until resume(). Bytes keep arriving and are kept, unframed, up to
  // held_bytes_max; feed() returns false (held_overflow()) beyond that.
  // Used to hold a client's messages while a command waits for approval.
  void pause() { paused_ = true; }
  bool paused() const { return paused_; }
  bool held_overflow() const { return held_overflow_; }
  // Delivers what arrived meanwhile, then carries on. False as for feed().
  bool resume(frame_sink& sink);

 private:
  bool feed_partial(bytes& data, frame_sink& sink);
  bool hold(bytes data);
  bool desync(frame_sink& sink, const char* error);

  direction dir_;
  uint32_t frame_bytes_max_;
  bool desynced_ = false;
  std::string partial_;      // an incomplete header, or a whole non-streamed frame in the making
  frame_header current_;     // the frame being streamed
  uint64_t stream_left_ = 0; // bytes of current_ not yet delivered
  size_t held_bytes_max_;
  size_t collect_bytes_max_ = 0;
  bool paused_ = false;
  bool held_overflow_ = false;
  std::string held_;         // raw bytes that arrived while paused, not yet framed
};

}  // namespace agentgate::pg
