#pragma once
// JSON Web Key Sets (RFC 7517) as issuers publish them: the public keys a
// token's signature is checked against. Parsing is control-plane work (at
// start, on SIGHUP, after a jwks_uri fetch); the result is immutable and
// shared read-only by every shard through a verifier snapshot.
//
// Accepted keys: RSA (n, e; 2048..8192 bits), EC P-256 (crv, x, y) and OKP
// Ed25519 (crv, x). Keys with "use": "enc", symmetric ("oct") keys, other
// curves and algorithms this gateway does not verify are skipped, not
// refused: issuers publish such keys next to their signing keys. A key of an
// accepted type that is malformed (bad base64url, wrong length, a point off
// the curve, a short modulus) refuses the whole document, and so does a set
// with no usable key: a half-read key set is not one to trust.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/identity/openssl_ptr.h"
#include "core/status.h"

namespace agentgate::identity {

enum class key_type : uint8_t { rsa, ec_p256, ed25519 };
enum class jws_alg : uint8_t { rs256, ps256, es256, eddsa };

// "RS256", "PS256", "ES256", "EdDSA".
const char* jws_alg_name(jws_alg alg);
// "RSA", "EC P-256", "Ed25519".
const char* key_type_name(key_type type);
// RSA keys sign RS256 and PS256, P-256 keys ES256, Ed25519 keys EdDSA.
bool alg_fits_key(jws_alg alg, key_type type);
std::optional<jws_alg> parse_jws_alg(std::string_view name);

// Bounds on what an issuer may hand us. A real JWKS is a few KiB with a
// handful of keys; these stop a broken or hostile endpoint from costing
// memory or start-up time.
inline constexpr size_t jwks_bytes_max = 256u << 10;
inline constexpr size_t jwks_keys_max = 64;  // usable keys kept per set
inline constexpr size_t jwks_entries_max = 256;  // entries read, skipped ones included
inline constexpr size_t kid_bytes_max = 256;
inline constexpr int rsa_bits_min = 2048;
inline constexpr int rsa_bits_max = 8192;

struct jwk {
  std::string kid;             // empty: the key has no kid
  key_type type = key_type::rsa;
  std::optional<jws_alg> alg;  // the JWK's alg; empty: any algorithm that fits type
  shared_pkey key;             // public key, never mutated after parsing
};

struct key_set {
  std::vector<jwk> keys;
  size_t skipped = 0;  // entries skipped as not for us (enc, oct, other curves)
  // Digest of every key's kid, alg and public key, in order: two sets with
  // the same fingerprint verify the same tokens, so a refresh that changed
  // nothing need not replace the snapshot (and empty every shard's cache).
  std::string fingerprint;

  // The key with this kid, or nullptr.
  const jwk* find(std::string_view kid) const;
};

// Errors (errc::invalid_argument) name the entry, e.g. `keys[2].n: bad base64url`.
result<key_set> parse_jwks(std::string_view json);

// Reads and parses a JWKS file of at most jwks_bytes_max bytes. Errors carry
// the reason without a config path; callers put theirs in front.
result<key_set> load_jwks_file(const std::string& path);

// The public key of pkey as a JWK object (no surrounding set), with kid when
// not empty, "use": "sig" and the algorithm its type signs with (RS256 for
// RSA). Fails for key types verification does not accept.
result<std::string> public_jwk_json(EVP_PKEY* pkey, std::string_view kid);

// RFC 7638 thumbprint (SHA-256, base64url) of pkey's public key: a stable
// kid for a key that has none.
result<std::string> jwk_thumbprint(EVP_PKEY* pkey);

// The key type of pkey, if verification accepts it.
std::optional<key_type> key_type_of(EVP_PKEY* pkey);

}  // namespace agentgate::identity
