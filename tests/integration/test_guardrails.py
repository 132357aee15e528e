"""Guardrails through the gateway, end to end: the demo policy loaded from
policy_file, real clients (psql, psycopg2, pgbench) and raw wire messages.

Denials are ErrorResponse 42501 naming the rule; the session stays usable;
inside a transaction the client and the server agree on its state; evasions
(case, comments, several statements, U& identifiers, dollar quotes, CTEs
that write, functions inside SELECT) are caught; a policy pushed through the
config API applies to open sessions from their next command, with pgbench
running and no failed transaction."""

import json
import os
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_POLICY = os.path.join(REPO, "appliance", "examples", "policy-demo.json")


def denying_demo_policy():
    """The demo policy with its require_approval rules turned into denials:
    this file tests classification and refusal; holding is test_approvals'."""
    with open(DEMO_POLICY) as f:
        doc = json.load(f)
    for rule in doc["rules"]:
        if rule["action"] == "require_approval":
            rule["action"] = "deny"
            rule.pop("approvers", None)
            rule.pop("timeout_s", None)
            rule.setdefault("message", "needs a DBA")
    return doc


class GuardrailsTest(h.GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        cls.gateway_options = {"shards": 2, "extra": h.admin_setup(cls, "agentgate-guard-", denying_demo_policy())}
        super().setUpClass()

    @classmethod
    def prepare_database(cls):
        cls.pg.admin_sql("CREATE TABLE t (id int primary key, v text); "
                         "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g; "
                         f"ALTER TABLE t OWNER TO {cls.pg.user}",
                         dbname=cls.pg.database)

    # -- helpers --------------------------------------------------------------

    def api(self, method, path, body=None, token=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method,
                                     data=body.encode() if body is not None else None)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)

    def psql(self, sql):
        return h.run_psql(self.gw.dsn(), ["-X", "-qAt", "-v", "ON_ERROR_STOP=0", "-c", sql])

    def assert_denied(self, sql, rule):
        res = self.psql(sql)
        self.assertIn("ERROR:", res.stderr, f"{sql!r} was not denied: {res.stdout} {res.stderr}")
        self.assertIn(f"denied by rule {rule}", res.stderr, res.stderr)
        return res

    def row_count(self):
        return self.pg.admin_sql("SELECT count(*) FROM t", dbname=self.pg.database).strip()

    def wire_session(self):
        return h.raw_login(self.gw.host, self.gw.port, database=self.pg.database)

    def read_until_z(self, r):
        msgs = []
        while True:
            m = r.read_message()
            self.assertIsNotNone(m, f"closed early: {msgs}")
            msgs.append(m)
            if m[0] == "Z":
                return msgs

    # -- denials -------------------------------------------------------------------

    def test_drop_denied_and_session_usable(self):
        s, r, _ = self.wire_session()
        s.sendall(h.query_message("DROP TABLE t"))
        msgs = self.read_until_z(r)
        self.assertEqual([t for t, _ in msgs], ["E", "Z"])
        f = h.error_fields(msgs[0][1])
        self.assertEqual(f["C"], "42501")
        self.assertIn("no-drops", f["M"])
        self.assertIn("dropping data needs a change request", f["M"])
        s.sendall(h.query_message("SELECT count(*) FROM t"))
        msgs = self.read_until_z(r)
        self.assertIn("D", [t for t, _ in msgs])
        s.sendall(h.TERMINATE)
        s.close()
        self.assertEqual(self.row_count(), "100")

    def test_evasions(self):
        cases = [
            ("dRoP TaBlE t", "no-drops"),
            ("DROP/**/TABLE t", "no-drops"),
            ("DROP -- comment\n TABLE t", "no-drops"),
            ("SELECT 1; DROP TABLE t", "no-drops"),
            ("SELECT 1; TRUNCATE t", "no-drops"),
            ("SELECT pg_read_file('/etc/passwd')", "no-dangerous-functions"),
            ("SELECT * FROM (SELECT pg_terminate_backend(pg_backend_pid())) x", "no-dangerous-functions"),
            ("SELECT CASE WHEN true THEN pg_read_file('/etc/hostname') END", "no-dangerous-functions"),
            ('SELECT U&"pg\\005fread\\005ffile"(\'/etc/passwd\')', "no-dangerous-functions"),
            ("SELECT $$ harmless $$; DROP TABLE t", "no-drops"),
            # With standard strings '\' is a whole literal, so the DROP runs: caught.
            ("SELECT '\\' ; DROP TABLE t; --'", "no-drops"),
            ("SET ROLE postgres", "no-role-switch"),
            ("SET SESSION AUTHORIZATION postgres", "no-role-switch"),
            ("SELECT set_config('role', 'postgres', false)", "no-dangerous-functions"),
            ("COPY t TO PROGRAM 'id'", "no-copy-program"),
            ("WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d", "bulk-writes"),
            ("DELETE FROM t", "bulk-writes"),
            ("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$", "opaque-code"),
            ("PREPARE p AS DELETE FROM t", "bulk-writes"),
            ("EXPLAIN ANALYZE DELETE FROM t", "bulk-writes"),
            ("SELEKT garbage FROM", "parse_errors"),
        ]
        for sql, rule in cases:
            with self.subTest(sql=sql):
                self.assert_denied(sql, rule)
        self.assertEqual(self.row_count(), "100")

    def test_allowed_statements_run(self):
        res = self.psql("SELECT count(*) FROM t WHERE id < 11; UPDATE t SET v = 'w' WHERE id = 1")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout.strip(), "10")

    def test_transaction_state_agrees(self):
        s, r, _ = self.wire_session()
        for sql in ["BEGIN", "UPDATE t SET v = 'in-tx' WHERE id = 2"]:
            s.sendall(h.query_message(sql))
            msgs = self.read_until_z(r)
            self.assertNotIn("E", [t for t, _ in msgs])
        s.sendall(h.query_message("DROP TABLE t"))
        msgs = self.read_until_z(r)
        self.assertEqual(msgs[-1], ("Z", b"T"))  # the server's transaction was never aborted
        s.sendall(h.query_message("COMMIT"))
        msgs = self.read_until_z(r)
        self.assertEqual(msgs[-1], ("Z", b"I"))
        self.assertNotIn("E", [t for t, _ in msgs])
        s.sendall(h.TERMINATE)
        s.close()
        v = self.pg.admin_sql("SELECT v FROM t WHERE id = 2", dbname=self.pg.database).strip()
        self.assertEqual(v, "in-tx")

    def test_extended_protocol_denial_discards_until_sync(self):
        s, r, _ = self.wire_session()
        parse_ok = h.frame("P", b"\0SELECT 42\0\0\0")
        parse_bad = h.frame("P", b"\0DROP TABLE t\0\0\0")
        # Bind, Describe (portal), Execute, as libpq sends them: the demo
        # policy has column rules, and rows nobody described are refused.
        bind = h.frame("B", b"\0\0\0\0\0\0\0\0") + h.frame("D", b"P\0")
        execute = h.frame("E", b"\0\0\0\0\0")
        sync = h.frame("S", b"")
        # A good batch, then one whose Parse is refused, then a good one again.
        s.sendall(parse_ok + bind + execute + sync + parse_bad + bind + execute + sync +
                  parse_ok + bind + execute + sync)
        first = self.read_until_z(r)
        self.assertEqual([t for t, _ in first], ["1", "2", "T", "D", "C", "Z"])
        second = self.read_until_z(r)
        self.assertEqual([t for t, _ in second], ["E", "Z"])
        self.assertEqual(h.error_fields(second[0][1])["C"], "42501")
        third = self.read_until_z(r)
        self.assertEqual([t for t, _ in third], ["1", "2", "T", "D", "C", "Z"])
        s.sendall(h.TERMINATE)
        s.close()
        self.assertEqual(self.row_count(), "100")

    def test_pipelined_denial_keeps_order(self):
        s, r, _ = self.wire_session()
        s.sendall(h.query_message("SELECT pg_sleep(0.3), 1") + h.query_message("DROP TABLE t") +
                  h.query_message("SELECT 2"))
        one = self.read_until_z(r)
        self.assertIn("D", [t for t, _ in one])
        two = self.read_until_z(r)
        self.assertEqual([t for t, _ in two], ["E", "Z"])
        three = self.read_until_z(r)
        self.assertIn("D", [t for t, _ in three])
        s.sendall(h.TERMINATE)
        s.close()

    def test_function_call_message_denied(self):
        s, r, _ = self.wire_session()
        # FunctionCall: oid of pg_backend_pid (2026), no format codes, no args, text result.
        s.sendall(h.frame("F", struct.pack("!IHHH", 2026, 0, 0, 0)))
        msgs = self.read_until_z(r)
        self.assertEqual([t for t, _ in msgs], ["E", "Z"])
        self.assertEqual(h.error_fields(msgs[0][1])["C"], "42501")
        s.sendall(h.TERMINATE)
        s.close()

    # -- the config API ---------------------------------------------------------------------

    def test_api_auth_and_health(self):
        status, body, _ = self.api("GET", "/healthz", token="wrong")
        self.assertEqual(status, 200)
        status, body, headers = self.api("GET", "/v1/policy", token="wrong-token-wrong-token")
        self.assertEqual(status, 401)
        self.assertIn("error", json.loads(body))
        status, body, headers = self.api("GET", "/v1/policy")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["rules"][0]["id"], "no-drops")
        status, body, _ = self.api("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertIn("agentgate_commands_total", body)
        self.assertIn("agentgate_sessions_open", body)
        status, body, _ = self.api("GET", "/v1/sessions")
        self.assertEqual(status, 200)
        self.assertIn("sessions", json.loads(body))

    def test_bad_policy_refused_with_every_error(self):
        before = self.api("GET", "/v1/policy")[2].get("X-Policy-Version")
        bad = {"version": 1, "default_action": "maybe",
               "rules": [{"id": "x", "match": {"sql": {"statements": ["DROP TABEL"]}}, "action": "deny"}]}
        status, body, _ = self.api("PUT", "/v1/policy", json.dumps(bad))
        self.assertEqual(status, 400, body)
        errors = json.loads(body)["errors"]
        paths = {e["path"] for e in errors}
        self.assertIn("default_action", paths)
        self.assertTrue(any(p.startswith("rules[0]") for p in paths), paths)
        self.assertGreaterEqual(len(errors), 2)
        after = self.api("GET", "/v1/policy")[2].get("X-Policy-Version")
        self.assertEqual(before, after)
        self.assert_denied("DROP TABLE t", "no-drops")  # the running policy stays

    def test_z_policy_swap_under_load(self):
        # An open session sees the new version from its next command.
        s, r, _ = self.wire_session()
        doc = denying_demo_policy()
        # pgbench -i drops and truncates: the demo policy rightly refuses that, so load directly.
        init = h.run_pgbench(self.pg.host, self.pg.port, self.pg.user, self.pg.database,
                             ["-i", "-s", "1", "-q"], password=self.pg.password)
        self.assertEqual(init.returncode, 0, init.stderr)
        stop = threading.Event()
        result = {}

        def load():
            result["bench"] = h.run_pgbench(self.gw.host, self.gw.port, "agent", self.pg.database,
                                            ["-c", "4", "-j", "2", "-T", "6", "-S"])

        t = threading.Thread(target=load)
        t.start()
        time.sleep(1)
        versions = []
        for i in range(5):
            doc["rules"][0]["message"] = f"swap {i}"
            status, body, _ = self.api("PUT", "/v1/policy", json.dumps(doc))
            self.assertEqual(status, 200, body)
            versions.append(json.loads(body)["version"])
            time.sleep(0.5)
        t.join()
        bench = result["bench"]
        self.assertEqual(bench.returncode, 0, bench.stdout + bench.stderr)
        self.assertRegex(bench.stdout, r"number of failed transactions: 0 ")
        self.assertEqual(versions, sorted(versions))
        s.sendall(h.query_message("DROP TABLE t"))
        msgs = self.read_until_z(r)
        self.assertIn("swap 4", h.error_fields(msgs[0][1])["M"])
        s.sendall(h.TERMINATE)
        s.close()
        status, body, _ = self.api("GET", "/v1/policy/versions")
        self.assertEqual(status, 200)
        self.assertGreaterEqual(len(json.loads(body)["versions"]), 6)


if __name__ == "__main__":
    h.main()
