#pragma once
// Verifies the credential a client presents (an OIDC JWT) and says who it
// is. One instance per shard (it caches verified tokens), used only by that
// shard's thread; the key material behind it is an immutable snapshot the
// control plane replaces when keys rotate.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace agentgate {

struct session_identity {
  std::string issuer;
  std::string subject;  // the token's sub
  std::string email;
  std::vector<std::string> groups;
  int64_t expires_at_s = 0;  // the token's exp, seconds since the epoch
  int64_t valid_until_s = 0; // exp plus the allowed clock skew (exclusive): the session's end
};

class authenticator {
 public:
  virtual ~authenticator() = default;
  // errc::auth with a reason fit for the client ("token expired", "unknown
  // signing key", ...) and never key material.
  virtual result<session_identity> authenticate(std::string_view token, int64_t now_s) = 0;
};

}  // namespace agentgate
