#pragma once
// Minting tokens, for `agentgate token`, the demo, the tests and the load
// bench. Not used on the data path: the gateway only verifies.
//
// The algorithm follows the key: RSA signs RS256, EC P-256 ES256, Ed25519
// EdDSA. Keys are unencrypted PEM files (PKCS#8 or the traditional
// formats); an encrypted key is refused, never prompted for.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/identity/jwks.h"
#include "core/identity/openssl_ptr.h"
#include "core/status.h"

namespace agentgate::identity {

inline constexpr size_t pem_file_bytes_max = 64u << 10;
inline constexpr int64_t token_ttl_s_max = 366 * 86400;

struct token_claims {
  std::string iss;
  std::string aud;
  std::string sub;
  std::string email;                  // empty: no email claim
  std::vector<std::string> groups;    // written as an array, even when empty
  std::string groups_claim = "groups";
  int64_t ttl_s = 3600;               // exp = now + ttl_s; 1..token_ttl_s_max
  std::string kid;                    // empty: the key's RFC 7638 thumbprint
  int64_t now_s = 0;                  // iat and nbf; 0: the current time
};

struct signing_key {
  shared_pkey key;           // private key
  key_type type = key_type::rsa;
  jws_alg alg = jws_alg::rs256;  // what sign_token uses for this key
  std::string thumbprint;    // RFC 7638, the default kid
};

// Reads an unencrypted PEM private key (RSA of 2048..8192 bits, EC P-256 or
// Ed25519).
result<signing_key> load_signing_key(const std::string& pem_path);

// A compact JWS: header {"alg","typ":"JWT","kid"} and the claims above.
result<std::string> sign_token(const std::string& pem_key_path, const token_claims& claims);
result<std::string> sign_token(const signing_key& key, const token_claims& claims);

// Signs arbitrary header and payload JSON (taken verbatim, not checked) with
// alg, which must fit the key (RSA may sign RS256 or PS256). For tests that
// need tokens the claims above cannot express.
result<std::string> sign_compact(const signing_key& key, jws_alg alg, std::string_view header_json,
                                 std::string_view payload_json);

// {"keys":[<the public JWK of the key at pem_path>]}: the JWKS an issuer
// would publish for it, for identity.issuers[].jwks_file. The PEM may hold
// the private key or only the public key. Empty kid: the thumbprint, which
// is also what sign_token puts in the header by default, so the two match.
result<std::string> jwks_for_key(const std::string& pem_path, std::string_view kid);

}  // namespace agentgate::identity
