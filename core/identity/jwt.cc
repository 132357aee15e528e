#include "core/identity/jwt.h"

#include <openssl/err.h>
#include <openssl/rsa.h>

#include <simdjson.h>

#include <atomic>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/identity/base64url.h"

namespace agentgate::identity {
namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

constexpr size_t es256_signature_bytes = 64;  // JOSE: r || s, 32 bytes each
constexpr size_t ecdsa_der_bytes_max = 80;    // DER of two 33-byte integers and headers

std::atomic<uint64_t> next_generation{1};

status refuse(std::string_view why) { return status(errc::auth, std::string(why)); }

int64_t saturating_add(int64_t a, int64_t b) {
  int64_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return sum;
}

// Per-thread parse state: verify() runs on every shard at once and a
// simdjson parser is single-threaded. The buffers keep their capacity, so a
// steady stream of logins allocates nothing here.
struct parse_state {
  simdjson::dom::parser parser;
  std::string header;
  std::string payload;
  std::string signature;
  std::string kid;
};

parse_state& thread_parse_state() {
  thread_local parse_state state;
  return state;
}

// simdjson reads up to SIMDJSON_PADDING bytes past the end; with the
// capacity there it parses in place instead of copying.
bool decode_json_part(std::string_view text, std::string& out) {
  if (!base64url_decode(text, out)) return false;
  out.reserve(out.size() + simdjson::SIMDJSON_PADDING);
  return true;
}

// SHA-256 fetched once: an implicit fetch on every verification takes a
// lock in OpenSSL 3.0's method store, shared by all shards.
const EVP_MD* sha256() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

struct header_fields {
  jws_alg alg = jws_alg::rs256;
  bool has_kid = false;
};

bool ascii_iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
    if (x != b[i]) return false;
  }
  return true;
}

// Duplicate names are refused: two parsers that keep different copies of a
// duplicated "alg" or "exp" read two different tokens from one string.
status read_header(std::string& json, parse_state& state, header_fields& out) {
  element root;
  object members;
  if (state.parser.parse(json).get(root) != simdjson::SUCCESS ||
      root.get_object().get(members) != simdjson::SUCCESS) {
    return refuse(reason::bad_header);
  }
  bool seen_alg = false, seen_kid = false, seen_crit = false;
  std::string_view alg_text;
  bool alg_is_string = false;
  for (auto member : members) {
    if (member.key == "alg") {
      if (seen_alg) return refuse(reason::duplicate_member);
      seen_alg = true;
      alg_is_string = member.value.get_string().get(alg_text) == simdjson::SUCCESS;
    } else if (member.key == "kid") {
      if (seen_kid) return refuse(reason::duplicate_member);
      seen_kid = true;
      std::string_view kid;
      if (member.value.get_string().get(kid) != simdjson::SUCCESS) return refuse(reason::bad_kid);
      state.kid.assign(kid);
    } else if (member.key == "crit") {
      seen_crit = true;
    }
    // jku, x5u, jwk and x5c are never followed: keys come from the
    // configured JWKS only, never from the token that is being checked.
  }
  if (!seen_alg) return refuse(reason::no_alg);
  if (!alg_is_string) return refuse(reason::alg_unknown);
  if (ascii_iequals(alg_text, "none")) return refuse(reason::alg_none);
  if (alg_text.size() >= 2 && (alg_text[0] == 'H' || alg_text[0] == 'h') &&
      (alg_text[1] == 'S' || alg_text[1] == 's')) {
    return refuse(reason::alg_hmac);
  }
  std::optional<jws_alg> alg = parse_jws_alg(alg_text);
  if (!alg) return refuse(reason::alg_unknown);
  // RFC 7515 §4.1.11: extensions we do not implement must not be ignored.
  if (seen_crit) return refuse(reason::crit);
  out.alg = *alg;
  out.has_kid = seen_kid;
  return status::ok();
}

// The claims verify() reads, found in one pass over the payload.
struct claim_elements {
  element iss, aud, exp, nbf, iat, sub, email;
  bool has_iss = false, has_aud = false, has_exp = false, has_nbf = false, has_iat = false,
       has_sub = false, has_email = false;
};

