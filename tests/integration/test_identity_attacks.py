#!/usr/bin/python3
"""Identity attacks a client can try on the wire (issue 3, points 2, 3 and 7).

Every hostile token is sent the way a real client would send it: TLS, then the
token as the cleartext password. Each must be refused with a FATAL
ErrorResponse, SQLSTATE 28P01, a message starting "token refused" that names
the reason, and nothing copied from the token or any key. Beside them stand
positive controls (the same Python signer making tokens that are accepted), so
a refusal always means the check under test fired, not that the signer is
broken.

Also: plaintext login refused (28000) when TLS is required; bytes pipelined
behind an SSLRequest refused (CVE-2021-23214 pattern) with no statement run;
the upstream's password never reaching the client or the log; startup
parameters outside the allow-list never reaching the server; a key rotated out
of the JWKS (SIGHUP) refusing tokens that were verified and cached before; a
session ended once its token expires.
"""

import os
import re
import secrets
import socket
import ssl
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import identity_harness as ih  # noqa: E402
import pg_harness as h  # noqa: E402

TOKEN_BYTES_MAX = 8192  # identity.token_bytes_max, default


def token_fragments(token):
    """Pieces of a token long enough that seeing one in an error means it was copied."""
    parts = [p for p in token.split(".") if len(p) >= 12]
    return [p[:24] for p in parts]


