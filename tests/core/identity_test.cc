#include "core/identity/jwt.h"

#include <gtest/gtest.h>
#include <openssl/hmac.h>

#include <atomic>
#include <thread>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "core/identity/base64url.h"
#include "core/identity/jwks.h"
#include "core/identity/jwt_authenticator.h"
#include "core/identity/token_signer.h"
#include "tests/core/identity_test_util.h"

namespace agentgate::identity {
namespace {

namespace fs = std::filesystem;
using namespace agentgate::identity::testing;

constexpr int64_t now = 1'700'000'000;
constexpr const char* iss_a = "https://idp-a.example.com";
constexpr const char* iss_b = "https://idp-b.example.com";
constexpr const char* aud = "agentgate";

// Keys are generated once for the suite: RSA generation is slow, and under
// ASan slower still.
struct suite_keys {
  pkey rsa, rsa2, p256, ed, other_rsa, p384;
  std::string dir;
};
suite_keys* keys = nullptr;

class IdentityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    keys = new suite_keys;
    keys->rsa = make_rsa();
    keys->rsa2 = make_rsa();
    keys->p256 = make_p256();
    keys->ed = make_ed25519();
    keys->other_rsa = make_rsa();
    keys->p384 = make_p384();
    keys->dir = make_temp_dir("identity_test");
    ASSERT_FALSE(keys->dir.empty());
    ASSERT_TRUE(write_private_pem(keys->rsa.get(), pem("rsa")));
    ASSERT_TRUE(write_private_pem(keys->p256.get(), pem("p256")));
    ASSERT_TRUE(write_private_pem(keys->ed.get(), pem("ed")));
    ASSERT_TRUE(write_private_pem(keys->p384.get(), pem("p384")));
    ASSERT_TRUE(write_public_pem(keys->p256.get(), pem("p256-public")));
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    fs::remove_all(keys->dir, ignored);
    delete keys;
    keys = nullptr;
  }
  static std::string pem(const std::string& name) { return keys->dir + "/" + name + ".pem"; }

  // Issuer A trusts rsa ("r1", any RSA alg), p256 ("e1") and ed ("d1");
  // issuer B trusts other_rsa ("b1") only.
  static std::string jwks_a() {
    return jwks_of({jwk_of(keys->rsa.get(), "r1"), jwk_of(keys->p256.get(), "e1", "ES256"),
                    jwk_of(keys->ed.get(), "d1", "EdDSA")});
  }
  static std::string jwks_b() { return jwks_of({jwk_of(keys->other_rsa.get(), "b1", "RS256")}); }

  static identity_config config(uint32_t leeway_s = 60, const std::string& groups_claim = "groups") {
    identity_config c;
    issuer_config a;
    a.issuer = iss_a;
    a.audience = aud;
    a.groups_claim = groups_claim;
    issuer_config b;
    b.issuer = iss_b;
    b.audience = "other-gateway";
    c.issuers = {a, b};
    c.leeway_s = leeway_s;
    c.token_bytes_max = 8192;
    return c;
  }

  static key_set parse(const std::string& json) {
    auto r = parse_jwks(json);
    EXPECT_TRUE(r) << r.error().message();
    return r ? std::move(*r) : key_set{};
  }

  static std::shared_ptr<const verifier> make_verifier(identity_config c = config(),
                                                       std::string a = jwks_a(),
                                                       std::string b = jwks_b()) {
    return verifier::create(c, {parse(a), parse(b)});
  }

  static std::string header(const std::string& alg, const std::string& kid) {
    std::string h = R"({"alg":")" + alg + R"(","typ":"JWT")";
    if (!kid.empty()) h += R"(,"kid":")" + kid + "\"";
    return h + "}";
  }

  // Claims accepted by issuer A at `now`, plus extra members.
  static std::string payload(const std::string& extra = "", int64_t exp = now + 600,
                             const std::string& iss = iss_a) {
    return R"({"iss":")" + iss + R"(","aud":")" + aud + R"(","sub":"alice","exp":)" +
           std::to_string(exp) + R"(,"iat":)" + std::to_string(now - 10) + extra + "}";
  }

  static std::string rs256(const std::string& payload_json, const std::string& kid = "r1") {
    return craft(keys->rsa.get(), "RS256", header("RS256", kid), payload_json);
  }

  // The refusal reason, or "ok".
  static std::string outcome(const verifier& v, const std::string& token, int64_t at = now) {
    auto r = v.verify(token, at);
    if (r) return "ok";
    EXPECT_EQ(r.error().code(), errc::auth);
    return r.error().message();
  }
};

token_claims minimal_claims() {
  token_claims claims;
  claims.iss = iss_a;
  claims.aud = aud;
  claims.sub = "s";
  return claims;
}

// ---- base64url ----

TEST(Base64urlTest, RoundTripsEveryLength) {
  std::string bytes;
  for (int i = 0; i < 70; ++i) {
    std::string encoded = base64url_encode(bytes);
    EXPECT_EQ(encoded, b64url(bytes));
    std::string decoded;
    ASSERT_TRUE(base64url_decode(encoded, decoded)) << encoded;
    EXPECT_EQ(decoded, bytes);
    bytes += static_cast<char>(i * 37 + 255);
  }
}

TEST(Base64urlTest, RefusesNonCanonicalInput) {
  std::string out;
  EXPECT_FALSE(base64url_decode("QQ==", out));  // padding
  EXPECT_FALSE(base64url_decode("QQ=", out));
  EXPECT_FALSE(base64url_decode("a+b/", out));  // standard alphabet
  EXPECT_FALSE(base64url_decode("QUJD RA", out));  // whitespace
  EXPECT_FALSE(base64url_decode("QUJDR", out));    // length 4n+1
  EXPECT_FALSE(base64url_decode("QR", out));       // stray bits after the last byte
  EXPECT_FALSE(base64url_decode(std::string("QU\0J", 4), out));
  EXPECT_TRUE(base64url_decode("QQ", out));
  EXPECT_EQ(out, "A");
  EXPECT_TRUE(base64url_decode("", out));
  EXPECT_EQ(out, "");
}

// ---- JWKS ----

