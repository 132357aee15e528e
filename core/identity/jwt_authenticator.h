#pragma once
// The per-shard authenticator (core/authenticator.h) for client_auth "jwt":
// the shard's token cache in front of the verifier snapshot the control
// plane published last. Owned and used by one shard's thread only.

#include <cstdint>
#include <memory>
#include <string_view>

#include "core/authenticator.h"
#include "core/identity/jwt.h"

namespace agentgate::identity {

class jwt_authenticator final : public authenticator {
 public:
  // snapshot: the refresher's current() at the time the shard starts.
  jwt_authenticator(std::shared_ptr<const verifier> snapshot, uint32_t cache_entries_max);

  // Installs a snapshot published by jwks_refresher, on this shard's thread
  // (the engine delivers it by message). The cache empties at the next
  // lookup, so tokens of a removed key stop working at once.
  void set_verifier(std::shared_ptr<const verifier> snapshot);
  const verifier& current() const { return *verifier_; }

  result<session_identity> authenticate(std::string_view token, int64_t now_s) override;

  const token_cache_stats& cache_stats() const { return cache_.stats(); }

 private:
  std::shared_ptr<const verifier> verifier_;
  token_cache cache_;
};

}  // namespace agentgate::identity
