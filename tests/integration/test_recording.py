"""Session recording through the gateway, end to end, against a real
PostgreSQL 15 with real clients.

Covered: a psql session's identity, commands, decisions and masked results
are in the recording and come back from `agentgate replay` (text, jsonl,
asciicast) and from GET /v1/sessions?state=recorded and
GET /v1/sessions/{id}/events; prompt attribution from a startup option, from
SET agentgate.prompt_id (answered by the gateway, never sent upstream) and
from a trailing sqlcommenter comment; denied commands are recorded with
their rule; `agentgate recordings verify` is clean after a clean stop; the
gateway killed with SIGKILL under pgbench load restarts, verify is clean
afterwards (a torn tail is repaired at start) and every session that was
synced before the kill reads back; a disk that fills up (a small tmpfs)
fails closed with SQLSTATE 58030, and fail_open lets commands through."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

EMAIL = "carol.jones@example.com"

POLICY = {
    "default_action": "allow",
    "rules": [{"id": "no-drops", "match": {"sql": {"statements": ["DROP TABLE"]}},
               "action": "deny", "message": "dropping tables needs a change request"}],
    "masking": {"detectors": {"email": "partial"}},
}


def agentgate(*args, timeout=60):
    return subprocess.run([h.agentgate_bin(), *args], capture_output=True, text=True, timeout=timeout)


class RecordingTest(h.GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        extra = h.admin_setup(cls, "agentgate-rec-", POLICY)
        cls.rec_dir = os.path.join(cls.dir, "recordings")
        extra["recording"] = {"dir": cls.rec_dir, "fsync_interval_ms": 20}
        cls.gateway_options = {"shards": 2, "extra": extra}
        super().setUpClass()

    @classmethod
    def prepare_database(cls):
        with cls.pg.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE people (id int, email text)")
            cur.execute("INSERT INTO people VALUES (1, %s), (2, 'dan@example.org')", (EMAIL,))
            conn.commit()

    def api(self, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}",
                                     headers={"Authorization": f"Bearer {self.admin_token}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode())

    def find_session(self, predicate, timeout_s=5):
        """(summary, events) of the recorded session whose events satisfy
        predicate; waits for the writer."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            code, body = self.api("/v1/sessions?state=recorded")
            self.assertEqual(code, 200, body)
            for s in body["sessions"]:
                evs = self.events(s["id"])
                if predicate(evs):
                    return s, evs
            time.sleep(0.2)
        self.fail(f"no recorded session matched; have {body}")

    def events(self, sid):
        code, body = self.api(f"/v1/sessions/{sid}/events")
        self.assertEqual(code, 200, body)
        return body["events"]

    def test_psql_session_is_recorded_and_replayed(self):
        prompt = "p-" + secrets.token_hex(4)
        script = (f"SELECT id, email FROM people ORDER BY id;\n"
                  f"DROP TABLE people;\n"
                  f"SELECT 42 AS answer /*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',"
                  f"prompt_id='{prompt}-c'*/;\n")
        res = h.run_psql(self.gw.dsn(options=f"-c agentgate.prompt_id={prompt}"), ["-X", "-f", "-"],
                         input=script)
        self.assertIn("dropping tables needs a change request", res.stderr)
        self.assertNotIn(EMAIL, res.stdout)
        s, evs = self.find_session(lambda evs: evs and evs[0]["type"] == "session_start"
                                   and evs[0].get("prompt_id") == prompt and evs[-1]["type"] == "session_end")
        kinds = [e["type"] for e in evs]
        self.assertEqual(evs[0]["target"], "pg")
        commands = [e for e in evs if e["type"] == "command"]
        self.assertEqual([c["text"].split()[0] for c in commands], ["SELECT", "DROP", "SELECT"])
        self.assertEqual(commands[0]["prompt_id"], prompt)
        self.assertEqual(commands[2]["prompt_id"], prompt + "-c")
        self.assertTrue(commands[2]["traceparent"].startswith("00-4bf92f"))
        decisions = [e for e in evs if e["type"] == "decision"]
        self.assertIn("deny", [d["action"] for d in decisions])
        self.assertIn("no-drops", [d["rule_id"] for d in decisions])
        results = [e for e in evs if e["type"] == "result"]
        first = results[0]
        self.assertEqual(first["command_tag"], "SELECT 2")
        self.assertEqual(first["rows_total"], 2)
        # This session's own matches: the two emails of its two rows, whatever
        # other sessions on the shard masked meanwhile.
        self.assertEqual(first["masked"], {"email": 2}, first)
        self.assertEqual(results[-1]["masked"], {})  # SELECT 42 masked nothing
        dump = json.dumps(evs)
        self.assertNotIn(EMAIL, dump)            # results are recorded masked
        self.assertIn("@example.com", dump)

        # The same through the CLI, in every format.
        out = agentgate("replay", "--dir", self.rec_dir)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(s["id"], out.stdout)
        text = agentgate("replay", "--dir", self.rec_dir, "--session", s["id"], "--format", "text")
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("DROP TABLE people", text.stdout)
        self.assertIn("no-drops", text.stdout)
        self.assertNotIn(EMAIL, text.stdout)
        jsonl = agentgate("replay", "--dir", self.rec_dir, "--session", s["id"], "--format", "jsonl")
        lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
        self.assertEqual([e["type"] for e in lines], kinds)
        cast = agentgate("replay", "--dir", self.rec_dir, "--session", s["id"], "--format", "asciicast")
        header, *frames = cast.stdout.splitlines()
        self.assertEqual(json.loads(header)["version"], 2)
        self.assertTrue(all(json.loads(f)[1] == "o" for f in frames))

    def test_set_prompt_is_answered_by_the_gateway(self):
        prompt = "set-" + secrets.token_hex(4)
        conn = self.gw.connect()
        try:
            conn.autocommit = True
            cur = conn.cursor()
            cur.execute(f"SET agentgate.prompt_id = '{prompt}'")
            cur.execute("SELECT current_setting('agentgate.prompt_id', true)")
            # The upstream never saw the SET: its custom setting is unset.
            self.assertIsNone(cur.fetchone()[0])
            cur.execute("SELECT 1")
        finally:
            conn.close()
        _, evs = self.find_session(lambda evs: bool(evs) and evs[-1]["type"] == "session_end" and any(
            e["type"] == "command" and e.get("prompt_id") == prompt for e in evs))
        cmds = [e for e in evs if e["type"] == "command"]
        # The SET itself is not a command the upstream ran; what follows carries its id.
        self.assertFalse([c for c in cmds if c["text"].startswith("SET agentgate")], cmds)
        self.assertEqual([c["text"] for c in cmds if c.get("prompt_id") == prompt][-1], "SELECT 1")

    def test_live_sessions_show_their_id(self):
        conn = self.gw.connect()
        try:
            code, body = self.api("/v1/sessions")
            self.assertEqual(code, 200)
            ids = [s["id"] for s in body["sessions"]]
            self.assertTrue(ids and all(len(i) == 32 for i in ids), body)
        finally:
            conn.close()

    def test_events_are_paged(self):
        h.run_psql(self.gw.dsn(), ["-c", "SELECT 1", "-c", "SELECT 2", "-c", "SELECT 3"], check=True)
        s, evs = self.find_session(lambda evs: sum(1 for e in evs if e["type"] == "command") == 3
                                   and evs[-1]["type"] == "session_end")
        code, page1 = self.api(f"/v1/sessions/{s['id']}/events?limit=2")
        self.assertEqual((code, len(page1["events"]), page1["next"]), (200, 2, 2), page1)
        code, rest = self.api(f"/v1/sessions/{s['id']}/events?after=2&limit=1000")
        self.assertIsNone(rest["next"])
        self.assertEqual(page1["events"] + rest["events"], evs)
        code, body = self.api("/v1/sessions?state=recorded&limit=0")
        self.assertEqual(code, 400, body)

    def test_unknown_session_is_404(self):
        code, body = self.api("/v1/sessions/" + "0" * 32 + "/events")
        self.assertEqual(code, 404, body)
        code, body = self.api("/v1/sessions/not-an-id/events")
        self.assertEqual(code, 400, body)


