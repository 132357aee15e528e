"""Identity helpers for agentgate's integration tests: TLS and JWT login.

Builds on pg_harness (imported, never changed here):

- make_pki(dir): a throwaway CA and a server certificate for 127.0.0.1 and
  localhost (SAN IP:127.0.0.1, DNS:localhost), made with the openssl CLI.
- make_signing_key(dir, kind): RSA 2048, EC P-256 or Ed25519 private keys
  (PEM, openssl CLI).
- mint_token / print_jwks: `agentgate token`, the product's own minting.
- sign_jwt: a small independent JWS signer in Python (the `cryptography`
  module) for tokens `agentgate token` will not make on purpose: expired,
  not yet valid, alg none, HS256 key confusion, DER ECDSA signatures, PS256,
  bad base64url, broken JSON, oversized.
- IdentityWorld: a temp dir holding the PKI, three trusted signing keys (one
  per algorithm, each with its kid), a key the gateway does not trust, and the
  JWKS file; knows how to rotate keys out of the JWKS.
- IdentityGateway: pg_harness.Agentgate with tls + identity + client_auth
  "jwt", and libpq DSNs that carry the token as the password over TLS.
- wire_login: a raw TLS PostgreSQL login that returns every byte the gateway
  sent, the error fields (SQLSTATE) of a refusal, and the ParameterStatus
  values; for checks no driver exposes (libpq-based clients do not report the
  SQLSTATE of a FATAL error received during connection).

Run with Debian's python (/usr/bin/python3): psycopg2, psycopg 3 and
python3-cryptography come from Debian packages (scripts/install-deps).
"""

import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

ISSUER = "https://idp.test"
AUDIENCE = "agentgate"
GROUPS_CLAIM = "groups"
LEEWAY_S = 60

KINDS = ("rsa", "ec", "ed25519")
# What `agentgate token` signs with for each key kind.
ALG_OF_KIND = {"rsa": "RS256", "ec": "ES256", "ed25519": "EdDSA"}

REFUSED_SQLSTATE = "28P01"        # invalid_password: every refused token
PLAINTEXT_SQLSTATE = "28000"      # invalid_authorization_specification
REFUSED_PREFIX = "token refused"


# --------------------------------------------------------------------------
# openssl CLI: CA, server certificate, signing keys

def _openssl(args, cwd, timeout=60):
    res = subprocess.run(["openssl"] + list(args), capture_output=True, text=True,
                         timeout=timeout, cwd=cwd)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed rc={res.returncode}\n"
                           f"{res.stdout}\n{res.stderr}")
    return res.stdout


def make_pki(directory, name="server", days=2):
    """A test CA and a server certificate signed by it, for 127.0.0.1 and localhost.

    Returns {"ca_cert", "ca_key", "cert", "key"} (absolute paths). The private
    keys are mode 0600.
    """
    directory = os.path.abspath(directory)
    ca_key = os.path.join(directory, "ca.key")
    ca_cert = os.path.join(directory, "ca.crt")
    key = os.path.join(directory, f"{name}.key")
    csr = os.path.join(directory, f"{name}.csr")
    cert = os.path.join(directory, f"{name}.crt")
    ext = os.path.join(directory, f"{name}.ext")
    if not os.path.exists(ca_cert):
        _openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                  "-keyout", ca_key, "-out", ca_cert, "-days", str(days),
                  "-subj", "/CN=agentgate test CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(["req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", key,
              "-out", csr, "-subj", "/CN=localhost"], directory)
    _openssl(["x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
              "-CAcreateserial", "-out", cert, "-days", str(days), "-sha256",
              "-extfile", ext], directory)
    for p in (ca_key, key):
        os.chmod(p, 0o600)
    return {"ca_cert": ca_cert, "ca_key": ca_key, "cert": cert, "key": key}


def make_signing_key(directory, kind, name=None):
    """An unencrypted PEM private key: kind is "rsa" (2048), "ec" (P-256) or "ed25519"."""
    path = os.path.join(os.path.abspath(directory), f"{name or kind}.pem")
    if kind == "rsa":
        args = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    elif kind == "ec":
        args = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    elif kind == "ed25519":
        args = ["-algorithm", "ed25519"]
    else:
        raise ValueError(f"unknown key kind {kind!r}")
    _openssl(["genpkey"] + args + ["-out", path], directory)
    os.chmod(path, 0o600)
    return path


