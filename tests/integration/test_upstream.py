"""The gateway's side of the upstream: every password method PostgreSQL may
ask for (SCRAM-SHA-256, md5, cleartext, none), each allowed only when
upstream.auth_methods lists it (SCRAM alone by default), refused
credentials, an upstream that is down, and an upstream that breaks the
protocol mid-session.

Clients log in with trust and must never learn the gateway's credentials.
"""

import os
import re
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402


def set_hba(pg, method):
    """Switch host logins to `method` and store the role's password to match."""
    encryption = "md5" if method == "md5" else "scram-sha-256"
    pw = pg.password.replace("'", "''")
    pg.admin_sql(f"SET password_encryption = '{encryption}'; ALTER ROLE {pg.user} PASSWORD '{pw}'")
    with open(os.path.join(pg.datadir, "pg_hba.conf"), "w") as f:
        f.write(f"local all all trust\nhost all all 127.0.0.1/32 {method}\n")
    pg.admin_sql("SELECT pg_reload_conf()")


def login_error(gw):
    """Log in through the gateway with a raw socket; return the ErrorResponse fields."""
    s = h.raw_connect(gw.host, gw.port)
    try:
        s.sendall(h.startup_message("agent", "ignored"))
        msgs = h.WireReader(s).read_until_eof()
    finally:
        s.close()
    errors = [h.error_fields(body) for t, body in msgs if t == "E"]
    if not errors:
        raise AssertionError(f"expected an ErrorResponse, got {msgs}")
    return errors[0]


