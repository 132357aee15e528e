#include "protocols/postgres/cancel_registry.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cstring>
#include <string>

#include "core/log.h"
#include "protocols/postgres/codec.h"
#include "protocols/postgres/session.h"

namespace agentgate::pg {
namespace {

constexpr uint32_t cancel_timeout_ms = 5000;

uint32_t random_u32() {
  uint32_t v = 0;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof(v)) != 1) {
    // Without randomness a key could be guessed; refuse to hand out a usable one.
    AG_ERROR("RAND_bytes failed; cancel keys are unavailable");
    return 0;
  }
  return v;
}

// Tells the shard where the client's cancel connection waits that its request
// was delivered (or dropped), so that connection may close now.
class cancel_done_task final : public shard_task {
 public:
  cancel_done_task(cancel_registry& registry, uint64_t waiter_id) : registry_(registry), waiter_id_(waiter_id) {}
  void run(shard_services&) override {
    if (session* s = registry_.find_waiter(waiter_id_)) s->on_cancel_done();
  }

 private:
  cancel_registry& registry_;
  uint64_t waiter_id_;
};

struct waiter_address {
  cancel_directory* directory;
  int shard;
  uint64_t id;

  void notify(shard_services& from) const {
    if (!from.post(shard, std::make_unique<cancel_done_task>(*directory->per_shard[shard], id)))
      AG_WARN("shard %d's inbox is full; a cancel connection closes at its timeout", shard);
  }
};

// A session with only an upstream side: connects, sends the CancelRequest
// with the upstream's own key, and goes when the server hangs up.
class cancel_forwarder final : public session_handler {
 public:
  cancel_forwarder(const target_runtime& target, const upstream_key& key, waiter_address waiter)
      : target_(target), waiter_(waiter) {
    append_u32(packet_, 16);
    append_u32(packet_, cancel_request_code);
    append_u32(packet_, key.pid);
    append_u32(packet_, key.key);
  }
  ~cancel_forwarder() override {
    if (io_ != nullptr) waiter_.notify(io_->shard());
  }
  void on_start(session_io& io) override {
    io_ = &io;
    io_->set_deadline_ms(cancel_timeout_ms);
    io_->connect_upstream(target_.upstream_address);
  }
  void on_data(peer, std::span<const uint8_t>) override {}
  void on_upstream_connected(const status& result) override {
    if (!result) {
      AG_WARN("target %s: cannot forward a cancel request: %s", target_.config.name.c_str(),
              result.message().c_str());
      io_->abort();
      return;
    }
    io_->send(peer::upstream, {reinterpret_cast<const uint8_t*>(packet_.data()), packet_.size()});
  }
  void on_peer_closed(peer, const status&) override { io_->abort(); }
  void on_deadline() override { io_->abort(); }

 private:
  const target_runtime& target_;
  waiter_address waiter_;
  session_io* io_ = nullptr;
  std::string packet_;
};

class cancel_task final : public shard_task {
 public:
  cancel_task(cancel_registry& registry, uint32_t pid, uint32_t key, waiter_address waiter)
      : registry_(registry), pid_(pid), key_(key), waiter_(waiter) {}
  void run(shard_services& shard) override {
    std::optional<cancel_registry::entry> e = registry_.find(pid_, key_);
    if (!e || e->owner->on_cancel_requested()) {
      // Unknown or stale: ignored, as PostgreSQL does. Or the session was
      // waiting for an approval, and the cancel withdrew it: nothing runs upstream.
      waiter_.notify(shard);
      return;
    }
    shard.start_outbound(std::make_unique<cancel_forwarder>(*e->target, e->upstream, waiter_));
  }

 private:
  cancel_registry& registry_;
  uint32_t pid_;
  uint32_t key_;
  waiter_address waiter_;
};

}  // namespace

cancel_registry::cancel_registry(int shard_id) : shard_id_(shard_id) {}

upstream_key cancel_registry::add(const upstream_key& upstream, const target_runtime& target,
                                  session& owner) {
  const uint32_t mask = (1u << sequence_bits) - 1;
  uint32_t pid = 0;
  do {
    const uint32_t seq = next_sequence_++ & mask;
    if (seq == 0) continue;  // keep every pid above the shard prefix
    pid = (static_cast<uint32_t>(shard_id_ + 1) << sequence_bits) | seq;
  } while (pid == 0 || entries_.count(pid) != 0);
  const uint32_t key = random_u32();
  entries_[pid] = entry{key, upstream, &target, &owner};
  return {pid, key};
}

void cancel_registry::remove(uint32_t minted_pid) { entries_.erase(minted_pid); }

std::optional<cancel_registry::entry> cancel_registry::find(uint32_t minted_pid, uint32_t key) const {
  auto it = entries_.find(minted_pid);
  if (it == entries_.end()) return std::nullopt;
  if (it->second.key == 0 || CRYPTO_memcmp(&it->second.key, &key, sizeof(key)) != 0) return std::nullopt;
  return it->second;
}

int cancel_registry::owner_shard(uint32_t minted_pid, int shard_count) {
  const int shard = static_cast<int>(minted_pid >> sequence_bits) - 1;
  return shard >= 0 && shard < shard_count ? shard : -1;
}

uint64_t cancel_registry::add_waiter(session& s) {
  const uint64_t id = next_waiter_++;
  waiters_[id] = &s;
  return id;
}

void cancel_registry::remove_waiter(uint64_t id) { waiters_.erase(id); }

session* cancel_registry::find_waiter(uint64_t id) const {
  auto it = waiters_.find(id);
  return it == waiters_.end() ? nullptr : it->second;
}

bool route_cancel(shard_services& here, cancel_directory& directory, uint32_t pid, uint32_t key,
                  uint64_t waiter_id) {
  const int owner = cancel_registry::owner_shard(pid, here.shard_count());
  if (owner < 0 || owner >= static_cast<int>(directory.per_shard.size())) return false;
  if (owner != here.shard_id()) AG_DEBUG("cancel request routed to shard %d", owner);
  const waiter_address waiter{&directory, here.shard_id(), waiter_id};
  if (!here.post(owner, std::make_unique<cancel_task>(*directory.per_shard[owner], pid, key, waiter))) {
    AG_WARN("shard %d's inbox is full; a cancel request was dropped", owner);
    return false;
  }
  return true;
}

}  // namespace agentgate::pg
