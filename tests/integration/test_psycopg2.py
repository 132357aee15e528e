#!/usr/bin/python3
"""psycopg2 (libpq) through agentgate behaves exactly like a direct connection."""

import datetime
import decimal
import hashlib
import io
import os
import select
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

import psycopg2  # noqa: E402
import psycopg2.errors  # noqa: E402
import psycopg2.extensions  # noqa: E402

BIG_ROWS = 100_000


class Psycopg2Test(h.GatewayTestCase):
    gateway_options = {"shards": 2}

    @classmethod
    def prepare_database(cls):
        with cls.pg.connect() as conn, conn.cursor() as cur:
            cur.execute("""
                CREATE TABLE items (id int PRIMARY KEY, name text UNIQUE, price numeric(10,2),
                                    note text, payload bytea, made timestamptz);
                INSERT INTO items
                SELECT g, 'item-' || g, g * 0.25, CASE WHEN g % 3 = 0 THEN NULL ELSE
                       E'note\\t' || g || E'\\n' END, decode(md5(g::text), 'hex'),
                       timestamptz '2023-06-01 12:00:00+00' + g * interval '1 second'
                FROM generate_series(1, 1000) g;
                CREATE TABLE copy_target (LIKE items);
            """)
        conn.close()

    def setUp(self):
        super().setUp()
        self.gconn = self.gw.connect()
        self.dconn = self.pg.connect()

    def tearDown(self):
        self.gconn.close()
        self.dconn.close()

    def both(self, sql, params=None):
        out = []
        for conn in (self.gconn, self.dconn):
            with conn.cursor() as cur:
                cur.execute(sql, params)
                desc = [(d.name, d.type_code) for d in cur.description] if cur.description else None
                rows = cur.fetchall() if cur.description else None
                out.append((desc, rows, cur.rowcount, cur.statusmessage))
            conn.rollback()
        return out

    def test_parameters(self):
        params = (41, 1, "it's \"quoted\" \\ ✓", decimal.Decimal("12345678901234567890.123"),
                  datetime.date(2024, 2, 29), datetime.datetime(2024, 1, 2, 3, 4, 5, 678901),
                  psycopg2.Binary(bytes(range(256))), None, [1, None, 3], True, 1.5e300)
        sql = ("SELECT %s::int + %s, %s::text, %s::numeric, %s::date, %s::timestamp, "
               "%s::bytea, %s::text IS NULL, %s::int[], %s::bool, %s::float8")
        gw, direct = self.both(sql, params)
        self.assertEqual(gw, direct)
        row = gw[1][0]
        self.assertEqual(row[0], 42)
        self.assertEqual(row[1], params[2])
        self.assertEqual(bytes(row[5]), bytes(range(256)))
        self.assertEqual(row[6:], (True, [1, None, 3], True, 1.5e300))

        gw, direct = self.both("SELECT id, name, price, note, payload, made FROM items "
                               "WHERE id = ANY(%s) ORDER BY id", ([1, 3, 500, 999],))
        self.assertEqual([r[0] for r in gw[1]], [1, 3, 500, 999])
        self.assertEqual(
            [(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in gw[1]],
            [(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in direct[1]])

    def test_server_side_cursor(self):
        digests = []
        for conn in (self.gconn, self.dconn):
            sha = hashlib.sha256()
            count = 0
            with conn.cursor(name="big_cursor") as cur:
                cur.itersize = 5000
                cur.execute("SELECT g, md5(g::text), g * 1.5 FROM generate_series(1, %s) g",
                            (BIG_ROWS,))
                while True:
                    rows = cur.fetchmany(7000)
                    if not rows:
                        break
                    count += len(rows)
                    sha.update(repr(rows).encode())
            conn.commit()
            self.assertEqual(count, BIG_ROWS)
            digests.append(sha.hexdigest())
        self.assertEqual(digests[0], digests[1])

    def test_copy_round_trip(self):
        outs = []
        for conn in (self.gconn, self.dconn):
            buf = io.StringIO()
            with conn.cursor() as cur:
                cur.copy_expert("COPY (SELECT * FROM items ORDER BY id) TO STDOUT", buf)
            conn.rollback()
            outs.append(buf.getvalue())
        self.assertEqual(outs[0], outs[1])
        self.assertEqual(outs[0].count("\n"), 1000)

        with self.gconn.cursor() as cur:
            cur.execute("TRUNCATE copy_target")
            cur.copy_expert("COPY copy_target FROM STDIN", io.StringIO(outs[0]))
            self.assertEqual(cur.rowcount, 1000)
        self.gconn.commit()
        with self.dconn.cursor() as cur:
            cur.execute("SELECT count(*) FROM ((TABLE items EXCEPT ALL TABLE copy_target) "
                        "UNION ALL (TABLE copy_target EXCEPT ALL TABLE items)) d")
            self.assertEqual(cur.fetchone()[0], 0)
        self.dconn.rollback()

        # CSV with a header, and a COPY FROM that fails half way.
        buf = io.StringIO()
        with self.gconn.cursor() as cur:
            cur.copy_expert("COPY items (id, name) TO STDOUT WITH (FORMAT csv, HEADER)", buf)
        self.assertTrue(buf.getvalue().startswith("id,name\n"))
        self.gconn.rollback()
        with self.gconn.cursor() as cur:
            with self.assertRaises(psycopg2.errors.InvalidTextRepresentation) as ctx:
                cur.copy_expert("COPY copy_target (id, name) FROM STDIN",
                                io.StringIO("2001\tok\nnope\tbad\n"))
        self.assertEqual(ctx.exception.pgcode, "22P02")
        self.gconn.rollback()
        self.assertEqual(self.both("SELECT 1")[0][1], [(1,)])

    def test_unique_violation(self):
        errors = []
        for conn in (self.gconn, self.dconn):
            with conn.cursor() as cur:
                with self.assertRaises(psycopg2.errors.UniqueViolation) as ctx:
                    cur.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (5000, "item-7"))
            e = ctx.exception
            errors.append((e.pgcode, e.diag.severity, e.diag.message_primary, e.diag.message_detail,
                           e.diag.constraint_name, e.diag.table_name, e.diag.schema_name))
            self.assertEqual(conn.get_transaction_status(),
                             psycopg2.extensions.TRANSACTION_STATUS_INERROR)
            with conn.cursor() as cur:
                with self.assertRaises(psycopg2.errors.InFailedSqlTransaction):
                    cur.execute("SELECT 1")
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM items")
                self.assertEqual(cur.fetchone()[0], 1000)
            conn.rollback()
        self.assertEqual(errors[0][0], "23505")
        self.assertEqual(errors[0], errors[1])

    def test_commit_and_rollback(self):
        with self.gconn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS tx_probe (k text PRIMARY KEY)")
        self.gconn.commit()
        with self.gconn.cursor() as cur:
            cur.execute("INSERT INTO tx_probe VALUES ('rolled-back')")
        self.gconn.rollback()
        with self.gconn.cursor() as cur:
            cur.execute("INSERT INTO tx_probe VALUES ('committed')")
            cur.execute("SAVEPOINT sp")
            cur.execute("INSERT INTO tx_probe VALUES ('to-savepoint')")
            cur.execute("ROLLBACK TO SAVEPOINT sp")
        self.gconn.commit()
        with self.dconn.cursor() as cur:
            cur.execute("SELECT k FROM tx_probe ORDER BY k")
            self.assertEqual(cur.fetchall(), [("committed",)])
        self.dconn.rollback()
        self.gconn.autocommit = True
        with self.gconn.cursor() as cur:
            cur.execute("DROP TABLE tx_probe")
            self.assertEqual(self.gconn.get_transaction_status(),
                             psycopg2.extensions.TRANSACTION_STATUS_IDLE)

    def test_parameter_status_and_notices(self):
        self.gconn.autocommit = True
        self.dconn.autocommit = True
        for conn in (self.gconn, self.dconn):
            with conn.cursor() as cur:
                cur.execute("SET TimeZone TO 'Asia/Kathmandu'")
                cur.execute("SET application_name TO 'probe-app'")
                cur.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
        self.assertEqual(self.gconn.get_parameter_status("TimeZone"), "Asia/Kathmandu")
        self.assertEqual(self.gconn.get_parameter_status("application_name"), "probe-app")
        self.assertEqual(self.gconn.server_version, self.dconn.server_version)
        for key in ("server_encoding", "client_encoding", "DateStyle", "integer_datetimes",
                    "standard_conforming_strings", "is_superuser", "session_authorization"):
            self.assertEqual(self.gconn.get_parameter_status(key),
                             self.dconn.get_parameter_status(key), key)
        self.assertEqual(self.gconn.notices, self.dconn.notices)
        self.assertIn("hello 42", "".join(self.gconn.notices))

    def test_listen_notify(self):
        self.gconn.autocommit = True
        self.dconn.autocommit = True
        with self.gconn.cursor() as cur:
            cur.execute("LISTEN agentgate_chan")
        with self.dconn.cursor() as cur:
            cur.execute("NOTIFY agentgate_chan, 'payload-1'")
        deadline = time.monotonic() + 10
        while not self.gconn.notifies and time.monotonic() < deadline:
            select.select([self.gconn], [], [], 1)
            self.gconn.poll()
        self.assertEqual([n.payload for n in self.gconn.notifies], ["payload-1"])

    def test_cancel(self):
        # libpq's cancel opens a new connection to the gateway with a CancelRequest
        # carrying the BackendKeyData the gateway handed out.
        timer = threading.Timer(1.0, self.gconn.cancel)
        timer.start()
        started = time.monotonic()
        try:
            with self.gconn.cursor() as cur:
                with self.assertRaises(psycopg2.errors.QueryCanceled) as ctx:
                    cur.execute("SELECT pg_sleep(20)")
        finally:
            timer.cancel()
        self.assertEqual(ctx.exception.pgcode, "57014")
        self.assertLess(time.monotonic() - started, 15)
        self.gconn.rollback()
        self.assertEqual(self.both("SELECT 'after cancel'")[0][1], [("after cancel",)])

    def test_many_sessions(self):
        conns = [self.gw.connect() for _ in range(20)]
        try:
            pids = set()
            for i, c in enumerate(conns):
                with c.cursor() as cur:
                    cur.execute("SELECT pg_backend_pid(), %s", (i,))
                    pid, j = cur.fetchone()
                    self.assertEqual(j, i)
                    pids.add(pid)
            self.assertEqual(len(pids), len(conns), "each session has its own upstream backend")
        finally:
            for c in conns:
                c.close()


if __name__ == "__main__":
    h.main()
