#include "io/recording/file_ops.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <liburing.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"

namespace agentgate::recording {
namespace {

status errno_status(const char* what, const std::string& path, int err) {
  return status(errc::io, std::string(what) + " " + path + ": " + strerror(err));
}

class posix_file final : public segment_file {
 public:
  posix_file(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~posix_file() override { close(fd_); }
  int fd() const { return fd_; }

  status append(std::span<const iovec> iov, uint64_t offset) override {
    iovec local[64];
    size_t count = iov.size();
    if (count > 64) return status(errc::invalid_argument, "too many iovecs");
    memcpy(local, iov.data(), count * sizeof(iovec));
    iovec* v = local;
    while (count > 0) {
      ssize_t n = pwritev(fd_, v, static_cast<int>(count), static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_status("write", path_, errno);
      }
      if (n == 0) return errno_status("write", path_, ENOSPC);
      offset += static_cast<uint64_t>(n);
      size_t left = static_cast<size_t>(n);
      while (count > 0 && left >= v->iov_len) {
        left -= v->iov_len;
        ++v;
        --count;
      }
      if (count > 0) {
        v->iov_base = static_cast<char*>(v->iov_base) + left;
        v->iov_len -= left;
      }
    }
    return status::ok();
  }

  result<size_t> read(uint64_t offset, std::span<char> out) override {
    size_t got = 0;
    while (got < out.size()) {
      ssize_t n = pread(fd_, out.data() + got, out.size() - got, static_cast<off_t>(offset + got));
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_status("read", path_, errno);
      }
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    return got;
  }

  status sync() override {
    if (fdatasync(fd_) != 0) return errno_status("fdatasync", path_, errno);
    return status::ok();
  }

  status truncate(uint64_t size) override {
    if (ftruncate(fd_, static_cast<off_t>(size)) != 0) return errno_status("truncate", path_, errno);
    return status::ok();
  }

  result<uint64_t> size() override {
    struct stat st;
    if (fstat(fd_, &st) != 0) return errno_status("stat", path_, errno);
    return static_cast<uint64_t>(st.st_size);
  }

  const std::string& path() const override { return path_; }

 private:
  int fd_;
  std::string path_;
};

class posix_file_ops final : public file_ops {
 public:
  ~posix_file_ops() override {
    if (ring_ok_) {
      std::vector<sync_completion> drained;
      while (in_flight_ > 0) reap_syncs(drained, true);
      io_uring_queue_exit(&ring_);
    }
  }

  result<std::unique_ptr<segment_file>> open(const std::string& path, open_mode mode) override {
    int flags = O_CLOEXEC;
    switch (mode) {
      case open_mode::read_only: flags |= O_RDONLY; break;
      case open_mode::read_write: flags |= O_RDWR; break;
      case open_mode::create_new: flags |= O_RDWR | O_CREAT | O_EXCL; break;
    }
    int fd = ::open(path.c_str(), flags, 0640);
    if (fd < 0) return errno_status("open", path, errno);
    return std::unique_ptr<segment_file>(new posix_file(fd, path));
  }

  result<std::vector<dir_entry>> list_dir(const std::string& dir) override {
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return errno_status("list", dir, errno);
    std::vector<dir_entry> out;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      struct stat st;
      if (fstatat(dirfd(d), e->d_name, &st, 0) != 0) continue;  // removed meanwhile
      dir_entry entry;
      entry.name = e->d_name;
      if (S_ISDIR(st.st_mode)) entry.name += '/';
      else if (!S_ISREG(st.st_mode)) continue;
      entry.bytes = static_cast<uint64_t>(st.st_size);
      entry.mtime_ms = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
      out.push_back(std::move(entry));
    }
    closedir(d);
    return out;
  }

  status make_dir(const std::string& dir) override {
    if (mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) return errno_status("mkdir", dir, errno);
    return status::ok();
  }

  status remove(const std::string& path) override {
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return errno_status("remove", path, errno);
    return status::ok();
  }

  status sync_dir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno_status("open", dir, errno);
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0) return errno_status("fsync", dir, err);
    return status::ok();
  }

  status sync_submit(segment_file& file, uint64_t cookie) override {
    if (!ring_tried_) set_up_ring();
    if (!ring_ok_) {
      sync_completion c;
      c.cookie = cookie;
      c.result = file.sync();
      done_.push_back(std::move(c));
      return status::ok();
    }
    if (in_flight_ >= sync_depth_max) return status(errc::limit, "too many syncs in flight");
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return status(errc::limit, "io_uring submission queue full");
    io_uring_prep_fsync(sqe, static_cast<posix_file&>(file).fd(), IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, cookie);
    int rc = io_uring_submit(&ring_);
    if (rc < 0) return errno_status("io_uring_submit fsync", file.path(), -rc);
    ++in_flight_;
    return status::ok();
  }

  void reap_syncs(std::vector<sync_completion>& out, bool wait) override {
    for (auto& c : done_) out.push_back(std::move(c));
    done_.clear();
    if (!ring_ok_ || in_flight_ == 0) return;
    io_uring_cqe* cqe = nullptr;
    if (wait && out.empty()) {
      int rc;
      do rc = io_uring_wait_cqe(&ring_, &cqe);
      while (rc == -EINTR);
    }
    while (io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
      sync_completion c;
      c.cookie = io_uring_cqe_get_data64(cqe);
      if (cqe->res < 0) c.result = status(errc::io, std::string("fdatasync: ") + strerror(-cqe->res));
      io_uring_cqe_seen(&ring_, cqe);
      --in_flight_;
      out.push_back(std::move(c));
    }
  }

 private:
  void set_up_ring() {
    ring_tried_ = true;
    int rc = io_uring_queue_init(sync_depth_max, &ring_, 0);
    if (rc < 0) {
      AG_WARN("recording: no io_uring for asynchronous fsync (%s); syncing on the shard thread", strerror(-rc));
      return;
    }
    ring_ok_ = true;
  }

  io_uring ring_{};
  bool ring_tried_ = false;
  bool ring_ok_ = false;
  unsigned in_flight_ = 0;
  std::vector<sync_completion> done_;
};

}  // namespace

std::unique_ptr<file_ops> make_posix_file_ops() { return std::make_unique<posix_file_ops>(); }

}  // namespace agentgate::recording