def public_pem(key_path):
    """The SubjectPublicKeyInfo PEM of a private key file (bytes)."""
    res = subprocess.run(["openssl", "pkey", "-in", key_path, "-pubout"], capture_output=True,
                         timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"openssl pkey -pubout failed: {res.stderr!r}")
    return res.stdout


# --------------------------------------------------------------------------
# `agentgate token`

def agentgate_token_cli(args, binary=None, timeout=30):
    """Runs `agentgate token ARGS`; returns stdout stripped, raises with stderr on failure."""
    cmd = [binary or h.agentgate_bin(), "token"] + list(args)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed rc={res.returncode}\n"
                             f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}")
    return res.stdout.strip()


def mint_token(key, sub="alice", groups=("dev",), iss=ISSUER, aud=AUDIENCE, ttl_s=None,
               email=None, kid=None, binary=None):
    """A signed JWT from `agentgate token`."""
    args = ["--key", key, "--iss", iss, "--aud", aud, "--sub", sub,
            "--groups", ",".join(groups)]
    if ttl_s is not None:
        args += ["--ttl", str(ttl_s)]
    if email is not None:
        args += ["--email", email]
    if kid is not None:
        args += ["--kid", kid]
    return agentgate_token_cli(args, binary)


def print_jwks(key, kid=None, binary=None):
    """The JWKS document `agentgate token --print-jwks` prints for key (a dict)."""
    args = ["--key", key, "--print-jwks"]
    if kid is not None:
        args += ["--kid", kid]
    doc = json.loads(agentgate_token_cli(args, binary))
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise AssertionError(f"--print-jwks printed no keys: {doc!r}")
    return doc


def write_jwks(path, entries, binary=None):
    """Writes one JWKS, atomically, holding the public keys of entries:
    [(key path, kid) or (key path, kid, alg)]; alg replaces the JWK's "alg"
    (e.g. PS256 for an RSA key, which `agentgate token` publishes as RS256)."""
    merged = []
    for key, kid, *alg in entries:
        jwks = print_jwks(key, kid, binary)["keys"]
        if alg:
            for jwk in jwks:
                jwk["alg"] = alg[0]
        merged.extend(jwks)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"keys": merged}, f, indent=2)
    os.replace(tmp, path)
    return {"keys": merged}


# --------------------------------------------------------------------------
# An independent JWS signer, for hostile and unusual tokens

def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj):
    return b64url(json.dumps(obj, separators=(",", ":")))