class RecordingCrashTest(h.GatewayTestCase):
    """SIGKILL under pgbench load, restart, verify."""

    @classmethod
    def setUpClass(cls):
        cls.dir = h.class_temp_dir(cls, "agentgate-rec-crash-")
        cls.rec_dir = os.path.join(cls.dir, "recordings")
        cls.gateway_options = {"shards": 2, "extra": {"recording": {"dir": cls.rec_dir, "fsync_interval_ms": 10}},
                               "expect_clean_exit": False}
        super().setUpClass()

    @classmethod
    def prepare_database(cls):
        h.run_pgbench(cls.pg.host, cls.pg.port, cls.pg.user, cls.pg.database, ["-i", "-s", "1", "-q"],
                      password=cls.pg.password)

    def test_sigkill_under_load_then_verify_and_read_back(self):
        # A finished session, synced well before the kill.
        h.run_psql(self.gw.dsn(), ["-c", "SELECT 'before the crash'"], check=True)
        time.sleep(0.5)
        bench = subprocess.Popen(["pgbench", "-h", self.gw.host, "-p", str(self.gw.port), "-U", "agent",
                                  "-n", "-S", "-c", "8", "-j", "2", "-T", "20", self.pg.database],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=h.client_env())
        time.sleep(2.0)
        os.kill(self.gw.pid, signal.SIGKILL)
        bench.communicate(timeout=60)
        self.gw.proc.wait(timeout=10)

        # Read-only verify: a torn tail may be there (the kill), nothing else.
        v = agentgate("recordings", "verify", "--dir", self.rec_dir)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        self.assertIn("0 bytes lost to corruption", v.stdout)

        # Restart on the same directory: recovery repairs the tail; verify is clean.
        with h.Agentgate(self.pg, shards=2, extra={"recording": {"dir": self.rec_dir}}) as gw2:
            h.run_psql(gw2.dsn(), ["-c", "SELECT 'after the restart'"], check=True)
        v = agentgate("recordings", "verify", "--dir", self.rec_dir)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)

        listing = agentgate("replay", "--dir", self.rec_dir)
        self.assertEqual(listing.returncode, 0, listing.stderr)
        found_before = found_after = False
        for line in listing.stdout.splitlines():
            sid = line.split()[0] if line.strip() else ""
            if len(sid) != 32:
                continue
            t = agentgate("replay", "--dir", self.rec_dir, "--session", sid, "--format", "jsonl")
            self.assertEqual(t.returncode, 0, t.stderr)
            found_before |= "before the crash" in t.stdout
            found_after |= "after the restart" in t.stdout
        self.assertTrue(found_before, "the session synced before the kill is lost")
        self.assertTrue(found_after)