status read_claims(object members, claim_elements& out) {
  for (auto member : members) {
    std::string_view key = member.key;
    element* slot = nullptr;
    bool* seen = nullptr;
    if (key == "iss") slot = &out.iss, seen = &out.has_iss;
    else if (key == "aud") slot = &out.aud, seen = &out.has_aud;
    else if (key == "exp") slot = &out.exp, seen = &out.has_exp;
    else if (key == "nbf") slot = &out.nbf, seen = &out.has_nbf;
    else if (key == "iat") slot = &out.iat, seen = &out.has_iat;
    else if (key == "sub") slot = &out.sub, seen = &out.has_sub;
    else if (key == "email") slot = &out.email, seen = &out.has_email;
    else continue;
    if (*seen) return refuse(reason::duplicate_member);
    *seen = true;
    *slot = member.value;
  }
  return status::ok();
}

// NumericDate (RFC 7519 §2): seconds, possibly fractional. Out-of-range
// values saturate, which keeps the comparisons below honest.
bool numeric_date(element value, int64_t& out) {
  switch (value.type()) {
    case element_type::INT64: return value.get_int64().get(out) == simdjson::SUCCESS;
    case element_type::UINT64: {
      uint64_t u = 0;
      if (value.get_uint64().get(u) != simdjson::SUCCESS) return false;
      out = u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                ? std::numeric_limits<int64_t>::max()
                : static_cast<int64_t>(u);
      return true;
    }
    case element_type::DOUBLE: {
      double d = 0;
      if (value.get_double().get(d) != simdjson::SUCCESS) return false;
      if (d >= 9.2e18) out = std::numeric_limits<int64_t>::max();
      else if (d <= -9.2e18) out = std::numeric_limits<int64_t>::min();
      else out = static_cast<int64_t>(std::floor(d));
      return true;
    }
    default: return false;
  }
}

// Whether aud (a string or an array of strings) holds audience.
status audience_listed(element aud, std::string_view audience, bool& found) {
  std::string_view one;
  found = false;
  if (aud.get_string().get(one) == simdjson::SUCCESS) {
    found = one == audience;
    return status::ok();
  }
  array list;
  if (aud.get_array().get(list) != simdjson::SUCCESS) return refuse(reason::bad_aud);
  for (element item : list) {
    if (item.get_string().get(one) != simdjson::SUCCESS) return refuse(reason::bad_aud);
    found = found || one == audience;
  }
  return status::ok();
}

// A login needs the issuer's audience; an approval needs approver_audience
// when the issuer has one (else the login audience). With approver_audience
// set, a token carrying it never logs in, so a token sent to the config API
// (plain HTTP without admin.tls) is no key to the databases, and a login
// token, which every agent holds, never approves.
status check_audience(element aud, const issuer_config& issuer, token_use use) {
  bool for_login = false, for_approval = false;
  if (status s = audience_listed(aud, issuer.audience, for_login); !s) return s;
  const bool split = !issuer.approver_audience.empty();
  if (split) {
    if (status s = audience_listed(aud, issuer.approver_audience, for_approval); !s) return s;
  }
  if (use == token_use::login) {
    if (!for_login) return refuse(reason::wrong_aud);
    if (for_approval) return refuse(reason::approval_token_login);
    return status::ok();
  }
  if (!split) return for_login ? status::ok() : refuse(reason::wrong_aud);
  return for_approval ? status::ok() : refuse(reason::wrong_approver_aud);
}

status read_groups(object payload, std::string_view claim, std::vector<std::string>& out) {
  element value;
  bool seen = false;
  for (auto member : payload) {
    if (member.key != claim) continue;
    if (seen) return refuse(reason::duplicate_member);
    seen = true;
    value = member.value;
  }
  if (!seen) return status::ok();
  std::string_view one;
  if (value.get_string().get(one) == simdjson::SUCCESS) {
    out.emplace_back(one);
    return status::ok();
  }
  array list;
  if (value.get_array().get(list) != simdjson::SUCCESS) return refuse(reason::bad_groups);
  if (list.size() > token_groups_max) return refuse(reason::too_many_groups);
  out.reserve(list.size());
  for (element item : list) {
    if (item.get_string().get(one) != simdjson::SUCCESS) return refuse(reason::bad_groups);
    out.emplace_back(one);
  }
  return status::ok();
}