TEST_F(IdentityTest, JwksParsesAllKeyTypes) {
  key_set set = parse(jwks_a());
  ASSERT_EQ(set.keys.size(), 3u);
  EXPECT_EQ(set.keys[0].type, key_type::rsa);
  EXPECT_FALSE(set.keys[0].alg.has_value());
  EXPECT_EQ(set.keys[1].type, key_type::ec_p256);
  EXPECT_EQ(set.keys[1].alg, jws_alg::es256);
  EXPECT_EQ(set.keys[2].type, key_type::ed25519);
  EXPECT_NE(set.find("e1"), nullptr);
  EXPECT_EQ(set.find("nope"), nullptr);
  EXPECT_EQ(set.fingerprint.size(), 32u);
  EXPECT_EQ(parse(jwks_a()).fingerprint, set.fingerprint);
  EXPECT_NE(parse(jwks_b()).fingerprint, set.fingerprint);
}

TEST_F(IdentityTest, JwksSkipsKeysNotForSigning) {
  key_set set = parse(jwks_of({
      jwk_of(keys->rsa.get(), "enc-key", "", R"(,"use":"enc")"),
      R"({"kty":"oct","k":"c2VjcmV0","kid":"hmac"})",
      jwk_of(keys->p384.get(), "p384", "ES384"),
      jwk_of(keys->rsa2.get(), "rs512", "RS512"),
      R"({"kty":"OKP","crv":"X25519","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","kid":"x"})",
      R"({"kty":"weird","kid":"w"})",
      jwk_of(keys->ed.get(), "sig", "", R"(,"use":"sig","x5c":["ignored"])"),
  }));
  ASSERT_EQ(set.keys.size(), 1u);
  EXPECT_EQ(set.keys[0].kid, "sig");
  EXPECT_EQ(set.skipped, 6u);
}

TEST_F(IdentityTest, JwksRefusesMalformedDocuments) {
  auto error = [](const std::string& json) {
    auto r = parse_jwks(json);
    return r ? std::string("ok") : r.error().message();
  };
  std::string rsa = jwk_of(keys->rsa.get(), "r1");
  EXPECT_EQ(error("[]"), R"(expected a JSON object with "keys")");
  EXPECT_EQ(error("{"), "invalid JSON: The JSON document has an improper structure: missing or "
                        "superfluous commas, braces, missing keys, etc.");
  EXPECT_EQ(error("{}"), "keys: required");
  EXPECT_EQ(error(R"({"keys":{}})"), "keys: expected an array");
  EXPECT_EQ(error(R"({"keys":[]})"),
            R"(keys: no usable signing key (RSA, EC P-256 or Ed25519 with use "sig"))");
  EXPECT_EQ(error(R"({"keys":[1]})"), "keys[0]: expected an object");
  EXPECT_EQ(error(R"({"keys":[{"n":"AQAB"}]})"), "keys[0].kty: required");
  EXPECT_EQ(error(R"({"keys":[{"kty":"RSA","e":"AQAB"}]})"), "keys[0].n: required");
  EXPECT_EQ(error(R"({"keys":[{"kty":"RSA","n":"AQAB=","e":"AQAB"}]})"), "keys[0].n: bad base64url");
  EXPECT_EQ(error(R"({"keys":[{"kty":"RSA","kid":7}]})"), "keys[0].kid: expected a string");
  EXPECT_EQ(error(jwks_of({rsa, rsa})), R"(keys[1].kid: "r1" appears twice)");
  EXPECT_EQ(error(jwks_of({jwk_of(keys->rsa.get(), "r", "ES256")})),
            "keys[0].alg: ES256 does not fit an RSA key");
  pkey small = make_rsa(1024);
  EXPECT_EQ(error(jwks_of({jwk_of(small.get(), "small")})),
            "keys[0].n: RSA modulus of 1024 bits; expected 2048 to 8192");
  // A P-256 "point" that is not on the curve.
  std::string off_curve = R"({"kty":"EC","crv":"P-256","x":")" + b64url(std::string(32, '\1')) +
                          R"(","y":")" + b64url(std::string(32, '\2')) + R"("})";
  EXPECT_EQ(error(jwks_of({off_curve})), "keys[0]: not a point on P-256");
  std::string short_x = R"({"kty":"EC","crv":"P-256","x":")" + b64url(std::string(31, '\1')) +
                        R"(","y":")" + b64url(std::string(32, '\2')) + R"("})";
  EXPECT_EQ(error(jwks_of({short_x})), "keys[0].x: expected 32 bytes");
  EXPECT_EQ(error(R"({"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]})"),
            "keys[0].x: expected 32 bytes");
  EXPECT_EQ(error(std::string(jwks_bytes_max + 1, ' ')), "larger than 262144 bytes");
}

TEST_F(IdentityTest, JwksBoundsKeyCount) {
  std::string ed = jwk_of(keys->ed.get(), "");
  std::string json = R"({"keys":[)";
  for (size_t i = 0; i <= jwks_keys_max; ++i) {
    if (i > 0) json += ",";
    json += ed.substr(0, ed.size() - 1) + R"(,"kid":"k)" + std::to_string(i) + "\"}";
  }
  auto r = parse_jwks(json + "]}");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "keys: more than 64 signing keys");
}

TEST_F(IdentityTest, LoadJwksFileNamesTheFile) {
  auto missing = load_jwks_file(keys->dir + "/none.json");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(),
            "cannot open \"" + keys->dir + "/none.json\": No such file or directory");
  std::ofstream(keys->dir + "/bad.json") << R"({"keys": 1})";
  auto bad = load_jwks_file(keys->dir + "/bad.json");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(), "\"" + keys->dir + "/bad.json\": keys: expected an array");
}

// ---- round trips ----

TEST_F(IdentityTest, SignTokenRoundTripsForEveryKeyType) {
  for (const char* name : {"rsa", "p256", "ed"}) {
    SCOPED_TRACE(name);
    auto jwks = jwks_for_key(pem(name), "");
    ASSERT_TRUE(jwks) << jwks.error().message();
    identity_config c = config();
    auto v = verifier::create(c, {parse(*jwks), parse(jwks_b())});
    token_claims claims;
    claims.iss = iss_a;
    claims.aud = aud;
    claims.sub = "alice";
    claims.email = "alice@example.com";
    claims.groups = {"dba", "dev"};
    claims.ttl_s = 300;
    claims.now_s = now;
    auto token = sign_token(pem(name), claims);
    ASSERT_TRUE(token) << token.error().message();
    auto id = v->verify(*token, now);
    ASSERT_TRUE(id) << id.error().message();
    EXPECT_EQ(id->issuer, iss_a);
    EXPECT_EQ(id->sub, "alice");
    EXPECT_EQ(id->email, "alice@example.com");
    EXPECT_EQ(id->groups, (std::vector<std::string>{"dba", "dev"}));
    EXPECT_EQ(id->exp_s, now + 300);
    // exp is enforced for minted tokens too.
    EXPECT_EQ(outcome(*v, *token, now + 300 + 60), reason::expired);
  }
}

