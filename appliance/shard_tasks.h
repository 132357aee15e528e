#pragma once
// Shard tasks both gateway binaries (agentgate, agentgate-dpdk) post from
// the control plane.

#include <memory>
#include <utility>

#include "core/identity/jwt_authenticator.h"
#include "core/shard.h"

namespace agentgate {

// Hands a shard's authenticator a new key snapshot (a key rotated in or out).
class swap_verifier_task final : public shard_task {
 public:
  swap_verifier_task(identity::jwt_authenticator& auth, std::shared_ptr<const identity::verifier> v)
      : auth_(auth), verifier_(std::move(v)) {}
  void run(shard_services&) override { auth_.set_verifier(std::move(verifier_)); }
  // A busy shard gets the newest keys late, never not at all: a key removed
  // from the JWKS must stop working on every shard.
  control_delivery delivery() const override { return control_delivery::latest_wins; }
  const void* slot() const override { return &auth_; }

 private:
  identity::jwt_authenticator& auth_;
  std::shared_ptr<const identity::verifier> verifier_;
};

}  // namespace agentgate
