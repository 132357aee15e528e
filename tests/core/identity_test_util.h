#pragma once
// Test-side key handling and token minting for the identity tests. Written
// against OpenSSL directly rather than through core/identity, so a bug in
// the code under test cannot cancel itself out (e.g. one wrong r||s
// conversion used for both signing and verifying).

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

namespace agentgate::identity::testing {

struct pkey_free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using pkey = std::unique_ptr<EVP_PKEY, pkey_free>;

inline pkey make_rsa(size_t bits = 2048) {
  return pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", bits));
}
inline pkey make_p256() { return pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")); }
inline pkey make_p384() { return pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384")); }
inline pkey make_ed25519() { return pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")); }

inline std::string b64url(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return out;
}

inline std::string bn_bytes(EVP_PKEY* key, const char* name, int pad) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(key, name, &bn);
  int size = pad > 0 ? pad : BN_num_bytes(bn);
  std::string out(static_cast<size_t>(size), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), size);
  BN_free(bn);
  return out;
}

// A public JWK object; alg empty: no "alg" member; kid empty: no "kid".
inline std::string jwk_of(EVP_PKEY* key, const std::string& kid, const std::string& alg = "",
                          const std::string& extra = "") {
  std::string out = "{";
  if (EVP_PKEY_is_a(key, "RSA")) {
    out += R"("kty":"RSA","n":")" + b64url(bn_bytes(key, OSSL_PKEY_PARAM_RSA_N, 0)) +
           R"(","e":")" + b64url(bn_bytes(key, OSSL_PKEY_PARAM_RSA_E, 0)) + "\"";
  } else if (EVP_PKEY_is_a(key, "EC")) {
    char group[32] = {};
    size_t len = 0;
    EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len);
    bool p384 = std::string(group) == "secp384r1";
    int size = p384 ? 48 : 32;
    out += std::string(R"("kty":"EC","crv":")") + (p384 ? "P-384" : "P-256") + R"(","x":")" +
           b64url(bn_bytes(key, OSSL_PKEY_PARAM_EC_PUB_X, size)) + R"(","y":")" +
           b64url(bn_bytes(key, OSSL_PKEY_PARAM_EC_PUB_Y, size)) + "\"";
  } else {
    unsigned char raw[32];
    size_t raw_len = sizeof raw;
    EVP_PKEY_get_raw_public_key(key, raw, &raw_len);
    out += R"("kty":"OKP","crv":"Ed25519","x":")" +
           b64url(std::string(reinterpret_cast<char*>(raw), raw_len)) + "\"";
  }
  if (!kid.empty()) out += R"(,"kid":")" + kid + "\"";
  if (!alg.empty()) out += R"(,"alg":")" + alg + "\"";
  out += extra;
  out += "}";
  return out;
}

inline std::string jwks_of(std::initializer_list<std::string> jwks) {
  std::string out = R"({"keys":[)";
  bool first = true;
  for (const std::string& k : jwks) {
    if (!first) out += ",";
    out += k;
    first = false;
  }
  return out + "]}";
}

// Raw signature over input as JOSE wants it for alg (RS256, PS256, ES256,
// EdDSA); anything else signs RS256-style with SHA-256 (for mismatch tests).
inline std::string raw_sign(EVP_PKEY* key, const std::string& alg, const std::string& input) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  const EVP_MD* md = EVP_PKEY_is_a(key, "ED25519") ? nullptr : EVP_sha256();
  EVP_DigestSignInit(ctx, &pctx, md, nullptr, key);
  if (alg == "PS256") {
    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256());
    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32);  // JOSE: salt length = hash length
  }
  size_t len = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(input.data());
  EVP_DigestSign(ctx, nullptr, &len, data, input.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, data, input.size());
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (EVP_PKEY_is_a(key, "EC")) {
    // DER -> r || s, each padded to the curve's size.
    int size = EVP_PKEY_get_bits(key) == 384 ? 48 : 32;
    const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    std::string jose(2 * static_cast<size_t>(size), '\0');
    BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(jose.data()), size);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(jose.data()) + size, size);
    ECDSA_SIG_free(es);
    return jose;
  }
  return sig;
}

// header.payload.signature, header and payload taken verbatim.
inline std::string craft(EVP_PKEY* key, const std::string& alg, const std::string& header,
                         const std::string& payload) {
  std::string input = b64url(header) + "." + b64url(payload);
  return input + "." + b64url(raw_sign(key, alg, input));
}

inline bool write_private_pem(EVP_PKEY* key, const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return false;
  bool ok = PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  return std::fclose(f) == 0 && ok;
}

inline bool write_public_pem(EVP_PKEY* key, const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return false;
  bool ok = PEM_write_PUBKEY(f, key) == 1;
  return std::fclose(f) == 0 && ok;
}

inline std::string make_temp_dir(const char* name) {
  std::string pattern = (std::filesystem::temp_directory_path() / name).string() + ".XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return "";
  return pattern;
}

}  // namespace agentgate::identity::testing
