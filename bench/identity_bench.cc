// Token verification cost: a full verification per algorithm (parse, key
// choice, signature, claims) against a login served from the shard's token
// cache, which hashes the token and looks it up: no signature check.

#include <benchmark/benchmark.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "core/identity/jwt.h"
#include "core/identity/token_signer.h"

namespace {

using namespace agentgate;
using namespace agentgate::identity;

constexpr int64_t now_s = 1'700'000'000;

struct fixture {
  std::shared_ptr<const verifier> v;
  std::string rs256, es256, eddsa;

  fixture() {
    std::string dir = (std::filesystem::temp_directory_path() / "identity_bench.XXXXXX").string();
    if (mkdtemp(dir.data()) == nullptr) std::abort();
    identity_config config;
    issuer_config issuer;
    issuer.issuer = "https://idp.example.com";
    issuer.audience = "agentgate";
    config.issuers = {issuer};

    std::string keys_json = "{\"keys\":[";
    token_claims claims;
    claims.iss = issuer.issuer;
    claims.aud = issuer.audience;
    claims.sub = "agent-7f3a";
    claims.email = "agent@example.com";
    claims.groups = {"engineering", "dba-readonly", "oncall"};
    claims.ttl_s = 3600;
    claims.now_s = now_s;
    struct { const char* name; EVP_PKEY* key; std::string* token; } kinds[] = {
        {"rsa", EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}), &rs256},
        {"p256", EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"), &es256},
        {"ed25519", EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"), &eddsa},
    };
    bool first = true;
    for (auto& k : kinds) {
      std::string path = dir + "/" + k.name + ".pem";
      FILE* f = std::fopen(path.c_str(), "w");
      PEM_write_PrivateKey(f, k.key, nullptr, nullptr, 0, nullptr, nullptr);
      std::fclose(f);
      EVP_PKEY_free(k.key);
      auto jwks = jwks_for_key(path, "");
      auto token = sign_token(path, claims);
      if (!jwks || !token) std::abort();
      // {"keys":[X]} -> X
      std::string jwk = jwks->substr(9, jwks->size() - 11);
      keys_json += (first ? "" : ",") + jwk;
      first = false;
      *k.token = *token;
    }
    keys_json += "]}";
    auto set = parse_jwks(keys_json);
    if (!set) std::abort();
    v = verifier::create(config, {*set});
    std::filesystem::remove_all(dir);
  }
};

fixture& shared() {
  static fixture f;
  return f;
}

void verify_full(benchmark::State& state, const std::string fixture::*token) {
  fixture& f = shared();
  const std::string& t = f.*token;
  for (auto _ : state) {
    auto r = f.v->verify(t, now_s);
    if (!r) state.SkipWithError(r.error().message().c_str());
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["token_bytes"] = static_cast<double>(t.size());
}

void BM_verify_rs256(benchmark::State& state) { verify_full(state, &fixture::rs256); }
void BM_verify_es256(benchmark::State& state) { verify_full(state, &fixture::es256); }
void BM_verify_eddsa(benchmark::State& state) { verify_full(state, &fixture::eddsa); }

// The reconnect path: the token was verified before on this shard.
void BM_cached_lookup_rs256(benchmark::State& state) {
  fixture& f = shared();
  token_cache cache(10000);
  if (!cache.verify(*f.v, f.rs256, now_s)) state.SkipWithError("first verify failed");
  for (auto _ : state) {
    auto r = cache.verify(*f.v, f.rs256, now_s);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["hits"] = static_cast<double>(cache.stats().hits);
  state.counters["misses"] = static_cast<double>(cache.stats().misses);
}

// The same with a full cache of other tokens around it.
void BM_cached_lookup_full_cache(benchmark::State& state) {
  fixture& f = shared();
  token_cache cache(10000);
  auto identity = std::make_shared<const verified_identity>(verified_identity{
      "https://idp.example.com", "x", "", {}, now_s + 3600});
  for (int i = 0; i < 9999; ++i) {
    cache.insert(*f.v, f.rs256 + std::to_string(i), identity, now_s);
  }
  if (!cache.verify(*f.v, f.rs256, now_s)) state.SkipWithError("first verify failed");
  for (auto _ : state) {
    auto r = cache.verify(*f.v, f.rs256, now_s);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["entries"] = static_cast<double>(cache.size());
}

BENCHMARK(BM_verify_rs256);
BENCHMARK(BM_verify_es256);
BENCHMARK(BM_verify_eddsa);
BENCHMARK(BM_cached_lookup_rs256);
BENCHMARK(BM_cached_lookup_full_cache);

}  // namespace