class TokenAttackTest(ih.IdentityTestCase):
    """Hostile tokens against one gateway (2 shards) that requires TLS."""

    gateway_options = {"shards": 2, "extra": {"log_level": "debug"}}

    # -- helpers ----------------------------------------------------------

    def refused(self, token, reason_re, what):
        """Logs in with token; asserts a 28P01 refusal whose message matches reason_re."""
        res = self.login(token)
        err = self.assert_refused(res, what=what)
        msg = err.get("M", "")
        self.assertRegex(msg, re.compile(reason_re, re.I),
                         f"{what}: the reason does not say why: {msg!r}")
        everything = " ".join(err.values())
        for frag in token_fragments(token):
            self.assertNotIn(frag, everything, f"{what}: error echoes the token: {err}")
        self.assertNotIn("BEGIN", everything, f"{what}: error shows key material: {err}")
        # Nothing follows the FATAL error: the connection is closed.
        self.assertNotIn(b"Z\x00\x00\x00\x05", res.received, f"{what}: ReadyForQuery sent")
        self.gw.assert_alive()
        return err

    def accepted(self, token, what):
        res = self.login(token)
        try:
            self.assertTrue(res.ok, f"{what}: refused: {res!r}\ngateway log:\n"
                                    f"{self.gateway_log()}")
            rows, err = ih.wire_query(res, "SELECT 1")
            self.assertIsNone(err, f"{what}: {err}")
            self.assertEqual(rows, [["1"]])
        finally:
            res.close()

    def header(self, kind="rsa", **kw):
        hdr = {"alg": self.world.algs[kind], "typ": "JWT", "kid": self.world.kids[kind]}
        hdr.update(kw)
        return {k: v for k, v in hdr.items() if v is not None}

    # -- positive controls for the Python signer -------------------------------

    def test_control_crafted_tokens_are_accepted(self):
        for kind in ih.KINDS:
            with self.subTest(kind=kind):
                self.accepted(self.world.crafted(kind), f"crafted {kind}")
        self.accepted(self.world.crafted("ps256"), "PS256 (JWK alg PS256)")
        self.accepted(self.world.crafted("rsa", aud=["someone-else", ih.AUDIENCE]),
                      "aud array holding ours")
        self.accepted(self.world.token("rsa"), "agentgate token")

    def test_control_leeway_exp(self):
        # exp 20 s ago is inside the 60 s leeway: the login is accepted, so the
        # session must also be usable (not ended at its first command).
        now = int(time.time())
        self.accepted(self.world.crafted("ec", claims=ih.standard_claims(
            now_s=now - 320, ttl_s=300)), "expired 20 s ago, within the leeway")

    def test_control_leeway_nbf(self):
        now = int(time.time())
        self.accepted(self.world.crafted("ec", claims=ih.standard_claims(
            now_s=now, ttl_s=300, nbf=now + 20)), "nbf in 20 s, within the leeway")

    # -- algorithm attacks -----------------------------------------------------

    def test_alg_none(self):
        claims = ih.standard_claims()
        for alg in ("none", "None", "NONE", "nOnE"):
            with self.subTest(alg=alg):
                tok = ih.sign_jwt(None, None, self.header("rsa", alg=alg), claims)
                self.refused(tok, r"none|algorithm", f"alg {alg}")
                # Same, with a signature that is not empty.
                self.refused(tok + "c2lnbmF0dXJl", r"none|algorithm", f"alg {alg} + sig")

    def test_hs256_signed_with_the_public_key(self):
        # The classic confusion: the verifier must never use the RSA/EC public
        # key as an HMAC secret.
        for kind in ("rsa", "ec"):
            for alg in ("HS256", "HS384", "HS512"):
                with self.subTest(kind=kind, alg=alg):
                    tok = ih.sign_jwt(self.world.keys[kind], "HS256-PUBKEY",
                                      self.header(kind, alg=alg), ih.standard_claims())
                    self.refused(tok, r"HMAC|HS\d|algorithm", f"{alg} with the {kind} public key")

    def test_alg_does_not_match_the_key_type(self):
        cases = [
            # header alg, kid of, signed as, with key of
            ("ES256", "rsa", "ES256", "ec"),
            ("RS256", "ec", "RS256", "rsa"),
            ("EdDSA", "rsa", "EdDSA", "ed25519"),
            ("RS256", "ed25519", "RS256", "rsa"),
            ("ES256", "ed25519", "ES256", "ec"),
            ("PS256", "ec", "PS256", "rsa"),
            # RSA both, but the JWK pins the other padding.
            ("PS256", "rsa", "PS256", "rsa"),
            ("RS256", "ps256", "RS256", "ps256"),
        ]
        for alg, kid_of, sign_as, key_of in cases:
            with self.subTest(alg=alg, kid_of=kid_of):
                tok = ih.sign_jwt(self.world.keys[key_of], sign_as,
                                  self.header(kid_of, alg=alg), ih.standard_claims())
                self.refused(tok, r"algorithm|alg|key", f"{alg} with the kid of a {kid_of} key")

    def test_unsupported_algorithms(self):
        for alg in ("RS512", "ES384", "ES512", "PS512", "RSA-OAEP", "", "Ed25519"):
            with self.subTest(alg=alg):
                tok = ih.sign_jwt(self.world.keys["rsa"], "RS256", self.header("rsa", alg=alg),
                                  ih.standard_claims())
                self.refused(tok, r"alg", f"alg {alg!r}")
        tok = ih.sign_jwt(self.world.keys["rsa"], "RS256", self.header("rsa", alg=None),
                          ih.standard_claims())
        self.refused(tok, r"alg", "no alg")

    def test_es256_der_signature(self):
        # JOSE wants r||s (64 bytes); an ASN.1 DER signature must not verify.
        tok = self.world.crafted("ec", sign_alg="ES256-DER")
        self.refused(tok, r"signature", "ES256 with a DER signature")

    def test_crit_header(self):
        tok = self.world.crafted("rsa", header=self.header("rsa", crit=["exp"]))
        self.refused(tok, r"crit|header", "crit header")

    # -- keys -----------------------------------------------------------------

    def test_unknown_kid(self):
        kid = "kid-" + secrets.token_hex(6)
        tok = self.world.crafted("rsa", header=self.header("rsa", kid=kid))
        err = self.refused(tok, r"unknown|kid|key", "unknown kid")
        self.assertNotIn(kid, " ".join(err.values()), "the attacker's kid is echoed")

    def test_signed_by_another_issuers_key(self):
        # Same iss, a key that is not in our JWKS: with our kid, and with its own.
        foreign = self.world.foreign_key
        tok = ih.sign_jwt(foreign, "RS256", self.header("rsa"), ih.standard_claims())
        self.refused(tok, r"signature", "foreign key, our kid")
        tok = ih.sign_jwt(foreign, "RS256", self.header("rsa", kid="foreign-1"),
                          ih.standard_claims())
        self.refused(tok, r"unknown|kid|key", "foreign key, its own kid")
        # And `agentgate token` itself with the foreign key.
        tok = ih.mint_token(foreign, kid=self.world.kids["rsa"])
        self.refused(tok, r"signature", "agentgate token with the foreign key")

    def test_tampered_payload(self):
        tok = self.world.crafted("ed25519", sub="alice", groups=("dev",))
        head, _, sig = tok.split(".")
        forged = ih.b64url_json(ih.standard_claims(sub="alice", groups=("dev", "dba")))
        self.refused(f"{head}.{forged}.{sig}", r"signature", "payload changed after signing")
        # Signature of one token on the payload of another.
        other = self.world.crafted("ed25519", sub="mallory")
        self.refused(f"{head}.{other.split('.')[1]}.{sig}", r"signature", "swapped payload")

    # -- encoding and size -----------------------------------------------------

    def test_bad_base64url(self):
        good = self.world.crafted("rsa")
        head, body, sig = good.split(".")
        cases = {
            "header with *": ("*" + head[1:], body, sig),
            "payload with +/ (plain base64)": (head, body[:-2] + "+/", sig),
            "padding =": (head + "==", body, sig),
            "signature with a space": (head, body, sig[:10] + " " + sig[11:]),
            "payload not decodable length": (head, body + "A", sig),
        }
        for name, parts in cases.items():
            with self.subTest(name=name):
                self.refused(".".join(parts), r"base64|signature|JSON|token",
                             f"bad base64url: {name}")

    def test_not_three_parts(self):
        good = self.world.crafted("rsa")
        head, body, sig = good.split(".")
        for name, tok in {"two parts": f"{head}.{body}", "four parts": f"{good}.{sig}",
                          "one part": head, "empty": "", "dots": ".."}.items():
            with self.subTest(name=name):
                self.refused(tok, r"part|base64|token|JSON", name)

    def test_malformed_json(self):
        now = int(time.time())
        valid = (f'{{"iss":"{ih.ISSUER}","aud":"{ih.AUDIENCE}","sub":"x",'
                 f'"groups":["dev"],"exp":{now + 300}')
        cases = {
            "truncated payload": (self.header("rsa"), valid),
            "payload is an array": (self.header("rsa"), "[1,2,3]"),
            "payload is a string": (self.header("rsa"), '"hello"'),
            "payload not UTF-8 JSON": (self.header("rsa"), b"\xff\xfe{}"),
            "header broken": ('{"alg":"RS256","kid":"rsa-1"', ih.standard_claims()),
            "trailing garbage": (self.header("rsa"), valid + "}garbage"),
            "duplicate exp": (self.header("rsa"), valid + f',"exp":{now + 999999}}}'),
        }
        for name, (hdr, claims) in cases.items():
            with self.subTest(name=name):
                tok = ih.sign_jwt(self.world.keys["rsa"], "RS256", hdr, claims)
                self.refused(tok, r"JSON|duplicate|header|payload", f"malformed JSON: {name}")

    def test_oversized_token(self):
        # A valid signature over a big claim: refused for its size alone...
        tok = self.world.crafted("rsa", pad="x" * (TOKEN_BYTES_MAX + 1000))
        self.assertGreater(len(tok), TOKEN_BYTES_MAX)
        self.refused(tok, r"long|size|large|big", "oversized token")
        # ...while the same shape under the limit is accepted.
        small = self.world.crafted("rsa", pad="x" * 2000)
        self.assertLess(len(small), TOKEN_BYTES_MAX)
        self.accepted(small, "padded token under the limit")

    def test_huge_password_message(self):
        # A megabyte "token": refused or closed, never buffered into a crash.
        res = self.login("A" * (1 << 20))
        self.assertFalse(res.ok, res)
        if res.error is not None:
            self.assertEqual(res.error.get("S"), "FATAL", res.error)
        self.gw.assert_alive()
        self.accepted(self.world.token("ec"), "login after the huge token")

    def test_empty_password(self):
        self.refused("", r".", "empty password")

    # -- claims ------------------------------------------------------------------

    def test_expired(self):
        self.refused(self.world.expired_token("rsa"), r"expired", "expired")
        now = int(time.time())
        self.refused(self.world.crafted("ec", claims=ih.standard_claims(
            now_s=now - 400, ttl_s=300)), r"expired", "expired 100 s ago (leeway 60)")

    def test_not_yet_valid(self):
        now = int(time.time())
        self.refused(self.world.crafted("rsa", nbf=now + 3600), r"not yet valid|nbf",
                     "nbf in an hour")
        self.refused(self.world.crafted("ed25519", claims=ih.standard_claims(
            now_s=now + 3600, ttl_s=300)), r"not yet valid|nbf|iat", "issued in the future")

    def test_missing_exp(self):
        claims = ih.standard_claims()
        del claims["exp"]
        self.refused(self.world.crafted("rsa", claims=claims), r"exp", "no exp")

    def test_audience_not_ours(self):
        self.refused(self.world.crafted("rsa", aud="someone-else"), r"aud", "aud string")
        self.refused(self.world.crafted("rsa", aud=["a", "b"]), r"aud", "aud array")
        self.refused(self.world.token("rsa", aud="someone-else"), r"aud", "agentgate token --aud")

    def test_issuer_not_ours(self):
        self.refused(self.world.crafted("rsa", iss="https://evil.test"), r"iss",
                     "iss not ours, our key")
        self.refused(self.world.crafted("rsa", iss=ih.ISSUER + "/"), r"iss",
                     "iss with a trailing slash")
        claims = ih.standard_claims()
        del claims["iss"]
        self.refused(self.world.crafted("rsa", claims=claims), r"iss", "no iss")

    # -- transport -------------------------------------------------------------

    def test_plaintext_login_refused(self):
        res = ih.wire_login(self.gw.host, self.gw.port, self.world.token("rsa"), tls=False,
                            database=self.pg.database)
        err = self.assert_refused(res, sqlstate=ih.PLAINTEXT_SQLSTATE, prefix=None,
                                  what="plaintext login")
        self.assertEqual(res.auth_codes, [], "the password was asked for without TLS")
        self.assertIn("TLS", err.get("M", ""), err)
        # psql with sslmode=disable sees the same.
        res = h.run_psql(self.gw.tls_dsn(self.world.token("rsa"), "disable"),
                         ["-Atc", "SELECT 1"], timeout=30)
        self.assertNotEqual(res.returncode, 0, res.stdout)
        self.assertIn("FATAL", res.stderr)

    def test_bytes_pipelined_behind_ssl_request(self):
        table = "injected_" + secrets.token_hex(4)
        token = self.world.token("rsa")
        injected = (h.startup_message("agent", self.pg.database)
                    + h.frame(b"p", token.encode() + b"\0")
                    + h.query_message(f"CREATE TABLE {table} (x int)"))
        # 1. One write: SSLRequest and the plaintext bytes behind it.
        s = h.raw_connect(self.gw.host, self.gw.port)
        try:
            s.sendall(h.ssl_request() + injected)
            first = s.recv(1)
            if first == b"S":
                # Answered as if nothing followed: the handshake must not use
                # the injected bytes, and a real login must not run them.
                try:
                    tls = ih.client_tls_context().wrap_socket(s)
                    tls.settimeout(5)
                    tls.sendall(h.startup_message("agent", self.pg.database))
                    tls.recv(65536)
                except (OSError, ssl.SSLError):
                    pass
            else:
                self.assertIn(first, (b"", b"E"), f"unexpected answer {first!r}")
                rest = b""
                s.settimeout(5)
                try:
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        rest += chunk
                except socket.timeout:
                    self.fail("the connection stayed open after the injected bytes")
                self.assertNotIn(b"Z\x00\x00\x00\x05", rest)
        finally:
            s.close()
        # 2. Two writes: SSLRequest, its 'S', then plaintext instead of a ClientHello.
        s = h.raw_connect(self.gw.host, self.gw.port)
        try:
            s.sendall(h.ssl_request())
            self.assertEqual(s.recv(1), b"S")
            s.sendall(injected)
            s.settimeout(5)
            got = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            except (socket.timeout, ConnectionResetError):
                pass
            self.assertNotIn(b"Z\x00\x00\x00\x05", got)
        finally:
            s.close()
        time.sleep(0.5)
        exists = self.pg.admin_sql(f"SELECT to_regclass('public.{table}') IS NOT NULL",
                                   dbname=self.pg.database).strip()
        self.assertEqual(exists, "f", "the injected statement ran")
        self.gw.assert_alive()
        self.accepted(self.world.token("rsa"), "login after the injection attempts")