TEST_F(IdentityTest, SignTokenPicksAlgorithmFromKey) {
  token_claims claims = minimal_claims();
  auto header_of = [&](const char* name) {
    auto token = sign_token(pem(name), claims);
    EXPECT_TRUE(token);
    std::string h;
    EXPECT_TRUE(base64url_decode(token->substr(0, token->find('.')), h));
    return h;
  };
  auto key = load_signing_key(pem("rsa"));
  ASSERT_TRUE(key);
  EXPECT_EQ(header_of("rsa"), R"({"alg":"RS256","typ":"JWT","kid":")" + key->thumbprint + "\"}");
  EXPECT_NE(header_of("p256").find(R"("alg":"ES256")"), std::string::npos);
  EXPECT_NE(header_of("ed").find(R"("alg":"EdDSA")"), std::string::npos);
  claims.kid = "chosen";
  auto with_kid = sign_token(pem("ed"), claims);
  ASSERT_TRUE(with_kid);
  std::string h;
  ASSERT_TRUE(base64url_decode(with_kid->substr(0, with_kid->find('.')), h));
  EXPECT_NE(h.find(R"("kid":"chosen")"), std::string::npos);
}

TEST_F(IdentityTest, JwksForKeyMatchesSignTokenKid) {
  auto from_private = jwks_for_key(pem("p256"), "");
  auto from_public = jwks_for_key(pem("p256-public"), "");
  ASSERT_TRUE(from_private) << from_private.error().message();
  ASSERT_TRUE(from_public) << from_public.error().message();
  EXPECT_EQ(*from_private, *from_public);
  auto key = load_signing_key(pem("p256"));
  ASSERT_TRUE(key);
  EXPECT_NE(from_private->find(R"("kid":")" + key->thumbprint + "\""), std::string::npos);
  EXPECT_EQ(key->thumbprint.size(), 43u);  // SHA-256, base64url
  auto named = jwks_for_key(pem("p256"), "my \"kid\"");
  ASSERT_TRUE(named);
  EXPECT_NE(named->find(R"("kid":"my \"kid\"")"), std::string::npos);
  EXPECT_EQ(parse(*named).keys.at(0).kid, "my \"kid\"");
}

TEST_F(IdentityTest, RfcThumbprintVector) {
  // RFC 7638 §3.1: the RSA key and its thumbprint.
  std::string jwk_json = R"({"keys":[{"kty":"RSA","e":"AQAB","n":")"
      "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
      "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
      "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
      "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
      R"("}]})";
  key_set set = parse(jwk_json);
  ASSERT_EQ(set.keys.size(), 1u);
  auto thumbprint = jwk_thumbprint(set.keys[0].key.get());
  ASSERT_TRUE(thumbprint);
  EXPECT_EQ(*thumbprint, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
}

TEST_F(IdentityTest, SignTokenRefusesBadInput) {
  token_claims claims = minimal_claims();
  auto error = [&](const std::string& path) {
    auto r = sign_token(path, claims);
    return r ? std::string("ok") : r.error().message();
  };
  EXPECT_EQ(error(pem("missing")), "cannot open \"" + pem("missing") + "\": No such file or directory");
  EXPECT_EQ(error(pem("p256-public")), "\"" + pem("p256-public") + "\" holds no unencrypted PEM private key");
  EXPECT_EQ(error(pem("p384")),
            "\"" + pem("p384") + "\": unsupported key type; expected RSA, EC P-256 or Ed25519");
  claims.ttl_s = 0;
  EXPECT_EQ(error(pem("ed")), "ttl: expected 1 to 31622400 seconds");
  claims.ttl_s = 60;
  claims.sub.clear();
  EXPECT_EQ(error(pem("ed")), "sub: required");
  // An encrypted key is refused, not prompted for.
  std::string encrypted = keys->dir + "/encrypted.pem";
  FILE* f = std::fopen(encrypted.c_str(), "w");
  ASSERT_NE(f, nullptr);
  PEM_write_PrivateKey(f, keys->ed.get(), EVP_aes_128_cbc(), nullptr, 0, nullptr,
                       const_cast<char*>("pass"));
  std::fclose(f);
  claims.sub = "s";
  EXPECT_EQ(error(encrypted), "\"" + encrypted + "\" holds no unencrypted PEM private key");
}

TEST_F(IdentityTest, IndependentlySignedTokensVerify) {
  auto v = make_verifier();
  EXPECT_EQ(outcome(*v, rs256(payload())), "ok");
  EXPECT_EQ(outcome(*v, craft(keys->p256.get(), "ES256", header("ES256", "e1"), payload())), "ok");
  EXPECT_EQ(outcome(*v, craft(keys->ed.get(), "EdDSA", header("EdDSA", "d1"), payload())), "ok");
}

TEST_F(IdentityTest, Ps256RoundTrip) {
  auto v = make_verifier();
  std::string token = craft(keys->rsa.get(), "PS256", header("PS256", "r1"), payload());
  auto id = v->verify(token, now);
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(id->sub, "alice");
  // PS256 with the wrong salt length is not the JOSE algorithm.
  std::string input = b64url(header("PS256", "r1")) + "." + b64url(payload());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  EVP_DigestSignInit(ctx, &pctx, EVP_sha256(), nullptr, keys->rsa.get());
  EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
  EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 20);
  size_t len = 0;
  EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                 input.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                 reinterpret_cast<const unsigned char*>(input.data()), input.size());
  EVP_MD_CTX_free(ctx);
  EXPECT_EQ(outcome(*v, input + "." + b64url(sig)), reason::bad_signature);
  // A PKCS#1 v1.5 signature under a PS256 header does not verify either.
  std::string v15 = craft(keys->rsa.get(), "RS256", header("PS256", "r1"), payload());
  EXPECT_EQ(outcome(*v, v15), reason::bad_signature);
}

TEST_F(IdentityTest, SignCompactSignsArbitraryJsonWithAFittingAlgorithm) {
  auto key = load_signing_key(pem("rsa"));
  ASSERT_TRUE(key) << key.error().message();
  auto ps = sign_compact(*key, jws_alg::ps256, header("PS256", "r1"), payload());
  ASSERT_TRUE(ps) << ps.error().message();
  EXPECT_EQ(outcome(*make_verifier(), *ps), "ok");
  auto wrong = sign_compact(*key, jws_alg::es256, header("ES256", "r1"), payload());
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().message(), "ES256 does not fit an RSA key");
}

// ---- refusals, one test each ----

