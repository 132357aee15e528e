#include "protocols/postgres/frame_stream.h"

#include <algorithm>

namespace agentgate::pg {
namespace {

constexpr size_t kept_capacity_bytes = 64 * 1024;

bytes as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

bool frame_stream::desync(frame_sink& sink, const char* error) {
  desynced_ = true;
  partial_.clear();
  sink.on_desync(error);
  return false;
}

bool frame_stream::hold(bytes data) {
  if (held_.size() + data.size() > held_bytes_max_) {
    held_overflow_ = true;
    return false;
  }
  held_.append(reinterpret_cast<const char*>(data.data()), data.size());
  return true;
}

bool frame_stream::resume(frame_sink& sink) {
  paused_ = false;
  std::string held;
  held.swap(held_);
  return feed(as_bytes(held), sink);
}

bool frame_stream::feed(bytes data, frame_sink& sink) {
  if (desynced_) return false;
  while (!data.empty()) {
    if (paused_) return hold(data);
    if (stream_left_ > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(stream_left_, data.size()));
      stream_left_ -= n;
      if (!sink.on_frame_piece(current_, data.first(n), false, stream_left_ == 0)) return false;
      data = data.subspan(n);
      continue;
    }
    if (!partial_.empty()) {
      if (!feed_partial(data, sink)) return false;
      continue;
    }
    const header_result h = decode_header(dir_, data, frame_bytes_max_);
    if (h.status == frame_status::desync) return desync(sink, h.error);
    if (h.status == frame_status::need_more) {
      partial_.assign(reinterpret_cast<const char*>(data.data()), data.size());
      return true;
    }
    const size_t frame_bytes = h.header.frame_bytes();
    if (data.size() >= frame_bytes) {
      if (!sink.on_frame(h.header, data.first(frame_bytes))) return false;
      data = data.subspan(frame_bytes);
      continue;
    }
    if (is_streamable(dir_, h.header.type) && frame_bytes > collect_bytes_max_) {
      current_ = h.header;
      stream_left_ = frame_bytes - data.size();
      return sink.on_frame_piece(current_, data, true, false);
    }
    partial_.assign(reinterpret_cast<const char*>(data.data()), data.size());
    return true;
  }
  return true;
}

// Continues a frame whose start is in partial_; consumes from data.
bool frame_stream::feed_partial(bytes& data, frame_sink& sink) {
  if (partial_.size() < header_bytes) {
    const size_t n = std::min(header_bytes - partial_.size(), data.size());
    partial_.append(reinterpret_cast<const char*>(data.data()), n);
    data = data.subspan(n);
    if (partial_.size() < header_bytes) return true;
  }
  const header_result h = decode_header(dir_, as_bytes(partial_), frame_bytes_max_);
  if (h.status == frame_status::desync) return desync(sink, h.error);
  const size_t frame_bytes = h.header.frame_bytes();
  if (is_streamable(dir_, h.header.type) && frame_bytes > collect_bytes_max_ && partial_.size() == header_bytes) {
    // Only the header was held back; the body streams from here.
    current_ = h.header;
    stream_left_ = frame_bytes - header_bytes;
    // An empty CopyData is whole once its header is: first and last at once.
    const bool ok = sink.on_frame_piece(current_, as_bytes(partial_), true, stream_left_ == 0);
    partial_.clear();
    return ok;
  }
  const size_t n = std::min(frame_bytes - partial_.size(), data.size());
  partial_.append(reinterpret_cast<const char*>(data.data()), n);
  data = data.subspan(n);
  if (partial_.size() < frame_bytes) return true;
  const bool ok = sink.on_frame(h.header, as_bytes(partial_));
  partial_.clear();
  // Keep a small buffer for the next split frame; give a big one back.
  if (partial_.capacity() > kept_capacity_bytes) partial_.shrink_to_fit();
  return ok;
}

}  // namespace agentgate::pg
