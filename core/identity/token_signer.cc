#include "core/identity/token_signer.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <ctime>

#include "core/identity/base64url.h"
#include "core/identity/util.h"

namespace agentgate::identity {
namespace {

status fail(std::string message) { return status(errc::invalid_argument, std::move(message)); }

// OpenSSL asks for a passphrase on the terminal unless told not to.
int refuse_passphrase(char*, int, int, void*) { return -1; }

result<evp_pkey_ptr> read_pem_key(const std::string& path, bool allow_public) {
  auto text = read_small_file(path, pem_file_bytes_max);
  if (!text) return text.error();
  bio_ptr bio(BIO_new_mem_buf(text->data(), static_cast<int>(text->size())));
  if (!bio) return fail("out of memory");
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, refuse_passphrase, nullptr);
  if (key == nullptr && allow_public) {
    bio.reset(BIO_new_mem_buf(text->data(), static_cast<int>(text->size())));
    if (bio) key = PEM_read_bio_PUBKEY(bio.get(), nullptr, refuse_passphrase, nullptr);
  }
  ERR_clear_error();
  if (key == nullptr) {
    return fail(quote_for_message(path) + (allow_public ? " holds no unencrypted PEM key"
                                                        : " holds no unencrypted PEM private key"));
  }
  return evp_pkey_ptr(key);
}

status check_key(EVP_PKEY* key, const std::string& path, key_type& type) {
  auto t = key_type_of(key);
  if (!t) {
    return fail(quote_for_message(path) + ": unsupported key type; expected RSA, EC P-256 or Ed25519");
  }
  if (*t == key_type::rsa) {
    int bits = EVP_PKEY_get_bits(key);
    if (bits < rsa_bits_min || bits > rsa_bits_max) {
      return fail(quote_for_message(path) + ": RSA key of " + std::to_string(bits) +
                  " bits; expected " + std::to_string(rsa_bits_min) + " to " +
                  std::to_string(rsa_bits_max));
    }
  }
  type = *t;
  return status::ok();
}

jws_alg default_alg(key_type type) {
  switch (type) {
    case key_type::rsa: return jws_alg::rs256;
    case key_type::ec_p256: return jws_alg::es256;
    case key_type::ed25519: return jws_alg::eddsa;
  }
  return jws_alg::rs256;
}

// OpenSSL's ECDSA output is DER; JOSE wants r || s, 32 bytes each.
bool der_to_jose(const unsigned char* der, size_t der_bytes, std::string& out) {
  const unsigned char* p = der;
  ecdsa_sig_ptr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der_bytes)));
  if (!sig) return false;
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  out.assign(64, '\0');
  auto* bytes = reinterpret_cast<unsigned char*>(out.data());
  return BN_bn2binpad(r, bytes, 32) == 32 && BN_bn2binpad(s, bytes + 32, 32) == 32;
}

result<std::string> sign_bytes(EVP_PKEY* key, jws_alg alg, std::string_view input) {
  evp_md_ctx_ptr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pkey_ctx = nullptr;
  const EVP_MD* md = alg == jws_alg::eddsa ? nullptr : EVP_sha256();
  bool ok = ctx && EVP_DigestSignInit(ctx.get(), &pkey_ctx, md, nullptr, key) == 1;
  if (ok && alg == jws_alg::ps256) {
    ok = EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PSS_PADDING) == 1 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(pkey_ctx, md) == 1 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pkey_ctx, RSA_PSS_SALTLEN_DIGEST) == 1;
  } else if (ok && alg == jws_alg::rs256) {
    ok = EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PADDING) == 1;
  }
  size_t sig_bytes = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(input.data());
  ok = ok && EVP_DigestSign(ctx.get(), nullptr, &sig_bytes, data, input.size()) == 1;
  std::string sig(sig_bytes, '\0');
  ok = ok && EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &sig_bytes,
                            data, input.size()) == 1;
  if (!ok) {
    ERR_clear_error();
    return fail("signing failed");
  }
  sig.resize(sig_bytes);
  if (alg != jws_alg::es256) return sig;
  std::string jose;
  if (!der_to_jose(reinterpret_cast<const unsigned char*>(sig.data()), sig.size(), jose)) {
    return fail("signing failed");
  }
  return jose;
}

}  // namespace

