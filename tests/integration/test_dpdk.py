#!/usr/bin/python3
"""agentgate-dpdk (DPDK tap device + lwIP TCP) relays psql like a direct connection.

Everything runs inside a network namespace this test creates (and deletes):
the test re-executes itself there with `ip netns exec`. In the namespace:
PostgreSQL (harness-made, listening on the namespace's addresses only), the
gateway, whose DPDK tap device `agtap0` appears as the host side, with
10.77.0.1/24 on it, while lwIP answers on 10.77.0.2, and psql.

  client psql -> 10.77.0.2:6432 (kernel -> tap -> DPDK -> lwIP) -> gateway
  gateway -> lwIP -> DPDK -> tap -> kernel -> PostgreSQL on 10.77.0.1

Skipped only when the binary was not built (AGENTGATE_DPDK_BIN unset: a
build without -DAGENTGATE_DPDK=ON). Needs root, for the namespace.
"""

import hashlib
import json
import threading
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

DPDK_BIN = os.environ.get("AGENTGATE_DPDK_BIN", "")
IN_NETNS = "AGENTGATE_DPDK_TEST_NETNS"
TAP = "agtap0"
HOST_IP = "10.77.0.1"
GATEWAY_IP = "10.77.0.2"
GATEWAY_PORT = 6432  # inside lwIP's own stack: nothing else can hold it
DPDK_ARGS = f"--no-huge --no-pci --no-shconf --no-telemetry -m 256 --vdev=net_tap0,iface={TAP} --log-level=lib.eal:warning"
UNSENT_BYTES_MAX = 64 << 10
POLICY = {"default_action": "allow", "rules": [
    {"id": "no-drops", "match": {"sql": {"statements": ["DROP TABLE"]}}, "action": "deny",
     "message": "dropping data needs a change request"}]}
SKIP_REASON = "agentgate-dpdk was not built (configure with -DAGENTGATE_DPDK=ON; ctest sets AGENTGATE_DPDK_BIN)"


def ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True, check=check)