TEST_F(IdentityTest, RefusesOversizedTokenBeforeParsing) {
  identity_config c = config();
  c.token_bytes_max = 1024;
  auto v = make_verifier(c);
  // Garbage too: the size check comes before anything reads the bytes.
  EXPECT_EQ(outcome(*v, std::string(1025, '!')), reason::too_long);
  std::string big = rs256(payload(R"(,"pad":")" + std::string(1200, 'x') + "\""));
  EXPECT_EQ(outcome(*v, big), reason::too_long);
  EXPECT_EQ(outcome(*make_verifier(), big), "ok");
}

TEST_F(IdentityTest, RefusesWrongNumberOfParts) {
  auto v = make_verifier();
  std::string token = rs256(payload());
  for (const std::string& t : {std::string(""), std::string("abc"), std::string("a.b"),
                               token + ".x", "." + token.substr(token.find('.') + 1),
                               token.substr(0, token.find('.')) + ".." +
                                   token.substr(token.rfind('.') + 1)}) {
    EXPECT_EQ(outcome(*v, t), reason::not_three_parts) << t;
  }
}

TEST_F(IdentityTest, RefusesBadBase64url) {
  auto v = make_verifier();
  std::string token = rs256(payload());
  size_t dot1 = token.find('.'), dot2 = token.rfind('.');
  std::string h = token.substr(0, dot1), p = token.substr(dot1 + 1, dot2 - dot1 - 1),
              s = token.substr(dot2 + 1);
  for (const std::string& t : {h + "=." + p + "." + s, h + "." + p + "." + s + "=",
                               h + "." + p + "+." + s, h + "." + p + "." + s + "/",
                               h + " ." + p + "." + s, h + "." + p + "." + s + "\n",
                               h + "." + p + "." + s.substr(0, s.size() - 1) + "#"}) {
    EXPECT_EQ(outcome(*v, t), reason::bad_base64url) << t;
  }
}

TEST_F(IdentityTest, RefusesHeaderThatIsNotJson) {
  auto v = make_verifier();
  for (const std::string& h : {std::string("not json"), std::string("[]"), std::string("\"RS256\""),
                               std::string(R"({"alg":"RS256")")}) {
    EXPECT_EQ(outcome(*v, craft(keys->rsa.get(), "RS256", h, payload())), reason::bad_header) << h;
  }
}

TEST_F(IdentityTest, RefusesPayloadThatIsNotJson) {
  auto v = make_verifier();
  for (const std::string& p : {std::string("hello"), std::string("[1]"), std::string("{\"iss\":")}) {
    EXPECT_EQ(outcome(*v, craft(keys->rsa.get(), "RS256", header("RS256", "r1"), p)),
              reason::bad_payload)
        << p;
  }
}

TEST_F(IdentityTest, RefusesAlgNone) {
  auto v = make_verifier();
  for (const char* alg : {"none", "None", "NONE", "nOnE"}) {
    std::string unsigned_token = b64url(header(alg, "r1")) + "." + b64url(payload()) + ".";
    EXPECT_EQ(outcome(*v, unsigned_token), reason::alg_none) << alg;
    // With a (valid RS256) signature attached it is still none.
    EXPECT_EQ(outcome(*v, craft(keys->rsa.get(), "RS256", header(alg, "r1"), payload())),
              reason::alg_none);
  }
}

TEST_F(IdentityTest, RefusesHmacAlgorithms) {
  auto v = make_verifier();
  // The classic confusion attack: HMAC keyed with the public key's bytes.
  unsigned char* der = nullptr;
  int der_len = i2d_PUBKEY(keys->rsa.get(), &der);
  std::string input = b64url(header("HS256", "r1")) + "." + b64url(payload());
  unsigned char mac[32];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), der, der_len, reinterpret_cast<const unsigned char*>(input.data()),
       input.size(), mac, &mac_len);
  OPENSSL_free(der);
  std::string forged = input + "." + b64url(std::string(reinterpret_cast<char*>(mac), mac_len));
  EXPECT_EQ(outcome(*v, forged), reason::alg_hmac);
  for (const char* alg : {"HS384", "HS512", "hs256"}) {
    EXPECT_EQ(outcome(*v, b64url(header(alg, "r1")) + "." + b64url(payload()) + ".AAAA"),
              reason::alg_hmac)
        << alg;
  }
}

TEST_F(IdentityTest, RefusesUnknownAlgorithms) {
  auto v = make_verifier();
  for (const char* alg : {"RS512", "ES384", "PS512", "Ed25519", "rs256", "", "RSA-OAEP"}) {
    EXPECT_EQ(outcome(*v, craft(keys->rsa.get(), "RS256", header(alg, "r1"), payload())),
              reason::alg_unknown)
        << alg;
  }
  EXPECT_EQ(outcome(*v, craft(keys->rsa.get(), "RS256", R"({"alg":256,"kid":"r1"})", payload())),
            reason::alg_unknown);
  EXPECT_EQ(outcome(*v, craft(keys->rsa.get(), "RS256", R"({"kid":"r1"})", payload())),
            reason::no_alg);
}

TEST_F(IdentityTest, RefusesCriticalExtensions) {
  auto v = make_verifier();
  std::string h = R"({"alg":"RS256","kid":"r1","crit":["b64"],"b64":false})";
  EXPECT_EQ(outcome(*v, craft(keys->rsa.get(), "RS256", h, payload())), reason::crit);
}

TEST_F(IdentityTest, RefusesAlgorithmThatDoesNotMatchTheKey) {
  auto v = make_verifier();
  // RS256 header naming the EC key; signed with RSA so only the type differs.
  EXPECT_EQ(outcome(*v, craft(keys->rsa.get(), "RS256", header("RS256", "e1"), payload())),
            reason::alg_mismatch);
  EXPECT_EQ(outcome(*v, craft(keys->p256.get(), "ES256", header("ES256", "r1"), payload())),
            reason::alg_mismatch);
  EXPECT_EQ(outcome(*v, craft(keys->ed.get(), "EdDSA", header("EdDSA", "e1"), payload())),
            reason::alg_mismatch);
  EXPECT_EQ(outcome(*v, craft(keys->rsa.get(), "PS256", header("PS256", "d1"), payload())),
            reason::alg_mismatch);
  // A key pinned to RS256 in the JWKS does not accept PS256.
  auto pinned = make_verifier(config(), jwks_of({jwk_of(keys->rsa.get(), "r1", "RS256")}));
  EXPECT_EQ(outcome(*pinned, craft(keys->rsa.get(), "PS256", header("PS256", "r1"), payload())),
            reason::alg_mismatch);
  EXPECT_EQ(outcome(*pinned, rs256(payload())), "ok");
}