class TransportAndCredentialTest(ih.IdentityTestCase):
    """A gateway that allows plaintext token login (loopback) beside TLS, for
    injection and startup-parameter checks, plus upstream credential hygiene."""

    gateway_options = {"shards": 2, "allow_plaintext_auth": True,
                       "extra": {"log_level": "debug"}}

    @classmethod
    def prepare_database(cls):
        # A role the upstream user may switch to: forwarding `role` would work.
        cls.pg.admin_sql("CREATE ROLE ag_other NOLOGIN")
        cls.pg.admin_sql(f"GRANT ag_other TO {cls.pg.user}")

    def test_control_plaintext_allowed_here(self):
        res = ih.wire_login(self.gw.host, self.gw.port, self.world.token("rsa"), tls=False,
                            database=self.pg.database)
        self.assertTrue(res.ok, res)
        res.close()

    def test_injection_behind_ssl_request_with_plaintext_allowed(self):
        # If the gateway read the bytes behind the SSLRequest as a plaintext
        # session, this login would be valid and the statement would run.
        table = "injected_" + secrets.token_hex(4)
        injected = (h.startup_message("agent", self.pg.database)
                    + h.frame(b"p", self.world.token("rsa").encode() + b"\0")
                    + h.query_message(f"CREATE TABLE {table} (x int)"))
        s = h.raw_connect(self.gw.host, self.gw.port)
        try:
            s.sendall(h.ssl_request() + injected)
            s.settimeout(5)
            got = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                    if got[:1] == b"S":
                        break
            except (socket.timeout, ConnectionResetError):
                pass
            self.assertNotIn(b"Z\x00\x00\x00\x05", got, "a session was opened")
        finally:
            s.close()
        time.sleep(0.5)
        exists = self.pg.admin_sql(f"SELECT to_regclass('public.{table}') IS NOT NULL",
                                   dbname=self.pg.database).strip()
        self.assertEqual(exists, "f", "the injected statement ran")

    def test_startup_parameters_outside_the_allow_list(self):
        # Control: directly, `role` in the startup packet does switch the role.
        direct = h.run_psql(self.pg.dsn(options="-c role=ag_other"), ["-Atc", "SHOW role"],
                            password=self.pg.password)
        self.assertEqual(direct.stdout.strip(), "ag_other", direct.stderr)
        token = self.world.token("rsa")
        # libpq's options=-c ...
        res = h.run_psql(self.gw.tls_dsn(token, "verify-full",
                                         options="-c role=ag_other -c statement_timeout=1234"),
                         ["-Atc", "SELECT current_setting('role'), "
                                  "current_setting('statement_timeout'), current_user"],
                         timeout=30)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout.strip(), f"none|0|{self.pg.user}")
        # Raw startup parameters, including GUCs PostgreSQL takes from the packet.
        login = self.login(token, params={
            "role": "ag_other", "session_authorization": "ag_other", "options": "-c role=ag_other",
            "statement_timeout": "4321", "default_transaction_read_only": "on",
            "application_name": "allowed-app", "search_path": "allowed_schema, public"})
        self.assertTrue(login.ok, login)
        try:
            rows, err = ih.wire_query(login, (
                "SELECT current_setting('role'), current_setting('session_authorization'), "
                "current_user, session_user, current_setting('statement_timeout'), "
                "current_setting('default_transaction_read_only'), "
                "current_setting('application_name'), current_setting('search_path')"))
            self.assertIsNone(err, err)
            self.assertEqual(rows, [["none", self.pg.user, self.pg.user, self.pg.user, "0", "off",
                                     "allowed-app", "allowed_schema, public"]])
        finally:
            login.close()
        # The client's user name chooses nothing upstream.
        login = self.login(token, user="postgres")
        self.assertTrue(login.ok, login)
        try:
            rows, _ = ih.wire_query(login, "SELECT current_user, session_user")
            self.assertEqual(rows, [[self.pg.user, self.pg.user]])
        finally:
            login.close()

    def test_replication_connection_refused(self):
        for value in ("database", "true"):
            with self.subTest(replication=value):
                res = self.login(self.world.token("rsa"), params={"replication": value})
                self.assertFalse(res.ok, res)

    def test_upstream_password_never_reaches_the_client(self):
        token = self.world.token("ec")
        login = self.login(token, params={"application_name": "leak-check"})
        self.assertTrue(login.ok, login)
        try:
            for sql in ("SELECT current_user", "SHOW ALL",
                        "SELECT * FROM pg_stat_activity WHERE pid = pg_backend_pid()",
                        "SELECT setting FROM pg_settings WHERE name LIKE '%password%'"):
                _, err = ih.wire_query(login, sql)
                self.assertIsNone(err, f"{sql}: {err}")
            received = login.received
        finally:
            login.close()
        self.assertNotIn(self.pg.password.encode(), received)
        log = self.gw.stderr_text()
        self.assertNotIn(self.pg.password, log, "the gateway logged the upstream password")
        self.assertNotIn(token, log, "the gateway logged a bearer token")

    def test_wrong_upstream_password_is_not_revealed(self):
        wrong = "pw-wrong-" + secrets.token_hex(12)
        pw_file = os.path.join(self.world.dir, "wrong-password.txt")
        with open(pw_file, "w") as f:
            f.write(wrong + "\n")
        os.chmod(pw_file, 0o600)
        upstream = {"host": self.pg.host, "port": self.pg.port, "user": self.pg.user,
                    "password_file": pw_file, "database": self.pg.database}
        with ih.IdentityGateway(self.pg, self.world, shards=1,
                                extra={"log_level": "debug"},
                                target_extra={"upstream": upstream}) as gw:
            token = self.world.token("rsa")
            res = ih.wire_login(gw.host, gw.port, token, database=self.pg.database,
                                ca_file=self.world.pki["ca_cert"])
            self.assertFalse(res.ok, res)
            self.assertIsNotNone(res.error, f"closed without an error: {res!r}")
            self.assertEqual(res.error.get("S"), "FATAL", res.error)
            for secret in (wrong, self.pg.password):
                self.assertNotIn(secret.encode(), res.received)
                self.assertNotIn(secret, " ".join(res.error.values()))
            # psql sees an error, and not the password either.
            out = h.run_psql(gw.tls_dsn(token, "verify-full"), ["-Atc", "SELECT 1"], timeout=30)
            self.assertNotEqual(out.returncode, 0)
            self.assertNotIn(wrong, out.stdout + out.stderr)
            self.assertNotIn(wrong, gw.stderr_text(), "the gateway logged the upstream password")


