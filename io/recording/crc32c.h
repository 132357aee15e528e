#pragma once
// CRC-32C (Castagnoli), as LevelDB's log uses it: the SSE4.2 instruction when
// the CPU has it, a table otherwise; both give the same values.

#include <cstddef>
#include <cstdint>

namespace agentgate::recording {

// The CRC of data appended to a message whose CRC was `crc` (0 to start).
uint32_t crc32c_extend(uint32_t crc, const char* data, size_t n);
inline uint32_t crc32c(const char* data, size_t n) { return crc32c_extend(0, data, n); }
// The portable implementation, for tests comparing the two.
uint32_t crc32c_extend_table(uint32_t crc, const char* data, size_t n);
bool crc32c_hardware();

// Stored CRCs are masked: the CRC of a string that itself holds CRCs is
// otherwise prone to collisions (LevelDB's reasoning and constant).
constexpr uint32_t crc_mask_delta = 0xa282ead8u;
inline uint32_t crc_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + crc_mask_delta; }
inline uint32_t crc_unmask(uint32_t masked) {
  uint32_t rot = masked - crc_mask_delta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace agentgate::recording