TEST_F(IdentityTest, RefusesUnknownKid) {
  auto v = make_verifier();
  EXPECT_EQ(outcome(*v, rs256(payload(), "r2")), reason::unknown_key);
  EXPECT_EQ(outcome(*v, craft(keys->rsa.get(), "RS256", R"({"alg":"RS256","kid":5})", payload())),
            reason::bad_kid);
}

TEST_F(IdentityTest, MissingKidNeedsASingleKey) {
  auto v = make_verifier();
  EXPECT_EQ(outcome(*v, rs256(payload(), "")), reason::kid_needed);
  // One key and no kid: that key, if its type fits.
  auto single = make_verifier(config(), jwks_of({jwk_of(keys->ed.get(), "d1")}));
  EXPECT_EQ(outcome(*single, craft(keys->ed.get(), "EdDSA", header("EdDSA", ""), payload())), "ok");
  EXPECT_EQ(outcome(*single, rs256(payload(), "")), reason::alg_mismatch);
  auto kidless = make_verifier(config(), jwks_of({jwk_of(keys->rsa.get(), "")}));
  EXPECT_EQ(outcome(*kidless, rs256(payload(), "")), "ok");
  EXPECT_EQ(outcome(*kidless, rs256(payload(), "r1")), reason::unknown_key);
}

TEST_F(IdentityTest, RefusesBadSignature) {
  auto v = make_verifier();
  std::string token = rs256(payload());
  std::string sig;
  ASSERT_TRUE(base64url_decode(token.substr(token.rfind('.') + 1), sig));
  sig[10] ^= 1;
  std::string flipped = token.substr(0, token.rfind('.') + 1) + b64url(sig);
  EXPECT_EQ(outcome(*v, flipped), reason::bad_signature);
  EXPECT_EQ(outcome(*v, token.substr(0, token.rfind('.') + 1)), reason::bad_signature);
  // A payload changed after signing.
  std::string tampered = b64url(header("RS256", "r1")) + "." +
                         b64url(payload(R"(,"groups":["admin"])")) + token.substr(token.rfind('.'));
  EXPECT_EQ(outcome(*v, tampered), reason::bad_signature);
  // ES256 as DER (what OpenSSL emits) rather than JOSE r||s, and a short one.
  std::string input = b64url(header("ES256", "e1")) + "." + b64url(payload());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, keys->p256.get());
  size_t len = 0;
  EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size());
  std::string der(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(der.data()), &len,
                 reinterpret_cast<const unsigned char*>(input.data()), input.size());
  der.resize(len);
  EVP_MD_CTX_free(ctx);
  EXPECT_EQ(outcome(*v, input + "." + b64url(der)), reason::bad_signature);
  std::string es = craft(keys->p256.get(), "ES256", header("ES256", "e1"), payload());
  ASSERT_TRUE(base64url_decode(es.substr(es.rfind('.') + 1), sig));
  EXPECT_EQ(outcome(*v, input + "." + b64url(sig.substr(0, 63))), reason::bad_signature);
  EXPECT_EQ(outcome(*v, input + "." + b64url(std::string(64, '\0'))), reason::bad_signature);
}

TEST_F(IdentityTest, RefusesTokenSignedWithAnotherIssuersKey) {
  auto v = make_verifier();
  // Issuer B's key and kid, claiming to be issuer A.
  std::string b_kid = craft(keys->other_rsa.get(), "RS256", header("RS256", "b1"), payload());
  EXPECT_EQ(outcome(*v, b_kid), reason::unknown_key);
  // Issuer B's key under issuer A's kid.
  std::string a_kid = craft(keys->other_rsa.get(), "RS256", header("RS256", "r1"), payload());
  EXPECT_EQ(outcome(*v, a_kid), reason::bad_signature);
  // B's own token is fine for B's audience, and refused by A's rules.
  std::string b_payload = R"({"iss":")" + std::string(iss_b) +
                          R"(","aud":"other-gateway","sub":"bob","exp":)" +
                          std::to_string(now + 60) + "}";
  EXPECT_EQ(outcome(*v, craft(keys->other_rsa.get(), "RS256", header("RS256", "b1"), b_payload)),
            "ok");
  std::string b_for_us = payload("", now + 60, iss_b);
  EXPECT_EQ(outcome(*v, craft(keys->other_rsa.get(), "RS256", header("RS256", "b1"), b_for_us)),
            reason::wrong_aud);
}

