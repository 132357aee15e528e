"""Masking through the gateway, end to end: a real PostgreSQL 15 holding fake
PII, a policy with detectors, column rules (by name and by table) and a
pattern, and real clients (psql, psycopg2, JDBC) reading the rewritten
results, so the rewritten framing is proven by real parsers.

Covered: DataRow in text and binary format (JDBC switches to binary after
prepareThreshold executions), integer columns keeping their type, NULL
style, COPY TO STDOUT in text and CSV, PII inside an error's detail, NOTIFY
payloads, a value bigger than one network read, rows and COPY rows bigger
than masked_row_bytes_max (masked in place as they stream, in bounded
memory), and the counters in /metrics."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
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


def policy_with_hash_key(directory):
    """POLICY with a fresh hash key written in directory."""
    key_file = os.path.join(directory, "hash.key")
    with open(key_file, "w") as f:
        f.write(secrets.token_hex(32))
    policy = json.loads(json.dumps(POLICY))
    policy["masking"]["hash_key_file"] = key_file
    return policy


class MaskingTest(h.GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        cls.gateway_options = {
            "shards": 2,
            "limits": {"masked_row_bytes_max": 1 << 20},
            "extra": h.admin_setup(cls, "agentgate-mask-", policy_with_hash_key),
        }
        super().setUpClass()

    @classmethod
    def prepare_database(cls):
        with cls.pg.connect() as conn, conn.cursor() as cur:
            cur.execute("""
                CREATE TABLE customers (
                  id int PRIMARY KEY, name text, email text UNIQUE, phone text, card text,
                  card_number bigint, ssn text, password_hash text, note text,
                  created_at timestamptz, balance numeric(12,2), active boolean, ref uuid);
                CREATE TABLE vault (id int, secret_key text, pin int, opened date);
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
            cur.execute("INSERT INTO vault VALUES (1, 'top-secret-key', 4242, '2020-02-02')")
            cur.execute("INSERT INTO plain SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
            cur.execute("CREATE TABLE bigcopy (id int, v text)")
            cur.execute("INSERT INTO bigcopy SELECT 1, repeat('x', 1500000) || %s || repeat('y', 100) || %s",
                        (f" {CARD} ", f" {EMAIL}"))
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
            # A table's columns: under column rules a COPY of a query is refused
            # (test_catalog_attacks.py).
            res = self.psql_gw(["-c", f"COPY customers (id, email, card, ssn) "
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

    def test_row_bigger_than_the_bound_is_masked_as_it_streams(self):
        # masked_row_bytes_max is 1 MiB here: a 3 MB row streams through in
        # pieces and is masked in place, its lengths as sent.
        masked_card = "**** **** **** 1111"
        masked_email = "*" * len("alice.smith") + "@example.com"
        # The value starts 11 bytes into the DataRow (header, field count,
        # length): cards that cross 64 KiB boundaries of the frame, and of
        # the value, and a card and an email near the middle.
        parts, want, at = [], [], 0

        def fill(upto, ch):
            nonlocal at
            if upto > at:
                parts.append(f"repeat('{ch}', {upto - at})")
                want.append(ch * (upto - at))
                at = upto

        def put(raw, masked):
            nonlocal at
            parts.append(f"'{raw}'")
            want.append(masked)
            at += len(raw)

        for boundary in (65536 - 11 - 9, 65536 - 9, 2 * 65536 - 11 - 3, 20 * 65536 - 11 - 10):
            fill(boundary - 1, "a")
            put(f" {CARD} ", f" {masked_card} ")
        fill(1500000, "m")
        put(f" {EMAIL} {CARD} ", f" {masked_email} {masked_card} ")
        fill(3000000, "z")
        big_sql = " || ".join(parts)
        sql = f"SELECT {big_sql} AS big, 'bob@example.org' AS e, {CARD_NUMBER}::bigint AS n"

        res = self.psql_gw(["-A", "-t", "-F", "|", "-c", sql], check=True)
        self.assertNotIn(CARD, res.stdout)
        self.assertNotIn(EMAIL, res.stdout)
        big, e, n = res.stdout.rstrip("\n").split("|")
        expected = "".join(want)
        self.assertEqual(len(big), len(expected))
        self.assertTrue(big == expected, "the streamed value differs from the expected masking")
        self.assertEqual(e, "***@example.org")     # length kept: the local part becomes '*'
        self.assertEqual(n, "0000000000001881")    # same width, digits zeroed but the last four

        # Memory: a row 40 times the bound costs the gateway no more than a
        # few pieces (allocator and socket buffers make RSS noisy by several
        # MiB; holding the row would cost 40 MB and more).
        row_bytes = 40_000_000
        for _ in range(2):  # warm up: the shards' allocator arenas, buffers
            self.psql_gw(["-A", "-t", "-c", f"SELECT repeat('w', {row_bytes // 10}) || ' {CARD}'"], check=True)
        sql = f"SELECT repeat('w', {row_bytes}) || ' {CARD}'"
        stdout, stderr, code, growth = self.psql_rss(["-A", "-t", "-c", sql])
        self.assertEqual(code, 0, stderr)
        self.assertEqual(len(stdout), row_bytes + 1 + len(CARD) + 1)
        self.assertTrue(stdout.endswith(" " + masked_card + "\n"), stdout[-100:])
        print(f"\nagentgate RSS growth while streaming a {row_bytes // 1000000} MB masked row: "
              f"{growth >> 10} KiB", file=sys.stderr)
        self.assertLess(growth, 16 << 20, f"gateway RSS grew by {growth >> 10} KiB for one streamed row")
        self.psql_gw(["-c", "SELECT 1"], check=True)  # the session and the gateway are fine

    def psql_rss(self, args):
        """Runs psql through the gateway; (stdout, stderr, returncode, peak RSS growth of the gateway)."""
        pid = self.gw.pid
        baseline = h.process_rss_bytes(pid)
        peak = baseline
        proc = subprocess.Popen(["psql", "-X", "-w", "-d", self.gw.dsn()] + args, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=h.client_env(None))
        outs = []
        reader = threading.Thread(target=lambda: outs.append(proc.communicate(timeout=120)))
        reader.start()
        while reader.is_alive():
            peak = max(peak, h.process_rss_bytes(pid))
            reader.join(0.005)
        stdout, stderr = outs[0]
        return stdout, stderr, proc.returncode, peak - baseline

    def test_copy_row_bigger_than_the_bound_is_masked(self):
        sql = "COPY bigcopy TO STDOUT"
        res = self.psql_gw(["-c", sql], check=True)
        self.assertNotIn(CARD, res.stdout)
        self.assertNotIn(EMAIL, res.stdout)
        row = res.stdout.rstrip("\n")
        self.assertEqual(len(row), 2 + 1500000 + 21 + 100 + 1 + len(EMAIL))
        self.assertTrue(row.endswith(" **** **** **** 1111 " + "y" * 100 + " ***********@example.com"), row[-200:])

    def test_column_rules_on_a_streamed_row(self):
        # Column rules keep the row's length: text is filled with '*', an
        # integer keeps its width with its digits zeroed (style null here).
        pad = "repeat('z', 2000000)"
        res = self.psql_gw(["-A", "-t", "-F", "|", "-c", f"SELECT {pad} AS pad, v.secret_key, v.pin FROM vault v"],
                           check=True)
        pad_out, key, pin = res.stdout.rstrip("\n").split("|")
        self.assertEqual(pad_out, "z" * 2000000)
        self.assertEqual(key, "*" * len("top-secret-key"))
        self.assertEqual(pin, "0000")
        # A date has no masked form of its own length: fail closed.
        res = self.psql_gw(["-c", f"SELECT {pad} AS pad, v.opened FROM vault v"])
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("masked_row_bytes_max", res.stderr)
        self.assertNotIn("2020-02-02", res.stdout)
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
