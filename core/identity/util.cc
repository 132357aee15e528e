#include "core/identity/util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace agentgate::identity {
namespace {

constexpr char hex_digits[] = "0123456789abcdef";
constexpr size_t quoted_chars_max = 80;

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

void append_json_string(std::string& out, std::string_view value) {
  out += '"';
  for (char ch : value) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex_digits[c >> 4];
          out += hex_digits[c & 0xf];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

std::string quote_for_message(std::string_view value) {
  std::string out = "\"";
  size_t n = std::min(value.size(), quoted_chars_max);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(value[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex_digits[c >> 4];
      out += hex_digits[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  if (n < value.size()) out += "...";
  return out;
}

}  // namespace agentgate::identity
