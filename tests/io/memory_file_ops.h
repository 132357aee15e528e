#pragma once
// An in-memory file system for recording tests: it knows which bytes were
// synced, so a test can "crash" (drop what was not), fail writes and syncs
// with ENOSPC/EIO on demand, and corrupt bytes directly.

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "io/recording/file_ops.h"

namespace agentgate::recording::testing {

struct memory_fs {
  struct file_data {
    std::string data;
    size_t synced = 0;
    int64_t mtime_ms = 0;
  };
  std::map<std::string, std::shared_ptr<file_data>> files;
  std::set<std::string> dirs;
  // Atomic: a test may set them while a recorder's writer thread runs.
  std::atomic<int> write_errno{0};   // every write fails with this
  uint64_t space_left = UINT64_MAX;  // bytes that can still be written, then ENOSPC
  std::atomic<int> sync_errno{0};    // every sync fails with this
  bool hold_syncs = false;    // asynchronous syncs do not complete while set
  std::atomic<uint64_t> syncs{0};
  // Called at the start of every write and sync, on the thread doing it
  // (set before the recorder is opened).
  std::function<void()> on_io;

  // Power loss: every file keeps its synced bytes plus keep_unsynced more.
  void crash(size_t keep_unsynced = 0) {
    for (auto& [path, f] : files) f->data.resize(std::min(f->data.size(), f->synced + keep_unsynced));
  }
  std::string& data(const std::string& path) { return files.at(path)->data; }
};

class memory_file final : public segment_file {
 public:
  memory_file(memory_fs& fs, std::shared_ptr<memory_fs::file_data> f, std::string path, bool writable)
      : fs_(fs), f_(std::move(f)), path_(std::move(path)), writable_(writable) {}

  status append(std::span<const iovec> iov, uint64_t offset) override {
    if (!writable_) return status(errc::io, "read-only");
    if (fs_.on_io) fs_.on_io();
    if (fs_.write_errno != 0) return status(errc::io, path_ + ": " + strerror(fs_.write_errno));
    for (const iovec& v : iov) {
      size_t n = v.iov_len;
      bool full = false;
      if (n > fs_.space_left) {
        n = static_cast<size_t>(fs_.space_left);
        full = true;
      }
      if (f_->data.size() < offset + n) f_->data.resize(offset + n);
      memcpy(f_->data.data() + offset, v.iov_base, n);
      offset += n;
      fs_.space_left -= n;
      if (full) return status(errc::io, path_ + ": " + strerror(ENOSPC));
    }
    return status::ok();
  }
  result<size_t> read(uint64_t offset, std::span<char> out) override {
    if (offset >= f_->data.size()) return size_t{0};
    const size_t n = std::min<size_t>(out.size(), f_->data.size() - offset);
    memcpy(out.data(), f_->data.data() + offset, n);
    return n;
  }
  status sync() override {
    if (fs_.on_io) fs_.on_io();
    ++fs_.syncs;
    if (fs_.sync_errno != 0) return status(errc::io, path_ + ": " + strerror(fs_.sync_errno));
    f_->synced = f_->data.size();
    return status::ok();
  }
  status truncate(uint64_t size) override {
    f_->data.resize(size);
    f_->synced = std::min<size_t>(f_->synced, size);
    return status::ok();
  }
  result<uint64_t> size() override { return static_cast<uint64_t>(f_->data.size()); }
  const std::string& path() const override { return path_; }

 private:
  memory_fs& fs_;
  std::shared_ptr<memory_fs::file_data> f_;
  std::string path_;
  bool writable_;
};

class memory_file_ops final : public file_ops {
 public:
  explicit memory_file_ops(memory_fs& fs) : fs_(fs) {}

  result<std::unique_ptr<segment_file>> open(const std::string& path, open_mode mode) override {
    if (fs_.dirs.count(path) != 0) {  // a directory, opened to be synced
      auto f = std::make_shared<memory_fs::file_data>();
      return std::unique_ptr<segment_file>(new memory_file(fs_, f, path, false));
    }
    auto it = fs_.files.find(path);
    if (mode == open_mode::create_new) {
      if (it != fs_.files.end()) return status(errc::io, path + ": exists");
      it = fs_.files.emplace(path, std::make_shared<memory_fs::file_data>()).first;
    } else if (it == fs_.files.end()) {
      return status(errc::io, path + ": no such file");
    }
    return std::unique_ptr<segment_file>(new memory_file(fs_, it->second, path, mode != open_mode::read_only));
  }
  result<std::vector<dir_entry>> list_dir(const std::string& dir) override {
    if (fs_.dirs.count(dir) == 0) return status(errc::io, dir + ": no such directory");
    std::vector<dir_entry> out;
    const std::string prefix = dir + "/";
    for (const auto& [path, f] : fs_.files)
      if (path.starts_with(prefix) && path.find('/', prefix.size()) == std::string::npos)
        out.push_back(dir_entry{path.substr(prefix.size()), f->data.size(), f->mtime_ms});
    for (const std::string& d : fs_.dirs)
      if (d.starts_with(prefix) && d.find('/', prefix.size()) == std::string::npos)
        out.push_back(dir_entry{d.substr(prefix.size()) + "/", 0, 0});
    return out;
  }
  status make_dir(const std::string& dir) override {
    fs_.dirs.insert(dir);
    return status::ok();
  }
  status remove(const std::string& path) override {
    fs_.files.erase(path);
    return status::ok();
  }
  status sync_dir(const std::string&) override { return status::ok(); }
  status sync_submit(segment_file& file, uint64_t cookie) override {
    pending_.push_back({&file, cookie});
    return status::ok();
  }
  void reap_syncs(std::vector<sync_completion>& out, bool wait) override {
    if (fs_.hold_syncs && !wait) return;
    for (auto& [file, cookie] : pending_) out.push_back(sync_completion{cookie, file->sync()});
    pending_.clear();
  }

 private:
  memory_fs& fs_;
  std::vector<std::pair<segment_file*, uint64_t>> pending_;
};

}  // namespace agentgate::recording::testing
