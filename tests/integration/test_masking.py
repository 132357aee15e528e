"""Masking through the gateway, end to end: a real PostgreSQL 15 holding fake
PII, a policy with detectors, column rules (by name and by table) and a
pattern, and real clients (psql, psycopg2, JDBC) reading the rewritten
results, so the rewritten framing is proven by real parsers.

Covered: DataRow in text and binary format (JDBC switches to binary after
prepareThreshold executions), integer columns keeping their type, NULL
style, COPY TO STDOUT in text and CSV, PII inside an error's detail, NOTIFY
payloads, a value bigger than one network read, a row bigger than
masked_row_bytes_max (fail closed), and the counters in /metrics."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JDBC_JAR = "/usr/share/java/postgresql.jar"

CARD = "4111 1111 1111 1111"
CARD_DASHED = "5500-0000-0000-0004"
CARD_NUMBER = 4012888888881881  # Luhn-valid, stored as bigint
EMAIL = "alice.smith@example.com"
SSN = "123-45-6789"
PHONE = "+1 415 555 2671"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET = "hunter2-very-secret"
EMPLOYEE = "EMP-004217"

RAW = [CARD, CARD.replace(" ", ""), CARD_DASHED, str(CARD_NUMBER), EMAIL, SSN, AWS_KEY, SECRET, EMPLOYEE]

POLICY = {
    "default_action": "allow",
    "rules": [],
    "masking": {
        "detectors": {"credit_card": "partial", "email": "partial", "us_ssn": "redact",
                      "phone": "partial", "aws_access_key": "redact"},
        "columns": [
            {"name": "(?i)^password", "style": "redact"},
            {"table": "public.vault", "name": ".*", "style": "null"},
        ],
        "patterns": [{"name": "employee_id", "regex": "EMP-[0-9]{6}", "style": "hash"}],
    },
}


class MaskingTest(h.GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="agentgate-mask-")
        cls.admin_token = secrets.token_hex(16)
        cls.admin_port = h.free_port()
        token_file = os.path.join(cls.dir, "admin-token")
        with open(token_file, "w") as f:
            f.write(cls.admin_token + "\n")
        key_file = os.path.join(cls.dir, "hash.key")
        with open(key_file, "w") as f:
            f.write(secrets.token_hex(32))
        policy = json.loads(json.dumps(POLICY))
        policy["masking"]["hash_key_file"] = key_file
        policy_file = os.path.join(cls.dir, "policy.json")
        with open(policy_file, "w") as f:
            json.dump(policy, f)
        cls.gateway_options = {
            "shards": 2,
            "limits": {"masked_row_bytes_max": 1 << 20},
            "extra": {"policy_file": policy_file,
                      "admin": {"listen": f"127.0.0.1:{cls.admin_port}", "token_file": token_file}},
        }
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def prepare_database(cls):
        with cls.pg.connect() as conn, conn.cursor() as cur:
            cur.execute("""
                CREATE TABLE customers (
                  id int PRIMARY KEY, name text, email text UNIQUE, phone text, card text,
                  card_number bigint, ssn text, password_hash text, note text,
                  created_at timestamptz, balance numeric(12,2), active boolean, ref uuid);
                CREATE TABLE vault (id int, secret_key text, pin int);
                CREATE TABLE plain (id int, v text);
            """)
            cur.execute(
                "INSERT INTO customers VALUES (1, 'Alice Smith', %s, %s, %s, %s, %s, %s, %s,"
                " '2024-01-15 10:30:00+00', 1234.50, true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
                (EMAIL, PHONE, CARD, CARD_NUMBER, SSN, SECRET, f"key {AWS_KEY} for {EMPLOYEE}"))
            cur.execute(
                "INSERT INTO customers VALUES (2, 'Bob', 'bob@example.org', NULL, %s, NULL, NULL, NULL,"
                " 'order 1234567890123 shipped; isbn 978-0-306-40615-7', '2024-02-01', 9.99, false, NULL)",
                (CARD_DASHED,))
            cur.execute("INSERT INTO vault VALUES (1, 'top-secret-key', 4242)")
            cur.execute("INSERT INTO plain SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
            conn.commit()

    def assert_no_raw(self, text, what):
        for raw in RAW:
            self.assertNotIn(raw, text, f"{what}: raw value {raw!r} leaked:\n{text[:3000]}")

    # -- psql ------------------------------------------------------------------

    def test_psql_select_is_masked(self):
        res = self.psql_gw(["-A", "-t", "-F", "|", "-c",
                            "SELECT id, email, phone, card, card_number, ssn, password_hash, note,"
                            " created_at, balance, active, ref FROM customers ORDER BY id"], check=True)
        out = res.stdout
        self.assert_no_raw(out, "psql")
        rows = [line.split("|") for line in out.strip().splitlines()]
        self.assertEqual(len(rows), 2, out)
        alice = rows[0]
        self.assertTrue(alice[1].endswith("@example.com"), alice[1])      # partial keeps the domain
        self.assertTrue(alice[2].endswith("2671"), alice[2])              # partial keeps last 4
        self.assertTrue(alice[3].endswith("1111"), alice[3])
        self.assertEqual(alice[4], "1881")                                 # bigint stays a canonical number
        self.assertIn("REDACTED", alice[5])                                # ssn: redact
        self.assertIn("REDACTED", alice[6])                                # password column rule
        self.assertIn("hash:", alice[7])                                   # employee id pattern
        self.assertEqual(alice[8], "2024-01-15 10:30:00+00")               # timestamps untouched
        self.assertEqual(alice[9], "1234.50")
        self.assertEqual(alice[10], "t")
        self.assertEqual(alice[11], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        bob = rows[1]
        self.assertTrue(bob[1].endswith("@example.org"))
        # Near misses stay as they are: an order id, an ISBN.
        self.assertIn("order 1234567890123 shipped; isbn 978-0-306-40615-7", bob[7])

    def test_hash_is_stable_across_sessions(self):
        a = self.psql_gw(["-A", "-t", "-c", "SELECT note FROM customers WHERE id = 1"], check=True).stdout
        b = self.psql_gw(["-A", "-t", "-c", "SELECT note FROM customers WHERE id = 1"], check=True).stdout
        self.assertEqual(a, b)
        self.assertIn("hash:", a)

    def test_table_rule_applies_through_an_alias(self):
        res = self.psql_gw(["-A", "-t", "-F", "|", "-c",
                            "SELECT v.secret_key AS k, v.pin AS p, v.id FROM vault v"], check=True)
        fields = res.stdout.strip().split("|")
        self.assertEqual(fields[0], "", res.stdout)   # NULL
        self.assertEqual(fields[1], "", res.stdout)   # NULL: an int column masked by a rule
        self.assertEqual(fields[2], "", res.stdout)   # the rule's name regex matches every column
        self.assertNotIn("top-secret-key", res.stdout)

    def test_unmasked_rows_equal_a_direct_connection(self):
        args = ["-c", "SELECT * FROM plain ORDER BY id"]
        self.assert_same_output(self.psql_gw(args), self.psql_direct(args), "plain table")

    def test_copy_to_stdout_text_and_csv(self):
        for fmt in ("text", "csv"):
            res = self.psql_gw(["-c", f"COPY (SELECT id, email, card, ssn FROM customers ORDER BY id) "
                                      f"TO STDOUT WITH (FORMAT {fmt})"], check=True)
            self.assert_no_raw(res.stdout, f"COPY {fmt}")
            lines = res.stdout.strip().splitlines()
            self.assertEqual(len(lines), 2, res.stdout)
            sep = "\t" if fmt == "text" else ","
            self.assertEqual(len(lines[0].split(sep)), 4, lines[0])

    def test_binary_copy_is_refused(self):
        res = self.psql_gw(["-c", "COPY customers TO STDOUT WITH (FORMAT binary)"], binary=True)
        self.assertNotEqual(res.returncode, 0)
        self.assertNotIn(CARD.encode(), res.stdout)
        self.assertIn(b"binary COPY", res.stderr)

    def test_error_detail_is_masked(self):
        res = self.psql_gw(["-c", f"INSERT INTO customers (id, email) VALUES (99, '{EMAIL}')"])
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("duplicate key", res.stderr)
        self.assertNotIn(EMAIL, res.stderr)
        self.assertIn("@example.com", res.stderr)

    def test_value_bigger_than_a_network_read(self):
        sql = (f"SELECT repeat('x', 70000) || ' {CARD} ' || repeat('y', 200000) AS big, "
               f"'{EMAIL}' AS e")
        res = self.psql_gw(["-A", "-t", "-F", "|", "-c", sql], check=True)
        self.assert_no_raw(res.stdout, "big value")
        big, e = res.stdout.rstrip("\n").split("|")
        self.assertTrue(big.startswith("x" * 70000 + " "))
        self.assertTrue(big.endswith(" " + "y" * 200000))
        middle = big[70001:-200001]
        self.assertNotEqual(middle, CARD)
        self.assertTrue(middle.endswith("1111"), middle)
        self.assertTrue(e.endswith("@example.com"), e)

    def test_row_bigger_than_the_bound_fails_closed(self):
        res = self.psql_gw(["-c", "SELECT repeat('z', 2000000)"])
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("masked_row_bytes_max", res.stderr)
        self.assertNotIn("zzzzzzzzzz", res.stdout)
        self.psql_gw(["-c", "SELECT 1"], check=True)  # other sessions are fine

    # -- psycopg2 --------------------------------------------------------------

    def test_psycopg2_types_still_parse(self):
        import psycopg2
        conn = self.gw.connect()
        try:
            cur = conn.cursor()
            cur.execute("SELECT card_number, email, created_at, balance, active FROM customers WHERE id = 1")
            card_number, email, created_at, balance, active = cur.fetchone()
            self.assertIsInstance(card_number, int)
            self.assertEqual(card_number % 10000, 1881)
            self.assertNotEqual(card_number, CARD_NUMBER)
            self.assertTrue(email.endswith("@example.com"))
            self.assertNotEqual(email, EMAIL)
            self.assertEqual(created_at.year, 2024)
            self.assertEqual(str(balance), "1234.50")
            self.assertIs(active, True)
            cur.execute("SELECT secret_key, pin FROM vault")
            self.assertEqual(cur.fetchone(), (None, None))
            # Server-side cursor: rows arrive through FETCH in several batches.
            named = conn.cursor(name="c1")
            named.itersize = 100
            named.execute("SELECT id, email FROM customers ORDER BY id")
            rows = list(named)
            self.assertEqual(len(rows), 2)
            self.assertNotIn(EMAIL, repr(rows))
            conn.rollback()
        finally:
            conn.close()

    def test_notification_payload_is_masked(self):
        import select
        listener = self.gw.connect()
        sender = self.gw.connect()
        try:
            listener.autocommit = True
            sender.autocommit = True
            listener.cursor().execute("LISTEN agent_events")
            sender.cursor().execute("SELECT pg_notify('agent_events', %s)", (f"user {EMAIL} paid with {CARD}",))
            deadline = 50
            while not listener.notifies and deadline > 0:
                select.select([listener], [], [], 0.1)
                listener.poll()
                deadline -= 1
            self.assertTrue(listener.notifies, "no notification arrived")
            payload = listener.notifies[0].payload
            self.assertNotIn(EMAIL, payload)
            self.assertNotIn(CARD, payload)
            self.assertIn("@example.com", payload)
        finally:
            listener.close()
            sender.close()

    # -- JDBC: extended protocol, binary transfer after prepareThreshold -------

    def test_jdbc_reads_masked_rows(self):
        for tool in ("javac", "java"):
            self.assertIsNotNone(shutil.which(tool), f"{tool} not found: run scripts/install-deps")
        self.assertTrue(os.path.exists(JDBC_JAR), f"{JDBC_JAR} missing: run scripts/install-deps")
        out = tempfile.mkdtemp(prefix="agentgate-jdbc-mask-")
        try:
            src = os.path.join(REPO, "tests", "clients", "java", "JdbcMasking.java")
            res = subprocess.run(["javac", "-cp", JDBC_JAR, "-d", out, src], capture_output=True, text=True)
            self.assertEqual(res.returncode, 0, f"javac failed:\n{res.stdout}\n{res.stderr}")
            url = f"jdbc:postgresql://127.0.0.1:{self.gw.port}/{self.pg.database}?sslmode=disable&prepareThreshold=2"
            res = subprocess.run(["java", "-cp", f"{out}:{JDBC_JAR}", "JdbcMasking", url, "agent", "x"],
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(res.returncode, 0, f"JdbcMasking failed:\n{res.stdout}\n{res.stderr}\n"
                                                f"{self.gw.stderr_text()[-3000:]}")
            self.assert_no_raw(res.stdout, "JDBC")
            lines = res.stdout.strip().splitlines()
            # Five executions of one prepared statement: the later ones use
            # a named statement and binary transfer; all must read the same.
            self.assertEqual(len(lines), 5, res.stdout)
            self.assertEqual(len(set(lines)), 1, res.stdout)
            card_number, email, pin, created = lines[0].split("|")
            self.assertEqual(int(card_number) % 10000, 1881)
            self.assertTrue(email.endswith("@example.com"))
            self.assertEqual(created, "2024-01-15")
        finally:
            shutil.rmtree(out, ignore_errors=True)

    # -- metrics ----------------------------------------------------------------

    def test_metrics_count_matches(self):
        self.psql_gw(["-c", "SELECT email FROM customers"], check=True)
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}/metrics",
                                     headers={"Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
        hits = [line for line in text.splitlines()
                if line.startswith("agentgate_mask_matches_total") and 'detector="email"' in line]
        self.assertTrue(hits, text[:2000])
        self.assertGreater(sum(int(line.rsplit(" ", 1)[1]) for line in hits), 0)
        masked = [line for line in text.splitlines() if line.startswith("agentgate_masked_values_total")]
        self.assertGreater(sum(int(line.rsplit(" ", 1)[1]) for line in masked), 0)


if __name__ == "__main__":
    h.main()