class RecordingDiskFullTest(h.GatewayTestCase):
    """A recording directory on a 1 MiB tmpfs: commands fail closed once it is full."""

    mount = None

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="agentgate-rec-full-")
        cls.mount = os.path.join(cls.dir, "small")
        os.makedirs(cls.mount)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", cls.mount], check=True)
        cls.gateway_options = {"shards": 1, "extra": {"recording": {
            "dir": cls.mount, "segment_bytes": 1 << 20, "fsync": "always"}}}
        try:
            super().setUpClass()
        except BaseException:
            subprocess.run(["umount", cls.mount])
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            subprocess.run(["umount", cls.mount])
            shutil.rmtree(cls.dir, ignore_errors=True)

    def test_full_disk_fails_closed(self):
        conn = self.gw.connect()
        conn.autocommit = True
        cur = conn.cursor()
        failed = None
        for i in range(2000):
            try:
                cur.execute("SELECT repeat('x', 4000) FROM generate_series(1, 20)")
                cur.fetchall()
            except Exception as e:  # psycopg2.Error
                failed = e
                break
        self.assertIsNotNone(failed, "the disk never filled")
        self.assertEqual(getattr(failed, "pgcode", None), "58030", str(failed))
        self.assertIn("recording is unavailable", str(failed))
        # The session is still there; the next command is refused the same way.
        with self.assertRaises(Exception) as again:
            cur.execute("SELECT 1")
        self.assertEqual(getattr(again.exception, "pgcode", None), "58030")
        conn.close()
        self.assertIn("recording", self.gw.stderr_text())


if __name__ == "__main__":
    h.main()
