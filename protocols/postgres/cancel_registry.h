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
class session;

struct upstream_key {
  uint32_t pid = 0;
  uint32_t key = 0;
};

class cancel_registry {
 public:
  explicit cancel_registry(int shard_id);

  // Mints a (pid, key) for a session whose upstream said `upstream`.
  upstream_key add(const upstream_key& upstream, const target_runtime& target, session& owner);
  void remove(uint32_t minted_pid);

  struct entry {
    uint32_t key;
    upstream_key upstream;
    const target_runtime* target;
    session* owner;  // lives as long as the entry: the session removes it when it goes
  };
  // The entry if pid is live and key matches (compared in constant time).
  std::optional<entry> find(uint32_t minted_pid, uint32_t key) const;

  // The shard that minted pid, or -1 if no shard could have.
  static int owner_shard(uint32_t minted_pid, int shard_count);

  // A client's cancel connection stays open until its request has been
  // delivered upstream (libpq waits for that close); waiters are found again
  // by id when the owner shard reports back.
  uint64_t add_waiter(session& s);
  void remove_waiter(uint64_t id);
  session* find_waiter(uint64_t id) const;

  size_t size() const { return entries_.size(); }

 private:
  static constexpr uint32_t sequence_bits = 22;
  const int shard_id_;
  uint32_t next_sequence_ = 1;
  std::unordered_map<uint32_t, entry> entries_;
  uint64_t next_waiter_ = 1;
  std::unordered_map<uint64_t, session*> waiters_;
};

// Every shard's registry, built before the shards start. Registry i is only
// ever touched by shard i.
struct cancel_directory {
  std::vector<std::unique_ptr<cancel_registry>> per_shard;
};

// Handles a CancelRequest that arrived on any shard: posts it to the owner,
// which forwards it upstream with the upstream's own key. Unknown keys are
// dropped silently, as PostgreSQL does. Either way the waiter (`waiter_id` in
// this shard's registry) hears back through session::on_cancel_done() once
// the request was delivered or dropped. False if it could not be posted.
bool route_cancel(shard_services& here, cancel_directory& directory, uint32_t pid, uint32_t key,
                  uint64_t waiter_id);

}  // namespace agentgate::pg