TEST_F(IdentityTest, RefusesIssuerNotConfigured) {
  auto v = make_verifier();
  EXPECT_EQ(outcome(*v, rs256(payload("", now + 600, "https://evil.example.com"))),
            reason::unknown_issuer);
  EXPECT_EQ(outcome(*v, rs256(payload("", now + 600, "https://idp-a.example.com/"))),
            reason::unknown_issuer);
  EXPECT_EQ(outcome(*v, rs256(R"({"aud":"agentgate","sub":"a","exp":1800000000})")), reason::no_iss);
  EXPECT_EQ(outcome(*v, rs256(R"({"iss":["https://idp-a.example.com"],"aud":"agentgate","sub":"a","exp":1800000000})")),
            reason::unknown_issuer);
}

TEST_F(IdentityTest, AudienceStringOrArray) {
  auto v = make_verifier();
  auto with_aud = [&](const std::string& aud_json) {
    return rs256(R"({"iss":")" + std::string(iss_a) + R"(","sub":"a","exp":)" +
                 std::to_string(now + 60) + aud_json + "}");
  };
  EXPECT_EQ(outcome(*v, with_aud(R"(,"aud":"agentgate")")), "ok");
  EXPECT_EQ(outcome(*v, with_aud(R"(,"aud":["x","agentgate"])")), "ok");
  EXPECT_EQ(outcome(*v, with_aud(R"(,"aud":"someone-else")")), reason::wrong_aud);
  EXPECT_EQ(outcome(*v, with_aud(R"(,"aud":["x","y"])")), reason::wrong_aud);
  EXPECT_EQ(outcome(*v, with_aud(R"(,"aud":[])")), reason::wrong_aud);
  EXPECT_EQ(outcome(*v, with_aud(R"(,"aud":"AGENTGATE")")), reason::wrong_aud);
  EXPECT_EQ(outcome(*v, with_aud("")), reason::no_aud);
  EXPECT_EQ(outcome(*v, with_aud(R"(,"aud":7)")), reason::bad_aud);
  EXPECT_EQ(outcome(*v, with_aud(R"(,"aud":["agentgate",7])")), reason::bad_aud);
}

// With approver_audience set, a token is for logging in or for approving,
// never both: a token sent to the config API cannot open a session, and an
// agent's login token cannot approve.
TEST_F(IdentityTest, ApproverAudienceSplitsLoginAndApproval) {
  identity_config c = config();
  c.issuers[0].approver_audience = "agentgate-approvals";
  auto v = make_verifier(c);
  auto with_aud = [&](const std::string& aud_json) {
    return rs256(R"({"iss":")" + std::string(iss_a) + R"(","sub":"a","exp":)" +
                 std::to_string(now + 60) + aud_json + "}");
  };
  auto as = [&](const std::string& token, token_use use) {
    auto r = v->verify(token, now, use);
    return r ? std::string("ok") : r.error().message();
  };
  const std::string login = with_aud(R"(,"aud":"agentgate")");
  const std::string approval = with_aud(R"(,"aud":"agentgate-approvals")");
  const std::string both = with_aud(R"(,"aud":["agentgate","agentgate-approvals"])");
  EXPECT_EQ(as(login, token_use::login), "ok");
  EXPECT_EQ(as(login, token_use::approval), reason::wrong_approver_aud);
  EXPECT_EQ(as(approval, token_use::approval), "ok");
  EXPECT_EQ(as(approval, token_use::login), reason::wrong_aud);
  // Carrying both audiences makes it an approval token: it cannot log in.
  EXPECT_EQ(as(both, token_use::approval), "ok");
  EXPECT_EQ(as(both, token_use::login), reason::approval_token_login);
  EXPECT_EQ(as(with_aud(R"(,"aud":"someone-else")"), token_use::approval), reason::wrong_approver_aud);
  EXPECT_EQ(as(with_aud(R"(,"aud":["agentgate-approvals",7])"), token_use::approval), reason::bad_aud);
  // The default use is login.
  EXPECT_EQ(outcome(*v, both), reason::approval_token_login);

  // Issuer B has no approver_audience: its login tokens approve, as before.
  const std::string b_token = craft(keys->other_rsa.get(), "RS256", header("RS256", "b1"),
                                    R"({"iss":")" + std::string(iss_b) + R"(","aud":"other-gateway","sub":"b","exp":)" +
                                        std::to_string(now + 60) + "}");
  auto vb = v->verify(b_token, now, token_use::approval);
  EXPECT_TRUE(vb) << vb.error().message();
  EXPECT_TRUE(v->verify(b_token, now, token_use::login));
}

TEST_F(IdentityTest, RefusesExpiredToken) {
  auto v = make_verifier(config(0));
  EXPECT_EQ(outcome(*v, rs256(payload("", now - 1))), reason::expired);
  EXPECT_EQ(outcome(*v, rs256(payload("", now))), reason::expired);  // exp is exclusive
  EXPECT_EQ(outcome(*v, rs256(payload("", now + 1))), "ok");
  EXPECT_EQ(outcome(*v, rs256(payload("", -5))), reason::expired);
}

TEST_F(IdentityTest, RefusesMissingOrNonNumericTimes) {
  auto v = make_verifier();
  std::string base = R"({"iss":")" + std::string(iss_a) + R"(","aud":"agentgate","sub":"a")";
  EXPECT_EQ(outcome(*v, rs256(base + "}")), reason::no_exp);
  EXPECT_EQ(outcome(*v, rs256(base + R"(,"exp":"1800000000"})")), reason::bad_exp);
  EXPECT_EQ(outcome(*v, rs256(base + R"(,"exp":null})")), reason::bad_exp);
  EXPECT_EQ(outcome(*v, rs256(base + R"(,"exp":1800000000,"nbf":true})")), reason::bad_nbf);
  EXPECT_EQ(outcome(*v, rs256(base + R"(,"exp":1800000000,"iat":"now"})")), reason::bad_iat);
  // Fractional NumericDates are allowed (RFC 7519 §2).
  EXPECT_EQ(outcome(*v, rs256(base + R"(,"exp":1800000000.5,"iat":1699999999.25})")), "ok");
  EXPECT_EQ(outcome(*v, rs256(base + R"(,"exp":1e300})")), "ok");
  EXPECT_EQ(outcome(*v, rs256(base + R"(,"exp":18446744073709551615})")), "ok");
}

TEST_F(IdentityTest, RefusesTokenNotYetValid) {
  auto v = make_verifier(config(0));
  EXPECT_EQ(outcome(*v, rs256(payload(R"(,"nbf":)" + std::to_string(now + 1)))),
            reason::not_yet_valid);
  EXPECT_EQ(outcome(*v, rs256(payload(R"(,"nbf":)" + std::to_string(now)))), "ok");
  // iat in the future: minted by a clock that is ahead.
  std::string future_iat = R"({"iss":")" + std::string(iss_a) +
                           R"(","aud":"agentgate","sub":"a","exp":)" + std::to_string(now + 600) +
                           R"(,"iat":)" + std::to_string(now + 5) + "}";
  EXPECT_EQ(outcome(*v, rs256(future_iat)), reason::not_yet_valid);
}

TEST_F(IdentityTest, LeewayAppliesToEveryTimeClaim) {
  auto v = make_verifier(config(60));
  EXPECT_EQ(outcome(*v, rs256(payload("", now - 59))), "ok");
  EXPECT_EQ(outcome(*v, rs256(payload("", now - 60))), reason::expired);
  EXPECT_EQ(outcome(*v, rs256(payload(R"(,"nbf":)" + std::to_string(now + 60)))), "ok");
  EXPECT_EQ(outcome(*v, rs256(payload(R"(,"nbf":)" + std::to_string(now + 61)))),
            reason::not_yet_valid);
  std::string iat_at = R"({"iss":")" + std::string(iss_a) + R"(","aud":"agentgate","sub":"a","exp":)" +
                       std::to_string(now + 600) + R"(,"iat":)";
  EXPECT_EQ(outcome(*v, rs256(iat_at + std::to_string(now + 60) + "}")), "ok");
  EXPECT_EQ(outcome(*v, rs256(iat_at + std::to_string(now + 61) + "}")), reason::not_yet_valid);
  EXPECT_EQ(valid_until_s(now, 60), now + 60);
  EXPECT_EQ(valid_until_s(INT64_MAX - 1, 60), INT64_MAX);
}

