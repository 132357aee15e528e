#include "core/identity/jwks.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <simdjson.h>

#include <cstring>

#include "core/identity/base64url.h"
#include "core/identity/util.h"

namespace agentgate::identity {
namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

constexpr size_t ec_coordinate_bytes = 32;
constexpr size_t ed25519_key_bytes = 32;
// 65537 is what everyone uses; eight bytes leaves room for any sane choice.
constexpr size_t rsa_exponent_bytes_max = 8;

status fail(const std::string& path, std::string_view what) {
  return status(errc::invalid_argument, path + ": " + std::string(what));
}

std::string entry_path(size_t index) { return "keys[" + std::to_string(index) + "]"; }

// Members of one JWK that this parser looks at; the rest (x5c, key_ops,
// x5t, ...) is ignored.
struct jwk_fields {
  std::string_view kty, use, alg, kid, crv, n, e, x, y;
  bool has_use = false, has_alg = false, has_kid = false;
};

status read_fields(element value, const std::string& path, jwk_fields& f) {
  object members;
  if (value.get_object().get(members) != simdjson::SUCCESS) return fail(path, "expected an object");
  for (auto member : members) {
    std::string_view* slot = nullptr;
    std::string_view key = member.key;
    if (key == "kty") slot = &f.kty;
    else if (key == "use") slot = &f.use, f.has_use = true;
    else if (key == "alg") slot = &f.alg, f.has_alg = true;
    else if (key == "kid") slot = &f.kid, f.has_kid = true;
    else if (key == "crv") slot = &f.crv;
    else if (key == "n") slot = &f.n;
    else if (key == "e") slot = &f.e;
    else if (key == "x") slot = &f.x;
    else if (key == "y") slot = &f.y;
    else continue;
    if (member.value.get_string().get(*slot) != simdjson::SUCCESS) {
      return fail(path + "." + std::string(key), "expected a string");
    }
  }
  if (f.kty.empty()) return fail(path + ".kty", "required");
  return status::ok();
}

status decode_member(std::string_view text, const std::string& path, std::string& out) {
  if (text.empty()) return fail(path, "required");
  if (!base64url_decode(text, out)) return fail(path, "bad base64url");
  return status::ok();
}

result<evp_pkey_ptr> from_params(const char* type_name, OSSL_PARAM_BLD* bld) {
  params_ptr params(OSSL_PARAM_BLD_to_param(bld));
  evp_pkey_ctx_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type_name, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) <= 0) {
    ERR_clear_error();  // the reason goes into our message; the queue stays clean
    return status(errc::invalid_argument, "not a valid key");
  }
  return evp_pkey_ptr(raw);
}

result<evp_pkey_ptr> build_rsa(const jwk_fields& f, const std::string& path) {
  std::string n_bytes, e_bytes;
  if (status s = decode_member(f.n, path + ".n", n_bytes); !s) return s;
  if (status s = decode_member(f.e, path + ".e", e_bytes); !s) return s;
  bignum_ptr n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n_bytes.data()),
                         static_cast<int>(n_bytes.size()), nullptr));
  bignum_ptr e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e_bytes.data()),
                         static_cast<int>(e_bytes.size()), nullptr));
  if (!n || !e) return fail(path, "out of memory");
  int bits = BN_num_bits(n.get());
  if (bits < rsa_bits_min || bits > rsa_bits_max) {
    return fail(path + ".n", "RSA modulus of " + std::to_string(bits) + " bits; expected " +
                                 std::to_string(rsa_bits_min) + " to " +
                                 std::to_string(rsa_bits_max));
  }
  if (static_cast<size_t>(BN_num_bytes(e.get())) > rsa_exponent_bytes_max ||
      !BN_is_odd(e.get()) || BN_is_one(e.get())) {
    return fail(path + ".e", "not a usable RSA exponent");
  }
  param_bld_ptr bld(OSSL_PARAM_BLD_new());
  if (!bld || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get())) {
    return fail(path, "out of memory");
  }
  auto key = from_params("RSA", bld.get());
  if (!key) return fail(path, "not a valid RSA public key");
  return key;
}

