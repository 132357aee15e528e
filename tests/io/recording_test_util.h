#pragma once
// Shared helpers of the recording tests: DataRow bodies and sample events.

#include <cstdint>
#include <string>
#include <vector>

#include "core/recording.h"

namespace agentgate::recording::testing {

inline void put_be(std::string& out, uint32_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i)));
}

// One DataRow body; a field "\x01NULL" stands for SQL NULL.
inline std::string data_row(const std::vector<std::string>& fields) {
  std::string out;
  put_be(out, static_cast<uint32_t>(fields.size()), 2);
  for (const std::string& f : fields) {
    if (f == "\x01NULL") {
      put_be(out, 0xffffffffu, 4);
      continue;
    }
    put_be(out, static_cast<uint32_t>(f.size()), 4);
    out += f;
  }
  return out;
}

}  // namespace agentgate::recording::testing
