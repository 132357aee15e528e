#!/usr/bin/python3
"""psql through agentgate gives byte-identical results to a direct connection."""

import hashlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

COPY_ROWS = 5000


class PsqlTest(h.GatewayTestCase):
    gateway_options = {"shards": 2}

    @classmethod
    def prepare_database(cls):
        # Text that exercises COPY's escaping: tabs, newlines, backslashes, quotes,
        # commas, non-ASCII, empty strings and NULLs.
        res = h.run_psql(cls.pg.dsn(), ["-v", "ON_ERROR_STOP=1", "-q", "-c", f"""
            CREATE TABLE copy_src (id int PRIMARY KEY, label text, amount numeric(12,2),
                                   at timestamptz, blob bytea, tags text[]);
            INSERT INTO copy_src
            SELECT g,
                   CASE g % 7 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN E'tab\\there'
                              WHEN 3 THEN E'line\\nbreak' WHEN 4 THEN E'back\\\\slash "q", c'
                              WHEN 5 THEN 'grüße ✓ 日本' ELSE 'row ' || g END,
                   (g * 1.37)::numeric(12,2),
                   timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
                   decode(md5(g::text), 'hex'),
                   ARRAY['a' || g, NULL, 'z']
            FROM generate_series(1, {COPY_ROWS}) g;
            CREATE TABLE copy_dst (LIKE copy_src);
            CREATE TABLE copy_dst_csv (LIKE copy_src);
        """], password=cls.pg.password)
        if res.returncode != 0:
            raise RuntimeError(res.stderr)

    def both(self, args, **kw):
        return self.psql_gw(args, **kw), self.psql_direct(args, **kw)

    def test_simple_query(self):
        gw, direct = self.both(["-c", "SELECT 1 AS one, 'hello'::text AS greeting"])
        self.assert_same_output(gw, direct, "simple query")
        self.assertEqual(gw.returncode, 0, gw.stderr)
        self.assertIn("hello", gw.stdout)

    def test_any_client_user_name(self):
        for user in ("agent", "someone_else", "Mixed Case"):
            res = h.run_psql(self.gw.dsn(user=user), ["-Atc", "SELECT current_user"])
            self.assertEqual(res.returncode, 0, f"user {user!r}: {res.stderr}")
            self.assertEqual(res.stdout.strip(), self.pg.user)

    def test_several_statements_in_one_query_string(self):
        sql = ("CREATE TEMP TABLE t (a int, b text, c numeric, d date); "
               "INSERT INTO t VALUES (1, 'one', 1.5, '2024-02-29'), (2, NULL, -0.001, NULL), "
               "(3, 'ünïcødé', 1e20, 'infinity'); "
               "SELECT * FROM t ORDER BY a; "
               "UPDATE t SET b = upper(b) WHERE a <> 2; "
               "SELECT a, b FROM t ORDER BY a DESC; "
               "SELECT count(*), sum(c) FROM t")
        gw, direct = self.both(["-c", sql])
        self.assert_same_output(gw, direct, "multi-statement -c")
        self.assertEqual(gw.returncode, 0, gw.stderr)
        self.assertIn(" ONE", gw.stdout)
        # Several -c options, each its own simple Query, in one session.
        args = ["-c", "SET search_path TO pg_catalog", "-c", "SHOW search_path",
                "-c", "SELECT 1; SELECT 2;", "-c", "SELECT typname FROM pg_type WHERE oid = 23"]
        gw, direct = self.both(args)
        self.assert_same_output(gw, direct, "several -c")

    def test_notices_and_meta_commands(self):
        script = ("DO $$ BEGIN RAISE NOTICE 'notice from %', 'plpgsql'; "
                  "RAISE WARNING 'a warning'; END $$;\n"
                  "\\d copy_src\n"
                  "\\dt\n"
                  "SELECT 'x' AS \"quoted \"\"col\"\"\";\n"
                  "\\x on\n"
                  "SELECT * FROM copy_src WHERE id <= 8 ORDER BY id;\n")
        gw, direct = self.both(["-f", "-"], input=script)
        self.assert_same_output(gw, direct, "notices and meta commands")
        self.assertIn("notice from plpgsql", gw.stderr)

    def test_copy_out_and_in(self):
        with tempfile.TemporaryDirectory() as d:
            for fmt, dst in (("text", "copy_dst"), ("csv, header", "copy_dst_csv")):
                via_gw = os.path.join(d, "gw." + fmt[:3])
                via_direct = os.path.join(d, "direct." + fmt[:3])
                gw = self.psql_gw(["-c", f"\\copy (SELECT * FROM copy_src ORDER BY id) "
                                         f"TO '{via_gw}' WITH (FORMAT {fmt})"])
                direct = self.psql_direct(["-c", f"\\copy (SELECT * FROM copy_src ORDER BY id) "
                                                 f"TO '{via_direct}' WITH (FORMAT {fmt})"])
                self.assert_same_output(gw, direct, f"\\copy out {fmt}")
                self.assertEqual(gw.returncode, 0, gw.stderr)
                self.assertEqual(gw.stdout.strip(), f"COPY {COPY_ROWS}")
                with open(via_gw, "rb") as a, open(via_direct, "rb") as b:
                    self.assertEqual(a.read(), b.read(), f"\\copy out {fmt}: files differ")

                gw = self.psql_gw(["-c", f"\\copy {dst} FROM '{via_gw}' WITH (FORMAT {fmt})"])
                self.assertEqual(gw.returncode, 0, gw.stderr)
                self.assertEqual(gw.stdout.strip(), f"COPY {COPY_ROWS}")
                diff = self.psql_direct(["-Atc", f"SELECT count(*) FROM "
                                                 f"((TABLE copy_src EXCEPT ALL TABLE {dst}) UNION ALL "
                                                 f"(TABLE {dst} EXCEPT ALL TABLE copy_src)) x"])
                self.assertEqual(diff.stdout.strip(), "0", f"\\copy in {fmt}: table differs")

    def test_copy_in_error_is_reported(self):
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "bad.txt")
            with open(bad, "w") as f:
                f.write("1\tok\n2\tok\nnot-a-number\tboom\n")
            sql = ("CREATE TEMP TABLE ci (a int, b text);\n"
                   f"\\copy ci FROM '{bad}'\n"
                   "SELECT count(*) FROM ci;\n")
            gw, direct = self.both(["-f", "-"], input=sql)
            self.assert_same_output(gw, direct, "\\copy in with a bad row")
            self.assertIn("invalid input syntax for type integer", gw.stderr)

    def test_error_mid_transaction(self):
        script = ("\\set VERBOSITY verbose\n"
                  "BEGIN;\n"
                  "SELECT 1/0;\n"
                  "SELECT 1;\n"
                  "ROLLBACK;\n"
                  "SELECT 'still usable' AS after;\n"
                  "SELECT * FROM no_such_table;\n"
                  "SELEC syntax error;\n"
                  "SELECT 'end';\n")
        gw, direct = self.both(["-f", "-"], input=script)
        self.assert_same_output(gw, direct, "error mid-transaction")
        self.assertIn("22012: division by zero", gw.stderr)
        self.assertIn("25P02: current transaction is aborted", gw.stderr)
        self.assertIn("42P01", gw.stderr)
        self.assertIn("42601", gw.stderr)
        self.assertIn("still usable", gw.stdout)
        self.assertIn("end", gw.stdout)

    def test_large_result(self):
        sql = ("SELECT g, md5(g::text) || repeat('-', g % 50) AS t "
               "FROM generate_series(1, 500000) g")
        gw = self.psql_gw(["-At", "-c", sql], binary=True)
        direct = self.psql_direct(["-At", "-c", sql], binary=True)
        self.assertEqual(gw.returncode, 0, gw.stderr)
        self.assertEqual(direct.returncode, 0, direct.stderr)
        self.assertEqual(gw.stdout.count(b"\n"), 500000)
        self.assertEqual(hashlib.sha256(direct.stdout).hexdigest(),
                         hashlib.sha256(gw.stdout).hexdigest(), "large result differs")

    def test_large_query_text(self):
        # A 4 MB query string: one frame well over any socket buffer.
        values = ",".join(f"({i},'{'v' * 40}')" for i in range(80000))
        sql = f"SELECT count(*), sum(a) FROM (VALUES {values}) AS v(a, b);"
        gw, direct = self.both(["-At", "-f", "-"], input=sql)
        self.assert_same_output(gw, direct, "4 MB query text")
        self.assertEqual(gw.stdout.strip(), f"80000|{sum(range(80000))}")


if __name__ == "__main__":
    h.main()