result<evp_pkey_ptr> build_p256(const jwk_fields& f, const std::string& path) {
  std::string x, y;
  if (status s = decode_member(f.x, path + ".x", x); !s) return s;
  if (status s = decode_member(f.y, path + ".y", y); !s) return s;
  // RFC 7518 §6.2.1.2: the full coordinate length, leading zeros included.
  if (x.size() != ec_coordinate_bytes) return fail(path + ".x", "expected 32 bytes");
  if (y.size() != ec_coordinate_bytes) return fail(path + ".y", "expected 32 bytes");
  unsigned char point[1 + 2 * ec_coordinate_bytes];
  point[0] = 0x04;  // uncompressed
  std::memcpy(point + 1, x.data(), ec_coordinate_bytes);
  std::memcpy(point + 1 + ec_coordinate_bytes, y.data(), ec_coordinate_bytes);
  param_bld_ptr bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      !OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point)) {
    return fail(path, "out of memory");
  }
  auto key = from_params("EC", bld.get());
  if (!key) return fail(path, "not a point on P-256");
  // Invalid-curve attacks feed points off the curve or in a small subgroup;
  // the full public-key check rules both out once, here, not per token.
  evp_pkey_ctx_ptr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key->get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    ERR_clear_error();
    return fail(path, "not a point on P-256");
  }
  return key;
}

result<evp_pkey_ptr> build_ed25519(const jwk_fields& f, const std::string& path) {
  std::string x;
  if (status s = decode_member(f.x, path + ".x", x); !s) return s;
  if (x.size() != ed25519_key_bytes) return fail(path + ".x", "expected 32 bytes");
  EVP_PKEY* raw = EVP_PKEY_new_raw_public_key_ex(
      nullptr, "ED25519", nullptr, reinterpret_cast<const unsigned char*>(x.data()), x.size());
  if (raw == nullptr) {
    ERR_clear_error();
    return fail(path, "not a valid Ed25519 public key");
  }
  return evp_pkey_ptr(raw);
}

// Which entries this gateway verifies with. nullopt: skip the entry.
std::optional<key_type> usable_type(const jwk_fields& f) {
  if (f.has_use && f.use != "sig") return std::nullopt;  // "enc" keys never sign tokens
  if (f.kty == "RSA") return key_type::rsa;
  if (f.kty == "EC" && f.crv == "P-256") return key_type::ec_p256;
  if (f.kty == "OKP" && f.crv == "Ed25519") return key_type::ed25519;
  return std::nullopt;  // "oct" (HMAC is refused anyway), P-384, Ed448, X25519, ...
}

result<std::string> fingerprint_of(const std::vector<jwk>& keys) {
  evp_md_ctx_ptr md(EVP_MD_CTX_new());
  if (!md || EVP_DigestInit_ex2(md.get(), EVP_sha256(), nullptr) != 1) {
    return status(errc::invalid_argument, "SHA-256 unavailable");
  }
  for (const jwk& k : keys) {
    unsigned char* der = nullptr;
    int der_bytes = i2d_PUBKEY(k.key.get(), &der);
    if (der_bytes <= 0) return status(errc::invalid_argument, "cannot encode a public key");
    std::string alg = k.alg ? jws_alg_name(*k.alg) : "*";
    uint64_t kid_bytes = k.kid.size();
    bool ok = EVP_DigestUpdate(md.get(), &kid_bytes, sizeof kid_bytes) == 1 &&
              EVP_DigestUpdate(md.get(), k.kid.data(), k.kid.size()) == 1 &&
              EVP_DigestUpdate(md.get(), alg.c_str(), alg.size() + 1) == 1 &&
              EVP_DigestUpdate(md.get(), der, static_cast<size_t>(der_bytes)) == 1;
    OPENSSL_free(der);
    if (!ok) return status(errc::invalid_argument, "SHA-256 failed");
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_bytes = 0;
  if (EVP_DigestFinal_ex(md.get(), digest, &digest_bytes) != 1) {
    return status(errc::invalid_argument, "SHA-256 failed");
  }
  return std::string(reinterpret_cast<char*>(digest), digest_bytes);
}

result<std::string> bn_param_bytes(EVP_PKEY* pkey, const char* name, int pad_bytes) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, name, &raw) != 1) {
    return status(errc::invalid_argument, "cannot read the public key");
  }
  bignum_ptr bn(raw);
  int size = pad_bytes > 0 ? pad_bytes : BN_num_bytes(bn.get());
  std::string out(static_cast<size_t>(size), '\0');
  if (BN_bn2binpad(bn.get(), reinterpret_cast<unsigned char*>(out.data()), size) != size) {
    return status(errc::invalid_argument, "cannot read the public key");
  }
  return out;
}