result<signing_key> load_signing_key(const std::string& pem_path) {
  auto key = read_pem_key(pem_path, false);
  if (!key) return key.error();
  signing_key out;
  if (status s = check_key(key->get(), pem_path, out.type); !s) return s;
  out.alg = default_alg(out.type);
  auto thumbprint = jwk_thumbprint(key->get());
  if (!thumbprint) return thumbprint.error();
  out.thumbprint = std::move(*thumbprint);
  out.key = share_pkey(std::move(*key));
  return out;
}

result<std::string> sign_compact(const signing_key& key, jws_alg alg, std::string_view header_json,
                                 std::string_view payload_json) {
  if (!alg_fits_key(alg, key.type)) {
    return fail(std::string(jws_alg_name(alg)) + " does not fit an " + key_type_name(key.type) +
                " key");
  }
  std::string token;
  base64url_encode(header_json, token);
  token += '.';
  base64url_encode(payload_json, token);
  auto sig = sign_bytes(key.key.get(), alg, token);
  if (!sig) return sig.error();
  token += '.';
  base64url_encode(*sig, token);
  return token;
}

result<std::string> sign_token(const signing_key& key, const token_claims& claims) {
  if (claims.iss.empty()) return fail("iss: required");
  if (claims.aud.empty()) return fail("aud: required");
  if (claims.sub.empty()) return fail("sub: required");
  if (claims.groups_claim.empty()) return fail("groups_claim: required");
  if (claims.ttl_s < 1 || claims.ttl_s > token_ttl_s_max) {
    return fail("ttl: expected 1 to " + std::to_string(token_ttl_s_max) + " seconds");
  }
  int64_t now_s = claims.now_s != 0 ? claims.now_s : static_cast<int64_t>(std::time(nullptr));

  std::string header = "{\"alg\":\"";
  header += jws_alg_name(key.alg);
  header += "\",\"typ\":\"JWT\",\"kid\":";
  append_json_string(header, claims.kid.empty() ? key.thumbprint : claims.kid);
  header += "}";

  std::string payload = "{\"iss\":";
  append_json_string(payload, claims.iss);
  payload += ",\"aud\":";
  append_json_string(payload, claims.aud);
  payload += ",\"sub\":";
  append_json_string(payload, claims.sub);
  if (!claims.email.empty()) {
    payload += ",\"email\":";
    append_json_string(payload, claims.email);
  }
  payload += ",";
  append_json_string(payload, claims.groups_claim);
  payload += ":[";
  for (size_t i = 0; i < claims.groups.size(); ++i) {
    if (i > 0) payload += ",";
    append_json_string(payload, claims.groups[i]);
  }
  payload += "],\"iat\":" + std::to_string(now_s) + ",\"nbf\":" + std::to_string(now_s) +
             ",\"exp\":" + std::to_string(now_s + claims.ttl_s) + "}";
  return sign_compact(key, key.alg, header, payload);
}

result<std::string> sign_token(const std::string& pem_key_path, const token_claims& claims) {
  auto key = load_signing_key(pem_key_path);
  if (!key) return key.error();
  return sign_token(*key, claims);
}

result<std::string> jwks_for_key(const std::string& pem_path, std::string_view kid) {
  auto key = read_pem_key(pem_path, true);
  if (!key) return key.error();
  key_type type;
  if (status s = check_key(key->get(), pem_path, type); !s) return s;
  std::string chosen_kid(kid);
  if (chosen_kid.empty()) {
    auto thumbprint = jwk_thumbprint(key->get());
    if (!thumbprint) return thumbprint.error();
    chosen_kid = std::move(*thumbprint);
  }
  auto jwk = public_jwk_json(key->get(), chosen_kid);
  if (!jwk) return jwk.error();
  return "{\"keys\":[" + *jwk + "]}";
}

}  // namespace agentgate::identity
