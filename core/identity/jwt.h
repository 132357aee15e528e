#pragma once
// OIDC JWT verification: the immutable verifier snapshot every shard shares,
// and the per-shard cache that lets a reconnect skip the signature check.
//
// Ownership and threads:
// - A verifier is built on the control plane (jwks_refresher) from
//   identity_config and one key set per issuer, then published as
//   std::shared_ptr<const verifier>. It is never changed afterwards, so all
//   shards call verify() on it at once without locks. A rotation builds a new
//   one with a new generation().
// - A token_cache belongs to one shard and is only touched by its thread.
//   Entries remember which snapshot verified them: the first lookup against
//   another snapshot empties the cache, so a token whose key was rotated out
//   is never accepted from the cache after the new snapshot arrived.
//
// Refusals are errc::auth statuses whose message is a fixed phrase fit for
// the client ("token expired", "unknown signing key", ...): never key
// material and never text copied from the token.

#include <array>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "core/identity/jwks.h"
#include "core/identity/openssl_ptr.h"
#include "core/status.h"

namespace agentgate::identity {

struct verified_identity {
  std::string issuer;
  std::string sub;
  std::string email;                // empty when the token has none
  std::vector<std::string> groups;  // from the issuer's groups_claim
  int64_t exp_s = 0;                // the token's exp, seconds since the epoch
};

// Groups beyond this many refuse the token rather than being cut: a policy
// that matched on a dropped group would decide on half an identity.
inline constexpr size_t token_groups_max = 256;

// Refusal reasons, one phrase each; tests and docs/identity.md quote them.
namespace reason {
inline constexpr std::string_view too_long = "token too long";
inline constexpr std::string_view not_three_parts = "token is not three base64url parts";
inline constexpr std::string_view bad_base64url = "token is not valid base64url";
inline constexpr std::string_view bad_header = "token header is not a JSON object";
inline constexpr std::string_view bad_payload = "token payload is not a JSON object";
inline constexpr std::string_view duplicate_member = "token has a duplicate header or claim name";
inline constexpr std::string_view no_alg = "token header has no alg";
inline constexpr std::string_view alg_none = "algorithm none refused";
inline constexpr std::string_view alg_hmac = "HMAC algorithms (HS256, HS384, HS512) refused";
inline constexpr std::string_view alg_unknown = "unsupported algorithm";
inline constexpr std::string_view crit = "token header has critical extensions";
inline constexpr std::string_view bad_kid = "token header kid is not a string";
inline constexpr std::string_view no_iss = "token has no iss";
inline constexpr std::string_view unknown_issuer = "token issuer is not accepted";
inline constexpr std::string_view unknown_key = "unknown signing key";
inline constexpr std::string_view kid_needed = "token has no kid and the issuer has several keys";
inline constexpr std::string_view alg_mismatch = "algorithm does not match the signing key";
inline constexpr std::string_view bad_signature = "signature does not verify";
inline constexpr std::string_view no_aud = "token has no aud";
inline constexpr std::string_view bad_aud = "token aud is not a string or an array of strings";
inline constexpr std::string_view wrong_aud = "token audience does not include this gateway";
inline constexpr std::string_view wrong_approver_aud = "token audience is not this gateway's approvals";
inline constexpr std::string_view approval_token_login = "token is for approvals, not for logging in";
inline constexpr std::string_view no_exp = "token has no exp";
inline constexpr std::string_view bad_exp = "token exp is not a number";
inline constexpr std::string_view bad_nbf = "token nbf is not a number";
inline constexpr std::string_view bad_iat = "token iat is not a number";
inline constexpr std::string_view expired = "token expired";
inline constexpr std::string_view not_yet_valid = "token not yet valid";
inline constexpr std::string_view no_sub = "token has no sub";
inline constexpr std::string_view bad_sub = "token sub is not a non-empty string";
inline constexpr std::string_view bad_email = "token email is not a string";
inline constexpr std::string_view bad_groups = "token groups claim is not a string or an array of strings";
inline constexpr std::string_view too_many_groups = "token has too many groups";
}  // namespace reason

// What a token is presented for. With an issuer's approver_audience set,
// login tokens and approval tokens are told apart by aud (docs/identity.md).
enum class token_use : uint8_t { login, approval };

class verifier {
 public:
  // keys[i] belongs to config.issuers[i]; an empty set (an issuer whose
  // jwks_uri has not been fetched yet) refuses that issuer's tokens with
  // "unknown signing key". Each call yields a new generation().
  static std::shared_ptr<const verifier> create(const identity_config& config,
                                                std::vector<key_set> keys);