def load_private_key(path):
    from cryptography.hazmat.primitives import serialization
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def raw_signature(key_path, alg, signing_input):
    """Signs bytes with the private key at key_path as alg says (JOSE formats).

    alg: RS256, PS256, ES256 (r||s, as JOSE wants), ES256-DER (the ASN.1 form,
    which JOSE forbids), EdDSA, HS256-PUBKEY (HMAC keyed with the key's public
    PEM: the RS256/HS256 confusion attack).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    if alg == "HS256-PUBKEY":
        return hmac.new(public_pem(key_path), signing_input, hashlib.sha256).digest()
    key = load_private_key(key_path)
    if alg == "RS256":
        return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if alg == "PS256":
        return key.sign(signing_input, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                    salt_length=32), hashes.SHA256())
    if alg in ("ES256", "ES256-DER"):
        der = key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        if alg == "ES256-DER":
            return der
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg == "EdDSA":
        return key.sign(signing_input)
    raise ValueError(f"unknown alg {alg!r}")


def standard_claims(sub="alice", groups=("dev",), iss=ISSUER, aud=AUDIENCE, ttl_s=300,
                    now_s=None, **extra):
    now_s = int(time.time()) if now_s is None else now_s
    claims = {"iss": iss, "aud": aud, "sub": sub, GROUPS_CLAIM: list(groups),
              "iat": now_s, "nbf": now_s, "exp": now_s + ttl_s}
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def sign_jwt(key_path, sign_alg, header, claims):
    """A compact JWS: header and claims (dicts, or str/bytes taken verbatim as the
    JSON text) signed with sign_alg (see raw_signature; None: empty signature)."""
    def part(x):
        if isinstance(x, (dict, list)):
            return b64url_json(x)
        return b64url(x)
    signing_input = (part(header) + "." + part(claims)).encode()
    sig = b"" if sign_alg is None else raw_signature(key_path, sign_alg, signing_input)
    return signing_input.decode() + "." + b64url(sig)


# --------------------------------------------------------------------------
# Keys, JWKS and PKI in one temp dir

class IdentityWorld:
    """A temp dir with a test CA + server cert, trusted signing keys and a JWKS.

    Attributes after __enter__: dir, pki (make_pki's dict), keys {kind: path},
    kids {kind: kid}, foreign_key (an RSA key of "another issuer": not in the
    JWKS), jwks_path. Besides the three kinds, "ps256" is an RSA key published
    with "alg": "PS256" (kid ps-1) for PS256 tokens signed in Python. Use as a
    context manager (removes the dir).
    """

    PUBLISHED = KINDS + ("ps256",)

    def __init__(self, binary=None):
        self.binary = binary
        self.dir = None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="agentgate-id-")
        try:
            self.pki = make_pki(self.dir)
            self.keys = {k: make_signing_key(self.dir, k) for k in KINDS}
            self.kids = {k: f"{k}-1" for k in KINDS}
            self.algs = dict(ALG_OF_KIND)
            self.keys["ps256"] = make_signing_key(self.dir, "rsa", "ps256")
            self.kids["ps256"] = "ps-1"
            self.algs["ps256"] = "PS256"
            self.foreign_key = make_signing_key(self.dir, "rsa", "foreign-rsa")
            self.jwks_path = os.path.join(self.dir, "jwks.json")
            self.write_jwks(self.PUBLISHED)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        return False

    def write_jwks(self, names, extra=()):
        """Publishes the keys of names (plus extra write_jwks entries) in the JWKS file."""
        entries = [(self.keys[n], self.kids[n], self.algs[n]) for n in names] + list(extra)
        return write_jwks(self.jwks_path, entries, self.binary)

    def add_key(self, kind, name, kid):
        """A new signing key registered as name (not published until write_jwks)."""
        self.keys[name] = make_signing_key(self.dir, kind, name)
        self.kids[name] = kid
        self.algs[name] = ALG_OF_KIND[kind]
        return self.keys[name]

    def token(self, kind="rsa", **kw):
        """A valid token from `agentgate token` with the trusted key of kind."""
        kw.setdefault("kid", self.kids[kind])
        return mint_token(self.keys[kind], binary=self.binary, **kw)

    def crafted(self, kind="rsa", sign_alg=None, header=None, claims=None, key_path=None,
                **claim_kw):
        """A token signed in Python. Defaults: the trusted key of kind, its alg and kid,
        standard_claims(**claim_kw)."""
        alg = self.algs[kind]
        hdr = {"alg": alg, "typ": "JWT", "kid": self.kids[kind]} if header is None else header
        body = standard_claims(**claim_kw) if claims is None else claims
        return sign_jwt(key_path or self.keys[kind], sign_alg or alg, hdr, body)

    def expired_token(self, kind="rsa"):
        """Expired an hour ago: far outside the leeway."""
        now = int(time.time())
        return self.crafted(kind, claims=standard_claims(now_s=now - 7200, ttl_s=3600))

    def identity_config(self, issuer_extra=None, **extra):
        """The identity section: one issuer (plus issuer_extra, e.g.
        {"approver_audience": ...}), and extra at the top of the section."""
        issuer = {"issuer": ISSUER, "audience": AUDIENCE,
                  "jwks_file": self.jwks_path, "groups_claim": GROUPS_CLAIM}
        issuer.update(issuer_extra or {})
        cfg = {"issuers": [issuer], "leeway_s": LEEWAY_S}
        cfg.update(extra)
        return cfg

    def tls_config(self):
        return {"cert": self.pki["cert"], "key": self.pki["key"]}


# --------------------------------------------------------------------------
# The gateway with TLS and JWT login

class IdentityGateway(h.Agentgate):
    """Agentgate with top-level tls + identity and client_auth "jwt" on the target.

    tls=False leaves TLS out (then allow_plaintext_auth is needed to log in);
    identity_extra merges into "identity"; the rest goes to pg_harness.Agentgate.
    """

    def __init__(self, server, world, tls=True, allow_plaintext_auth=False,
                 identity_extra=None, extra=None, target_extra=None, **kw):
        top = {"identity": world.identity_config(**(identity_extra or {}))}
        if tls:
            top["tls"] = world.tls_config()
        top.update(extra or {})
        tgt = {"client_auth": "jwt"}
        if allow_plaintext_auth:
            tgt["allow_plaintext_auth"] = True
        tgt.update(target_extra or {})
        super().__init__(server, extra=top, target_extra=tgt, **kw)
        self.world = world

    def tls_dsn(self, token, sslmode="verify-full", user=None, dbname=None, **extra):
        """libpq DSN with the token as password; verify-full checks the test CA."""
        kw = dict(host=self.host, port=self.port, user=user or self.client_user,
                  dbname=dbname or self.server.database, password=token, sslmode=sslmode,
                  connect_timeout=10)
        if sslmode in ("verify-ca", "verify-full"):
            kw["sslrootcert"] = self.world.pki["ca_cert"]
        kw.update(extra)
        return h.libpq_dsn(**kw)

    def connect_token(self, token, sslmode="verify-full", **kw):
        import psycopg2
        return psycopg2.connect(self.tls_dsn(token, sslmode), **kw)

    def sighup(self):
        self.proc.send_signal(signal.SIGHUP)


# --------------------------------------------------------------------------
# Raw TLS login on the wire

def client_tls_context(ca_file=None):
    """Verifies the server against ca_file (hostname included); None: no verification."""
    if ca_file:
        ctx = ssl.create_default_context(cafile=ca_file)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class LoginResult:
    """What a raw login saw: ok, error (fields dict or None), key, params, received."""

    def __init__(self):
        self.ok = False
        self.error = None
        self.key = None
        self.params = {}
        self.auth_codes = []
        self.sock = None
        self.reader = None
        self.received = b""
        self.closed = False
        self.send_failed = False
        self._log = None  # the _ByteLog under reader

    def __repr__(self):
        return (f"LoginResult(ok={self.ok}, error={self.error}, auth={self.auth_codes}, "
                f"closed={self.closed}, send_failed={self.send_failed})")

    def close(self):
        if self.sock is not None:
            try:
                if self.ok:
                    self.sock.sendall(h.TERMINATE)
            except OSError:
                pass
            self.sock.close()
            self.sock = None


class _ByteLog:
    """Socket wrapper that records what recv() returns."""

    def __init__(self, sock):
        self.sock = sock
        self.received = bytearray()

    def recv(self, n):
        data = self.sock.recv(n)
        self.received += data
        return data

    def sendall(self, data):
        return self.sock.sendall(data)

    def settimeout(self, t):
        return self.sock.settimeout(t)

    def close(self):
        return self.sock.close()


def wire_login(host, port, token, user="agent", database="postgres", tls=True, ca_file=None,
               params=None, timeout_s=10, server_hostname="localhost"):
    """Logs in over the PostgreSQL v3 wire with the token as cleartext password.

    tls: SSLRequest first and a TLS handshake (verified against ca_file when
    given). params: extra startup parameters. Returns a LoginResult; on
    success .sock/.reader are ready for queries (call .close()).
    """
    res = LoginResult()
    raw = h.raw_connect(host, port, timeout_s)
    sock = raw
    try:
        if tls:
            raw.sendall(h.ssl_request())
            answer = raw.recv(1)
            if answer != b"S":
                raise AssertionError(f"SSLRequest answered {answer!r}, expected b'S'")
            sock = client_tls_context(ca_file).wrap_socket(
                raw, server_hostname=server_hostname if ca_file else None)
        log = _ByteLog(sock)
        reader = h.WireReader(log)
        log.sendall(h.startup_message(user, database, **(params or {})))
        while True:
            try:
                m = reader.read_message()
            except (OSError, ssl.SSLError):
                m = None
            if m is None:
                res.closed = True
                break
            t, body = m
            if t == "E":
                res.error = h.error_fields(body)
                break
            if t == "R":
                (code,) = struct.unpack_from("!I", body)
                res.auth_codes.append(code)
                if code == 3:  # AuthenticationCleartextPassword
                    try:
                        log.sendall(h.frame(b"p", token.encode() + b"\0"))
                    except (OSError, ssl.SSLError):
                        res.send_failed = True  # closed on us: read what it said
                elif code != 0:
                    raise AssertionError(f"unexpected authentication request {code}")
            elif t == "S":
                k, _, v = body[:-1].partition(b"\0")  # name\0value\0
                res.params[k.decode()] = v.decode("utf-8", "replace")
            elif t == "K":
                res.key = struct.unpack("!II", body)
            elif t == "Z":
                res.ok = True
                break
        if res.error is not None or res.closed:
            # Drain what follows (nothing should) so .received is complete.
            try:
                sock.settimeout(2)
                while log.recv(65536):
                    pass
            except (OSError, ssl.SSLError):
                pass
        res.received = bytes(log.received)
        res.reader = reader
        res.sock = sock
        res._log = log
        if not res.ok:
            res.sock.close()
            res.sock = None
        return res
    except BaseException:
        sock.close()
        raise


def wire_query(login, sql, timeout_s=15):
    """Runs one simple Query on a logged-in LoginResult; returns (rows, error fields or None).

    Rows are lists of str/None. Raises if the connection closes before ReadyForQuery.
    """
    login.sock.settimeout(timeout_s)
    login.sock.sendall(h.query_message(sql))
    rows, error = [], None
    while True:
        m = login.reader.read_message()
        if m is None:
            raise AssertionError(f"connection closed during {sql!r}; error so far {error}")
        t, body = m
        if t == "D":
            (n,) = struct.unpack_from("!H", body)
            pos, row = 2, []
            for _ in range(n):
                (ln,) = struct.unpack_from("!i", body, pos)
                pos += 4
                if ln < 0:
                    row.append(None)
                else:
                    row.append(body[pos:pos + ln].decode("utf-8", "replace"))
                    pos += ln
            rows.append(row)
        elif t == "E":
            error = h.error_fields(body)
        elif t == "Z":
            login.received = bytes(login._log.received)
            return rows, error


def wait_until(predicate, timeout_s=10, interval_s=0.1):
    """True once predicate() is truthy; False after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def gateway_supports_identity(binary=None):
    """(True, "") when `agentgate token --help` works, else (False, why)."""
    try:
        res = subprocess.run([binary or h.agentgate_bin(), "token", "--help"],
                             capture_output=True, text=True, timeout=10)
    except OSError as e:
        return False, str(e)
    text = res.stdout + res.stderr
    if res.returncode != 0 or "--print-jwks" not in text:
        return False, f"`agentgate token --help` rc={res.returncode}: {text.strip()[:400]}"
    return True, ""


# --------------------------------------------------------------------------
# unittest glue

import unittest  # noqa: E402


class IdentityTestCase(unittest.TestCase):
    """One PostgreSQL, one IdentityWorld and one IdentityGateway per test class.

    Subclasses set gateway_options (kwargs for IdentityGateway) and may
    override prepare_database(cls). Attributes: cls.pg, cls.world, cls.gw.
    A binary without `agentgate token` fails the class, never skips it.
    """

    gateway_options = {}
    server_options = {}

    @classmethod
    def setUpClass(cls):
        ok, why = gateway_supports_identity()
        if not ok:
            raise AssertionError(f"{h.agentgate_bin()} has no usable `token` subcommand: {why}")
        cls._stack = contextlib.ExitStack()
        try:
            cls.pg = cls._stack.enter_context(h.PostgresServer(**cls.server_options))
            cls.world = cls._stack.enter_context(IdentityWorld())
            cls.prepare_database()
            cls.gw = cls._stack.enter_context(IdentityGateway(cls.pg, cls.world,
                                                              **cls.gateway_options))
        except BaseException:
            cls._stack.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls._stack.close()  # raises if the gateway did not exit 0 on SIGTERM

    @classmethod
    def prepare_database(cls):
        pass

    def setUp(self):
        self.gw.assert_alive()

    def gateway_log(self, n=4000):
        return self.gw.stderr_text()[-n:]

    def assert_refused(self, result, sqlstate=REFUSED_SQLSTATE, prefix=REFUSED_PREFIX,
                       what=""):
        """A wire_login result refused with a FATAL error of sqlstate (and message prefix)."""
        self.assertFalse(result.ok, f"{what}: login succeeded; should be refused")
        self.assertIsNotNone(result.error, f"{what}: closed without an ErrorResponse "
                                           f"({result!r}); gateway log:\n{self.gateway_log()}")
        self.assertEqual(result.error.get("S"), "FATAL", f"{what}: {result.error}")
        self.assertEqual(result.error.get("C"), sqlstate, f"{what}: {result.error}")
        if prefix:
            self.assertTrue(result.error.get("M", "").startswith(prefix),
                            f"{what}: message {result.error.get('M')!r} does not start "
                            f"with {prefix!r}")
        return result.error

    def login(self, token, **kw):
        """wire_login to the gateway over TLS verified against the test CA."""
        kw.setdefault("ca_file", self.world.pki["ca_cert"])
        kw.setdefault("database", self.pg.database)
        return wire_login(self.gw.host, self.gw.port, token, **kw)


# --------------------------------------------------------------------------
# A gateway with token login, a policy and the config API, for approval tests

class ApprovalGatewayCase(unittest.TestCase):
    """One PostgreSQL (table t: id, n, `rows` rows, owned by the gateway's
    user), one IdentityWorld and one IdentityGateway with `policy`, the config
    API (admin token in cls.admin_token, port cls.admin_port) and TLS for
    clients. Subclasses set policy and may override gateway_config(cls) to
    return extra keyword arguments for IdentityGateway (its "extra" dict is
    merged with the policy and admin entries), and admin_extra(cls) for keys
    merged into "admin" (e.g. tls: then api() speaks HTTPS)."""

    policy = None
    rows = 10
    prefix = "agentgate-appr-"

    @classmethod
    def gateway_config(cls):
        return {}

    @classmethod
    def admin_extra(cls):
        return {}

    @classmethod
    def setUpClass(cls):
        import secrets
        cls.dir = tempfile.mkdtemp(prefix=cls.prefix)
        cls.world = IdentityWorld().__enter__()
        cls.pg = h.PostgresServer().__enter__()
        cls.pg.admin_sql("CREATE TABLE t (id int primary key, n int not null default 0); "
                         f"INSERT INTO t (id) SELECT generate_series(1, {cls.rows}); "
                         f"ALTER TABLE t OWNER TO {cls.pg.user}", dbname=cls.pg.database)
        policy_file = os.path.join(cls.dir, "policy.json")
        with open(policy_file, "w") as f:
            json.dump(cls.policy, f)
        cls.admin_token = secrets.token_hex(16)
        token_file = os.path.join(cls.dir, "admin-token")
        with open(token_file, "w") as f:
            f.write(cls.admin_token + "\n")
        cls.admin_port = h.free_port()
        admin = {"listen": f"127.0.0.1:{cls.admin_port}", "token_file": token_file}
        admin.update(cls.admin_extra())
        cls.admin_ssl = None
        if "tls" in admin:
            cls.admin_ssl = ssl.create_default_context(cafile=cls.world.pki["ca_cert"])
            cls.admin_ssl.check_hostname = False  # the test certificate's names are not the point here
        kw = dict(cls.gateway_config())
        extra = {"policy_file": policy_file, "admin": admin}
        extra.update(kw.pop("extra", {}))
        cls.gw = IdentityGateway(cls.pg, cls.world, extra=extra, **kw).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.gw.__exit__(None, None, None)
        cls.pg.__exit__(None, None, None)
        cls.world.__exit__(None, None, None)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def run_held(self, sql, token=None):
        """Runs sql through the gateway (as `token`, else cls.alice) in a
        thread, autocommit; returns (thread, {"rowcount"} or {"error"})."""
        import threading
        out = {}

        def work():
            try:
                conn = self.gw.connect_token(token or self.alice)
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(sql)
                    out["rowcount"] = cur.rowcount
                conn.close()
            except Exception as e:  # noqa: BLE001 - the test inspects it
                out["error"] = e

        t = threading.Thread(target=work)
        t.start()
        return t, out

    def api(self, method, path, token=None, body=None):
        """(status, JSON body) of a config API call with the admin token, or `token`."""
        import urllib.error
        import urllib.request
        scheme = "https" if self.admin_ssl is not None else "http"
        req = urllib.request.Request(f"{scheme}://127.0.0.1:{self.admin_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.admin_ssl) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")
