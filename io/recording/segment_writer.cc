#include "io/recording/segment_writer.h"

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <ctime>

#include "core/clock.h"
#include "core/log.h"
#include "io/recording/crc32c.h"
#include "io/recording/format.h"

namespace agentgate::recording {
namespace {

constexpr size_t segment_name_digits = 20;
constexpr std::string_view segment_suffix = ".seg";

}  // namespace

std::string segment_file_name(uint64_t base_offset) {
  char buf[32];
  snprintf(buf, sizeof buf, "%020" PRIu64 ".seg", base_offset);
  return buf;
}

bool parse_segment_file_name(std::string_view name, uint64_t& base_offset) {
  if (name.size() != segment_name_digits + segment_suffix.size() || !name.ends_with(segment_suffix)) return false;
  uint64_t v = 0;
  for (size_t i = 0; i < segment_name_digits; ++i) {
    const char c = name[i];
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  base_offset = v;
  return true;
}

std::string shard_dir_name(int shard) { return "shard-" + std::to_string(shard); }

segment_writer::segment_writer(const writer_options& options, std::unique_ptr<file_ops> ops, damage_fn report)
    : options_(options), ops_(std::move(ops)), report_(std::move(report)) {
  options_.buffer_bytes = std::max<size_t>(options_.buffer_bytes, 2 * block_bytes);
  options_.segment_bytes = std::max<uint64_t>(options_.segment_bytes, block_bytes);
  buf_.reserve(options_.buffer_bytes);
}

segment_writer::~segment_writer() {
  if (available_) (void)flush();
  while (!syncs_.empty()) reap(true);
}

result<std::unique_ptr<segment_writer>> segment_writer::open(const writer_options& options, int64_t now_ms,
                                                             std::unique_ptr<file_ops> ops, damage_fn report) {
  if (options.dir.empty()) return status(errc::invalid_argument, "recording: no directory");
  if (!ops) ops = make_posix_file_ops();
  std::unique_ptr<segment_writer> w(new segment_writer(options, std::move(ops), std::move(report)));
  w->now_ms_ = now_ms;
  w->last_sync_ms_ = now_ms;
  if (status s = w->recover_dir(); !s) return s;
  const uint64_t base = w->segments_.empty() ? 0 : w->segments_.back().base + w->segments_.back().bytes;
  if (status s = w->open_segment(base); !s) return s;
  w->start_offset_ = base;
  w->probe_.synced = base;
  w->sync_requested_ = base;
  w->available_ = true;
  return w;
}

status segment_writer::recover_dir() {
  if (status s = ops_->make_dir(options_.dir); !s) return s;
  result<std::vector<dir_entry>> entries = ops_->list_dir(options_.dir);
  if (!entries) return entries.error();
  std::vector<std::pair<uint64_t, dir_entry>> found;
  for (dir_entry& e : *entries) {
    uint64_t base = 0;
    if (parse_segment_file_name(e.name, base)) found.emplace_back(base, std::move(e));
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  bool dir_changed = false;
  for (auto& [base, entry] : found) {
    const std::string path = options_.dir + "/" + entry.name;
    result<std::unique_ptr<segment_file>> file = ops_->open(path, open_mode::read_write);
    if (!file) return file.error();
    uint64_t damage_end = 0;
    log_reader reader(**file, [&](const damage& d) {
      AG_WARN("recording: %s at offset %" PRIu64 ": %s, %" PRIu64 " bytes %s", d.path.c_str(), d.offset,
              d.reason.c_str(), d.bytes, d.torn_tail ? "of torn tail cut" : "lost");
      probe_.damaged_bytes += d.bytes;
      damage_end = std::max(damage_end, d.offset + d.bytes);
      if (report_) report_(d);
    });
    log_record rec;
    while (reader.next(rec)) {
    }
    if (!reader.io_error().is_ok()) return reader.io_error();
    uint64_t bytes = reader.file_bytes();
    if (damage_end >= bytes && reader.valid_end() < bytes) {
      if (status s = (*file)->truncate(reader.valid_end()); !s) return s;
      if (status s = (*file)->sync(); !s) return s;
      bytes = reader.valid_end();
      dir_changed = true;
    }
    if (bytes == 0) {
      // Nothing whole in it: its name (base offset) is taken by the next segment.
      file->reset();
      if (status s = ops_->remove(path); !s) return s;
      dir_changed = true;
      continue;
    }
    segments_.push_back(segment_info{base, bytes, path, entry.mtime_ms});
  }
  if (dir_changed) {
    if (status s = ops_->sync_dir(options_.dir); !s) return s;
  }
  return status::ok();
}

status segment_writer::open_segment(uint64_t base) {
  const std::string path = options_.dir + "/" + segment_file_name(base);
  result<std::unique_ptr<segment_file>> file = ops_->open(path, open_mode::create_new);
  if (!file) return file.error();
  active_ = std::shared_ptr<segment_file>(std::move(*file));
  base_ = base;
  file_pos_ = 0;
  buf_.clear();
  segments_.push_back(segment_info{base, 0, path, 0});
  std::string header;
  encode_file_header(file_header{format_version, options_.shard, base, unix_us()}, header);
  (void)frame(header);  // into the empty buffer: cannot fail
  const iovec v{buf_.data(), buf_.size()};
  status written = active_->append(std::span<const iovec>(&v, 1), 0);
  if (!written) {
    ++probe_.write_errors;
    active_.reset();
    segments_.pop_back();
    buf_.clear();
    (void)ops_->remove(path);
    return written;
  }
  file_pos_ = buf_.size();
  buf_.clear();
  segments_.back().bytes = file_pos_;
  probe_.appended = std::max(probe_.appended, base_ + file_pos_);
  probe_.written = base_ + file_pos_;
  ++probe_.segments_created;
  // The new name must be durable before the data in it counts as synced.
  if (options_.fsync_always) {
    if (status s = ops_->sync_dir(options_.dir); !s) return s;
  } else {
    result<std::unique_ptr<segment_file>> dir = ops_->open(options_.dir, open_mode::read_only);
    if (!dir) return dir.error();
    submit_sync(std::shared_ptr<segment_file>(std::move(*dir)), base);
  }
  return status::ok();
}

// LevelDB's log::Writer::AddRecord, into buf_.
bool segment_writer::frame(std::string_view payload) {
  bool begin = true;
  do {
    uint64_t in_block = segment_pos() % block_bytes;
    const uint64_t leftover = block_bytes - in_block;
    if (leftover < header_bytes) {
      if (buf_.size() + leftover > options_.buffer_bytes && !write_out()) return false;
      buf_.append(leftover, '\0');
      in_block = 0;
    }
    const size_t avail = block_bytes - in_block - header_bytes;
    const size_t n = std::min(payload.size(), avail);
    const bool end = n == payload.size();
    const frame_type t = begin && end ? frame_type::full
                         : begin      ? frame_type::first
                         : end        ? frame_type::last
                                      : frame_type::middle;
    if (buf_.size() + header_bytes + n > options_.buffer_bytes && !write_out()) return false;
    char h[header_bytes];
    h[4] = static_cast<char>(n & 0xff);
    h[5] = static_cast<char>(n >> 8);
    h[6] = static_cast<char>(t);
    const uint32_t crc = crc_mask(crc32c_extend(crc32c(h + 6, 1), payload.data(), n));
    memcpy(h, &crc, 4);
    buf_.append(h, header_bytes);
    buf_.append(payload.data(), n);
    payload.remove_prefix(n);
    begin = false;
  } while (!payload.empty());
  return true;
}

bool segment_writer::write_out() {
  if (buf_.empty()) return true;
  if (!active_) return false;
  const iovec v{buf_.data(), buf_.size()};
  if (status s = active_->append(std::span<const iovec>(&v, 1), file_pos_); !s) {
    ++probe_.write_errors;
    fail(s.message());
    return false;
  }
  file_pos_ += buf_.size();
  probe_.bytes_written += buf_.size();
  probe_.written = base_ + file_pos_;
  segments_.back().bytes = file_pos_;
  buf_.clear();
  return true;
}

void segment_writer::submit_sync(std::shared_ptr<segment_file> file, uint64_t target) {
  if (syncs_.size() >= sync_depth_max) reap(false);
  while (syncs_.size() >= sync_depth_max) reap(true);  // the disk is far behind: wait
  sync_entry e;
  e.cookie = next_cookie_++;
  e.target = target;
  e.events = events_total_;
  e.file = std::move(file);
  if (status s = ops_->sync_submit(*e.file, e.cookie); !s) {
    ++probe_.sync_errors;
    fail(s.message());
    return;
  }
  syncs_.push_back(std::move(e));
  sync_requested_ = std::max(sync_requested_, target);
  last_sync_ms_ = now_ms_;
}

void segment_writer::sync_now() {
  if (!write_out()) return;
  while (!syncs_.empty()) reap(true);
  if (!available_ || probe_.synced >= probe_.written) return;
  if (status s = active_->sync(); !s) {
    ++probe_.sync_errors;
    fail(s.message());
    return;
  }
  probe_.bytes_synced += probe_.written - probe_.synced;
  probe_.synced = sync_requested_ = probe_.written;
  events_synced_ = events_total_;
}

void segment_writer::reap(bool wait) {
  if (syncs_.empty()) return;
  completions_.clear();
  ops_->reap_syncs(completions_, wait);
  for (sync_completion& c : completions_) {
    for (sync_entry& e : syncs_) {
      if (e.cookie != c.cookie) continue;
      e.done = true;
      e.result = std::move(c.result);
      break;
    }
  }
  // The watermark moves in submission order: a sync that finished early says
  // nothing about the bytes of one submitted before it.
  while (!syncs_.empty() && syncs_.front().done) {
    sync_entry& e = syncs_.front();
    if (!e.result.is_ok()) {
      ++probe_.sync_errors;
      fail(e.result.message());
    } else if (available_ && e.target > probe_.synced) {
      probe_.bytes_synced += e.target - probe_.synced;
      probe_.synced = e.target;
      events_synced_ = std::max(events_synced_, e.events);
    }
    syncs_.pop_front();
  }
}

bool segment_writer::roll() {
  if (!write_out()) return false;
  const uint64_t next_base = base_ + file_pos_;
  segments_.back().closed_wall_ms = unix_us() / 1000;
  if (options_.fsync_always) {
    sync_now();
    if (!available_) return false;
  } else {
    submit_sync(active_, probe_.written);
  }
  active_.reset();
  if (status s = open_segment(next_base); !s) {
    fail("cannot start a new segment: " + s.message());
    return false;
  }
  return true;
}

bool segment_writer::append(std::string_view payload, bool durable) {
  if (!available_) {
    ++probe_.events_unrecorded;
    return false;
  }
  if (!frame(payload)) {
    ++probe_.events_unrecorded;
    return false;
  }
  ++events_total_;
  ++probe_.events;
  probe_.bytes_appended += payload.size();
  probe_.appended = base_ + segment_pos();
  const uint64_t record_end = probe_.appended;
  if (segment_pos() >= options_.segment_bytes) {
    // With fsync_always the record counts only once synced: written is not
    // enough (a roll whose sync failed used to report it recorded).
    if (!roll()) return !options_.fsync_always && probe_.written >= record_end;
  }
  if (options_.fsync_always) {
    if (durable) sync_now();
    return available_ && (!durable || probe_.synced >= record_end);
  }
  if (options_.fsync_bytes > 0 && probe_.written - sync_requested_ >= options_.fsync_bytes)
    submit_sync(active_, probe_.written);
  reap(false);
  return true;
}

void segment_writer::poll(int64_t now_ms) {
  now_ms_ = now_ms;
  reap(false);
  if (available_) {
    if (write_out() && probe_.written > sync_requested_) {
      if (options_.fsync_always) {
        sync_now();
      } else if (now_ms - last_sync_ms_ >= static_cast<int64_t>(options_.fsync_interval_ms) ||
                 (options_.fsync_bytes > 0 && probe_.written - sync_requested_ >= options_.fsync_bytes)) {
        submit_sync(active_, probe_.written);
      }
    }
  } else if (now_ms >= next_recover_ms_) {
    try_recover();
  }
  apply_retention();
}

status segment_writer::flush() {
  if (!available_) return status(errc::io, failure_reason_);
  sync_now();
  if (!available_) return status(errc::io, failure_reason_);
  return status::ok();
}

void segment_writer::fail(const std::string& reason) {
  if (!available_) return;
  available_ = false;
  failure_reason_ = "recording unavailable: " + reason;
  AG_WARN("recording: shard %d: %s", options_.shard, failure_reason_.c_str());
  // Whatever was not known to be on disk may not be.
  probe_.events_unrecorded += events_total_ - events_synced_;
  events_synced_ = events_total_;
  buf_.clear();
  next_recover_ms_ = now_ms_ + options_.recover_interval_ms;
}

void segment_writer::try_recover() {
  next_recover_ms_ = now_ms_ + options_.recover_interval_ms;
  reap(false);
  if (!syncs_.empty()) return;  // a sync of the failed file still runs: later
  if (active_) {
    // Cut whatever part of a record the failure left at the tail.
    uint64_t damage_end = 0;
    log_reader reader(*active_, [&](const damage& d) {
      probe_.damaged_bytes += d.bytes;
      damage_end = std::max(damage_end, d.offset + d.bytes);
      if (report_) report_(d);
    });
    log_record rec;
    while (reader.next(rec)) {
    }
    if (!reader.io_error().is_ok()) return;
    uint64_t bytes = reader.file_bytes();
    if (damage_end >= bytes && reader.valid_end() < bytes) {
      if (!active_->truncate(reader.valid_end())) return;
      bytes = reader.valid_end();
    }
    segments_.back().bytes = bytes;
    segments_.back().closed_wall_ms = unix_us() / 1000;
    file_pos_ = bytes;
    active_.reset();
  }
  // Offsets only grow: skip what was appended and lost.
  const uint64_t base = std::max(base_ + file_pos_, probe_.appended);
  if (status s = open_segment(base); !s) {
    AG_DEBUG("recording: shard %d: still unavailable: %s", options_.shard, s.message().c_str());
    return;
  }
  probe_.synced = sync_requested_ = base;
  events_synced_ = events_total_;
  available_ = true;
  failure_reason_.clear();
  ++probe_.recoveries;
  AG_WARN("recording: shard %d: recording again, in %s", options_.shard, segments_.back().path.c_str());
}

void segment_writer::apply_retention() {
  const retention_options& r = options_.retention;
  if (r.hours == 0 && r.bytes == 0) return;
  uint64_t total = 0;
  for (const segment_info& s : segments_) total += s.bytes;
  const int64_t now_wall_ms = unix_us() / 1000;
  const int64_t max_age_ms = static_cast<int64_t>(r.hours) * 3600 * 1000;
  while (segments_.size() > 1) {
    const segment_info& oldest = segments_.front();
    const bool too_old = r.hours > 0 && now_wall_ms - oldest.closed_wall_ms > max_age_ms;
    const bool too_big = r.bytes > 0 && total > r.bytes;
    if (!too_old && !too_big) break;
    if (status s = ops_->remove(oldest.path); !s) {
      AG_WARN("recording: shard %d: retention: %s", options_.shard, s.message().c_str());
      break;
    }
    total -= oldest.bytes;
    ++probe_.segments_removed;
    segments_.pop_front();
  }
}

}  // namespace agentgate::recording
