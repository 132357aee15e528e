#pragma once
// BackendKeyData the gateway mints for its clients, and where a CancelRequest
// carrying it must go. A client never sees the upstream's process id or key.
//
// One registry per shard, touched only by that shard's thread. The minted
// process id names the shard that owns the session, so a CancelRequest that
// lands on any shard (it is a new connection, and SO_REUSEPORT spreads those)
// is routed by message to the owner, with no lock.

#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/shard.h"

namespace agentgate::pg {

struct target_runtime;

struct upstream_key {
  uint32_t pid = 0;
  uint32_t key = 0;
};

class cancel_registry {
 public:
  explicit cancel_registry(int shard_id);

  // Mints a (pid, key) for a session whose upstream said `upstream`.
  upstream_key add(const upstream_key& upstream, const target_runtime& target);
  void remove(uint32_t minted_pid);

  struct entry {
    uint32_t key;
    upstream_key upstream;
    const target_runtime* target;
  };
  // The entry if pid is live and key matches (compared in constant time).
  std::optional<entry> find(uint32_t minted_pid, uint32_t key) const;

  // The shard that minted pid, or -1 if no shard could have.
  static int owner_shard(uint32_t minted_pid, int shard_count);

  size_t size() const { return entries_.size(); }

 private:
  static constexpr uint32_t sequence_bits = 22;
  const int shard_id_;
  uint32_t next_sequence_ = 1;
  std::unordered_map<uint32_t, entry> entries_;
};

// Every shard's registry, built before the shards start. Registry i is only
// ever touched by shard i.
struct cancel_directory {
  std::vector<std::unique_ptr<cancel_registry>> per_shard;
};

// Handles a CancelRequest that arrived on any shard: posts it to the owner,
// which forwards it upstream with the upstream's own key. Unknown keys are
// dropped silently, as PostgreSQL does.
void route_cancel(shard_services& here, cancel_directory& directory, uint32_t pid, uint32_t key);

}  // namespace agentgate::pg