// ES256 signatures travel as r || s (RFC 7518 §3.4); OpenSSL takes DER.
bool jose_to_der(std::string_view jose, unsigned char* der, int& der_bytes) {
  if (jose.size() != es256_signature_bytes) return false;
  const auto* bytes = reinterpret_cast<const unsigned char*>(jose.data());
  BIGNUM* r = BN_bin2bn(bytes, 32, nullptr);
  BIGNUM* s = BN_bin2bn(bytes + 32, 32, nullptr);
  ecdsa_sig_ptr sig(ECDSA_SIG_new());
  if (r == nullptr || s == nullptr || !sig || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return false;
  }
  unsigned char* out = der;
  der_bytes = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (der_bytes <= 0 || static_cast<size_t>(der_bytes) > ecdsa_der_bytes_max) return false;
  return i2d_ECDSA_SIG(sig.get(), &out) == der_bytes;
}

bool verify_signature(jws_alg alg, EVP_PKEY* key, std::string_view signing_input,
                      std::string_view signature) {
  unsigned char der[ecdsa_der_bytes_max];
  const auto* sig = reinterpret_cast<const unsigned char*>(signature.data());
  size_t sig_bytes = signature.size();
  if (alg == jws_alg::es256) {
    int der_bytes = 0;
    if (!jose_to_der(signature, der, der_bytes)) return false;
    sig = der;
    sig_bytes = static_cast<size_t>(der_bytes);
  }
  evp_md_ctx_ptr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pkey_ctx = nullptr;  // owned by ctx
  const EVP_MD* md = alg == jws_alg::eddsa ? nullptr : sha256();
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), &pkey_ctx, md, nullptr, key) != 1) return false;
  if (alg == jws_alg::ps256) {
    // RFC 7518 §3.5: MGF1 with SHA-256 and a salt as long as the hash.
    if (EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(pkey_ctx, md) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pkey_ctx, RSA_PSS_SALTLEN_DIGEST) != 1) {
      return false;
    }
  } else if (alg == jws_alg::rs256) {
    if (EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PADDING) != 1) return false;
  }
  return EVP_DigestVerify(ctx.get(), sig, sig_bytes,
                          reinterpret_cast<const unsigned char*>(signing_input.data()),
                          signing_input.size()) == 1;
}

}  // namespace

int64_t valid_until_s(int64_t exp_s, uint32_t leeway_s) { return saturating_add(exp_s, leeway_s); }

verifier::verifier(const identity_config& config, std::vector<key_set> keys, uint64_t generation)
    : config_(config), keys_(std::move(keys)), generation_(generation) {}

std::shared_ptr<const verifier> verifier::create(const identity_config& config,
                                                 std::vector<key_set> keys) {
  assert(keys.size() == config.issuers.size());
  uint64_t generation = next_generation.fetch_add(1, std::memory_order_relaxed);
  return std::shared_ptr<const verifier>(new verifier(config, std::move(keys), generation));
}