  // Checks, in this order: size, shape, header (alg, crit, kid), issuer, key
  // choice, signature, then the claims (aud, exp, nbf, iat, sub, email,
  // groups). now_s is seconds since the epoch. Safe to call from any thread.
  // use decides which audience aud must carry (token_use).
  result<verified_identity> verify(std::string_view token, int64_t now_s,
                                   token_use use = token_use::login) const;

  // Unique per snapshot in this process; caches compare it.
  uint64_t generation() const { return generation_; }
  uint32_t leeway_s() const { return config_.leeway_s; }
  const identity_config& config() const { return config_; }
  const key_set& keys_of(size_t issuer_index) const { return keys_[issuer_index]; }

  verifier(const verifier&) = delete;
  verifier& operator=(const verifier&) = delete;

 private:
  verifier(const identity_config& config, std::vector<key_set> keys, uint64_t generation);

  identity_config config_;
  std::vector<key_set> keys_;
  uint64_t generation_;
};

// Last second (exclusive) at which a token with this exp is still accepted.
int64_t valid_until_s(int64_t exp_s, uint32_t leeway_s);

struct token_cache_stats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;   // to stay within entries_max
  uint64_t expirations = 0; // expired entries dropped
  uint64_t resets = 0;      // emptied because the verifier snapshot changed
};

// Verified tokens of one shard, keyed by the SHA-256 of the token's bytes (32
// bytes per entry, whatever the token's length). Holds at most entries_max
// entries; when full, expired entries go first (swept at most once a
// second), then the least recently used. entries_max 0 disables caching.
// Not thread-safe: one per shard.
class token_cache {
 public:
  explicit token_cache(uint32_t entries_max);
  ~token_cache();
  token_cache(const token_cache&) = delete;
  token_cache& operator=(const token_cache&) = delete;

  // The identity for token: from the cache when snapshot v verified it before
  // and it has not expired, else from v.verify() (cached when accepted).
  result<std::shared_ptr<const verified_identity>> verify(const verifier& v,
                                                          std::string_view token, int64_t now_s);

  // The pieces verify() is made of, for callers and tests that need them.
  std::shared_ptr<const verified_identity> find(const verifier& v, std::string_view token,
                                                int64_t now_s);
  // Ignored when identity is already expired at now_s.
  void insert(const verifier& v, std::string_view token,
              std::shared_ptr<const verified_identity> identity, int64_t now_s);

  size_t size() const { return entries_.size(); }
  uint32_t entries_max() const { return entries_max_; }
  const token_cache_stats& stats() const { return stats_; }

 private:
  using digest = std::array<char, 32>;  // SHA-256, raw
  struct entry {
    digest key;
    std::shared_ptr<const verified_identity> identity;
    int64_t valid_until_s;
  };
  using lru_list = std::list<entry>;  // front: most recently used
  // The key already is a SHA-256: its first bytes are as good a hash as any.
  struct digest_hash {
    size_t operator()(std::string_view d) const;
  };

  void adopt(const verifier& v);
  void digest_of(std::string_view token, digest& out);
  void sweep_expired(int64_t now_s);

  uint32_t entries_max_;
  uint64_t generation_ = 0;  // of the snapshot the entries came from; 0: none yet
  lru_list lru_;
  std::unordered_map<std::string_view, lru_list::iterator, digest_hash> entries_;  // keys point into lru_
  int64_t last_sweep_s_ = 0;
  EVP_MD* sha256_;            // fetched once: a per-call fetch costs more than the hash
  evp_md_ctx_ptr md_ctx_;
  digest scratch_;
  token_cache_stats stats_;
};

}  // namespace agentgate::identity
