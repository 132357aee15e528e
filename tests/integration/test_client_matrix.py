#!/usr/bin/python3
"""The real-client matrix (issue 3, point 6): every client logs in through one
gateway (2 shards, TLS, JWT login) with a token minted by `agentgate token`,
runs queries, a prepared statement, a COPY, cancels a pg_sleep(10), and sees an
expired token refused.

Clients: psql (sslmode=require and verify-full), pgbench (simple, extended,
prepared), psycopg2, psycopg 3 (with pipeline mode), Java JDBC (Debian's
libpostgresql-jdbc-java, tests/clients/java) and node-postgres
(tests/clients/node, installed by scripts/install-deps).

libpq reports a FATAL error received while connecting as text only (no
SQLSTATE), so libpq clients check the message; the SQLSTATE 28P01 is checked
on the wire (test_expired_token_sqlstate_on_the_wire), by JDBC and by node.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import identity_harness as ih  # noqa: E402
import pg_harness as h  # noqa: E402

CLIENTS_DIR = os.path.join(h.REPO_ROOT, "tests", "clients")
JDBC_JAR = "/usr/share/java/postgresql.jar"
REFUSED_TEXT = "FATAL:  token refused"  # as libpq prints it
CANCEL_TEXT = "canceling statement due to user request"
CANCEL_SECONDS_MAX = 8  # pg_sleep(10) canceled after ~1 s


class ClientMatrixTest(ih.IdentityTestCase):
    gateway_options = {"shards": 2}

    @classmethod
    def prepare_database(cls):
        conn = cls.pg.connect()
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE items (id int PRIMARY KEY, label text, price numeric(10,2))")
            cur.execute("INSERT INTO items SELECT g, 'item ' || g, g * 1.5 "
                        "FROM generate_series(1, 1000) g")
            cur.execute("CREATE TABLE copy_in (id int, label text)")
        conn.close()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # One token per key type, all valid for an hour: every algorithm is used
        # by some client.
        cls.tokens = {k: cls.world.token(k, sub=f"matrix-{k}", groups=("dev", "matrix"),
                                         ttl_s=3600, email=f"{k}@example.test")
                      for k in ih.KINDS}
        cls.token = cls.tokens["rsa"]
        cls.expired = cls.world.expired_token("rsa")

    # -- helpers ----------------------------------------------------------

    def psql(self, args, token=None, sslmode="verify-full", timeout=60, **dsn_extra):
        dsn = self.gw.tls_dsn(token or self.token, sslmode, **dsn_extra)
        return h.run_psql(dsn, ["-v", "ON_ERROR_STOP=1"] + list(args), timeout=timeout)

    def assert_ok(self, res, what):
        self.assertEqual(res.returncode, 0,
                         f"{what}: rc={res.returncode}\nstdout:\n{res.stdout}\n"
                         f"stderr:\n{res.stderr}\ngateway log:\n{self.gateway_log()}")

    def assert_refused_text(self, text, what):
        self.assertIn(REFUSED_TEXT, text, f"{what}: expected a token refusal; got:\n{text}")

    # -- the expired token, on the wire -----------------------------------

    def test_expired_token_sqlstate_on_the_wire(self):
        for kind in ih.KINDS:
            with self.subTest(kind=kind):
                res = self.login(self.world.expired_token(kind))
                self.assert_refused(res, what=f"expired {kind} token")
                self.assertEqual(res.auth_codes, [3], "expected one cleartext password request")

    def test_valid_tokens_log_in_on_the_wire(self):
        for kind, token in self.tokens.items():
            with self.subTest(kind=kind):
                res = self.login(token)
                self.assertTrue(res.ok, f"{kind}: {res!r}; log:\n{self.gateway_log()}")
                self.assertIsNotNone(res.key, "no BackendKeyData")
                rows, err = ih.wire_query(res, "SELECT current_user")
                self.assertIsNone(err)
                self.assertEqual(rows, [[self.pg.user]])
                res.close()

    # -- psql ---------------------------------------------------------------

    def test_psql_sslmode_require(self):
        res = self.psql(["-Atc", "SELECT current_user, 40 + 2"], sslmode="require")
        self.assert_ok(res, "psql sslmode=require")
        self.assertEqual(res.stdout.strip(), f"{self.pg.user}|42")

    def test_psql_sslmode_verify_full(self):
        # IP SAN: host=127.0.0.1.
        res = self.psql(["-Atc", "SELECT count(*) FROM items", "-c", "\\conninfo"])
        self.assert_ok(res, "psql verify-full (IP SAN)")
        self.assertTrue(res.stdout.startswith("1000\n"), res.stdout)
        self.assertIn("SSL connection (protocol: TLSv1.", res.stdout)
        # DNS SAN: host=localhost, connecting to 127.0.0.1.
        dsn = h.libpq_dsn(host="localhost", hostaddr=self.gw.host, port=self.gw.port,
                             user=self.gw.client_user, dbname=self.pg.database,
                             password=self.token,
                             sslmode="verify-full", sslrootcert=self.world.pki["ca_cert"])
        res = h.run_psql(dsn, ["-Atc", "SELECT 'dns-san-ok'"], timeout=60)
        self.assert_ok(res, "psql verify-full (DNS SAN)")
        self.assertEqual(res.stdout.strip(), "dns-san-ok")
        # Control: verify-full against another CA fails, so the test CA is what
        # made the connections above pass.
        other = tempfile.mkdtemp(prefix="agentgate-otherca-")
        try:
            other_ca = ih.make_pki(other)["ca_cert"]
            res = self.psql(["-Atc", "SELECT 1"], sslrootcert=other_ca)
            self.assertNotEqual(res.returncode, 0, res.stdout)
            self.assertIn("certificate verify failed", res.stderr)
        finally:
            shutil.rmtree(other, ignore_errors=True)

    def test_psql_every_key_type(self):
        for kind, token in self.tokens.items():
            with self.subTest(kind=kind):
                res = self.psql(["-Atc", "SELECT 1"], token=token)
                self.assert_ok(res, f"psql with a {kind} token")
                self.assertEqual(res.stdout.strip(), "1")

    def test_psql_prepared_statement(self):
        res = self.psql(["-Atq",
                         "-c", "PREPARE by_id(int) AS SELECT label, price FROM items WHERE id = $1",
                         "-c", "EXECUTE by_id(7)",
                         "-c", "EXECUTE by_id(999)",
                         "-c", "SELECT name FROM pg_prepared_statements"])
        self.assert_ok(res, "psql PREPARE/EXECUTE")
        self.assertEqual(res.stdout.split("\n")[:3], ["item 7|10.50", "item 999|1498.50", "by_id"])

    def test_psql_copy_in_and_out(self):
        tmp = tempfile.mkdtemp(prefix="agentgate-matrix-")
        try:
            src = os.path.join(tmp, "in.tsv")
            out = os.path.join(tmp, "out.tsv")
            rows = 5000
            with open(src, "w") as f:
                for i in range(1, rows + 1):
                    if i % 7 == 0:
                        label = "\\N"                  # NULL
                    elif i % 5 == 0:
                        label = "tab\\there"           # an escaped tab
                    else:
                        label = f"ü row {i}"
                    f.write(f"{i}\t{label}\n")
            res = self.psql(["-q",
                             "-c", "TRUNCATE copy_in",
                             "-c", f"\\copy copy_in FROM '{src}'",
                             "-c", f"\\copy (SELECT * FROM copy_in ORDER BY id) TO '{out}'"])
            self.assert_ok(res, "psql \\copy")
            with open(src, "rb") as a, open(out, "rb") as b:
                self.assertEqual(a.read(), b.read(), "\\copy out differs from \\copy in")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_psql_cancel_with_sigint(self):
        dsn = self.gw.tls_dsn(self.token, "verify-full")
        proc = subprocess.Popen(["psql", "-X", "-w", "-d", dsn, "-c", "SELECT pg_sleep(10)"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=h.client_env())
        try:
            # SIGINT only once the statement runs: before that psql would just exit.
            running = ih.wait_until(lambda: self.pg.admin_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query = 'SELECT pg_sleep(10)'").strip() == "1", timeout_s=8, interval_s=0.2)
            self.assertTrue(running, "pg_sleep(10) did not start through the gateway")
            time.sleep(0.3)
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)  # psql sends a CancelRequest
            out, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        elapsed = time.monotonic() - started  # from SIGINT to psql's exit
        self.assertIn(CANCEL_TEXT, err, f"stdout:\n{out}\nstderr:\n{err}\n"
                                        f"gateway log:\n{self.gateway_log()}")
        self.assertLess(elapsed, CANCEL_SECONDS_MAX - 1)

    def test_psql_expired_token_refused(self):
        for sslmode in ("require", "verify-full"):
            with self.subTest(sslmode=sslmode):
                res = self.psql(["-Atc", "SELECT 1"], token=self.expired, sslmode=sslmode)
                self.assertNotEqual(res.returncode, 0, res.stdout)
                self.assert_refused_text(res.stderr, f"psql sslmode={sslmode}")

    # -- pgbench --------------------------------------------------------------

    def pgbench(self, args, token=None, sslmode="require", timeout=300):
        env = h.client_env(token or self.token, {"PGSSLMODE": sslmode})
        if sslmode.startswith("verify"):
            env["PGSSLROOTCERT"] = self.world.pki["ca_cert"]
        tmp = tempfile.mkdtemp(prefix="agentgate-pgbench-")
        try:
            cmd = ["pgbench", "-h", self.gw.host, "-p", str(self.gw.port), "-U",
                   self.gw.client_user]
            return subprocess.run(cmd + list(args) + [self.pg.database], capture_output=True,
                                  text=True, timeout=timeout, env=env, cwd=tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_pgbench_protocols(self):
        # Initialised through the gateway too: pgbench -i loads with COPY.
        res = self.pgbench(["-i", "-s", "1", "-q"])
        self.assert_ok(res, "pgbench -i")
        clients, per_client = 4, 50
        for mode, sslmode in (("simple", "require"), ("extended", "require"),
                              ("prepared", "verify-full")):
            with self.subTest(mode=mode):
                res = self.pgbench(["-M", mode, "-c", str(clients), "-j", "2",
                                    "-t", str(per_client), "-n"], sslmode=sslmode)
                self.assert_ok(res, f"pgbench -M {mode}")
                total = clients * per_client
                self.assertIn(f"number of transactions actually processed: {total}/{total}",
                              res.stdout)
                self.assertRegex(res.stdout, r"number of failed transactions: 0 \(")

    def test_pgbench_expired_token_refused(self):
        res = self.pgbench(["-S", "-t", "1", "-n"], token=self.expired)
        self.assertNotEqual(res.returncode, 0, res.stdout)
        self.assert_refused_text(res.stderr, "pgbench")

    # -- psycopg2 -------------------------------------------------------------

    def test_psycopg2(self):
        import psycopg2
        import psycopg2.errors
        conn = psycopg2.connect(self.gw.tls_dsn(self.tokens["ec"], "verify-full"))
        try:
            cur = conn.cursor()
            cur.execute("SELECT current_user, %s::int + 1, %s::text", (41, "grüße"))
            self.assertEqual(cur.fetchone(), (self.pg.user, 42, "grüße"))
            # Prepared statement via SQL and a parameterized query.
            cur.execute("PREPARE p2(int) AS SELECT label FROM items WHERE id = $1")
            cur.execute("EXECUTE p2(%s)", (3,))
            self.assertEqual(cur.fetchone(), ("item 3",))
            conn.commit()
            # Server-side cursor.
            with conn.cursor(name="big") as ss:
                ss.itersize = 1000
                ss.execute("SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g")
                n = s = 0
                for g, _ in ss:
                    n += 1
                    s += g
            self.assertEqual((n, s), (20000, 20000 * 20001 // 2))
            conn.commit()
            # COPY in and out.
            import io
            data = "".join(f"{i}\tpsycopg2 {i}\n" for i in range(1, 3001))
            cur.execute("CREATE TEMP TABLE p2_copy (id int, label text)")
            cur.copy_expert("COPY p2_copy FROM STDIN", io.StringIO(data))
            buf = io.StringIO()
            cur.copy_expert("COPY (SELECT * FROM p2_copy ORDER BY id) TO STDOUT", buf)
            self.assertEqual(buf.getvalue(), data)
            conn.commit()
            # Cancel from another thread.
            timer = threading.Timer(1.0, conn.cancel)
            started = time.monotonic()
            timer.start()
            try:
                with self.assertRaises(psycopg2.errors.QueryCanceled):
                    cur.execute("SELECT pg_sleep(10)")
            finally:
                timer.join()
            self.assertLess(time.monotonic() - started, CANCEL_SECONDS_MAX)
            conn.rollback()
            cur.execute("SELECT 7")
            self.assertEqual(cur.fetchone(), (7,))
        finally:
            conn.close()
        with self.assertRaises(psycopg2.OperationalError) as ctx:
            psycopg2.connect(self.gw.tls_dsn(self.expired, "verify-full"))
        self.assert_refused_text(str(ctx.exception), "psycopg2")

    # -- psycopg 3 ------------------------------------------------------------

    def test_psycopg3(self):
        import psycopg
        from psycopg import errors
        conn = psycopg.connect(self.gw.tls_dsn(self.tokens["ed25519"], "verify-full"))
        try:
            row = conn.execute("SELECT current_user, %s::int * 2, %s", (21, "π")).fetchone()
            self.assertEqual(row, (self.pg.user, 42, "π"))
            # Server-side prepared statement (prepare=True: Parse once, Bind many).
            for i in range(5):
                got = conn.execute("SELECT label FROM items WHERE id = %s", (i + 1,),
                                   prepare=True).fetchone()
                self.assertEqual(got, (f"item {i + 1}",))
            names = conn.execute("SELECT count(*) FROM pg_prepared_statements "
                                 "WHERE statement LIKE 'SELECT label FROM items%%'").fetchone()
            self.assertEqual(names, (1,))
            conn.commit()
            # COPY in and out, row by row.
            with conn.cursor() as cur:
                cur.execute("CREATE TEMP TABLE p3_copy (id int, label text)")
                with cur.copy("COPY p3_copy (id, label) FROM STDIN") as copy:
                    for i in range(1, 3001):
                        copy.write_row((i, None if i % 10 == 0 else f"psycopg3\t{i}"))
                with cur.copy("COPY (SELECT id, label FROM p3_copy ORDER BY id) TO STDOUT") as copy:
                    copy.set_types(["int4", "text"])
                    back = list(copy.rows())
            self.assertEqual(back, [(i, None if i % 10 == 0 else f"psycopg3\t{i}")
                                    for i in range(1, 3001)])
            conn.commit()
            # Pipeline mode: many statements, one round trip per sync.
            with conn.pipeline():
                conn.execute("CREATE TEMP TABLE p3_pipe (n int)")
                for i in range(50):
                    conn.execute("INSERT INTO p3_pipe VALUES (%s)", (i,))
                cur = conn.execute("SELECT count(*), sum(n) FROM p3_pipe")
            self.assertEqual(cur.fetchone(), (50, sum(range(50))))
            conn.commit()
            # An error inside a pipeline aborts the rest up to the sync; the
            # session stays usable.
            with self.assertRaises(errors.UndefinedTable):
                with conn.pipeline():
                    conn.execute("SELECT 1")
                    conn.execute("SELECT * FROM no_such_table")
                    conn.execute("SELECT 2")
            conn.rollback()
            self.assertEqual(conn.execute("SELECT 3").fetchone(), (3,))
            # Cancel from another thread.
            timer = threading.Timer(1.0, conn.cancel)
            started = time.monotonic()
            timer.start()
            try:
                with self.assertRaises(errors.QueryCanceled):
                    conn.execute("SELECT pg_sleep(10)")
            finally:
                timer.join()
            self.assertLess(time.monotonic() - started, CANCEL_SECONDS_MAX)
            conn.rollback()
            self.assertEqual(conn.execute("SELECT 4").fetchone(), (4,))
        finally:
            conn.close()
        with self.assertRaises(psycopg.OperationalError) as ctx:
            psycopg.connect(self.gw.tls_dsn(self.expired, "verify-full"))
        self.assert_refused_text(str(ctx.exception), "psycopg 3")

    # -- Java JDBC and node-postgres: programs in tests/clients -----------------

    def client_env(self, token):
        env = h.client_env()
        env.update(AG_HOST=self.gw.host, AG_PORT=str(self.gw.port), AG_DATABASE=self.pg.database,
                   AG_USER="agent", AG_TOKEN=token, AG_EXPIRED_TOKEN=self.expired,
                   AG_CA_FILE=self.world.pki["ca_cert"], AG_REFUSED_SQLSTATE=ih.REFUSED_SQLSTATE,
                   AG_REFUSED_PREFIX=ih.REFUSED_PREFIX)
        return env

    def assert_program_passed(self, res, what):
        self.assertEqual(res.returncode, 0,
                         f"{what} failed rc={res.returncode}\nstdout:\n{res.stdout}\n"
                         f"stderr:\n{res.stderr[-4000:]}\ngateway log:\n{self.gateway_log()}")
        self.assertNotIn("FAIL", res.stdout, res.stdout)
        sys.stderr.write(res.stdout)

    def test_java_jdbc(self):
        for tool in ("javac", "java"):
            self.assertIsNotNone(shutil.which(tool), f"{tool} not found: run scripts/install-deps")
        self.assertTrue(os.path.exists(JDBC_JAR),
                        f"{JDBC_JAR} missing: run scripts/install-deps (libpostgresql-jdbc-java)")
        out = tempfile.mkdtemp(prefix="agentgate-jdbc-")
        try:
            res = subprocess.run(["javac", "-cp", JDBC_JAR, "-d", out,
                                  os.path.join(CLIENTS_DIR, "java", "JdbcMatrix.java")],
                                 capture_output=True, text=True, timeout=180)
            self.assertEqual(res.returncode, 0, f"javac failed:\n{res.stdout}\n{res.stderr}")
            res = subprocess.run(["java", "-cp", f"{out}:{JDBC_JAR}", "JdbcMatrix"],
                                 capture_output=True, text=True, timeout=180,
                                 env=self.client_env(self.tokens["rsa"]))
            self.assert_program_passed(res, "JdbcMatrix")
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def test_node_postgres(self):
        self.assertIsNotNone(shutil.which("node"), "node not found: run scripts/install-deps")
        node_dir = os.path.join(CLIENTS_DIR, "node")
        self.assertTrue(os.path.isdir(os.path.join(node_dir, "node_modules", "pg")),
                        f"{node_dir}/node_modules/pg missing: run scripts/install-deps")
        res = subprocess.run(["node", "matrix.js"], cwd=node_dir, capture_output=True,
                             text=True, timeout=180, env=self.client_env(self.tokens["ec"]))
        self.assert_program_passed(res, "node matrix.js")


if __name__ == "__main__":
    h.main()