TEST_F(IdentityTest, RefusesDuplicateNames) {
  auto v = make_verifier();
  EXPECT_EQ(outcome(*v, craft(keys->rsa.get(), "RS256", R"({"alg":"RS256","kid":"r1","alg":"none"})",
                              payload())),
            reason::duplicate_member);
  EXPECT_EQ(outcome(*v, rs256(payload(R"(,"exp":1)"))), reason::duplicate_member);
  EXPECT_EQ(outcome(*v, rs256(payload(R"(,"groups":["a"],"groups":["admin"])"))),
            reason::duplicate_member);
}

TEST_F(IdentityTest, SubjectAndEmail) {
  auto v = make_verifier();
  std::string base = R"({"iss":")" + std::string(iss_a) + R"(","aud":"agentgate","exp":1800000000)";
  EXPECT_EQ(outcome(*v, rs256(base + "}")), reason::no_sub);
  EXPECT_EQ(outcome(*v, rs256(base + R"(,"sub":""})")), reason::bad_sub);
  EXPECT_EQ(outcome(*v, rs256(base + R"(,"sub":42})")), reason::bad_sub);
  EXPECT_EQ(outcome(*v, rs256(base + R"(,"sub":"a","email":false})")), reason::bad_email);
  auto id = v->verify(rs256(base + R"(,"sub":"a"})"), now);
  ASSERT_TRUE(id);
  EXPECT_EQ(id->email, "");
  EXPECT_TRUE(id->groups.empty());
}

TEST_F(IdentityTest, GroupsClaimShapes) {
  auto v = make_verifier();
  auto groups = [&](const verifier& ver, const std::string& extra) -> std::vector<std::string> {
    auto id = ver.verify(rs256(payload(extra)), now);
    EXPECT_TRUE(id) << id.error().message();
    return id ? id->groups : std::vector<std::string>{"<refused>"};
  };
  EXPECT_EQ(groups(*v, R"(,"groups":["dba","dev"])"), (std::vector<std::string>{"dba", "dev"}));
  EXPECT_EQ(groups(*v, R"(,"groups":"dba")"), (std::vector<std::string>{"dba"}));
  EXPECT_EQ(groups(*v, R"(,"groups":[])"), (std::vector<std::string>{}));
  EXPECT_EQ(groups(*v, R"(,"roles":["dba"])"), (std::vector<std::string>{}));
  auto custom = make_verifier(config(60, "https://example.com/roles"));
  EXPECT_EQ(groups(*custom, R"(,"groups":["ignored"],"https://example.com/roles":["ops"])"),
            (std::vector<std::string>{"ops"}));
  EXPECT_EQ(outcome(*v, rs256(payload(R"(,"groups":7)"))), reason::bad_groups);
  EXPECT_EQ(outcome(*v, rs256(payload(R"(,"groups":["a",{"b":1}])"))), reason::bad_groups);
  std::string many = R"(,"groups":[)";
  for (size_t i = 0; i <= token_groups_max; ++i) many += (i ? ",\"g" : "\"g") + std::to_string(i) + "\"";
  EXPECT_EQ(outcome(*v, rs256(payload(many + "]"))), reason::too_many_groups);
}

TEST_F(IdentityTest, KeyFromTokenHeaderIsNeverTrusted) {
  auto v = make_verifier();
  // An attacker's own key, offered through jwk/jku, under a kid we know.
  pkey attacker = make_p256();
  std::string h = R"({"alg":"ES256","kid":"e1","jku":"https://evil.example.com/jwks","jwk":)" +
                  jwk_of(attacker.get(), "e1") + "}";
  EXPECT_EQ(outcome(*v, craft(attacker.get(), "ES256", h, payload())), reason::bad_signature);
}

TEST_F(IdentityTest, RefusalsCarryNoTokenOrKeyText) {
  auto v = make_verifier();
  std::set<std::string> messages;
  for (const std::string& t :
       {rs256(payload(), "secret-kid"), rs256(payload("", now + 600, "https://secret-issuer")),
        craft(keys->rsa.get(), "RS256", header("SECRETALG", "r1"), payload())}) {
    std::string m = outcome(*v, t);
    EXPECT_EQ(m.find("secret"), std::string::npos) << m;
    EXPECT_EQ(m.find("SECRET"), std::string::npos) << m;
    messages.insert(m);
  }
  EXPECT_EQ(messages.size(), 3u);
}

TEST_F(IdentityTest, GenerationsAreUnique) {
  auto a = make_verifier();
  auto b = make_verifier();
  EXPECT_NE(a->generation(), b->generation());
  EXPECT_NE(a->generation(), 0u);
}

// ---- rotation ----

TEST_F(IdentityTest, TokenReplayedAfterKeyRotatedOutIsRefused) {
  std::string both = jwks_of({jwk_of(keys->rsa.get(), "old"), jwk_of(keys->rsa2.get(), "new")});
  std::string only_new = jwks_of({jwk_of(keys->rsa2.get(), "new")});
  auto before = make_verifier(config(), both);
  auto after = make_verifier(config(), only_new);
  std::string old_token = rs256(payload(), "old");
  std::string new_token = craft(keys->rsa2.get(), "RS256", header("RS256", "new"), payload());

  token_cache cache(100);
  ASSERT_TRUE(cache.verify(*before, old_token, now));
  ASSERT_TRUE(cache.verify(*before, old_token, now));  // served from the cache
  EXPECT_EQ(cache.stats().hits, 1u);

  EXPECT_EQ(outcome(*after, old_token), reason::unknown_key);
  auto replay = cache.verify(*after, old_token, now);
  ASSERT_FALSE(replay);
  EXPECT_EQ(replay.error().message(), reason::unknown_key);
  EXPECT_EQ(cache.stats().resets, 1u);
  EXPECT_EQ(cache.find(*after, old_token, now), nullptr);
  EXPECT_TRUE(cache.verify(*after, new_token, now));
}

// ---- cache ----

TEST_F(IdentityTest, CacheHitSkipsVerification) {
  auto v = make_verifier();
  token_cache cache(10);
  std::string token = rs256(payload(R"(,"groups":["dba"])"));
  auto first = cache.verify(*v, token, now);
  ASSERT_TRUE(first) << first.error().message();
  auto second = cache.verify(*v, token, now + 1);
  ASSERT_TRUE(second);
  EXPECT_EQ(first->get(), second->get());  // the same object: nothing was re-verified
  EXPECT_EQ((*second)->groups, std::vector<std::string>{"dba"});
  EXPECT_EQ(cache.stats().hits, 1u);
  EXPECT_EQ(cache.stats().misses, 1u);
  EXPECT_EQ(cache.size(), 1u);
  // Refusals are not cached, and do not disturb the entry.
  std::string bad = token.substr(0, token.size() - 2) + "AA";
  EXPECT_FALSE(cache.verify(*v, bad, now));
  EXPECT_FALSE(cache.verify(*v, bad, now));
  EXPECT_EQ(cache.size(), 1u);
}

TEST_F(IdentityTest, CacheEntryExpiresWithTheToken) {
  auto v = make_verifier(config(60));
  token_cache cache(10);
  std::string token = rs256(payload("", now + 100));
  ASSERT_TRUE(cache.verify(*v, token, now));
  EXPECT_NE(cache.find(*v, token, now + 159), nullptr);  // leeway applies as in verify
  EXPECT_EQ(cache.find(*v, token, now + 160), nullptr);
  EXPECT_EQ(cache.size(), 0u);  // the lookup evicted it
  EXPECT_EQ(cache.stats().expirations, 1u);
  auto late = cache.verify(*v, token, now + 160);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().message(), reason::expired);
  EXPECT_EQ(cache.size(), 0u);
}

