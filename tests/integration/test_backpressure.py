#!/usr/bin/python3
"""Back-pressure: a client that stops reading must not make the gateway buffer
the result. With a small limits.unsent_bytes_max the gateway stops reading from
PostgreSQL, so its memory stays flat while a ~200 MB result waits; then the
client reads everything and gets every row."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

ROWS = 200_000
ROW_TEXT_BYTES = 1000
PAUSE_S = 2.0
# Growth allowed while the client does not read. The result is ~200 MB; holding
# even a tenth of it would fail. Sanitizer builds have a larger, but flat, base.
RSS_GROWTH_BYTES_MAX = 48 << 20
RSS_BYTES_MAX = 100 << 20
CLIENT_RCVBUF_BYTES = 64 << 10


def is_sanitized(binary):
    try:
        with open(binary, "rb") as f:
            return b"AddressSanitizer" in f.read()
    except OSError:
        return False


class BackpressureTest(h.GatewayTestCase):
    gateway_options = {"shards": 1, "limits": {"unsent_bytes_max": 64 << 10}}

    def test_slow_reader_big_result(self):
        gw = self.gw
        # Warm the gateway up with one ordinary session so the baseline includes
        # its per-session structures.
        s0, r0, _ = h.raw_login(gw.host, gw.port, database=self.pg.database)
        s0.sendall(h.query_message("SELECT 1"))
        while r0.read_message()[0] != "Z":
            pass
        s0.close()
        baseline = h.process_rss_bytes(gw.pid)

        s, r, _ = h.raw_login(gw.host, gw.port, database=self.pg.database,
                              rcvbuf=CLIENT_RCVBUF_BYTES, timeout_s=60)
        s.sendall(h.query_message(
            f"SELECT repeat('x', {ROW_TEXT_BYTES}) FROM generate_series(1, {ROWS})"))
        time.sleep(PAUSE_S)
        peak = baseline
        for _ in range(5):  # sample over a further second
            peak = max(peak, h.process_rss_bytes(gw.pid))
            time.sleep(0.2)

        # Another session on the same shard is served while this one is stalled.
        t0 = time.monotonic()
        res = h.run_psql(gw.dsn(), ["-Atc", "SELECT 'other session ok'"], timeout=30)
        other_s = time.monotonic() - t0
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout.strip(), "other session ok")
        self.assertLess(other_s, 5, "a stalled client slowed another session down")

        peak = max(peak, h.process_rss_bytes(gw.pid))
        growth = peak - baseline
        sanitized = is_sanitized(gw.binary)
        print(f"\nagentgate RSS: baseline {baseline >> 20} MiB, peak while stalled "
              f"{peak >> 20} MiB (growth {growth >> 20} MiB){' [sanitizer build]' if sanitized else ''}",
              file=sys.stderr)
        self.assertLess(growth, RSS_GROWTH_BYTES_MAX,
                        f"gateway RSS grew by {growth >> 20} MiB while the client was not reading")
        if not sanitized:
            self.assertLess(peak, RSS_BYTES_MAX, f"gateway RSS {peak >> 20} MiB")

        # Now drain: every row arrives, then CommandComplete and ReadyForQuery.
        counts = {}
        tag = None
        while True:
            m = r.skip_message_counting(counts)
            self.assertIsNotNone(m, f"connection closed early after {counts}")
            t, body = m
            if t == "E":
                self.fail(f"error while draining: {h.error_fields(body)}")
            if t == "C":
                tag = body.rstrip(b"\0").decode()
            if t == "Z":
                break
        s.close()
        self.assertEqual(counts.get("D", 0), ROWS)
        self.assertEqual(counts.get("T", 0), 1)
        self.assertEqual(tag, f"SELECT {ROWS}")
        self.gw.assert_alive()

    def test_slow_writer_upstream(self):
        # The other direction: a big COPY FROM STDIN sent faster than PostgreSQL
        # consumes it (its table has an index to slow it down) stays bounded too.
        setup = self.psql_direct(["-c", "CREATE TABLE IF NOT EXISTS sink (a int, b text); "
                                        "CREATE INDEX IF NOT EXISTS sink_b ON sink (b)"])
        self.assertEqual(setup.returncode, 0, setup.stderr)
        gw = self.gw
        baseline = h.process_rss_bytes(gw.pid)
        s, r, _ = h.raw_login(gw.host, gw.port, database=self.pg.database, timeout_s=120)
        s.sendall(h.query_message("COPY sink FROM STDIN"))
        t, body = r.read_message()
        self.assertEqual(t, "G", h.error_fields(body) if t == "E" else t)
        line = ("\t" + "y" * 500 + "\n").encode()
        chunk = b"".join(str(i).encode() + line for i in range(2000))  # ~1 MB
        peak = baseline
        for _ in range(100):  # ~100 MB
            s.sendall(h.frame(b"d", chunk))
            peak = max(peak, h.process_rss_bytes(gw.pid))
        s.sendall(h.frame(b"c", b""))
        tag = None
        while True:
            t, body = r.read_message()
            if t == "E":
                self.fail(f"COPY failed: {h.error_fields(body)}")
            if t == "C":
                tag = body.rstrip(b"\0").decode()
            if t == "Z":
                break
        s.close()
        self.assertEqual(tag, "COPY 200000")
        growth = peak - baseline
        print(f"\nagentgate RSS during COPY IN: growth {growth >> 20} MiB", file=sys.stderr)
        self.assertLess(growth, RSS_GROWTH_BYTES_MAX)


if __name__ == "__main__":
    h.main()
