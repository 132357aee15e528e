#include "io/recording/crc32c.h"

#include <cstring>

#include <nmmintrin.h>

namespace agentgate::recording {
namespace {

struct crc_table {
  uint32_t t[8][256];
  crc_table() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

const crc_table& table() {
  static const crc_table tab;
  return tab;
}

__attribute__((target("sse4.2"))) uint32_t extend_sse42(uint32_t crc, const char* p, size_t n) {
  uint64_t c = ~crc;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), static_cast<unsigned char>(*p++));
    --n;
  }
  // Three independent streams would hide the instruction's latency; one is
  // already several GB/s, far beyond what a shard appends.
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), static_cast<unsigned char>(*p++));
    --n;
  }
  return ~static_cast<uint32_t>(c);
}

bool detect_sse42() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
}

}  // namespace

bool crc32c_hardware() {
  static const bool has = detect_sse42();
  return has;
}

uint32_t crc32c_extend_table(uint32_t crc, const char* data, size_t n) {
  const crc_table& tab = table();
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  while (n >= 8) {
    uint32_t lo, hi;
    memcpy(&lo, p, 4);
    memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = tab.t[7][lo & 0xff] ^ tab.t[6][(lo >> 8) & 0xff] ^ tab.t[5][(lo >> 16) & 0xff] ^ tab.t[4][lo >> 24] ^
        tab.t[3][hi & 0xff] ^ tab.t[2][(hi >> 8) & 0xff] ^ tab.t[1][(hi >> 16) & 0xff] ^ tab.t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ tab.t[0][(c ^ *p++) & 0xff];
  return ~c;
}

uint32_t crc32c_extend(uint32_t crc, const char* data, size_t n) {
  return crc32c_hardware() ? extend_sse42(crc, data, n) : crc32c_extend_table(crc, data, n);
}

}  // namespace agentgate::recording