class UpstreamAuthTest(h.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = h.PostgresServer().__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.pg.__exit__(None, None, None)

    def check_login(self, method, auth_methods=None):
        set_hba(self.pg, method)
        upstream = {"auth_methods": auth_methods} if auth_methods else None
        with h.Agentgate(self.pg, upstream_extra=upstream) as gw:
            res = h.run_psql(gw.dsn(), ["-qAt", "-c", "SELECT current_user, 6*7"])
            self.assertEqual(res.returncode, 0, res.stderr + gw.stderr_text())
            self.assertEqual(res.stdout.strip(), f"{self.pg.user}|42")
        log = h.run_psql(self.pg.admin_dsn(), ["-qAt", "-c", "SELECT 1"])
        self.assertEqual(log.returncode, 0)

    def check_refused(self, method, hba_method=None, needle=None):
        """With the default auth_methods, a server asking for `method` gets
        no password: the client gets 08006, the log names target and method."""
        set_hba(self.pg, hba_method or method)
        log_before = len(self.pg.log_tail(1 << 30))
        with h.Agentgate(self.pg) as gw:
            fields = login_error(gw)
            log = gw.stderr_text()
        self.assertEqual((fields["S"], fields["C"]), ("FATAL", "08006"), fields)
        self.assertIn("upstream login failed", fields["M"])
        needle = needle or f"asked for {method} authentication"
        self.assertIn(needle, fields["M"])
        self.assertIn("upstream.auth_methods", fields["M"])
        self.assertRegex(log, rf"target pg: upstream .*login refused: .*{re.escape(needle)}")
        # Nothing reached the server that it could check: no failed password.
        server_log = self.pg.log_tail(1 << 30)[log_before:]
        self.assertNotIn("authentication failed", server_log)

    def test_scram_sha_256(self):
        self.check_login("scram-sha-256")

    def test_scram_sha_256_is_the_default(self):
        self.check_login("scram-sha-256", ["scram-sha-256"])

    def test_md5_refused_by_default(self):
        self.check_refused("md5")

    def test_cleartext_password_refused_by_default(self):
        self.check_refused("password")

    def test_no_authentication_refused_by_default(self):
        # pg_hba "trust": AuthenticationOk without a request proves nothing.
        self.check_refused("none", hba_method="trust", needle="without authentication (method none)")

    def test_md5_when_allowed(self):
        self.check_login("md5", ["md5"])

    def test_cleartext_password_when_allowed(self):
        self.check_login("password", ["scram-sha-256", "password"])

    def test_no_authentication_when_allowed(self):
        self.check_login("trust", ["none"])

    def test_scram_refused_when_not_listed(self):
        set_hba(self.pg, "scram-sha-256")
        with h.Agentgate(self.pg, upstream_extra={"auth_methods": ["md5"]}) as gw:
            fields = login_error(gw)
        self.assertEqual(fields["C"], "08006")
        self.assertIn("scram-sha-256 authentication", fields["M"])

    def test_refused_credentials_are_not_revealed(self):
        set_hba(self.pg, "scram-sha-256")
        gw = h.Agentgate(self.pg)
        real = self.pg.password
        self.pg.password = "not-the-password"  # the gateway's password file gets this
        try:
            with gw:
                fields = login_error(gw)
        finally:
            self.pg.password = real
        self.assertEqual(fields["S"], "FATAL")
        self.assertEqual(fields["C"], "08006")
        self.assertIn("credentials were refused", fields["M"])
        self.assertNotIn(self.pg.user, fields["M"])  # the upstream's own words stay in the log

    def test_upstream_down(self):
        port = h.free_port()
        real = self.pg.port
        self.pg.port = port  # nothing listens there
        try:
            with h.Agentgate(self.pg) as gw:
                fields = login_error(gw)
        finally:
            self.pg.port = real
        self.assertEqual(fields["C"], "08006")
        self.assertIn("could not connect", fields["M"])


class TimeoutTest(h.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = h.PostgresServer().__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.pg.__exit__(None, None, None)

    def test_idle_timeout(self):
        with h.Agentgate(self.pg, limits={"idle_timeout_ms": 300}) as gw:
            s, r, _ = h.raw_login(gw.host, gw.port)
            s.sendall(h.query_message("SELECT pg_sleep(0.6)"))  # busy, not idle: survives
            types = []
            while "Z" not in types:
                types.append(r.read_message()[0])
            self.assertNotIn("E", types)
            msgs = r.read_until_eof(timeout_s=5)  # now idle: ended after 300 ms
            s.close()
        self.assertEqual(len(msgs), 1, msgs)
        fields = h.error_fields(msgs[0][1])
        self.assertEqual((fields["S"], fields["C"]), ("FATAL", "57P05"))

    def test_connect_timeout(self):
        # A listener whose backlog is full and never accepts: SYNs are dropped,
        # so the gateway's connect hangs until connect_timeout_ms.
        black_hole = socket.socket()
        black_hole.bind((h.LOOPBACK, 0))
        black_hole.listen(0)
        fillers = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(black_hole.getsockname())
            fillers.append(c)
        real = self.pg.port
        self.pg.port = black_hole.getsockname()[1]
        try:
            with h.Agentgate(self.pg, limits={"connect_timeout_ms": 500}) as gw:
                fields = login_error(gw)
                log = gw.stderr_text()
        finally:
            self.pg.port = real
            for c in fillers:
                c.close()
            black_hole.close()
        self.assertEqual(fields["C"], "08006")
        self.assertIn("could not connect", fields["M"])
        self.assertIn("connect timed out", log)


class FakeUpstream:
    """A PostgreSQL impostor: trust login, then answers the first Query with
    the bytes given (e.g. a frame with a bad type), then waits."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind((h.LOOPBACK, 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            (length,) = struct.unpack("!I", conn.recv(4, socket.MSG_WAITALL))
            conn.recv(length - 4, socket.MSG_WAITALL)
            conn.sendall(h.frame("R", struct.pack("!I", 0)) +
                         h.frame("S", b"server_version\x0015.0\x00") +
                         h.frame("K", struct.pack("!II", 1, 2)) + h.frame("Z", b"I"))
            conn.recv(1 << 16)  # the Query
            if self.answer is None:
                return  # hang up without a word, as a crashed server would
            conn.sendall(self.answer)
            conn.settimeout(10)
            try:
                while conn.recv(1 << 16):
                    pass
            except OSError:
                pass

    def close(self):
        self.sock.close()


class BrokenUpstreamTest(h.unittest.TestCase):
    def run_against(self, answer):
        fake = FakeUpstream(answer)
        server = h.PostgresServer.__new__(h.PostgresServer)  # only the address fields are used
        server.host, server.port, server.user = h.LOOPBACK, fake.port, "agentgate"
        server.password, server.database = "unused", "fake"
        try:
            # The impostor lets the gateway in unasked: allowed here explicitly.
            with h.Agentgate(server, upstream_extra={"auth_methods": ["none"]}) as gw:
                s, r, _ = h.raw_login(gw.host, gw.port)
                s.sendall(h.query_message("SELECT 1"))
                msgs = r.read_until_eof()
                s.close()
        finally:
            fake.close()
        return msgs

    def test_bad_type_byte_from_upstream(self):
        msgs = self.run_against(h.frame("T", b"\x00\x01" + b"a\x00" + b"\x00" * 18) + b"\x01garbage")
        types = [t for t, _ in msgs]
        self.assertEqual(types[0], "T")  # the good frame before the bad one still arrives
        self.assertEqual(types[-1], "E", msgs)
        fields = h.error_fields(msgs[-1][1])
        self.assertEqual((fields["S"], fields["C"]), ("FATAL", "08P01"))
        self.assertIn("upstream", fields["M"])

    def test_bad_length_from_upstream(self):
        msgs = self.run_against(b"Z" + struct.pack("!I", 7) + b"Ixx")  # ReadyForQuery is 5 bytes
        self.assertEqual(len(msgs), 1, msgs)
        fields = h.error_fields(msgs[0][1])
        self.assertEqual(fields["C"], "08P01")

    def test_upstream_closes_mid_session(self):
        msgs = self.run_against(None)
        self.assertEqual(len(msgs), 1, msgs)
        fields = h.error_fields(msgs[0][1])
        self.assertEqual((fields["S"], fields["C"]), ("FATAL", "08006"))
        self.assertIn("closed the connection", fields["M"])


if __name__ == "__main__":
    h.main()