// The public members of a JWK in RFC 7638 order (lexicographic), without
// braces: the thumbprint input and the start of the published JWK.
result<std::string> public_members(EVP_PKEY* pkey) {
  auto type = key_type_of(pkey);
  if (!type) {
    return status(errc::invalid_argument,
                  "unsupported key type: expected RSA, EC P-256 or Ed25519");
  }
  std::string out;
  switch (*type) {
    case key_type::rsa: {
      auto n = bn_param_bytes(pkey, OSSL_PKEY_PARAM_RSA_N, 0);
      auto e = bn_param_bytes(pkey, OSSL_PKEY_PARAM_RSA_E, 0);
      if (!n) return n.error();
      if (!e) return e.error();
      out = "\"e\":\"" + base64url_encode(*e) + "\",\"kty\":\"RSA\",\"n\":\"" +
            base64url_encode(*n) + "\"";
      break;
    }
    case key_type::ec_p256: {
      auto x = bn_param_bytes(pkey, OSSL_PKEY_PARAM_EC_PUB_X, ec_coordinate_bytes);
      auto y = bn_param_bytes(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, ec_coordinate_bytes);
      if (!x) return x.error();
      if (!y) return y.error();
      out = "\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"" + base64url_encode(*x) + "\",\"y\":\"" +
            base64url_encode(*y) + "\"";
      break;
    }
    case key_type::ed25519: {
      unsigned char raw[ed25519_key_bytes];
      size_t raw_bytes = sizeof raw;
      if (EVP_PKEY_get_raw_public_key(pkey, raw, &raw_bytes) != 1 ||
          raw_bytes != ed25519_key_bytes) {
        return status(errc::invalid_argument, "cannot read the public key");
      }
      out = "\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"" +
            base64url_encode(std::string_view(reinterpret_cast<char*>(raw), raw_bytes)) + "\"";
      break;
    }
  }
  return out;
}

}  // namespace

const char* jws_alg_name(jws_alg alg) {
  switch (alg) {
    case jws_alg::rs256: return "RS256";
    case jws_alg::ps256: return "PS256";
    case jws_alg::es256: return "ES256";
    case jws_alg::eddsa: return "EdDSA";
  }
  return "?";
}

const char* key_type_name(key_type type) {
  switch (type) {
    case key_type::rsa: return "RSA";
    case key_type::ec_p256: return "EC P-256";
    case key_type::ed25519: return "Ed25519";
  }
  return "?";
}

bool alg_fits_key(jws_alg alg, key_type type) {
  switch (alg) {
    case jws_alg::rs256:
    case jws_alg::ps256: return type == key_type::rsa;
    case jws_alg::es256: return type == key_type::ec_p256;
    case jws_alg::eddsa: return type == key_type::ed25519;
  }
  return false;
}

std::optional<jws_alg> parse_jws_alg(std::string_view name) {
  if (name == "RS256") return jws_alg::rs256;
  if (name == "PS256") return jws_alg::ps256;
  if (name == "ES256") return jws_alg::es256;
  if (name == "EdDSA") return jws_alg::eddsa;
  return std::nullopt;
}

const jwk* key_set::find(std::string_view kid) const {
  for (const jwk& k : keys) {
    if (!k.kid.empty() && k.kid == kid) return &k;
  }
  return nullptr;
}

