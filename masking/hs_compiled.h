#pragma once
// A compiled Hyperscan database and the scratch prototype each shard clones
// its own scratch from. Built on the control plane, immutable afterwards.

#include <hs.h>

namespace agentgate::masking {

struct hs_compiled {
  hs_database_t* db = nullptr;
  hs_scratch_t* prototype = nullptr;

  hs_compiled() = default;
  hs_compiled(const hs_compiled&) = delete;
  hs_compiled& operator=(const hs_compiled&) = delete;
  ~hs_compiled() {
    if (prototype != nullptr) hs_free_scratch(prototype);
    if (db != nullptr) hs_free_database(db);
  }
};

}  // namespace agentgate::masking
