#pragma once
// All file I/O of the recording goes through this interface, so tests can
// lose unsynced bytes, fail writes with ENOSPC/EIO and corrupt files on
// purpose (tests/io/memory_file_ops.h), as LevelDB's Env does.
//
// Owned by one shard (each segment writer has its own file_ops, hence its own
// io_uring); not thread-safe.

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace agentgate::recording {

class segment_file {
 public:
  virtual ~segment_file() = default;
  // Writes all of iov at offset (pwritev, retried on short writes) or fails.
  virtual status append(std::span<const iovec> iov, uint64_t offset) = 0;
  // Reads up to out.size() bytes at offset; fewer only at end of file.
  virtual result<size_t> read(uint64_t offset, std::span<char> out) = 0;
  // Blocking fdatasync.
  virtual status sync() = 0;
  virtual status truncate(uint64_t size) = 0;
  virtual result<uint64_t> size() = 0;
  virtual const std::string& path() const = 0;
};

struct dir_entry {
  std::string name;
  uint64_t bytes = 0;
  int64_t mtime_ms = 0;
};

// A finished asynchronous sync: the cookie given to sync_submit and how it went.
struct sync_completion {
  uint64_t cookie = 0;
  status result;
};

enum class open_mode { read_only, read_write, create_new };

class file_ops {
 public:
  virtual ~file_ops() = default;
  virtual result<std::unique_ptr<segment_file>> open(const std::string& path, open_mode mode) = 0;
  virtual result<std::vector<dir_entry>> list_dir(const std::string& dir) = 0;  // regular files only
  virtual status make_dir(const std::string& dir) = 0;                          // ok if it exists
  virtual status remove(const std::string& path) = 0;
  // Makes the directory's entries (new or removed files) durable. Blocking.
  virtual status sync_dir(const std::string& dir) = 0;
  // Starts an fdatasync of `file` that completes later, reported by
  // reap_syncs. `file` must stay open until then. At most sync_depth_max in flight.
  virtual status sync_submit(segment_file& file, uint64_t cookie) = 0;
  // Non-blocking: appends finished syncs to out; with wait, blocks until at
  // least one finishes (if any is in flight).
  virtual void reap_syncs(std::vector<sync_completion>& out, bool wait) = 0;
};

inline constexpr unsigned sync_depth_max = 8;

// Files on a real file system; asynchronous syncs on a private io_uring
// (IORING_OP_FSYNC with IORING_FSYNC_DATASYNC), or, if the ring cannot be set
// up, synchronously at submit (logged once).
std::unique_ptr<file_ops> make_posix_file_ops();

}  // namespace agentgate::recording
