"""Column rules against the routes around them, through the real gateway and
PostgreSQL 15 (issue 10, items 10 and 11).

- The gateway's own catalog read must not be steered by the session it runs
  in: an agent that shadows `=` in its own schema and logs in with that
  schema first in `search_path` must not switch column rules off for the
  other sessions of the shard.
- A column rule follows the SOURCE column (RowDescription's table OID and
  attribute number, resolved through the catalog, for every table): an
  alias does not escape it. COPY TO STDOUT maps its columns through the
  catalog too (table, column list, CSV; a COPY of a query with column rules
  in force is refused). Whole-row values (`SELECT u FROM users u`,
  `row_to_json(u)`, `to_jsonb(u)`, `array_agg(u)`, `ROW(...)`) are masked
  as a whole when the policy has column rules.

Every test asserts that the secret values never reach the client."""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

PASSWORD = "pw-Zebra-7781-xq"     # matched by the name rule ^password$ (any table)
TOKEN = "tok-Quokka-5532-zz"      # matched by the table rule on public.users, column api_token
SECRETS = [PASSWORD, TOKEN]

POLICY = {
    "default_action": "allow",
    "rules": [],
    "masking": {
        "columns": [
            {"name": "(?i)^password$", "style": "redact"},
            {"table": "public.users", "name": "^api_token$", "style": "redact"},
        ],
    },
}


def create_users(cur):
    cur.execute("""
        CREATE TABLE users (id int, name text, password text, api_token text, note text);
        INSERT INTO users VALUES (1, 'alice', %s, %s, 'hello');
        CREATE TABLE accounts (id int, password text);
        INSERT INTO accounts VALUES (7, %s);
    """, (PASSWORD, TOKEN, PASSWORD))


def raw_query(gw, sql, **startup):
    """Logs in with extra startup parameters, runs one simple query, returns
    every message up to its ReadyForQuery as (type, body)."""
    s = h.raw_connect(gw.host, gw.port)
    try:
        s.sendall(h.startup_message("agent", gw.server.database, **startup))
        r = h.WireReader(s)
        while True:
            m = r.read_message()
            assert m is not None, "connection closed during login"
            if m[0] == "E":
                raise AssertionError(f"login failed: {h.error_fields(m[1])}")
            if m[0] == "Z":
                break
        s.sendall(h.query_message(sql))
        out = []
        while True:
            m = r.read_message()
            if m is None:
                return out
            out.append(m)
            if m[0] == "Z":
                s.sendall(h.TERMINATE)
                return out
    finally:
        s.close()


class CatalogSearchPathTest(h.GatewayTestCase):
    """Item 10: the first session after start reads the catalog; it logs in
    with search_path = evil, pg_catalog where `=` on oid and name is false."""

    @classmethod
    def setUpClass(cls):
        cls.gateway_options = {"shards": 1, "extra": h.admin_setup(cls, "agentgate-cat-", POLICY)}
        super().setUpClass()

    @classmethod
    def prepare_database(cls):
        with cls.pg.connect() as conn, conn.cursor() as cur:
            create_users(cur)
            cur.execute("""
                CREATE SCHEMA evil;
                CREATE FUNCTION evil.never(oid, oid) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT false';
                CREATE FUNCTION evil.never(name, name) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT false';
                CREATE FUNCTION evil.never(int2, int4) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT false';
                CREATE OPERATOR evil.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = evil.never);
                CREATE OPERATOR evil.= (LEFTARG = name, RIGHTARG = name, FUNCTION = evil.never);
                CREATE OPERATOR evil.> (LEFTARG = int2, RIGHTARG = int4, FUNCTION = evil.never);
            """)
            conn.commit()

    def test_shadowed_operators_do_not_switch_rules_off(self):
        # The attacker's session: it triggers the shard's catalog read.
        msgs = raw_query(self.gw, "SELECT 1", search_path="evil, pg_catalog")
        self.assertEqual([t for t, _ in msgs if t == "E"], [], msgs)
        # Its search_path is still its own: the operator is still the shadowing one.
        msgs = raw_query(self.gw, "SELECT 1::oid = 1::oid", search_path="evil, pg_catalog")
        rows = [b for t, b in msgs if t == "D"]
        self.assertEqual(len(rows), 1, msgs)
        self.assertTrue(rows[0].endswith(b"f"), rows)
        # Another session: both rules still apply, through aliases too.
        res = self.psql_gw(["-A", "-t", "-F", "|", "-c",
                            "SELECT password AS p, api_token AS t, name FROM users"], check=True)
        self.assertNotIn(PASSWORD, res.stdout)
        self.assertNotIn(TOKEN, res.stdout)
        self.assertIn("alice", res.stdout)
        # And the attacker's own session is masked as well.
        msgs = raw_query(self.gw, "SELECT password AS p, api_token AS t FROM users",
                         search_path="evil, pg_catalog")
        blob = b"".join(b for _, b in msgs)
        for s in SECRETS:
            self.assertNotIn(s.encode(), blob)


