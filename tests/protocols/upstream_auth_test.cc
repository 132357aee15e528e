#include "protocols/postgres/upstream_auth.h"

#include <gtest/gtest.h>

#include <array>
#include <string>

namespace agentgate::pg {

// RFC 7677's vector sends "n=user"; PostgreSQL sends "n=". This reaches the
// private constructor so the math is checked against the published vector.
class scram_client_test_peer {
 public:
  static scram_client with_user(std::string_view password, std::string nonce,
                                std::string_view user) {
    return scram_client(password, std::move(nonce), user);
  }
};

namespace {

constexpr std::string_view rfc_client_nonce = "rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view rfc_server_first =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr std::string_view rfc_client_final =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
// As published in RFC 7677 §3 (and cross-checked with Python's hashlib).
constexpr std::string_view rfc_server_final = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

// Same exchange with PostgreSQL's empty user name ("n=,"), computed
// independently with Python's hashlib/hmac.
constexpr std::string_view pg_client_final =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k=";
constexpr std::string_view pg_server_final = "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=";

scram_client pg_client(std::string_view password = "pencil") {
  return scram_client(password, std::string(rfc_client_nonce));
}

// client_final() on a fresh client: ok, or the error it returned.
status server_first_error(std::string_view server_first) {
  scram_client client = pg_client();
  auto r = client.client_final(server_first);
  if (r.is_ok()) return status::ok();
  return r.error();
}

void expect_refused(std::string_view server_first) {
  status s = server_first_error(server_first);
  EXPECT_FALSE(s.is_ok()) << "accepted: " << server_first;
  EXPECT_TRUE(s.code() == errc::protocol || s.code() == errc::auth) << server_first;
  EXPECT_FALSE(s.message().empty()) << server_first;
}

TEST(scram_client, rfc7677_vector) {
  scram_client client =
      scram_client_test_peer::with_user("pencil", std::string(rfc_client_nonce), "user");
  EXPECT_EQ(client.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
  auto final_message = client.client_final(rfc_server_first);
  ASSERT_TRUE(final_message.is_ok()) << final_message.error().message();
  EXPECT_EQ(*final_message, rfc_client_final);
  status s = client.verify_server_final(rfc_server_final);
  EXPECT_TRUE(s.is_ok()) << s.message();
  // A mistyped copy of the vector that circulates (same first 16 characters).
  EXPECT_EQ(client.verify_server_final("v=6rriTRBi23WpRR/wcS1ZzTkTlOfuadWn4vTmQlvrJCs=").code(),
            errc::auth);
}

TEST(scram_client, user_name_is_escaped) {
  scram_client client = scram_client_test_peer::with_user("x", "abc", "a,b=c");
  EXPECT_EQ(client.client_first(), "n,,n=a=2Cb=3Dc,r=abc");
}

TEST(scram_client, postgres_form_with_empty_user) {
  scram_client client = pg_client();
  EXPECT_EQ(client.client_first(), "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
  auto final_message = client.client_final(rfc_server_first);
  ASSERT_TRUE(final_message.is_ok()) << final_message.error().message();
  EXPECT_EQ(*final_message, pg_client_final);
  status s = client.verify_server_final(pg_server_final);
  EXPECT_TRUE(s.is_ok()) << s.message();
  // The RFC's signature belongs to a different auth message ("n=user").
  EXPECT_EQ(client.verify_server_final(rfc_server_final).code(), errc::auth);
}

TEST(scram_client, non_ascii_password_uses_raw_bytes) {
  // "pässwörd\x01": not printable ASCII, so hashed as raw UTF-8 bytes (libpq's
  // fallback); expected proof computed with Python over the same bytes.
  scram_client client = pg_client("p\xc3\xa4ssw\xc3\xb6rd\x01");
  auto final_message = client.client_final(rfc_server_first);
  ASSERT_TRUE(final_message.is_ok()) << final_message.error().message();
  EXPECT_EQ(*final_message,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=a06IgyQWCBWRpH2NROR3cM/qLonabF6GkXCXvuCxCvg=");
  EXPECT_TRUE(client.verify_server_final("v=YvM4DNgldNLLH9iBrc2S3WsGaNP3hMQEtOHUMFs2YQU=").is_ok());
}

TEST(scram_client, random_nonce_is_base64_of_18_bytes) {
  scram_client a("pencil");
  scram_client b("pencil");
  ASSERT_TRUE(a.client_first().starts_with("n,,n=,r="));
  std::string nonce = a.client_first().substr(8);
  EXPECT_EQ(nonce.size(), 24u);
  EXPECT_EQ(nonce.find(','), std::string::npos);
  EXPECT_NE(a.client_first(), b.client_first());

  // A server nonce extending the random one is accepted.
  auto r = a.client_final("r=" + nonce + "srv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1");
  EXPECT_TRUE(r.is_ok()) << r.error().message();
}

TEST(scram_client, wrong_server_signature_rejected) {
  scram_client client = pg_client();
  ASSERT_TRUE(client.client_final(rfc_server_first).is_ok());
  // One data bit flipped in the first byte of the real signature ('3' -> '2').
  std::string wrong(pg_server_final);
  ASSERT_EQ(wrong[2], '3');
  wrong[2] = '2';
  status s = client.verify_server_final(wrong);
  EXPECT_EQ(s.code(), errc::auth);
  EXPECT_NE(s.message().find("does not match"), std::string::npos) << s.message();
  // The still-correct signature is accepted afterwards: verify has no side effects.
  EXPECT_TRUE(client.verify_server_final(pg_server_final).is_ok());
}

TEST(scram_client, malformed_server_final_rejected) {
  scram_client client = pg_client();
  ASSERT_TRUE(client.client_final(rfc_server_first).is_ok());
  for (std::string_view bad : {"", "v", "v=", "x=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=",
                               "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=,x=1",
                               "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg",
                               "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=AAAA",
                               " v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=",
                               "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg= ", "v=AAAA"}) {
    status s = client.verify_server_final(bad);
    EXPECT_FALSE(s.is_ok()) << bad;
    EXPECT_FALSE(s.message().empty()) << bad;
  }
  // Same bytes, but non-zero unused bits before the padding ('g' -> 'h'):
  // only the canonical encoding is accepted.
  std::string non_canonical(pg_server_final);
  ASSERT_EQ(non_canonical[non_canonical.size() - 2], 'g');
  non_canonical[non_canonical.size() - 2] = 'h';
  EXPECT_EQ(client.verify_server_final(non_canonical).code(), errc::protocol);
  // Every truncation of the real server-final is refused.
  for (size_t n = 0; n < pg_server_final.size(); ++n) {
    EXPECT_FALSE(client.verify_server_final(pg_server_final.substr(0, n)).is_ok()) << n;
  }
}

TEST(scram_client, server_error_reported) {
  scram_client client = pg_client();
  ASSERT_TRUE(client.client_final(rfc_server_first).is_ok());
  status s = client.verify_server_final("e=invalid-proof");
  EXPECT_EQ(s.code(), errc::auth);
  EXPECT_NE(s.message().find("invalid-proof"), std::string::npos) << s.message();

  // Hostile error text is kept printable and short for the logs.
  status t = client.verify_server_final("e=bad\n\x01" + std::string(1000, 'x'));
  EXPECT_EQ(t.code(), errc::auth);
  EXPECT_EQ(t.message().find('\n'), std::string::npos);
  EXPECT_LT(t.message().size(), 300u);
}

TEST(scram_client, nonce_mismatch_refused) {
  // Server nonce that does not start with ours.
  status a = server_first_error(
      "r=xOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
  EXPECT_EQ(a.code(), errc::auth);
  EXPECT_NE(a.message().find("nonce"), std::string::npos) << a.message();
  // Server nonce equal to ours: the server added nothing.
  EXPECT_EQ(server_first_error("r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").code(),
            errc::auth);
  // Server nonce that is a strict prefix of ours.
  EXPECT_EQ(server_first_error("r=rOprNG,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").code(), errc::auth);
  // Non-printable byte in the server's part.
  expect_refused("r=rOprNGfwEbeRWgbNEkqO\x01,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
}

TEST(scram_client, bad_salt_refused) {
  for (std::string_view bad :
       {"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096",     // length % 4
        "r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6g!==,i=4096",    // bad character
        "r=rOprNGfwEbeRWgbNEkqOsrv,s=W22Z=J0SNY7soEsUEjb6gQ==,i=4096",    // '=' inside
        "r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6g===,i=4096",    // three '='
        "r=rOprNGfwEbeRWgbNEkqOsrv,s= W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",   // whitespace
        "r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gR==,i=4096",    // unused bits set
        "r=rOprNGfwEbeRWgbNEkqOsrv,s=,i=4096",                            // empty
        "r=rOprNGfwEbeRWgbNEkqOsrv,s=====,i=4096"}) {
    status s = server_first_error(bad);
    EXPECT_EQ(s.code(), errc::protocol) << bad;
    EXPECT_NE(s.message().find("salt"), std::string::npos) << bad << ": " << s.message();
  }
  // Padding is not counted as salt bytes: "AQ==" is the single byte 0x01,
  // which must give a different key than "AQA=" (0x01 0x00).
  scram_client one = pg_client();
  scram_client two = pg_client();
  auto r1 = one.client_final("r=rOprNGfwEbeRWgbNEkqOsrv,s=AQ==,i=1");
  auto r2 = two.client_final("r=rOprNGfwEbeRWgbNEkqOsrv,s=AQA=,i=1");
  ASSERT_TRUE(r1.is_ok() && r2.is_ok());
  EXPECT_NE(r1->substr(r1->find(",p=")), r2->substr(r2->find(",p=")));
}

TEST(scram_client, bad_iteration_count_refused) {
  const std::string prefix = "r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==";
  expect_refused(prefix);                // missing i=
  expect_refused(prefix + ",");          // missing i=
  expect_refused(prefix + ",i=");        // empty
  expect_refused(prefix + ",i=-1");
  expect_refused(prefix + ",i=+5");
  expect_refused(prefix + ",i= 5");
  expect_refused(prefix + ",i=5 ");
  expect_refused(prefix + ",i=0x10");
  expect_refused(prefix + ",i=99999999999999999999999999");
  EXPECT_EQ(server_first_error(prefix + ",i=0").code(), errc::auth);
  EXPECT_EQ(server_first_error(prefix + ",i=10000001").code(), errc::auth);
  EXPECT_EQ(server_first_error(prefix + ",i=4294967297").code(), errc::auth);
  EXPECT_TRUE(server_first_error(prefix + ",i=1").is_ok());
}

TEST(scram_client, malformed_server_first_refused) {
  expect_refused("");
  expect_refused("m=ext,r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
  expect_refused("r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,x=ext");
  expect_refused("r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,");
  expect_refused("s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOsrv,i=4096");  // order
  expect_refused("r=rOprNGfwEbeRWgbNEkqOsrv,,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
  expect_refused("R=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
  expect_refused("rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
  expect_refused("r=rOprNGfwEbeRWgbNEkqOsrv" + std::string(scram_server_message_bytes_max, 'x') +
                 ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1");
  expect_refused(std::string("r=rOprNGfwEbeRWgbNEkqOsrv\0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1", 55));
}

TEST(scram_client, every_prefix_of_server_first_refused) {
  // Prefixes that end inside the iteration count ("i=4", "i=40", "i=409") are
  // well-formed messages with another count; every shorter one is refused.
  const size_t count_start = rfc_server_first.find(",i=") + 3;
  std::string full_proof;
  {
    scram_client client = pg_client();
    auto r = client.client_final(rfc_server_first);
    ASSERT_TRUE(r.is_ok());
    full_proof = *r;
  }
  for (size_t n = 0; n < rfc_server_first.size(); ++n) {
    std::string_view prefix = rfc_server_first.substr(0, n);
    scram_client client = pg_client();
    auto r = client.client_final(prefix);
    if (n <= count_start) {
      ASSERT_FALSE(r.is_ok()) << "prefix accepted: " << prefix;
      EXPECT_FALSE(r.error().message().empty());
      EXPECT_TRUE(r.error().code() == errc::protocol || r.error().code() == errc::auth);
      EXPECT_FALSE(client.verify_server_final(pg_server_final).is_ok());
    } else {
      ASSERT_TRUE(r.is_ok()) << prefix;
      EXPECT_NE(*r, full_proof);
    }
  }
}

TEST(scram_client, flipped_bytes_never_crash) {
  for (size_t i = 0; i < rfc_server_first.size(); ++i) {
    for (uint8_t mask : {0x01, 0x20, 0x80}) {
      std::string message(rfc_server_first);
      message[i] = static_cast<char>(message[i] ^ mask);
      scram_client client = pg_client();
      auto r = client.client_final(message);
      if (!r.is_ok()) {
        EXPECT_FALSE(r.error().message().empty());
      } else {
        // Whatever was accepted, the real server's signature no longer fits.
        EXPECT_FALSE(client.verify_server_final(pg_server_final).is_ok()) << message;
      }
    }
  }
}

TEST(scram_client, sequencing_enforced) {
  scram_client client = pg_client();
  // Server-final before client-final.
  EXPECT_EQ(client.verify_server_final(pg_server_final).code(), errc::protocol);
  ASSERT_TRUE(client.client_final(rfc_server_first).is_ok());
  // A second server-first is refused: the nonce is spent.
  EXPECT_EQ(client.client_final(rfc_server_first).error().code(), errc::protocol);
  EXPECT_TRUE(client.verify_server_final(pg_server_final).is_ok());

  // After a refused server-first the exchange is over.
  scram_client failed = pg_client();
  ASSERT_FALSE(failed.client_final("r=nope,s=AQ==,i=1").is_ok());
  EXPECT_FALSE(failed.client_final(rfc_server_first).is_ok());
  EXPECT_FALSE(failed.verify_server_final(pg_server_final).is_ok());
}

TEST(scram_client, movable) {
  scram_client a = pg_client();
  scram_client b = std::move(a);
  auto r = b.client_final(rfc_server_first);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(*r, pg_client_final);
}

TEST(md5_password_response, known_values) {
  // From /usr/bin/python3 with hashlib:
  //   "md5" + md5(md5(b"secret" + b"postgres").hexdigest().encode() + bytes([1, 2, 3, 4]))
  const std::array<uint8_t, 4> salt{1, 2, 3, 4};
  EXPECT_EQ(md5_password_response("postgres", "secret", salt),
            "md5bb41a296aab6baccb36ff243a562abff");
  // Empty user and password, salt bytes that are not text.
  const std::array<uint8_t, 4> odd_salt{0xff, 0x00, 0x80, 0x7f};
  EXPECT_EQ(md5_password_response("", "", odd_salt), "md5914349703b2bcc281c23f272aa8ec549");
}

// ---- upstream_login: which requests the gateway answers ----

// An authentication request body: Int32 code, then data.
std::string request(uint32_t code, std::string_view data = {}) {
  std::string out;
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((code >> shift) & 0xff);
  out.append(data);
  return out;
}

result<upstream_login::step> feed(upstream_login& login, const std::string& body) {
  return login.on_request(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(body.data()), body.size()));
}

constexpr uint32_t req_ok = 0, req_password = 3, req_md5 = 5, req_gss = 7, req_sspi = 9,
                   req_sasl = 10, req_sasl_continue = 11, req_sasl_final = 12;
const std::string md5_salt("\x01\x02\x03\x04", 4);
const std::string sasl_scram("SCRAM-SHA-256\0\0", 15);

upstream_auth_methods only(bool scram, bool md5, bool password, bool none) {
  return {.scram_sha_256 = scram, .md5 = md5, .password = password, .none = none};
}

upstream_login scram_login(upstream_auth_methods allowed = {}) {
  return upstream_login("postgres", "pencil", allowed, std::string(rfc_client_nonce));
}

void expect_refused_with(const result<upstream_login::step>& r, errc code,
                         std::string_view needle) {
  ASSERT_FALSE(r.is_ok()) << "accepted; expected: " << needle;
  EXPECT_EQ(r.error().code(), code) << r.error().message();
  EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
}

TEST(upstream_login, default_allows_only_scram) {
  const upstream_auth_methods defaults;
  EXPECT_TRUE(defaults.scram_sha_256);
  EXPECT_FALSE(defaults.md5 || defaults.password || defaults.none);

  // A server (or whatever answers at its address) asking for the password in
  // clear or as md5 gets nothing: not the password, not a hash.
  upstream_login cleartext("postgres", "secret", defaults);
  expect_refused_with(feed(cleartext, request(req_password)), errc::auth,
                      "the upstream asked for password authentication, which "
                      "upstream.auth_methods does not allow");
  upstream_login md5("postgres", "secret", defaults);
  expect_refused_with(feed(md5, request(req_md5, md5_salt)), errc::auth,
                      "asked for md5 authentication, which upstream.auth_methods does not allow");
  // One that lets the gateway in without asking proves nothing either.
  upstream_login none("postgres", "secret", defaults);
  expect_refused_with(feed(none, request(req_ok)), errc::auth,
                      "without authentication (method none), which upstream.auth_methods does "
                      "not allow");
}

TEST(upstream_login, scram_exchange_completes) {
  upstream_login login = scram_login();
  auto first = feed(login, request(req_sasl, sasl_scram));
  ASSERT_TRUE(first.is_ok()) << first.error().message();
  EXPECT_FALSE(first->authenticated);
  const std::string client_first = "n,,n=,r=" + std::string(rfc_client_nonce);
  EXPECT_EQ(first->password_message, std::string("SCRAM-SHA-256\0", 14) +
                                         request(static_cast<uint32_t>(client_first.size())) +
                                         client_first);
  auto final_message = feed(login, request(req_sasl_continue, rfc_server_first));
  ASSERT_TRUE(final_message.is_ok()) << final_message.error().message();
  EXPECT_EQ(final_message->password_message, pg_client_final);
  auto verified = feed(login, request(req_sasl_final, pg_server_final));
  ASSERT_TRUE(verified.is_ok()) << verified.error().message();
  EXPECT_FALSE(verified->authenticated);
  EXPECT_TRUE(verified->password_message.empty());
  auto ok = feed(login, request(req_ok));
  ASSERT_TRUE(ok.is_ok()) << ok.error().message();
  EXPECT_TRUE(ok->authenticated);
}

TEST(upstream_login, scram_picked_among_mechanisms) {
  upstream_login login = scram_login();
  auto first = feed(login, request(req_sasl, std::string("SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0", 34)));
  ASSERT_TRUE(first.is_ok()) << first.error().message();
  EXPECT_TRUE(first->password_message.starts_with(std::string("SCRAM-SHA-256\0", 14)));
}

TEST(upstream_login, scram_must_finish_before_ok) {
  upstream_login skipped = scram_login();
  ASSERT_TRUE(feed(skipped, request(req_sasl, sasl_scram)).is_ok());
  ASSERT_TRUE(feed(skipped, request(req_sasl_continue, rfc_server_first)).is_ok());
  expect_refused_with(feed(skipped, request(req_ok)), errc::auth, "skipped SCRAM's final message");

  upstream_login right_away = scram_login();
  ASSERT_TRUE(feed(right_away, request(req_sasl, sasl_scram)).is_ok());
  expect_refused_with(feed(right_away, request(req_ok)), errc::auth, "skipped SCRAM's final message");

  upstream_login wrong = scram_login();
  ASSERT_TRUE(feed(wrong, request(req_sasl, sasl_scram)).is_ok());
  ASSERT_TRUE(feed(wrong, request(req_sasl_continue, rfc_server_first)).is_ok());
  expect_refused_with(feed(wrong, request(req_sasl_final, rfc_server_final)), errc::auth,
                      "does not match");
}

TEST(upstream_login, nothing_cuts_into_a_scram_exchange) {
  // Even with md5 allowed, a switch to md5 halfway through SCRAM is refused.
  upstream_login login = scram_login(only(true, true, true, false));
  ASSERT_TRUE(feed(login, request(req_sasl, sasl_scram)).is_ok());
  expect_refused_with(feed(login, request(req_md5, md5_salt)), errc::protocol,
                      "in the middle of a SCRAM exchange");
  upstream_login twice = scram_login();
  ASSERT_TRUE(feed(twice, request(req_sasl, sasl_scram)).is_ok());
  expect_refused_with(feed(twice, request(req_sasl, sasl_scram)), errc::protocol,
                      "in the middle of a SCRAM exchange");
}

TEST(upstream_login, out_of_order_and_malformed_requests) {
  upstream_login login = scram_login();
  expect_refused_with(feed(login, request(req_sasl_continue, rfc_server_first)), errc::protocol,
                      "without a SASL exchange");
  expect_refused_with(feed(login, request(req_sasl_final, pg_server_final)), errc::protocol,
                      "without a SASL exchange");
  expect_refused_with(feed(login, std::string("\0\0\0", 3)), errc::protocol, "shorter than its code");
  expect_refused_with(feed(login, request(99)), errc::protocol, "unknown authentication request 99");
  // The list must end with an empty name.
  upstream_login unterminated = scram_login();
  expect_refused_with(feed(unterminated, request(req_sasl, std::string("SCRAM-SHA-256\0", 14))),
                      errc::protocol, "malformed SASL mechanism list");
  // Channel binding only (SCRAM-SHA-256-PLUS) is not something the gateway speaks.
  upstream_login plus_only = scram_login();
  expect_refused_with(feed(plus_only, request(req_sasl, std::string("SCRAM-SHA-256-PLUS\0\0", 20))),
                      errc::unsupported, "no SASL mechanism the gateway supports");
  upstream_login gss = scram_login();
  expect_refused_with(feed(gss, request(req_gss)), errc::unsupported, "gss");
  upstream_login sspi = scram_login();
  expect_refused_with(feed(sspi, request(req_sspi)), errc::unsupported, "sspi");
  // md5 allowed, but the request carries no 4-byte salt.
  upstream_login md5 = scram_login(only(false, true, false, false));
  expect_refused_with(feed(md5, request(req_md5, "ab")), errc::protocol, "salt");
}

TEST(upstream_login, md5_when_allowed) {
  upstream_login login("postgres", "secret", only(false, true, false, false));
  auto r = feed(login, request(req_md5, md5_salt));
  ASSERT_TRUE(r.is_ok()) << r.error().message();
  EXPECT_EQ(r->password_message, std::string("md5bb41a296aab6baccb36ff243a562abff\0", 36));
  auto ok = feed(login, request(req_ok));
  ASSERT_TRUE(ok.is_ok()) << ok.error().message();
  EXPECT_TRUE(ok->authenticated);
  // SCRAM is not in this list: a server offering it is refused.
  upstream_login scram("postgres", "secret", only(false, true, false, false));
  expect_refused_with(feed(scram, request(req_sasl, sasl_scram)), errc::auth,
                      "asked for scram-sha-256 authentication, which upstream.auth_methods does not allow");
}

TEST(upstream_login, password_when_allowed) {
  upstream_login login("postgres", "secret", only(true, false, true, false));
  auto r = feed(login, request(req_password));
  ASSERT_TRUE(r.is_ok()) << r.error().message();
  EXPECT_EQ(r->password_message, std::string("secret\0", 7));
  auto ok = feed(login, request(req_ok));
  ASSERT_TRUE(ok.is_ok()) << ok.error().message();
  EXPECT_TRUE(ok->authenticated);
  // Password allowed does not make "none" allowed.
  upstream_login none("postgres", "secret", only(true, false, true, false));
  expect_refused_with(feed(none, request(req_ok)), errc::auth, "method none");
}

TEST(upstream_login, none_when_allowed) {
  upstream_login login("postgres", "secret", only(false, false, false, true));
  auto ok = feed(login, request(req_ok));
  ASSERT_TRUE(ok.is_ok()) << ok.error().message();
  EXPECT_TRUE(ok->authenticated);
  // "none" alone refuses a server that does ask for a password.
  upstream_login asked("postgres", "secret", only(false, false, false, true));
  expect_refused_with(feed(asked, request(req_password)), errc::auth, "password authentication");
}

}  // namespace
}  // namespace agentgate::pg
