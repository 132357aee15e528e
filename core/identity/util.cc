#include "core/identity/util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace agentgate::identity {
namespace {


std::string os_error_text(int err) { return std::system_category().message(err); }

}  // namespace

result<std::string> read_small_file(const std::string& path, size_t bytes_max) {
  auto fail = [&](std::string reason) { return status(errc::invalid_argument, std::move(reason)); };
  // O_NONBLOCK: a FIFO given by mistake fails the S_ISREG check instead of
  // blocking start-up until someone writes to it.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return fail("cannot open " + quote_for_message(path) + ": " + os_error_text(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return fail("cannot stat " + quote_for_message(path) + ": " + os_error_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(quote_for_message(path) + " is not a regular file");
  }
  // One byte past the limit tells "at the limit" from "too large", even if
  // the file grows while we read it.
  std::string out(bytes_max + 1, '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return fail("cannot read " + quote_for_message(path) + ": " + os_error_text(err));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got > bytes_max) {
    return fail(quote_for_message(path) + " is larger than " + std::to_string(bytes_max) +
                " bytes");
  }
  out.resize(got);
  return out;
}





}  // namespace agentgate::identity
