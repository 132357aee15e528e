#include "io/recording/log_reader.h"

#include <algorithm>
#include <cstring>

#include "io/recording/crc32c.h"
#include "io/recording/format.h"

namespace agentgate::recording {
namespace {

constexpr size_t read_chunk_bytes = 32 * block_bytes;  // 1 MiB, whole blocks

uint32_t load32(const char* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;  // little-endian, as written (x86)
}

}  // namespace

log_reader::log_reader(segment_file& file, damage_fn report) : file_(file), report_(std::move(report)) {
  result<uint64_t> size = file_.size();
  if (!size) {
    io_error_ = size.error();
    finished_ = true;
    return;
  }
  file_bytes_ = *size;
  buf_.resize(read_chunk_bytes);
}

bool log_reader::fill(uint64_t block_start) {
  buf_start_ = block_start;
  buf_len_ = 0;
  const size_t want = static_cast<size_t>(std::min<uint64_t>(read_chunk_bytes, file_bytes_ - block_start));
  result<size_t> got = file_.read(block_start, std::span<char>(buf_.data(), want));
  if (!got) {
    io_error_ = got.error();
    return false;
  }
  buf_len_ = *got;
  // The file shrank under us (retention or a concurrent truncate): end there.
  if (buf_len_ < want) file_bytes_ = block_start + buf_len_;
  return true;
}

log_reader::physical log_reader::read_physical(uint8_t& type, std::string_view& data, uint64_t& at,
                                               const char*& why) {
  for (;;) {
    if (pos_ >= file_bytes_) return physical::end;
    const uint64_t block_start = pos_ - pos_ % block_bytes;
    const uint64_t in_block = pos_ - block_start;
    if (block_bytes - in_block < header_bytes) {  // the zero-filled trailer
      pos_ = std::min(block_start + block_bytes, file_bytes_);
      continue;
    }
    if (pos_ < buf_start_ || pos_ >= buf_start_ + buf_len_) {
      if (!fill(block_start)) return physical::end;
      if (pos_ >= file_bytes_) return physical::end;
    }
    const uint64_t block_end = std::min(block_start + block_bytes, file_bytes_);
    const uint64_t remaining = block_end - pos_;
    at = pos_;
    if (remaining < header_bytes) {
      why = "header cut short by end of file";
      pos_ = file_bytes_;
      return physical::bad;
    }
    const char* h = buf_.data() + (pos_ - buf_start_);
    const uint32_t masked = load32(h);
    const uint32_t length = static_cast<uint8_t>(h[4]) | (static_cast<uint32_t>(static_cast<uint8_t>(h[5])) << 8);
    type = static_cast<uint8_t>(h[6]);
    if (type == 0 && length == 0 && masked == 0) {
      why = "zero-filled";
      pos_ = block_start + block_bytes;
      return physical::bad;
    }
    if (header_bytes + length > remaining) {
      if (block_end == file_bytes_ && in_block + header_bytes + length <= block_bytes) {
        why = "record cut short by end of file";
        pos_ = file_bytes_;
      } else {
        why = "bad record length";
        pos_ = block_start + block_bytes;
      }
      return physical::bad;
    }
    const uint32_t crc = crc32c_extend(crc32c(h + 6, 1), h + header_bytes, length);
    if (crc != crc_unmask(masked)) {
      // A write torn by a crash leaves zeros where its pages did not land;
      // a mismatch in a record that does not end in zeros is corruption.
      bool zeros = length > 0 && h[header_bytes + length - 1] == '\0';
      for (const char* z = h + header_bytes + length; zeros && z < buf_.data() + (block_end - buf_start_); ++z)
        zeros = *z == '\0';
      why = zeros ? "checksum mismatch (zero-filled end)" : "checksum mismatch";
      pos_ = block_start + block_bytes;
      return physical::bad;
    }
    if (type == 0 || type > frame_type_max) {
      why = "unknown record type";
      pos_ = block_start + block_bytes;
      return physical::bad;
    }
    data = std::string_view(h + header_bytes, length);
    pos_ += header_bytes + length;
    return physical::record;
  }
}

void log_reader::mark_damage(uint64_t start, const char* reason) {
  if (damage_pending_) return;
  damage_pending_ = true;
  damage_followed_ = false;
  damage_not_torn_ = false;
  damage_start_ = start;
  damage_reason_ = reason;
}

void log_reader::close_damage(uint64_t at) {
  if (!damage_pending_) return;
  damage_pending_ = false;
  corrupt_bytes_ += at - damage_start_;
  if (report_) report_(damage{file_.path(), damage_start_, at - damage_start_, damage_reason_, false});
}

void log_reader::finish() {
  finished_ = true;
  if (!io_error_.is_ok()) return;  // an unread rest is not damage
  if (in_fragment_) {
    mark_damage(fragment_start_, "record cut short by end of file");
    in_fragment_ = false;
  }
  if (!damage_pending_) return;
  damage_pending_ = false;
  damage d{file_.path(), damage_start_, file_bytes_ - damage_start_, damage_reason_,
           !damage_followed_ && !damage_not_torn_};
  (d.torn_tail ? torn_bytes_ : corrupt_bytes_) += d.bytes;
  if (report_) report_(d);
}

bool log_reader::next(log_record& out) {
  while (!finished_) {
    uint8_t type = 0;
    std::string_view data;
    uint64_t at = 0;
    const char* why = "";
    switch (read_physical(type, data, at, why)) {
      case physical::end:
        finish();
        return false;
      case physical::bad:
        if (in_fragment_) {
          mark_damage(fragment_start_, why);
          in_fragment_ = false;
        } else {
          mark_damage(at, why);
        }
        if (strcmp(why, "checksum mismatch") == 0 || strcmp(why, "bad record length") == 0 ||
            strcmp(why, "unknown record type") == 0)
          damage_not_torn_ = true;
        continue;
      case physical::record:
        break;
    }
    const auto t = static_cast<frame_type>(type);
    if (t == frame_type::full || t == frame_type::first) {
      if (in_fragment_) {
        mark_damage(fragment_start_, "record without its last fragment");
        in_fragment_ = false;
      }
      close_damage(at);
      if (t == frame_type::full) {
        valid_end_ = pos_;
        ++records_;
        out.offset = at;
        out.payload = data;
        return true;
      }
      in_fragment_ = true;
      fragment_start_ = at;
      fragments_.assign(data);
      continue;
    }
    if (!in_fragment_) {  // MIDDLE or LAST whose start was lost
      if (damage_pending_) {
        damage_followed_ = true;
      } else {
        mark_damage(at, "fragment without its first part");
        damage_followed_ = true;
      }
      continue;
    }
    if (data.size() > record_bytes_max - fragments_.size()) {
      mark_damage(fragment_start_, "record larger than the reader's bound");
      damage_followed_ = true;
      in_fragment_ = false;
      fragments_.clear();
      continue;
    }
    fragments_.append(data);
    if (t == frame_type::last) {
      in_fragment_ = false;
      valid_end_ = pos_;
      ++records_;
      out.offset = fragment_start_;
      out.payload = fragments_;
      return true;
    }
  }
  return false;
}

}  // namespace agentgate::recording