class KeyRotationTest(ih.IdentityTestCase):
    """A key removed from the JWKS file stops new logins after SIGHUP, even for a
    token every shard has already verified and cached."""

    gateway_options = {"shards": 2}
    logins_per_round = 8  # over 2 shards: both see the token with p = 1 - 2^-7

    def login_ok(self, token):
        res = self.login(token)
        if res.ok:
            res.close()
        return res

    def test_1_key_rotated_out_then_replayed(self):
        old_token = self.world.token("rsa", sub="replayer")
        for _ in range(self.logins_per_round):  # verified and cached on both shards
            res = self.login_ok(old_token)
            self.assertTrue(res.ok, f"{res!r}\n{self.gateway_log()}")
        new_key = self.world.add_key("rsa", "rsa-rotated", "rsa-2")
        new_token = self.world.token("rsa-rotated", sub="fresh")
        self.assert_refused(self.login(new_token), what="new key before it is published")
        # Publish the new key, drop the old one, tell the gateway.
        self.world.write_jwks(["ec", "ed25519", "rsa-rotated"])
        self.assertIsNotNone(new_key)
        self.gw.sighup()
        reloaded = ih.wait_until(lambda: self.login_ok(new_token).ok, timeout_s=10, interval_s=0.2)
        self.assertTrue(reloaded, "a key added to the JWKS file is not accepted 10 s after "
                                  "SIGHUP: is the JWKS file reloaded on SIGHUP?\ngateway log:\n"
                                  f"{self.gateway_log()}")
        for i in range(self.logins_per_round):
            err = self.assert_refused(self.login(old_token), what=f"replay #{i} after rotation")
            self.assertRegex(err.get("M", ""), r"(?i)unknown|key|kid")
        self.gw.assert_alive()

    def test_2_broken_jwks_keeps_the_last_good_keys(self):
        token = self.world.token("ec", sub="steady")
        self.assertTrue(self.login_ok(token).ok)
        with open(self.world.jwks_path, "w") as f:
            f.write('{"keys": [ {"kty": "EC", "crv": "P-256", "x": ')  # torn write
        self.gw.sighup()
        time.sleep(1.0)
        self.gw.assert_alive()
        res = self.login_ok(token)
        self.assertTrue(res.ok, f"a broken JWKS file on SIGHUP locked everyone out: {res!r}\n"
                                f"{self.gateway_log()}")
        self.world.write_jwks(["ec", "ed25519", "rsa"])
        self.gw.sighup()
        time.sleep(0.5)
        self.assertTrue(self.login_ok(token).ok)


