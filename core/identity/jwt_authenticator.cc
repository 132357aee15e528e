#include "core/identity/jwt_authenticator.h"

#include <cassert>

namespace agentgate::identity {

jwt_authenticator::jwt_authenticator(std::shared_ptr<const verifier> snapshot,
                                     uint32_t cache_entries_max)
    : verifier_(std::move(snapshot)), cache_(cache_entries_max) {
  assert(verifier_ != nullptr);
}

void jwt_authenticator::set_verifier(std::shared_ptr<const verifier> snapshot) {
  assert(snapshot != nullptr);
  verifier_ = std::move(snapshot);
}

result<session_identity> jwt_authenticator::authenticate(std::string_view token, int64_t now_s) {
  auto verified = cache_.verify(*verifier_, token, now_s);
  if (!verified) return verified.error();
  const verified_identity& id = **verified;
  session_identity out;
  out.issuer = id.issuer;
  out.subject = id.sub;
  out.email = id.email;
  out.groups = id.groups;
  out.expires_at_s = id.exp_s;
  out.valid_until_s = valid_until_s(id.exp_s, verifier_->leeway_s());
  return out;
}

}  // namespace agentgate::identity