TEST_F(IdentityTest, CacheIsBoundedAndEvictsLeastRecentlyUsed) {
  auto v = make_verifier();
  token_cache cache(3);
  std::vector<std::string> tokens;
  for (int i = 0; i < 5; ++i) tokens.push_back(rs256(payload(",\"n\":" + std::to_string(i))));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cache.verify(*v, tokens[i], now));
  ASSERT_NE(cache.find(*v, tokens[0], now), nullptr);  // 0 is now the most recent
  ASSERT_TRUE(cache.verify(*v, tokens[3], now));       // evicts 1
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.find(*v, tokens[1], now), nullptr);
  EXPECT_NE(cache.find(*v, tokens[0], now), nullptr);
  EXPECT_NE(cache.find(*v, tokens[2], now), nullptr);
  EXPECT_NE(cache.find(*v, tokens[3], now), nullptr);
  ASSERT_TRUE(cache.verify(*v, tokens[4], now));
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.stats().evictions, 2u);
}

TEST_F(IdentityTest, CacheDropsExpiredEntriesBeforeLiveOnes) {
  auto v = make_verifier(config(0));
  token_cache cache(3);
  std::string short_lived = rs256(payload(",\"n\":0", now + 10));
  std::string a = rs256(payload(",\"n\":1", now + 1000));
  std::string b = rs256(payload(",\"n\":2", now + 1000));
  std::string c = rs256(payload(",\"n\":3", now + 1000));
  ASSERT_TRUE(cache.verify(*v, a, now));
  ASSERT_TRUE(cache.verify(*v, b, now));
  ASSERT_TRUE(cache.verify(*v, short_lived, now));  // most recently used, soon expired
  ASSERT_TRUE(cache.verify(*v, c, now + 20));
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.stats().expirations, 1u);
  EXPECT_EQ(cache.stats().evictions, 0u);
  EXPECT_NE(cache.find(*v, a, now + 20), nullptr);  // the oldest live entry survived
}

TEST_F(IdentityTest, CacheDisabledWithZeroEntries) {
  auto v = make_verifier();
  token_cache cache(0);
  std::string token = rs256(payload());
  ASSERT_TRUE(cache.verify(*v, token, now));
  ASSERT_TRUE(cache.verify(*v, token, now));
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.stats().hits, 0u);
}

TEST_F(IdentityTest, CacheRefusesOversizedTokenUnhashed) {
  identity_config c = config();
  c.token_bytes_max = 512;
  auto v = make_verifier(c);
  token_cache cache(10);
  auto r = cache.verify(*v, std::string(100000, 'a'), now);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), reason::too_long);
  EXPECT_EQ(cache.stats().misses, 0u);
}

TEST_F(IdentityTest, CacheNeverServesAnotherSnapshotsEntries) {
  auto v1 = make_verifier();
  auto v2 = make_verifier();  // same keys, new snapshot
  token_cache cache(10);
  std::string token = rs256(payload());
  ASSERT_TRUE(cache.verify(*v1, token, now));
  EXPECT_EQ(cache.find(*v2, token, now), nullptr);
  EXPECT_EQ(cache.size(), 0u);
  ASSERT_TRUE(cache.verify(*v2, token, now));
  EXPECT_NE(cache.find(*v2, token, now), nullptr);
}

TEST_F(IdentityTest, VerifyFromManyThreads) {
  auto v = make_verifier();
  std::vector<std::string> tokens = {
      rs256(payload()), craft(keys->p256.get(), "ES256", header("ES256", "e1"), payload()),
      craft(keys->ed.get(), "EdDSA", header("EdDSA", "d1"), payload()),
      craft(keys->rsa.get(), "PS256", header("PS256", "r1"), payload())};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      token_cache cache(8);
      for (int i = 0; i < 50; ++i) {
        const std::string& token = tokens[static_cast<size_t>(i + t) % tokens.size()];
        if (!v->verify(token, now) || !cache.verify(*v, token, now)) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}


// ---- the shard's authenticator ----

TEST_F(IdentityTest, AuthenticatorMapsIdentityAndFollowsSnapshots) {
  std::string both = jwks_of({jwk_of(keys->rsa.get(), "old"), jwk_of(keys->rsa2.get(), "new")});
  jwt_authenticator auth(make_verifier(config(), both), 100);
  std::string token = rs256(payload(R"(,"email":"a@example.com","groups":["dba"])"), "old");
  auto id = auth.authenticate(token, now);
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(id->issuer, iss_a);
  EXPECT_EQ(id->subject, "alice");
  EXPECT_EQ(id->email, "a@example.com");
  EXPECT_EQ(id->groups, std::vector<std::string>{"dba"});
  EXPECT_EQ(id->expires_at_s, now + 600);
  ASSERT_TRUE(auth.authenticate(token, now));
  EXPECT_EQ(auth.cache_stats().hits, 1u);

  auth.set_verifier(make_verifier(config(), jwks_of({jwk_of(keys->rsa2.get(), "new")})));
  auto replay = auth.authenticate(token, now);
  ASSERT_FALSE(replay);
  EXPECT_EQ(replay.error().code(), errc::auth);
  EXPECT_EQ(replay.error().message(), reason::unknown_key);
  std::string fresh = craft(keys->rsa2.get(), "RS256", header("RS256", "new"), payload());
  EXPECT_TRUE(auth.authenticate(fresh, now));
  EXPECT_EQ(auth.authenticate(fresh, now + 660).error().message(), reason::expired);
}

}  // namespace
}  // namespace agentgate::identity