class SessionExpiryTest(ih.IdentityTestCase):
    """A session whose token expires is ended at its next command (leeway 0)."""

    gateway_options = {"shards": 1, "identity_extra": {"leeway_s": 0}}

    def test_session_ends_after_token_expiry(self):
        token = self.world.token("ed25519", sub="short-lived", ttl_s=2)
        res = self.login(token)
        self.assertTrue(res.ok, res)
        try:
            rows, err = ih.wire_query(res, "SELECT 'before'")
            self.assertIsNone(err)
            self.assertEqual(rows, [["before"]])
            time.sleep(3.5)
            res.sock.settimeout(10)
            res.sock.sendall(h.query_message("SELECT 'after'"))
            msgs = []
            while True:  # until the gateway closes (or, wrongly, says ReadyForQuery)
                m = res.reader.read_message()
                if m is None:
                    break
                msgs.append(m)
                if m[0] == "Z":
                    break
            types = [t for t, _ in msgs]
            errors = [h.error_fields(b) for t, b in msgs if t == "E"]
            self.assertNotIn("D", types, f"the query ran: {msgs}")
            self.assertNotIn("Z", types, f"the session went on: {msgs}")
            self.assertEqual(len(errors), 1, msgs)
            self.assertEqual(errors[0].get("S"), "FATAL", errors[0])
            self.assertIn("expire", errors[0].get("M", ""), errors[0])
        finally:
            res.close()
        # And the same token cannot log in again.
        self.assert_refused(self.login(token), what="expired token, new login")

    def read_until_ready_or_eof(self, res):
        msgs = []
        while True:
            m = res.reader.read_message()
            if m is None:
                return msgs
            msgs.append(m)
            if m[0] == "Z":
                return msgs

    def test_prepared_statement_after_token_expiry(self):
        # A statement parsed while the token was valid must not run after it
        # expired: Bind/Execute are commands too, not only Query and Parse.
        token = self.world.token("ec", sub="short-lived-prepared", ttl_s=2)
        res = self.login(token)
        self.assertTrue(res.ok, res)
        try:
            res.sock.settimeout(10)
            res.sock.sendall(h.frame(b"P", b"s1\0SELECT 'prepared ran'\0\0\0")
                             + h.frame(b"S", b""))
            msgs = self.read_until_ready_or_eof(res)
            self.assertEqual([t for t, _ in msgs], ["1", "Z"], msgs)
            time.sleep(3.5)
            res.sock.sendall(h.frame(b"B", b"\0s1\0" + struct.pack("!hhh", 0, 0, 0))
                             + h.frame(b"E", b"\0" + struct.pack("!i", 0))
                             + h.frame(b"S", b""))
            msgs = self.read_until_ready_or_eof(res)
            types = [t for t, _ in msgs]
            self.assertNotIn("D", types, f"the prepared statement ran after expiry: {msgs}")
            self.assertNotIn("Z", types, f"the session went on after expiry: {msgs}")
            errors = [h.error_fields(b) for t, b in msgs if t == "E"]
            self.assertTrue(errors and errors[-1].get("S") == "FATAL", msgs)
        finally:
            res.close()


if __name__ == "__main__":
    h.main()