result<key_set> parse_jwks(std::string_view json) {
  if (json.size() > jwks_bytes_max) {
    return status(errc::invalid_argument,
                  "larger than " + std::to_string(jwks_bytes_max) + " bytes");
  }
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  element root;
  if (auto err = parser.parse(padded).get(root); err != simdjson::SUCCESS) {
    return status(errc::invalid_argument, std::string("invalid JSON: ") + simdjson::error_message(err));
  }
  object top;
  if (root.get_object().get(top) != simdjson::SUCCESS) {
    return status(errc::invalid_argument, "expected a JSON object with \"keys\"");
  }
  array entries;
  if (auto err = top["keys"].get_array().get(entries); err != simdjson::SUCCESS) {
    return fail("keys", err == simdjson::NO_SUCH_FIELD ? "required" : "expected an array");
  }
  if (entries.size() > jwks_entries_max) {
    return fail("keys", "more than " + std::to_string(jwks_entries_max) + " entries");
  }

  key_set set;
  size_t index = 0;
  for (element entry : entries) {
    std::string path = entry_path(index++);
    jwk_fields f;
    if (status s = read_fields(entry, path, f); !s) return s;
    std::optional<key_type> type = usable_type(f);
    std::optional<jws_alg> alg;
    if (type && f.has_alg) {
      alg = parse_jws_alg(f.alg);
      // A key pinned to an algorithm we do not verify (RS384, RSA-OAEP, ...)
      // is not a key for us.
      if (!alg) type.reset();
      else if (!alg_fits_key(*alg, *type)) {
        return fail(path + ".alg", std::string(jws_alg_name(*alg)) + " does not fit an " +
                                       key_type_name(*type) + " key");
      }
    }
    if (!type) {
      ++set.skipped;
      continue;
    }
    if (f.has_kid && (f.kid.empty() || f.kid.size() > kid_bytes_max)) {
      return fail(path + ".kid", "expected 1 to " + std::to_string(kid_bytes_max) + " bytes");
    }
    if (f.has_kid && set.find(f.kid) != nullptr) {
      // Two keys under one kid would make the choice of key depend on order.
      return fail(path + ".kid", quote_for_message(f.kid) + " appears twice");
    }
    if (set.keys.size() == jwks_keys_max) {
      return fail("keys", "more than " + std::to_string(jwks_keys_max) + " signing keys");
    }
    result<evp_pkey_ptr> key = *type == key_type::rsa       ? build_rsa(f, path)
                               : *type == key_type::ec_p256 ? build_p256(f, path)
                                                            : build_ed25519(f, path);
    if (!key) return key.error();
    jwk k;
    k.kid = std::string(f.kid);
    k.type = *type;
    k.alg = alg;
    k.key = share_pkey(std::move(*key));
    set.keys.push_back(std::move(k));
  }
  if (set.keys.empty()) {
    return fail("keys", "no usable signing key (RSA, EC P-256 or Ed25519 with use \"sig\")");
  }
  auto fingerprint = fingerprint_of(set.keys);
  if (!fingerprint) return fingerprint.error();
  set.fingerprint = std::move(*fingerprint);
  return set;
}

result<key_set> load_jwks_file(const std::string& path) {
  auto text = read_small_file(path, jwks_bytes_max);
  if (!text) return text.error();
  auto set = parse_jwks(*text);
  if (!set) return status(errc::invalid_argument, quote_for_message(path) + ": " + set.error().message());
  return set;
}

std::optional<key_type> key_type_of(EVP_PKEY* pkey) {
  if (pkey == nullptr) return std::nullopt;
  if (EVP_PKEY_is_a(pkey, "RSA")) return key_type::rsa;
  if (EVP_PKEY_is_a(pkey, "ED25519")) return key_type::ed25519;
  if (EVP_PKEY_is_a(pkey, "EC")) {
    char group[64] = {};
    size_t group_chars = 0;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       &group_chars) == 1 &&
        (std::strcmp(group, "prime256v1") == 0 || std::strcmp(group, "P-256") == 0)) {
      return key_type::ec_p256;
    }
  }
  return std::nullopt;
}

result<std::string> public_jwk_json(EVP_PKEY* pkey, std::string_view kid) {
  auto members = public_members(pkey);
  if (!members) return members.error();
  auto type = key_type_of(pkey);
  jws_alg alg = *type == key_type::rsa       ? jws_alg::rs256
                : *type == key_type::ec_p256 ? jws_alg::es256
                                             : jws_alg::eddsa;
  std::string out = "{" + *members + ",\"use\":\"sig\",\"alg\":\"" + jws_alg_name(alg) + "\"";
  if (!kid.empty()) {
    out += ",\"kid\":";
    append_json_string(out, kid);
  }
  out += "}";
  return out;
}

result<std::string> jwk_thumbprint(EVP_PKEY* pkey) {
  auto members = public_members(pkey);
  if (!members) return members.error();
  std::string canonical = "{" + *members + "}";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_bytes = 0;
  if (EVP_Digest(canonical.data(), canonical.size(), digest, &digest_bytes, EVP_sha256(),
                 nullptr) != 1) {
    return status(errc::invalid_argument, "SHA-256 failed");
  }
  return base64url_encode(std::string_view(reinterpret_cast<char*>(digest), digest_bytes));
}

}  // namespace agentgate::identity
