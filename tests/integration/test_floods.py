#!/usr/bin/python3
"""Floods of commands the gateway answers itself (issue 10, item 7).

A client that sends a denied `Q` over and over and never reads used to grow
the gateway without bound (RSS from 26 to 386 MiB), one log line and one
recorded command per denial. Now the gateway stops reading a client whose
own replies are not read (limits.unsent_bytes_max), rate-limits denial log
lines per session, and records a run of identical denials once plus a count.
Another client on the same shard is served throughout."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

POLICY = {
    "default_action": "allow",
    "rules": [{"id": "no-drops", "match": {"sql": {"statements": ["DROP TABLE"]}},
               "action": "deny", "message": "dropping data needs a change request"}],
}
DENIED = h.query_message("DROP TABLE victim")
FLOOD_BYTES = 24 << 20          # ~1M denied queries, if the gateway took them all
RSS_GROWTH_BYTES_MAX = 48 << 20  # the unfixed gateway grew by hundreds of MiB
# ASan keeps freed memory in quarantine (256 MiB by default), so its RSS grows
# with every allocation, live or not; the bound there is looser, still far
# under what the unfixed gateway took.
RSS_GROWTH_BYTES_MAX_SANITIZED = 320 << 20
LOG_BYTES_MAX = 256 << 10        # the unfixed gateway wrote a line per denial
RECORDING_BYTES_MAX = 4 << 20    # ... and recorded each one


def is_sanitized(binary):
    try:
        with open(binary, "rb") as f:
            return b"__asan_init" in f.read()  # libasan is linked dynamically
    except OSError:
        return False


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


class FloodTest(h.GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        extra = h.admin_setup(cls, "agentgate-floods-", POLICY)
        cls.recording_dir = os.path.join(cls.dir, "recordings")
        os.mkdir(cls.recording_dir)
        extra["recording"] = {"dir": cls.recording_dir}
        cls.gateway_options = {"shards": 1, "limits": {"unsent_bytes_max": 64 << 10}, "extra": extra}
        super().setUpClass()

    def metric(self, name):
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}/metrics",
                                     headers={"Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith(name + "{"))

    def other_client_is_served(self):
        s, r, _ = h.raw_login(self.gw.host, self.gw.port, database=self.pg.database, timeout_s=10)
        try:
            s.sendall(h.query_message("SELECT 'still serving'"))
            rows = []
            while True:
                t, body = r.read_message()
                if t == "D":
                    rows.append(body)
                if t == "Z":
                    break
            self.assertEqual(len(rows), 1)
            self.assertIn(b"still serving", rows[0])
        finally:
            s.close()

    def flood(self, sock, seconds):
        """Sends denied queries until FLOOD_BYTES are sent or the gateway stops
        taking them for `seconds`; returns the bytes sent."""
        batch = DENIED * 2048
        sent = 0
        sock.settimeout(seconds)
        try:
            while sent < FLOOD_BYTES:
                sent += sock.send(batch)
        except socket.timeout:
            pass
        return sent

    def test_unread_denials_stop_being_read(self):
        gw = self.gw
        self.other_client_is_served()
        baseline_rss = h.process_rss_bytes(gw.pid)
        baseline_log = len(gw.stderr_text())
        baseline_rec = dir_bytes(self.recording_dir)
        paused_before = self.metric("agentgate_client_reads_paused_total")

        s, r, _ = h.raw_login(gw.host, gw.port, database=self.pg.database, rcvbuf=4096, timeout_s=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
        try:
            sent = self.flood(s, 3.0)
            peak = baseline_rss
            for _ in range(5):
                peak = max(peak, h.process_rss_bytes(gw.pid))
                time.sleep(0.1)
            growth = peak - baseline_rss
            log_bytes = len(gw.stderr_text()) - baseline_log
            rec_bytes = dir_bytes(self.recording_dir) - baseline_rec
            print(f"\nflood: sent {sent} bytes ({sent // len(DENIED)} queries); RSS +{growth >> 10} KiB; "
                  f"log +{log_bytes} bytes; recording +{rec_bytes} bytes", file=sys.stderr)
            self.assertLess(sent, FLOOD_BYTES, "the gateway kept reading a client that does not read")
            limit = RSS_GROWTH_BYTES_MAX_SANITIZED if is_sanitized(gw.binary) else RSS_GROWTH_BYTES_MAX
            self.assertLess(growth, limit, f"RSS grew by {growth >> 20} MiB")
            self.assertLess(log_bytes, LOG_BYTES_MAX)
            self.assertGreater(self.metric("agentgate_client_reads_paused_total"), paused_before)
            # The shard serves others while this client is parked.
            self.other_client_is_served()
            gw.assert_alive()

            # The flooder starts reading: every query sent gets its denial, in
            # order, and the session is still usable.
            queries = sent // len(DENIED)
            rest = DENIED[sent % len(DENIED):] if sent % len(DENIED) else b""
            got = {"errors": 0, "row": None}

            def reader():
                while True:
                    m = r.read_message()
                    if m is None:
                        return
                    t, body = m
                    if t == "E":
                        self.assertEqual(h.error_fields(body)["C"], "42501")
                        got["errors"] += 1
                    elif t == "D":
                        got["row"] = body
                    elif t == "Z" and got["row"] is not None:
                        return

            s.settimeout(60)
            t = threading.Thread(target=reader)
            t.start()
            if rest:
                s.sendall(rest)
                queries += 1
            s.sendall(h.query_message("SELECT 'after the flood'"))
            t.join(120)
            self.assertFalse(t.is_alive())
            self.assertEqual(got["errors"], queries)
            self.assertIn(b"after the flood", got["row"])
        finally:
            s.close()
        self.assertLess(dir_bytes(self.recording_dir) - baseline_rec, RECORDING_BYTES_MAX)

    def test_read_denials_are_logged_and_recorded_in_summary(self):
        """A client that reads as fast as it floods is never paused, so the log
        and the recording must bound themselves."""
        gw = self.gw
        baseline_log = len(gw.stderr_text())
        baseline_rec = dir_bytes(self.recording_dir)
        count = 50_000
        s, r, _ = h.raw_login(gw.host, gw.port, database=self.pg.database, timeout_s=60)
        counts = {}

        def reader():
            while counts.get("Z", 0) < count:
                if r.skip_message_counting(counts) is None:
                    return

        t = threading.Thread(target=reader)
        t.start()
        try:
            s.sendall(DENIED * count)
            t.join(120)
            self.assertFalse(t.is_alive(), "the replies did not all arrive")
            self.assertEqual(counts.get("E", 0), count)
        finally:
            s.close()
        log = gw.stderr_text()[baseline_log:]
        rec_bytes = dir_bytes(self.recording_dir) - baseline_rec
        denial_lines = [line for line in log.splitlines() if "denied by rule no-drops" in line]
        print(f"\n{count} read denials: {len(denial_lines)} log lines, {len(log)} log bytes, "
              f"recording +{rec_bytes} bytes", file=sys.stderr)
        self.assertLess(len(denial_lines), 200)
        self.assertLess(len(log), LOG_BYTES_MAX)
        self.assertLess(rec_bytes, RECORDING_BYTES_MAX)

        # The session's end writes the run's summary; replay shows it.
        deadline = time.monotonic() + 10
        summaries = []
        while not summaries and time.monotonic() < deadline:
            time.sleep(0.2)
            listing = subprocess.run([gw.binary, "replay", "--dir", self.recording_dir, "--format", "jsonl"],
                                     capture_output=True, text=True, timeout=60).stdout
            for line in listing.splitlines():
                session = json.loads(line)
                if not session.get("ended"):
                    continue
                events = subprocess.run([gw.binary, "replay", "--dir", self.recording_dir, "--format", "jsonl",
                                         "--session", session["id"]], capture_output=True, text=True,
                                        timeout=60).stdout
                summaries += [e for e in events.splitlines() if f"repeated {count - 1} more times" in e]
        self.assertTrue(summaries, "no recorded summary of the repeated denials")


if __name__ == "__main__":
    h.main()