result<verified_identity> verifier::verify(std::string_view token, int64_t now_s,
                                           token_use use) const {
  // Before anything else looks at it: the size bounds every buffer below.
  if (token.size() > config_.token_bytes_max) return refuse(reason::too_long);

  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos ||
      dot1 == 0 || dot2 == dot1 + 1) {
    return refuse(reason::not_three_parts);
  }
  std::string_view header_text = token.substr(0, dot1);
  std::string_view payload_text = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view signature_text = token.substr(dot2 + 1);
  std::string_view signing_input = token.substr(0, dot2);

  parse_state& state = thread_parse_state();
  if (!decode_json_part(header_text, state.header) ||
      !decode_json_part(payload_text, state.payload) ||
      !base64url_decode(signature_text, state.signature)) {
    return refuse(reason::bad_base64url);
  }

  header_fields header;
  if (status s = read_header(state.header, state, header); !s) return s;
  // The header's document is dead once the payload is parsed; everything
  // needed from it was copied into header and state.kid.
  element root;
  object payload;
  if (state.parser.parse(state.payload).get(root) != simdjson::SUCCESS ||
      root.get_object().get(payload) != simdjson::SUCCESS) {
    return refuse(reason::bad_payload);
  }
  claim_elements claims;
  if (status s = read_claims(payload, claims); !s) return s;

  // The issuer picks the key set, so it is read before the signature is
  // checked; nothing else from the payload is trusted until then.
  std::string_view iss;
  if (!claims.has_iss) return refuse(reason::no_iss);
  if (claims.iss.get_string().get(iss) != simdjson::SUCCESS) return refuse(reason::unknown_issuer);
  size_t issuer_index = config_.issuers.size();
  for (size_t i = 0; i < config_.issuers.size(); ++i) {
    if (config_.issuers[i].issuer == iss) {
      issuer_index = i;
      break;
    }
  }
  if (issuer_index == config_.issuers.size()) return refuse(reason::unknown_issuer);
  const issuer_config& issuer = config_.issuers[issuer_index];
  const key_set& keys = keys_[issuer_index];

  const jwk* key = nullptr;
  if (header.has_kid) {
    key = keys.find(state.kid);
    if (key == nullptr) return refuse(reason::unknown_key);
  } else if (keys.keys.size() == 1) {
    key = &keys.keys.front();
  } else {
    return refuse(keys.keys.empty() ? reason::unknown_key : reason::kid_needed);
  }
  // The algorithm comes from the attacker's header; the key decides which
  // ones it may be used with (RS256 over an EC key, or an RSA key used
  // with an HMAC "alg", never reach the signature check).
  if (!alg_fits_key(header.alg, key->type) || (key->alg && *key->alg != header.alg)) {
    return refuse(reason::alg_mismatch);
  }
  if (!verify_signature(header.alg, key->key.get(), signing_input, state.signature)) {
    ERR_clear_error();  // a stale error would confuse the shard's next SSL_get_error
    return refuse(reason::bad_signature);
  }

  if (!claims.has_aud) return refuse(reason::no_aud);
  if (status s = check_audience(claims.aud, issuer, use); !s) return s;

  int64_t exp_s = 0, nbf_s = 0, iat_s = 0;
  if (!claims.has_exp) return refuse(reason::no_exp);
  if (!numeric_date(claims.exp, exp_s)) return refuse(reason::bad_exp);
  if (claims.has_nbf && !numeric_date(claims.nbf, nbf_s)) return refuse(reason::bad_nbf);
  if (claims.has_iat && !numeric_date(claims.iat, iat_s)) return refuse(reason::bad_iat);
  if (now_s >= valid_until_s(exp_s, config_.leeway_s)) return refuse(reason::expired);
  int64_t latest_start_s = saturating_add(now_s, config_.leeway_s);
  if (claims.has_nbf && nbf_s > latest_start_s) return refuse(reason::not_yet_valid);
  if (claims.has_iat && iat_s > latest_start_s) return refuse(reason::not_yet_valid);

  verified_identity id;
  std::string_view text;
  if (!claims.has_sub) return refuse(reason::no_sub);
  if (claims.sub.get_string().get(text) != simdjson::SUCCESS || text.empty()) {
    return refuse(reason::bad_sub);
  }
  id.sub = text;
  if (claims.has_email) {
    if (claims.email.get_string().get(text) != simdjson::SUCCESS) return refuse(reason::bad_email);
    id.email = text;
  }
  if (status s = read_groups(payload, issuer.groups_claim, id.groups); !s) return s;
  id.issuer = issuer.issuer;
  id.exp_s = exp_s;
  return id;
}

// ---- token_cache ----

size_t token_cache::digest_hash::operator()(std::string_view d) const {
  size_t h = 0;
  std::memcpy(&h, d.data(), std::min(sizeof h, d.size()));
  return h;
}