class DpdkGateway:
    """agentgate-dpdk in front of a PostgresServer reachable at HOST_IP."""

    def __init__(self, server, extra_args=()):
        self.server = server
        self.extra_args = list(extra_args)
        self.proc = None
        self.tmpdir = None

    def dsn(self, **extra):
        return h.libpq_dsn(host=GATEWAY_IP, port=GATEWAY_PORT, user="agent", dbname=self.server.database,
                           **({"sslmode": "disable"} | extra))

    def log(self):
        try:
            with open(os.path.join(self.tmpdir, "stderr"), errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def __enter__(self):
        self.tmpdir = tempfile.mkdtemp(prefix="agentgate-dpdk-")
        with open(os.open(os.path.join(self.tmpdir, "pw"), os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(self.server.password + "\n")
        config = {
            "shards": 1,
            "limits": {"unsent_bytes_max": UNSENT_BYTES_MAX},
            "targets": [{
                "name": "pg", "protocol": "postgres", "listen": f"{GATEWAY_IP}:{GATEWAY_PORT}",
                # The tap address is not loopback: trust there must be said outright.
                "client_auth": "trust", "allow_trust_on_network": True,
                "upstream": {"host": HOST_IP, "port": self.server.port, "user": self.server.user,
                             "password_file": "pw", "database": self.server.database},
            }],
        }
        policy_path = os.path.join(self.tmpdir, "policy.json")
        with open(policy_path, "w") as f:
            json.dump(POLICY, f)
        config["policy_file"] = policy_path
        config_path = os.path.join(self.tmpdir, "agentgate.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        self._stderr = open(os.path.join(self.tmpdir, "stderr"), "w")
        self.proc = subprocess.Popen(
            [DPDK_BIN, "--config", config_path, "--ip", f"{GATEWAY_IP}/24", "--dpdk-args", DPDK_ARGS] + self.extra_args,
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr, cwd=self.tmpdir)
        # DPDK creates the tap interface during start-up; then the host side gets its address.
        deadline = time.monotonic() + 30
        while ip("link", "show", TAP, check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log()
                self.__exit__(None, None, None)
                raise AssertionError(f"{TAP} did not appear; agentgate-dpdk log:\n{log}")
            time.sleep(0.05)
        subprocess.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{TAP}.disable_ipv6=1"], capture_output=True)
        ip("addr", "add", f"{HOST_IP}/24", "dev", TAP)
        ip("link", "set", TAP, "up")
        if not h.wait_for_tcp(GATEWAY_IP, GATEWAY_PORT, 30, self.proc):
            log = self.log()
            self.__exit__(None, None, None)
            raise AssertionError(f"agentgate-dpdk did not accept on {GATEWAY_IP}:{GATEWAY_PORT}; log:\n{log}")
        return self

    def stop(self):
        if self.proc is None:
            return None
        code, timed_out = h._stop_process(self.proc, signal.SIGTERM, 15)
        self._stderr.close()
        self.proc = None
        return None if timed_out else code

    def __exit__(self, *exc):
        self.stop()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        return False


@unittest.skipUnless(DPDK_BIN, SKIP_REASON)
class DpdkBackendTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.environ.get(IN_NETNS) != "1":
            raise unittest.SkipTest("not in the test's network namespace (run this file directly)")
        ip("link", "set", "lo", "up")
        # '*' inside this namespace is its loopback and the tap's host side only.
        cls.pg = h.PostgresServer(settings={"listen_addresses": "'*'"}).__enter__()
        with open(os.path.join(cls.pg.datadir, "pg_hba.conf"), "a") as f:
            f.write("host all all 10.77.0.0/24 scram-sha-256\n")
        cls.pg.admin_sql("SELECT pg_reload_conf()")
        try:
            cls.gw = DpdkGateway(cls.pg).__enter__()
        except BaseException:
            cls.pg.__exit__(None, None, None)
            raise

    @classmethod
    def tearDownClass(cls):
        code = cls.gw.stop()
        log = cls.gw.log()
        cls.gw.__exit__(None, None, None)
        cls.pg.__exit__(None, None, None)
        if code != 0:
            raise AssertionError(f"agentgate-dpdk exited {code} after SIGTERM (expected 0); log:\n{log[-8000:]}")

    def psql_both(self, args, **kw):
        gw = h.run_psql(self.gw.dsn(), args, **kw)
        direct = h.run_psql(self.pg.dsn(), args, password=self.pg.password, **kw)
        return gw, direct

    def assert_alive(self):
        self.assertIsNone(self.gw.proc.poll(), f"agentgate-dpdk died; log:\n{self.gw.log()[-8000:]}")

    def test_select_one(self):
        gw, direct = self.psql_both(["-Atc", "SELECT 1"])
        self.assertEqual(gw.returncode, 0, gw.stderr)
        self.assertEqual(gw.stdout, "1\n")
        self.assertEqual((gw.returncode, gw.stdout, gw.stderr), (direct.returncode, direct.stdout, direct.stderr))

    def test_ten_megabyte_result(self):
        sql = "SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 10000) g"
        gw, direct = self.psql_both(["-Atc", sql], binary=True)
        self.assertEqual(gw.returncode, 0, gw.stderr)
        self.assertGreater(len(gw.stdout), 10_000_000)
        self.assertEqual(hashlib.sha256(gw.stdout).hexdigest(), hashlib.sha256(direct.stdout).hexdigest())
        self.assert_alive()

    def test_error_keeps_the_session(self):
        script = "SELECT 1/0;\nSELECT 'still here';\n"
        gw, direct = self.psql_both(["-At", "-f", "-"], input=script)
        self.assertIn("division by zero", gw.stderr)
        self.assertIn("still here", gw.stdout)
        self.assertEqual((gw.returncode, gw.stdout, gw.stderr), (direct.returncode, direct.stdout, direct.stderr))

    def test_ssl_request_is_answered_no(self):
        # No TLS on this backend: sslmode=prefer falls back to plaintext, require fails cleanly.
        res = h.run_psql(self.gw.dsn(sslmode="prefer"), ["-Atc", "SELECT 2"])
        self.assertEqual((res.returncode, res.stdout), (0, "2\n"), res.stderr)
        res = h.run_psql(self.gw.dsn(sslmode="require"), ["-Atc", "SELECT 3"])
        self.assertNotEqual(res.returncode, 0)
        self.assert_alive()

    def test_concurrent_clients(self):
        h.run_psql(self.pg.dsn(), ["-qc", "CREATE TABLE IF NOT EXISTS dpdk_t (a int)"], password=self.pg.password,
                   check=True)
        res = subprocess.run(
            ["pgbench", "-n", "-c", "8", "-j", "2", "-t", "200", "-f", "-", "-h", GATEWAY_IP,
             "-p", str(GATEWAY_PORT), "-U", "agent", self.pg.database],
            input="SELECT count(*) FROM dpdk_t;\n", capture_output=True, text=True, timeout=120,
            env=h.client_env())
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertIn("number of transactions actually processed: 1600/1600", res.stdout)
        self.assertIn("number of failed transactions: 0", res.stdout)
        self.assert_alive()

    def test_denied_statement_keeps_the_session(self):
        script = "\\set VERBOSITY verbose\nDROP TABLE IF EXISTS nothing_here;\nSELECT 'after';\n"
        res = h.run_psql(self.gw.dsn(), ["-At", "-f", "-"], input=script)
        self.assertIn("42501", res.stderr)
        self.assertIn("no-drops", res.stderr)
        self.assertIn("after", res.stdout)

    def test_cancel_request(self):
        import psycopg2
        import psycopg2.errors
        conn = psycopg2.connect(self.gw.dsn())
        try:
            timer = threading.Timer(0.5, conn.cancel)
            timer.start()
            started = time.monotonic()
            with self.assertRaises(psycopg2.errors.QueryCanceled):
                conn.cursor().execute("SELECT pg_sleep(20)")
            timer.join()
            self.assertLess(time.monotonic() - started, 10)
            conn.rollback()
            cur = conn.cursor()
            cur.execute("SELECT 'usable'")
            self.assertEqual(cur.fetchone()[0], "usable")
        finally:
            conn.close()

    def test_slow_reader_big_result(self):
        # Back-pressure through lwIP: a client that stops reading a ~100 MB
        # result must not make the gateway hold it. Its RSS includes DPDK's
        # memory (-m 256, touched up front), so only the growth is judged.
        rows, row_bytes = 100_000, 1000
        s, r, _ = h.raw_login(GATEWAY_IP, GATEWAY_PORT, database=self.pg.database, rcvbuf=64 << 10, timeout_s=60)
        baseline = h.process_rss_bytes(self.gw.proc.pid)
        s.sendall(h.query_message(f"SELECT repeat('x', {row_bytes}) FROM generate_series(1, {rows})"))
        time.sleep(2)
        peak = baseline
        for _ in range(5):
            peak = max(peak, h.process_rss_bytes(self.gw.proc.pid))
            time.sleep(0.1)
        # Another session is served meanwhile.
        res = h.run_psql(self.gw.dsn(), ["-Atc", "SELECT 'other session ok'"], timeout=30)
        self.assertEqual((res.returncode, res.stdout.strip()), (0, "other session ok"), res.stderr)
        growth = peak - baseline
        print(f"\nagentgate-dpdk RSS: baseline {baseline >> 20} MiB, growth while stalled {growth >> 20} MiB",
              file=sys.stderr)
        self.assertLess(growth, 32 << 20, f"RSS grew by {growth >> 20} MiB while the client was not reading")
        counts = {}
        while True:
            m = r.skip_message_counting(counts)
            self.assertIsNotNone(m, f"connection closed early after {counts}")
            if m[0] == "E":
                self.fail(f"error while draining: {h.error_fields(m[1])}")
            if m[0] == "Z":
                break
        s.close()
        self.assertEqual(counts.get("D", 0), rows)
        self.assert_alive()


def run_in_namespace():
    """Creates a network namespace, re-runs this file inside it, deletes it."""
    if os.geteuid() != 0:
        print("test_dpdk: needs root to create a network namespace", file=sys.stderr)
        return 1
    ns = f"agentgate-dpdk-{os.getpid()}"
    ip("netns", "add", ns)
    try:
        env = dict(os.environ, **{IN_NETNS: "1"})
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__)] + sys.argv[1:],
                              env=env).returncode
    finally:
        ip("netns", "delete", ns, check=False)


if __name__ == "__main__":
    if DPDK_BIN and os.environ.get(IN_NETNS) != "1":
        sys.exit(run_in_namespace())
    unittest.main(verbosity=2)
