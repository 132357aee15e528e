#!/usr/bin/python3
"""Hostile and broken clients, spoken to over raw sockets.

The gateway fails closed: a malformed or oversized frame gets one
ErrorResponse (SQLSTATE 08P01) and the connection is closed; nothing of it,
and nothing after it, reaches PostgreSQL. Bad configs exit 2 at start.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402
from pg_harness import frame, query_message  # noqa: E402

STANDIN = bool(os.environ.get("AGENTGATE_STANDIN"))
SMALL_FRAME_BYTES_MAX = 1 << 20


def read_until_closed(sock, reader=None, timeout_s=10):
    """Messages until the peer closes. A reset after the data counts as closed too:
    a peer that closes with our unread bytes in its receive queue sends RST."""
    reader = reader or h.WireReader(sock)
    sock.settimeout(timeout_s)
    msgs = []
    try:
        while True:
            m = reader.read_message()
            if m is None:
                rest = bytes(reader.buf[reader.pos:])
                if rest:
                    msgs.append(("<partial>", rest))
                return msgs, "eof"
            msgs.append(m)
    except ConnectionResetError:
        return msgs, "reset"
    except socket.timeout:
        raise AssertionError(f"connection still open after {timeout_s}s; got {describe(msgs)}")


def read_bytes_until_closed(sock, timeout_s=10):
    sock.settimeout(timeout_s)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data
    except socket.timeout:
        raise AssertionError(f"connection still open after {timeout_s}s; got {data[:200]!r}")


def describe(msgs):
    out = []
    for t, body in msgs:
        if t in ("E", "N"):
            out.append(f"{t}{h.error_fields(body)}")
        else:
            out.append(f"{t}({len(body)} bytes)")
    return "[" + ", ".join(out) + "]"


class ProtocolErrorsTest(h.GatewayTestCase):
    gateway_options = {"shards": 2}

    def setUp(self):
        super().setUp()
        self.leak_names = []

    def table_exists(self, name):
        res = self.psql_direct(["-Atc", f"SELECT to_regclass('public.{name}') IS NOT NULL"])
        self.assertEqual(res.returncode, 0, res.stderr)
        return res.stdout.strip() == "t"

    def assert_no_leaks(self, *names):
        time.sleep(0.5)  # anything forwarded would have run by now
        for name in names:
            self.assertFalse(self.table_exists(name),
                             f"table {name} exists: bytes of a rejected frame reached PostgreSQL")

    def assert_error_then_close(self, msgs, how, sqlstate=None, what=""):
        self.assertTrue(msgs, f"{what}: connection closed ({how}) without an ErrorResponse")
        t, body = msgs[0]
        self.assertEqual(t, "E", f"{what}: expected ErrorResponse first, got {describe(msgs)}")
        fields = h.error_fields(body)
        if sqlstate:
            self.assertEqual(fields.get("C"), sqlstate, f"{what}: {describe(msgs)}")
        self.assertEqual(len(msgs), 1, f"{what}: expected nothing after the error, got "
                                       f"{describe(msgs)}")
        return fields

    # (a) bad startup packets -------------------------------------------------

    def startup_refused(self, data, what):
        """The gateway answers a bad startup packet with an error (first byte 'E') and
        closes. PostgreSQL answers protocol 2.0 with a 2.0-style error (no length), so
        only the first byte is checked, as libpq does."""
        s = h.raw_connect(self.gw.host, self.gw.port)
        s.sendall(data)
        got = read_bytes_until_closed(s)
        s.close()
        self.assertTrue(got, f"{what}: closed without an error")
        self.assertEqual(got[:1], b"E", f"{what}: expected an error first, got {got[:80]!r}")
        self.gw.assert_alive()
        return got

    def test_a_startup_protocol_2(self):
        self.startup_refused(h.startup_message("agent", self.pg.database, protocol=2 << 16),
                             "protocol 2.0 startup")

    def test_a_startup_bad_lengths(self):
        cases = {
            "length 3": struct.pack("!I", 3) + b"\0\3\0\0",
            "length 0": struct.pack("!I", 0) + b"\0\3\0\0user\0x\0\0",
            "length 2 GiB": struct.pack("!II", 0x7FFFFFFF, 3 << 16) + b"user\0x\0\0",
            "length 4 GiB - 1": struct.pack("!II", 0xFFFFFFFF, 3 << 16) + b"user\0x\0\0",
            "over startup max": struct.pack("!II", 20000, 3 << 16) + b"user\0x\0" + b"a" * 100,
            "unknown protocol code": struct.pack("!II", 8, 1234),
        }
        for name, data in cases.items():
            with self.subTest(case=name):
                self.startup_refused(data, name)

    def test_a_startup_unterminated_parameters(self):
        body = struct.pack("!I", 3 << 16) + b"user\0agent\0database"  # no terminators
        self.startup_refused(struct.pack("!I", len(body) + 4) + body,
                             "unterminated startup parameters")

    # (b) SSLRequest ---------------------------------------------------------

    def test_b_ssl_request_answered_n(self):
        s = h.raw_connect(self.gw.host, self.gw.port)
        s.sendall(h.ssl_request())
        self.assertEqual(s.recv(1), b"N")
        s.sendall(h.startup_message("agent", self.pg.database))
        r = h.WireReader(s)
        types = []
        while True:
            m = r.read_message()
            self.assertIsNotNone(m, f"closed during login after SSLRequest; got {types}")
            types.append(m[0])
            self.assertNotEqual(m[0], "E", h.error_fields(m[1]))
            if m[0] == "Z":
                break
        s.sendall(query_message("SELECT 'after ssl request'"))
        got = []
        while True:
            t, body = r.read_message()
            got.append(t)
            if t == "D":
                self.assertIn(b"after ssl request", body)
            if t == "Z":
                break
        self.assertEqual(got, ["T", "D", "C", "Z"])
        s.sendall(h.TERMINATE)
        s.close()

    def test_b_gssenc_request_answered_n(self):
        s = h.raw_connect(self.gw.host, self.gw.port)
        s.sendall(struct.pack("!II", 8, h.GSSENC_REQUEST_CODE))
        self.assertEqual(s.recv(1), b"N")
        s.sendall(h.startup_message("agent", self.pg.database))
        r = h.WireReader(s)
        while True:
            m = r.read_message()
            self.assertIsNotNone(m)
            self.assertNotEqual(m[0], "E", h.error_fields(m[1]))
            if m[0] == "Z":
                break
        s.close()

    def test_b_pipelined_startup_query_terminate(self):
        # Everything in one write, before reading anything: startup, two queries, Terminate.
        s = h.raw_connect(self.gw.host, self.gw.port)
        s.sendall(h.startup_message("agent", self.pg.database) +
                  query_message("SELECT 1") + query_message("SELECT 2; SELECT 3") + h.TERMINATE)
        msgs, how = read_until_closed(s)
        s.close()
        types = "".join(t for t, _ in msgs)
        self.assertEqual(how, "eof")
        self.assertNotIn("E", types, describe(msgs))
        after_login = types[types.index("Z") + 1:]
        self.assertEqual(after_login, "TDCZ" + "TDCTDCZ", describe(msgs))

    # (c) bad frames after a good login ---------------------------------------

    def bad_frame_case(self, payload, leaked, what, strict=True):
        s, r, _ = h.raw_login(self.gw.host, self.gw.port, database=self.pg.database)
        s.sendall(payload)
        msgs, how = read_until_closed(s, r)
        s.close()
        if strict:
            self.assert_error_then_close(msgs, how, "08P01", what)
        else:
            codes = [h.error_fields(b).get("C") for t, b in msgs if t == "E"]
            self.assertIn("08P01", codes, f"{what}: {describe(msgs)}")
        self.assert_no_leaks(*leaked)
        self.gw.assert_alive()

    def test_c_bad_type_byte(self):
        inner = query_message("CREATE TABLE leaked_c1()")
        payload = frame(b"\x01", inner) + query_message("CREATE TABLE leaked_c2()")
        self.bad_frame_case(payload, ["leaked_c1", "leaked_c2"], "type byte 0x01")

    def test_c_backend_only_and_zero_type_bytes(self):
        for i, t in enumerate((b"\x00", b"T", b"Z", b"\xff")):
            with self.subTest(type_byte=t):
                payload = (frame(t, query_message(f"CREATE TABLE leaked_t{i}a()")) +
                           query_message(f"CREATE TABLE leaked_t{i}b()"))
                self.bad_frame_case(payload, [f"leaked_t{i}a", f"leaked_t{i}b"], f"type {t!r}")

    def test_c_length_below_four(self):
        for n in (0, 2, 3):
            with self.subTest(length=n):
                body = b"CREATE TABLE leaked_l%d();\0" % n
                payload = b"Q" + struct.pack("!I", n) + body + \
                    query_message(f"CREATE TABLE leaked_l{n}b()")
                self.bad_frame_case(payload, [f"leaked_l{n}", f"leaked_l{n}b"], f"length {n}")

    def test_c_length_over_default_max(self):
        payload = b"Q" + struct.pack("!I", 0x7FFFFFFF) + b"CREATE TABLE leaked_huge();\0"
        self.bad_frame_case(payload, ["leaked_huge"], "length 2 GiB")

    def test_c_query_without_terminator(self):
        # The length is valid but cuts the string: the body has no NUL. The bytes
        # after it would be read as a frame of type ' ' if anyone parsed on.
        text = b"CREATE TABLE leaked_q1();"
        payload = b"Q" + struct.pack("!I", 4 + 6) + text[:6] + text[6:] + b"\0" + \
            query_message("CREATE TABLE leaked_q2()")
        self.bad_frame_case(payload, ["leaked_q1", "leaked_q2"], "Query without NUL")

    def test_c_session_is_not_affected_elsewhere(self):
        # A good session on the same gateway keeps working while others are killed.
        good, gr, _ = h.raw_login(self.gw.host, self.gw.port, database=self.pg.database)
        self.bad_frame_case(frame(b"\x01", b"junk"), [], "junk frame")
        good.sendall(query_message("SELECT 7"))
        types = []
        while True:
            t, _ = gr.read_message()
            types.append(t)
            if t == "Z":
                break
        self.assertEqual(types, ["T", "D", "C", "Z"])
        good.close()

    # (d) frames over limits.frame_bytes_max ----------------------------------

    def test_d_frame_over_limit(self):
        with h.Agentgate(self.pg, shards=1,
                         limits={"frame_bytes_max": SMALL_FRAME_BYTES_MAX}) as gw:
            # Just under the limit still works.
            sql = "SELECT length('" + "y" * (SMALL_FRAME_BYTES_MAX - 1000) + "')"
            s, r, _ = h.raw_login(gw.host, gw.port, database=self.pg.database)
            s.sendall(query_message(sql))
            got = []
            while True:
                m = r.read_message()
                self.assertIsNotNone(m, "closed on a frame under frame_bytes_max")
                got.append(m[0])
                self.assertNotEqual(m[0], "E", h.error_fields(m[1]))
                if m[0] == "Z":
                    break
            s.close()
            # A header claiming 2 MiB is refused from the header alone.
            s, r, _ = h.raw_login(gw.host, gw.port, database=self.pg.database)
            body = b"CREATE TABLE leaked_big(); --"
            s.sendall(b"Q" + struct.pack("!I", 2 * SMALL_FRAME_BYTES_MAX) + body)
            msgs, how = read_until_closed(s, r, timeout_s=5)
            s.close()
            self.assert_error_then_close(msgs, how, "08P01", "2 MiB frame over a 1 MiB limit")
            self.assert_no_leaks("leaked_big")

    def test_d_auth_timeout(self):
        with h.Agentgate(self.pg, shards=1, limits={"auth_timeout_ms": 1000}) as gw:
            for name, data in (("nothing", b""), ("half a startup", b"\0\0\0\x40\0\3")):
                with self.subTest(case=name):
                    s = h.raw_connect(gw.host, gw.port)
                    if data:
                        s.sendall(data)
                    start = time.monotonic()
                    read_until_closed(s, timeout_s=8)
                    s.close()
                    self.assertLess(time.monotonic() - start, 8)

    # (e) CancelRequest --------------------------------------------------------

    def test_e_cancel_request_unknown_key(self):
        s = h.raw_connect(self.gw.host, self.gw.port)
        s.sendall(h.cancel_request(12345, 67890))
        s.settimeout(10)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        s.close()
        self.assertEqual(data, b"", "a CancelRequest must be answered by closing, with no bytes")
        self.gw.assert_alive()

    def test_e_cancel_request_idle_session(self):
        # PostgreSQL signals the backend before it closes the cancel connection, so
        # once a client sees that EOF the cancel cannot hit its *next* query. The
        # gateway must keep that order: a cancel of an idle session is a no-op.
        s, r, key = h.raw_login(self.gw.host, self.gw.port, database=self.pg.database)
        self.assertIsNotNone(key, "no BackendKeyData during login")
        try:
            for i in range(50):
                c = h.raw_connect(self.gw.host, self.gw.port)
                c.sendall(h.cancel_request(*key))
                c.settimeout(10)
                try:
                    self.assertEqual(c.recv(100), b"")
                except ConnectionResetError:
                    pass
                c.close()
                s.sendall(query_message(f"SELECT 'still here {i}'"))
                msgs = []
                while True:
                    m = r.read_message()
                    self.assertIsNotNone(m, "session closed after a cancel request")
                    msgs.append(m)
                    if m[0] == "Z":
                        break
                self.assertEqual([t for t, _ in msgs], ["T", "D", "C", "Z"],
                                 f"iteration {i}: a cancel of an idle session hit the next "
                                 f"query: {describe(msgs)}")
        finally:
            s.close()


@unittest.skipIf(STANDIN, "start-up checks apply to agentgate itself")
class ConfigErrorsTest(unittest.TestCase):
    """agentgate serve refuses bad configs: exit 2, one line naming the key."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="agentgate-cfg-")
        with open(os.path.join(cls.tmp.name, "pw.txt"), "w") as f:
            f.write("secret\n")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def base_config(self, port=None):
        return {"shards": 1, "targets": [{
            "name": "pg", "protocol": "postgres", "listen": f"127.0.0.1:{port or h.free_port()}",
            "client_auth": "trust",
            "upstream": {"host": "127.0.0.1", "port": 5432, "user": "agentgate",
                         "password_file": "pw.txt", "database": "demo"}}]}

    def serve(self, cfg, timeout_s=10):
        path = os.path.join(self.tmp.name, "config.json")
        with open(path, "w") as f:
            if isinstance(cfg, str):
                f.write(cfg)
            else:
                json.dump(cfg, f)
        try:
            return subprocess.run([h.agentgate_bin(), "serve", "--config", path],
                                  capture_output=True, text=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            self.fail(f"agentgate serve kept running on a bad config; stderr:\n{e.stderr}")

    def assert_refused(self, res, pattern, what):
        self.assertEqual(res.returncode, 2, f"{what}: exit {res.returncode}\n{res.stderr}")
        self.assertRegex(res.stderr, pattern, f"{what}: key path not in stderr")
        lines = [l for l in res.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, f"{what}: expected one line on stderr, got:\n{res.stderr}")

    def test_f_unknown_key_in_target(self):
        cfg = self.base_config()
        cfg["targets"][0]["bogus_key"] = 1
        self.assert_refused(self.serve(cfg), r"targets\W{0,3}0\W{0,3}bogus_key", "unknown target key")

    def test_f_unknown_key_nested(self):
        cfg = self.base_config()
        cfg["targets"][0]["upstream"]["pasword_file"] = "typo"
        self.assert_refused(self.serve(cfg), r"targets\W{0,3}0\W{0,3}upstream\W{1,3}pasword_file",
                            "unknown upstream key")

    def test_f_unknown_top_level_key(self):
        cfg = self.base_config()
        cfg["shardz"] = 2
        self.assert_refused(self.serve(cfg), r"shardz", "unknown top-level key")

    def test_f_bad_values(self):
        cases = [
            ("shards", lambda c: c.update(shards="two"), r"shards"),
            ("listen", lambda c: c["targets"][0].update(listen="nowhere"), r"listen"),
            ("port", lambda c: c["targets"][0]["upstream"].update(port=70000), r"port"),
            ("frame_bytes_max", lambda c: c.update(limits={"frame_bytes_max": -1}),
             r"limits\W{1,3}frame_bytes_max"),
            ("password_file", lambda c: c["targets"][0]["upstream"].update(
                password_file="does-not-exist.txt"), r"password_file"),
        ]
        for name, change, pattern in cases:
            with self.subTest(key=name):
                cfg = self.base_config()
                change(cfg)
                self.assert_refused(self.serve(cfg), pattern, name)

    def test_f_not_json(self):
        res = self.serve('{"shards": 1, "targets": [')
        self.assertEqual(res.returncode, 2, res.stderr)
        self.assertTrue(res.stderr.strip(), "no message for a config that is not JSON")

    def test_f_listen_port_in_use(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            res = self.serve(self.base_config(port))
        self.assertEqual(res.returncode, 2, f"exit {res.returncode}\n{res.stderr}")
        self.assertIn(str(port), res.stderr)


if __name__ == "__main__":
    h.main()
