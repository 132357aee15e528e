#pragma once
// Reads the records of one segment file back (docs/recording-format.md):
// used by recovery, `agentgate recordings verify` and replay. Read-only.
//
// Damage is reported, never returned as data: a record is yielded only if
// every fragment's CRC matched and the fragments chained FIRST..LAST. When
// a bad fragment is found the rest of its block is skipped (lengths in it
// cannot be trusted) and reading resumes at the next block. Damage with
// nothing valid after it that a crash can leave (EOF inside a header or
// fragment, a zero-filled tail, a fragment whose bytes end in zeros) is a
// torn tail; any other damage (followed by a valid fragment, or a checksum
// mismatch, bad length or type in bytes that are not zeroed) is corruption.
//
// Bounded memory: one 1 MiB read buffer plus one logical record, which is
// at most record_bytes_max.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "io/recording/file_ops.h"

namespace agentgate::recording {

struct damage {
  std::string path;
  uint64_t offset = 0;  // in the file
  uint64_t bytes = 0;   // lost
  std::string reason;
  bool torn_tail = false;
};
using damage_fn = std::function<void(const damage&)>;

struct log_record {
  uint64_t offset = 0;  // in the file, of the record's first fragment
  std::string_view payload;  // valid until the next call to next()
};

class log_reader {
 public:
  // report may be empty. The file must outlive the reader.
  log_reader(segment_file& file, damage_fn report);
  log_reader(const log_reader&) = delete;
  log_reader& operator=(const log_reader&) = delete;

  // The next whole record; false at the end of the file or on a read error.
  bool next(log_record& out);

  // After next() returned false:
  const status& io_error() const { return io_error_; }
  uint64_t file_bytes() const { return file_bytes_; }
  // In-file end of the last whole record: where a damaged tail is cut.
  uint64_t valid_end() const { return valid_end_; }
  uint64_t torn_bytes() const { return torn_bytes_; }
  uint64_t corrupt_bytes() const { return corrupt_bytes_; }
  uint64_t records() const { return records_; }

 private:
  enum class physical { record, bad, end };
  physical read_physical(uint8_t& type, std::string_view& data, uint64_t& at, const char*& why);
  bool fill(uint64_t block_start);
  void mark_damage(uint64_t start, const char* reason);
  void close_damage(uint64_t at);
  void finish();

  segment_file& file_;
  damage_fn report_;
  status io_error_;
  uint64_t file_bytes_ = 0;
  uint64_t pos_ = 0;
  std::string buf_;
  uint64_t buf_start_ = 0;
  size_t buf_len_ = 0;
  bool finished_ = false;

  bool in_fragment_ = false;
  uint64_t fragment_start_ = 0;
  std::string fragments_;

  bool damage_pending_ = false;
  bool damage_followed_ = false;  // a valid fragment came after the damage
  bool damage_not_torn_ = false;  // a bad fragment no crash leaves (bad CRC on non-zero bytes, bad length or type)
  uint64_t damage_start_ = 0;
  const char* damage_reason_ = "";

  uint64_t valid_end_ = 0;
  uint64_t torn_bytes_ = 0;
  uint64_t corrupt_bytes_ = 0;
  uint64_t records_ = 0;
};

}  // namespace agentgate::recording