token_cache::token_cache(uint32_t entries_max)
    : entries_max_(entries_max),
      sha256_(EVP_MD_fetch(nullptr, "SHA256", nullptr)),
      md_ctx_(EVP_MD_CTX_new()) {
  assert(sha256_ != nullptr && md_ctx_ != nullptr);
}

token_cache::~token_cache() { EVP_MD_free(sha256_); }

void token_cache::adopt(const verifier& v) {
  if (generation_ == v.generation()) return;
  if (!lru_.empty()) ++stats_.resets;
  entries_.clear();
  lru_.clear();
  generation_ = v.generation();
}

void token_cache::digest_of(std::string_view token, digest& out) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_bytes = 0;
  bool ok = EVP_DigestInit_ex2(md_ctx_.get(), sha256_, nullptr) == 1 &&
            EVP_DigestUpdate(md_ctx_.get(), token.data(), token.size()) == 1 &&
            EVP_DigestFinal_ex(md_ctx_.get(), md, &md_bytes) == 1;
  assert(ok && md_bytes == out.size());
  (void)ok;
  std::memcpy(out.data(), md, out.size());
}

std::shared_ptr<const verified_identity> token_cache::find(const verifier& v,
                                                           std::string_view token,
                                                           int64_t now_s) {
  if (entries_max_ == 0 || token.size() > v.config().token_bytes_max) return nullptr;
  adopt(v);
  digest_of(token, scratch_);
  auto it = entries_.find(std::string_view(scratch_.data(), scratch_.size()));
  if (it == entries_.end()) {
    ++stats_.misses;
    return nullptr;
  }
  lru_list::iterator node = it->second;
  if (now_s >= node->valid_until_s) {
    entries_.erase(it);
    lru_.erase(node);
    ++stats_.expirations;
    ++stats_.misses;
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, node);
  ++stats_.hits;
  return node->identity;
}

void token_cache::sweep_expired(int64_t now_s) {
  // Once a second at most: a full cache of live tokens would otherwise scan
  // every entry on every insert.
  if (now_s == last_sweep_s_) return;
  last_sweep_s_ = now_s;
  for (auto node = lru_.begin(); node != lru_.end();) {
    if (now_s >= node->valid_until_s) {
      entries_.erase(std::string_view(node->key.data(), node->key.size()));
      node = lru_.erase(node);
      ++stats_.expirations;
    } else {
      ++node;
    }
  }
}

void token_cache::insert(const verifier& v, std::string_view token,
                         std::shared_ptr<const verified_identity> identity, int64_t now_s) {
  if (entries_max_ == 0) return;
  int64_t until_s = valid_until_s(identity->exp_s, v.leeway_s());
  if (now_s >= until_s) return;
  adopt(v);
  digest_of(token, scratch_);
  if (auto it = entries_.find(std::string_view(scratch_.data(), scratch_.size()));
      it != entries_.end()) {
    it->second->identity = std::move(identity);
    it->second->valid_until_s = until_s;
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  if (entries_.size() >= entries_max_) sweep_expired(now_s);
  while (entries_.size() >= entries_max_) {
    entries_.erase(std::string_view(lru_.back().key.data(), lru_.back().key.size()));
    lru_.pop_back();
    ++stats_.evictions;
  }
  lru_.push_front(entry{scratch_, std::move(identity), until_s});
  entries_.emplace(std::string_view(lru_.front().key.data(), lru_.front().key.size()),
                   lru_.begin());
  assert(entries_.size() == lru_.size() && entries_.size() <= entries_max_);
}

result<std::shared_ptr<const verified_identity>> token_cache::verify(const verifier& v,
                                                                     std::string_view token,
                                                                     int64_t now_s) {
  // An oversized token is refused unhashed: find() skips it and the
  // verifier's first check refuses it.
  if (auto hit = find(v, token, now_s)) return hit;
  auto verified = v.verify(token, now_s);
  if (!verified) return verified.error();
  auto identity = std::make_shared<const verified_identity>(std::move(verified.value()));
  insert(v, token, identity, now_s);
  return identity;
}

}  // namespace agentgate::identity
