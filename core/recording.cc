#include "core/recording.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <openssl/rand.h>

namespace agentgate {
namespace {

constexpr char hex_digits[] = "0123456789abcdef";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Ids come straight from the kernel's CSPRNG (OpenSSL's when getrandom
// fails), drawn 4 KiB at a time into a per-thread buffer: unguessable, and
// one system call per 256 sessions rather than one per connection.
struct id_pool {
  std::array<unsigned char, 4096> bytes{};
  size_t used = sizeof bytes;

  void refill() {
    size_t got = 0;
    while (got < sizeof bytes) {
      ssize_t n = getrandom(bytes.data() + got, sizeof bytes - got, 0);
      if (n > 0) {
        got += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        break;
      }
    }
    // No entropy source at all: ids would repeat across restarts and merge
    // recordings of different sessions. Refuse to go on.
    if (got < sizeof bytes && RAND_bytes(bytes.data(), sizeof bytes) != 1) abort();
    used = 0;
  }

  uint64_t next_word() {
    if (used + 8 > sizeof bytes) refill();
    uint64_t w = 0;
    memcpy(&w, bytes.data() + used, 8);
    used += 8;
    return w;
  }
};

}  // namespace

std::string session_id::hex() const {
  std::string out(32, '0');
  for (int i = 0; i < 16; ++i) {
    out[15 - i] = hex_digits[(hi >> (4 * i)) & 0xf];
    out[31 - i] = hex_digits[(lo >> (4 * i)) & 0xf];
  }
  return out;
}

bool session_id::parse(std::string_view hex, session_id& out) {
  if (hex.size() != 32) return false;
  uint64_t words[2] = {0, 0};
  for (size_t i = 0; i < 32; ++i) {
    int v = hex_value(hex[i]);
    if (v < 0) return false;
    words[i / 16] = (words[i / 16] << 4) | static_cast<uint64_t>(v);
  }
  out.hi = words[0];
  out.lo = words[1];
  return true;
}

session_id session_id::generate() {
  static thread_local id_pool pool;
  session_id id;
  do {
    id.hi = pool.next_word();
    id.lo = pool.next_word();
  } while (id.empty());
  return id;
}

}  // namespace agentgate
