"""CancelRequest through the gateway: the client holds a key the gateway
minted (never the upstream's pid or key), a cancel lands on whichever shard
SO_REUSEPORT picks and is routed to the shard that owns the session, and a
wrong key is ignored silently, as PostgreSQL does."""

import os
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402


class CancelTest(h.GatewayTestCase):
    gateway_options = {"shards": 2, "extra": {"log_level": "debug"}}

    def start_sleep(self, seconds=30):
        s, r, key = h.raw_login(self.gw.host, self.gw.port)
        s.sendall(h.query_message(f"SELECT pg_backend_pid(), pg_sleep({seconds})"))
        return s, r, key

    def send_cancel(self, pid, key):
        c = h.raw_connect(self.gw.host, self.gw.port)
        c.sendall(h.cancel_request(pid, key))
        self.assertEqual(c.recv(1), b"")  # closed without a word
        c.close()

    def read_result(self, r, timeout_s=15):
        r.sock.settimeout(timeout_s)
        msgs = []
        while True:
            m = r.read_message()
            self.assertIsNotNone(m, f"connection closed early: {msgs}")
            msgs.append(m)
            if m[0] == "Z":
                return msgs

    def test_minted_key_hides_upstream_pid(self):
        s, r, key = h.raw_login(self.gw.host, self.gw.port)
        s.sendall(h.query_message("SELECT pg_backend_pid()"))
        msgs = self.read_result(r)
        row = [body for t, body in msgs if t == "D"][0]
        (ncols,) = struct.unpack_from("!H", row)
        (length,) = struct.unpack_from("!I", row, 2)
        upstream_pid = int(row[6:6 + length])
        self.assertNotEqual(key[0], upstream_pid)
        s.sendall(h.TERMINATE)
        s.close()

    def test_cancel_across_shards(self):
        # 16 sessions over 2 shards: the chance that no cancel lands on the
        # other shard than its session's is 2^-16.
        sessions = [self.start_sleep() for _ in range(16)]
        time.sleep(0.5)  # let every sleep reach the server
        started = time.monotonic()
        for s, r, key in sessions:
            self.send_cancel(*key)
        for s, r, key in sessions:
            msgs = self.read_result(r)
            errors = [h.error_fields(body) for t, body in msgs if t == "E"]
            self.assertEqual(len(errors), 1, msgs)
            self.assertEqual(errors[0]["C"], "57014")  # query_canceled
            s.sendall(h.TERMINATE)
            s.close()
        self.assertLess(time.monotonic() - started, 20)
        self.assertIn("cancel request routed to shard", self.gw.stderr_text())

    def test_wrong_key_is_ignored(self):
        s, r, key = self.start_sleep(seconds=1)
        self.send_cancel(key[0], key[1] ^ 0x5A5A5A5A)
        self.send_cancel(key[0] ^ 0x1, key[1])
        self.send_cancel(0x7FFFFFFF, 1)  # names no shard
        msgs = self.read_result(r)
        self.assertNotIn("E", [t for t, _ in msgs], msgs)  # the sleep ran to its end
        s.sendall(h.TERMINATE)
        s.close()

    def test_stale_key_after_session_end(self):
        s, r, key = h.raw_login(self.gw.host, self.gw.port)
        s.sendall(h.TERMINATE)
        s.close()
        time.sleep(0.2)
        # Another session's sleep must not be hit by the dead session's key.
        s2, r2, key2 = self.start_sleep(seconds=1)
        self.send_cancel(*key)
        msgs = self.read_result(r2)
        self.assertNotIn("E", [t for t, _ in msgs], msgs)
        s2.sendall(h.TERMINATE)
        s2.close()


if __name__ == "__main__":
    h.main()