class ColumnRoutesTest(h.GatewayTestCase):
    """Item 11: aliases, COPY and whole rows."""

    @classmethod
    def setUpClass(cls):
        cls.gateway_options = {"shards": 1, "extra": h.admin_setup(cls, "agentgate-routes-", POLICY)}
        super().setUpClass()

    @classmethod
    def prepare_database(cls):
        with cls.pg.connect() as conn, conn.cursor() as cur:
            create_users(cur)
            conn.commit()

    def assert_hidden(self, res, what):
        text = res.stdout + res.stderr
        for s in SECRETS:
            self.assertNotIn(s, text, f"{what}: {s!r} leaked:\n{text[:2000]}")

    def run_gw(self, sql):
        return self.psql_gw(["-A", "-t", "-F", "|", "-c", sql])

    def test_aliases_do_not_escape_name_rules(self):
        for sql in ["SELECT password AS p FROM users",
                    "SELECT u.password AS x, u.api_token AS y FROM users u",
                    "SELECT p FROM (SELECT password AS p FROM accounts) s",
                    "SELECT a.password AS q FROM accounts a"]:
            res = self.run_gw(sql)
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assert_hidden(res, sql)
            self.assertIn("REDACTED", res.stdout, sql)
        # Other columns are untouched.
        res = self.run_gw("SELECT name AS n, note FROM users")
        self.assertEqual(res.stdout.strip(), "alice|hello")

    def test_copy_table_to_stdout(self):
        for sql in ["COPY users TO STDOUT",
                    "COPY public.users TO STDOUT",
                    "COPY users (id, password, api_token) TO STDOUT",
                    "COPY users TO STDOUT WITH (FORMAT csv, HEADER true)",
                    "COPY users (password) TO STDOUT (FORMAT csv)",
                    "COPY \"users\" TO STDOUT",
                    "COPY users TO STDOUT WITH CSV HEADER",
                    "/* c */ copy USERS (API_TOKEN) to stdout;",
                    "COPY accounts TO STDOUT"]:
            res = self.run_gw(sql)
            self.assertEqual(res.returncode, 0, f"{sql}: {res.stderr}")
            self.assert_hidden(res, sql)
            self.assertIn("REDACTED", res.stdout, sql)
        res = self.run_gw("COPY users (id, name, note) TO STDOUT")
        self.assertEqual(res.stdout.strip(), "1\talice\thello")

    def test_copy_query_to_stdout_is_masked_or_refused(self):
        for sql in ["COPY (SELECT * FROM users) TO STDOUT",
                    "COPY (SELECT password AS p FROM users) TO STDOUT WITH (FORMAT csv)",
                    "COPY (SELECT u FROM users u) TO STDOUT"]:
            res = self.run_gw(sql)
            self.assert_hidden(res, sql)

    def test_whole_rows(self):
        for sql in ["SELECT u FROM users u",
                    "SELECT u.* AS x FROM users u",
                    "SELECT row_to_json(u) FROM users u",
                    "SELECT to_jsonb(u) FROM users u",
                    "SELECT json_agg(u) FROM users u",
                    "SELECT array_agg(u) FROM users u",
                    "SELECT ROW(password, api_token) FROM users",
                    "SELECT (u).password FROM users u",
                    "SELECT row_to_json(a) FROM accounts a",
                    "SELECT x FROM (SELECT u AS x FROM users u) s"]:
            res = self.run_gw(sql)
            self.assert_hidden(res, sql)
        # Not covered (docs/masking.md): expressions over a protected value,
        # such as u::text or password || '', need the lineage work.

    def test_copy_query_is_refused_with_a_reason(self):
        res = self.run_gw("COPY (SELECT id FROM users) TO STDOUT")
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("cannot tell which columns this COPY writes", res.stderr)

    def test_extended_protocol_alias(self):
        with self.gw.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT password AS p, api_token AS t FROM users WHERE id = %s", (1,))
            row = cur.fetchone()
        for s in SECRETS:
            self.assertNotIn(s, repr(row))


if __name__ == "__main__":
    h.main()
