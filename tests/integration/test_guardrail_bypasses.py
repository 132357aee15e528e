"""Routes around the guardrails found by the security review (issue 10), run
through the real gateway against real PostgreSQL with the shipped example
policies, exactly as they sit in appliance/examples.

- Settings the classifier depends on, changed without SET: UPDATE of the
  pg_settings view (its rule calls set_config), an aggregate, operator or
  cast built on set_config, a view over pg_settings, a function's SET clause
  or its LANGUAGE sql body (demo policy).
- Built-ins that read tables given as a string: query_to_xml, table_to_xml,
  schema_to_xml, database_to_xml, ts_stat, regclass constants (teams
  policy, whose rule denies the payments tables).
- The read-only safety net switched off by transaction modes, and
  large-object writes (read-only policy).

Each denial is an ErrorResponse with SQLSTATE 42501; the same sessions still
run ordinary statements, and the server's state shows nothing got through."""

import json
import os
import sys

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "appliance", "examples")


def example_policy(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return json.load(f)


class BypassTestCase(h.GatewayTestCase):
    policy_file = None

    @classmethod
    def setUpClass(cls):
        cls.gateway_options = {"shards": 1,
                               "extra": h.admin_setup(cls, "agentgate-bypass-", example_policy(cls.policy_file))}
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.conn = self.gw.connect()
        self.conn.autocommit = True

    def tearDown(self):
        self.conn.close()

    def run_sql(self, sql):
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else None

    def assert_denied(self, sql, rule=None):
        with self.assertRaises(psycopg2.Error, msg=f"{sql!r} was not denied") as ctx:
            self.run_sql(sql)
        err = ctx.exception
        self.assertEqual(err.pgcode, "42501", f"{sql!r}: {err.pgcode} {err.pgerror}")
        if rule is not None:
            self.assertIn(rule, err.pgerror, sql)
        if self.conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            self.conn.rollback()
        return err

    def setting(self, name):
        return self.run_sql(f"SELECT current_setting('{name}')")[0][0]


class DemoPolicyBypasses(BypassTestCase):
    """policy-demo.json: default allow, settings and dangerous functions denied."""

    policy_file = "policy-demo.json"

    @classmethod
    def prepare_database(cls):
        cls.pg.admin_sql("CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'a'); "
                         f"ALTER TABLE t OWNER TO {cls.pg.user}", dbname=cls.pg.database)

    def test_pg_settings_writes_are_denied(self):
        # A name pinned with OPERATOR(pg_catalog.=) is reported as such (the
        # rule on it decides); anything else may set any parameter, which
        # every rule on parameters catches (the first is no-role-switch).
        pin = "name OPERATOR(pg_catalog.=) 'standard_conforming_strings'"
        for sql, rule in [
            ("UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", None),
            (f"UPDATE pg_settings SET setting = 'off' WHERE {pin}", "no-parser-switches"),
            ("update PG_CATALOG.pg_settings set setting = 'off' "
             "where 'standard_conforming_strings' operator(pg_catalog.=) name", "no-parser-switches"),
            ("UPDATE pg_settings SET setting = 'off' "
             "WHERE name OPERATOR(pg_catalog.=) E'standard\\x5fconforming_strings'", "no-parser-switches"),
            ("UPDATE pg_settings SET setting = 'SJIS' WHERE name IN ('work_mem', 'client_encoding')", None),
            ("UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_' || 'conforming_strings'", None),
            ("UPDATE pg_settings s SET setting = 'off' WHERE s.name LIKE 'standard%'", None),
            ("UPDATE pg_settings SET setting = 'off' WHERE name = (SELECT 'standard_conforming_strings')", None),
            (f"WITH u AS (UPDATE pg_settings SET setting = 'off' WHERE {pin}) SELECT 1", "no-parser-switches"),
            (f"EXPLAIN ANALYZE UPDATE pg_settings SET setting = 'off' WHERE {pin}", "no-parser-switches"),
            (f"PREPARE p AS UPDATE pg_settings SET setting = $1 WHERE {pin}", "no-parser-switches"),
            (f"SELECT 1; UPDATE pg_settings SET setting = 'off' WHERE {pin}", "no-parser-switches"),
            ("CREATE VIEW my_settings AS SELECT name, setting FROM pg_settings", None),
            (f"CREATE RULE r AS ON INSERT TO t DO ALSO UPDATE pg_settings SET setting = 'off' WHERE {pin}",
             "no-parser-switches"),
            (f"CREATE FUNCTION scs_off() RETURNS void LANGUAGE sql AS $$ UPDATE pg_settings SET setting = 'off' "
             f"WHERE {pin} $$", "no-parser-switches"),
            ("CREATE FUNCTION f_scs() RETURNS int LANGUAGE sql SET standard_conforming_strings = off "
             "AS 'SELECT 1'", "no-parser-switches"),
        ]:
            with self.subTest(sql=sql):
                self.assert_denied(sql, rule)
                self.assertEqual(self.setting("standard_conforming_strings"), "on")
                self.assertEqual(self.setting("client_encoding"), "UTF8")
        # Nothing was created on the way.
        self.assertEqual(self.run_sql("SELECT count(*) FROM pg_views WHERE viewname = 'my_settings'"), [(0,)])
        self.assertEqual(self.run_sql("SELECT count(*) FROM pg_proc WHERE proname IN ('scs_off', 'f_scs')"), [(0,)])

    def test_a_parameter_nobody_guards_can_be_written_with_a_pinned_name(self):
        self.run_sql("UPDATE pg_settings SET setting = '8MB' WHERE name OPERATOR(pg_catalog.=) 'work_mem'")
        self.assertEqual(self.setting("work_mem"), "8MB")
        self.run_sql("RESET work_mem")

    def test_definitions_built_on_set_config_are_denied(self):
        for sql in [
            "CREATE AGGREGATE scs_agg(text, boolean) (SFUNC = pg_catalog.set_config, STYPE = text)",
            "create aggregate scs_agg(text, boolean) (sfunc = 'set_config', stype = text)",
            "CREATE AGGREGATE scs_agg(text) (SFUNC = textcat, STYPE = text, FINALFUNC = set_config)",
            "CREATE OPERATOR === (LEFTARG = text, RIGHTARG = text, FUNCTION = set_config)",
            "CREATE OPERATOR === (LEFTARG = text, RIGHTARG = text, PROCEDURE = pg_catalog.set_config)",
            "CREATE CAST (text AS int) WITH FUNCTION set_config(text, text, boolean)",
        ]:
            with self.subTest(sql=sql):
                self.assert_denied(sql, "no-dangerous-functions")
        self.assertEqual(self.run_sql("SELECT count(*) FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid "
                                      "WHERE p.proname = 'scs_agg'"), [(0,)])

    def test_ordinary_statements_still_pass(self):
        self.run_sql("CREATE AGGREGATE my_concat(text) (SFUNC = textcat, STYPE = text, INITCOND = '')")
        self.assertEqual(self.run_sql("SELECT my_concat(v) FROM t"), [("a",)])
        self.run_sql("DROP AGGREGATE my_concat(text)")
        self.assertEqual(self.run_sql("SELECT setting FROM pg_settings WHERE name = 'standard_conforming_strings'"),
                         [("on",)])
        self.run_sql("UPDATE t SET v = 'b' WHERE id = 1")
        self.assertEqual(self.run_sql("SELECT v FROM t WHERE id = 1"), [("b",)])
        self.run_sql("SET work_mem = '8MB'")
        self.assertEqual(self.setting("work_mem"), "8MB")
        self.run_sql("CREATE FUNCTION add_one(int) RETURNS int LANGUAGE sql AS 'SELECT $1 + 1'")
        self.assertEqual(self.run_sql("SELECT add_one(1)"), [(2,)])
        self.run_sql("DROP FUNCTION add_one(int)")


class TeamsPolicyBypasses(BypassTestCase):
    """policy-teams.json: the payments tables are denied to everyone outside
    the payments team, whichever way a statement reaches them."""

    policy_file = "policy-teams.json"

    @classmethod
    def prepare_database(cls):
        cls.pg.admin_sql("CREATE TABLE payments (id int, card text); INSERT INTO payments VALUES (1, 'secret'); "
                         "CREATE TABLE orders (id int); INSERT INTO orders VALUES (7); "
                         "CREATE TABLE docs (v tsvector); INSERT INTO docs VALUES ('a b'); "
                         f"ALTER TABLE payments OWNER TO {cls.pg.user}; ALTER TABLE orders OWNER TO {cls.pg.user}; "
                         f"ALTER TABLE docs OWNER TO {cls.pg.user}", dbname=cls.pg.database)
        # A type named text whose implicit cast to pg_catalog.text returns
        # other SQL: with its schema first in search_path, 'select 1'::text
        # hands query_to_xml the cast's result.
        cls.pg.admin_sql("CREATE SCHEMA evil; CREATE TYPE evil.text AS ENUM ('select 1'); "
                         "CREATE FUNCTION evil.f(evil.text) RETURNS pg_catalog.text LANGUAGE sql "
                         "AS $$ SELECT 'select card from public.payments'::pg_catalog.text $$; "
                         "CREATE CAST (evil.text AS pg_catalog.text) WITH FUNCTION evil.f(evil.text) AS IMPLICIT; "
                         f"GRANT USAGE ON SCHEMA evil TO {cls.pg.user}", dbname=cls.pg.database)

    def test_a_cast_through_search_path_cannot_swap_the_sql(self):
        sql = "SELECT query_to_xml('select 1'::text, true, false, '')"
        direct = h.run_psql(self.pg.dsn(), ["-X", "-qAt", "-c", "SET search_path = evil, public, pg_catalog",
                                            "-c", sql], password=self.pg.password)
        self.assertIn("secret", direct.stdout, direct.stderr)  # the route is real
        self.run_sql("SET search_path = evil, public, pg_catalog")
        try:
            self.assertNotIn("secret", str(self.assert_denied(sql).pgerror))
        finally:
            self.run_sql("RESET search_path")

    def test_sql_given_as_text_is_judged(self):
        for sql, rule in [
            ("SELECT query_to_xml('select * from payments', true, false, '')", "payments-tables"),
            ("SELECT query_to_xml(query => 'select card from public.payments', nulls => true, tableforest => false, "
             "targetns => '')", "payments-tables"),
            ("SELECT query_to_xml(E'select * from \\x70ayments', true, false, '')", "payments-tables"),
            ("SELECT query_to_xml(U&'select * from \\0070ayments', true, false, '')", "payments-tables"),
            ("SELECT query_to_xml($q$select * from payments$q$, true, false, '')", "payments-tables"),
            ("SELECT query_to_xmlschema('select * from payments', true, false, '')", "payments-tables"),
            ("SELECT query_to_xml_and_xmlschema('select * from payments', true, false, '')", "payments-tables"),
            ("SELECT query_to_xml('select * from query_to_xml(''select * from payments'', true, false, '''')', "
             "true, false, '')", "payments-tables"),
            ("SELECT * FROM ts_stat('select to_tsvector(card) from payments')", "payments-tables"),
            ("SELECT ts_rewrite('a'::tsquery, 'select ''a''::tsquery, card::tsquery from payments')",
             "payments-tables"),
            ("SELECT table_to_xml('payments', true, false, '')", "payments-tables"),
            ("SELECT table_to_xml('public.\"payments\"'::pg_catalog.regclass, true, false, '')",
             "payments-tables"),
            ("SELECT table_to_xmlschema(tbl => 'PAYMENTS', nulls => true, tableforest => false, targetns => '')",
             "payments-tables"),
            ("SELECT schema_to_xml('public', true, false, '')", "payments-tables"),
            ("SELECT database_to_xml(true, false, '')", "payments-tables"),
            ("SELECT 'payments'::regclass", "payments-tables"),
            # SQL or tables the gateway cannot read: refused as unreadable.
            ("SELECT query_to_xml(q, true, false, '') FROM (VALUES ('select * from payments')) v(q)", None),
            ("SELECT query_to_xml('select * from ' || 'payments', true, false, '')", None),
            ("SELECT table_to_xml(c.oid, true, false, '') FROM pg_class c WHERE relname = 'payments'", None),
            ("SELECT query_to_xml('select * from payments'::text, true, false, '')", None),
            ("SELECT table_to_xml('payments'::regclass, true, false, '')", None),
        ]:
            with self.subTest(sql=sql):
                err = self.assert_denied(sql, rule)
                self.assertNotIn("secret", err.pgerror)

    def test_settings_are_guarded_too(self):
        for sql, rule in [
            ("SET standard_conforming_strings = off", "no-parser-switches"),
            ("UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", "no-role-switch"),
            ("CREATE AGGREGATE scs_agg(text, boolean) (SFUNC = pg_catalog.set_config, STYPE = text)",
             "no-set-config"),
        ]:
            with self.subTest(sql=sql):
                self.assert_denied(sql, rule)
        self.assertEqual(self.setting("standard_conforming_strings"), "on")

    def test_extended_protocol_parameter_is_unreadable(self):
        # psycopg2 interpolates client-side; a server-side PREPARE with a
        # parameter is the protocol's Parse with $1.
        self.assert_denied("PREPARE q(text) AS SELECT query_to_xml($1, true, false, '')")

    def test_ordinary_statements_still_pass(self):
        self.assertEqual(self.run_sql("SELECT count(*) FROM orders"), [(1,)])
        xml = self.run_sql("SELECT query_to_xml('select * from orders', true, false, '')")[0][0]
        self.assertIn("<id>7</id>", xml)
        self.assertIn("<id>7</id>", self.run_sql("SELECT table_to_xml('orders', true, false, '')")[0][0])
        self.assertEqual(self.run_sql("SELECT 'orders'::regclass::text"), [("orders",)])
        self.assertEqual(self.run_sql("SELECT count(*) FROM ts_stat('select v from docs')"), [(2,)])
        self.assert_denied("SELECT * FROM payments", "payments-tables")


class ReadOnlyPolicyBypasses(BypassTestCase):
    """policy-readonly.json: reads only; the read-only transaction modes and
    state-changing functions cannot be reached."""

    policy_file = "policy-readonly.json"

    @classmethod
    def prepare_database(cls):
        cls.pg.admin_sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1); CREATE SEQUENCE s; "
                         f"ALTER TABLE t OWNER TO {cls.pg.user}; ALTER SEQUENCE s OWNER TO {cls.pg.user}",
                         dbname=cls.pg.database)

    def test_transaction_modes_cannot_switch_to_read_write(self):
        for sql in [
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            "set session characteristics as transaction isolation level read committed, read write",
            "BEGIN READ WRITE",
            "begin transaction isolation level serializable, read write",
            "START TRANSACTION READ WRITE",
            "BEGIN; SET TRANSACTION READ WRITE",
            "SET default_transaction_read_only = off",
            "UPDATE pg_settings SET setting = 'off' WHERE name = 'default_transaction_read_only'",
            "SELECT set_config('default_transaction_read_only', 'off', false)",
        ]:
            with self.subTest(sql=sql):
                self.assert_denied(sql)
                self.assertEqual(self.conn.get_transaction_status(), psycopg2.extensions.TRANSACTION_STATUS_IDLE)

    def test_state_changing_functions_are_denied(self):
        for sql in [
            "SELECT lo_creat(-1)",
            "SELECT lo_create(0)",
            "SELECT lo_from_bytea(0, 'payload')",
            "SELECT lo_import('/etc/hostname')",
            "SELECT lo_unlink(1)",
            "SELECT lo_put(1, 0, 'x')",
            "SELECT lowrite(0, 'x')",
            "SELECT lo_truncate(0, 0)",
            "SELECT nextval('s')",
            "SELECT setval('s', 10)",
            "SELECT pg_advisory_lock_shared(1)",
            "SELECT pg_try_advisory_lock(1)",
            "SELECT pg_cancel_backend(pg_backend_pid())",
            "SELECT pg_reload_conf()",
            "SELECT pg_catalog.set_config('role', 'postgres', false)",
        ]:
            with self.subTest(sql=sql):
                self.assert_denied(sql, "no-dangerous-functions")
        self.assertEqual(self.run_sql("SELECT count(*) FROM pg_largeobject_metadata"), [(0,)])
        self.assertEqual(self.run_sql("SELECT last_value, is_called FROM s"), [(1, False)])

    def test_reads_and_read_only_transactions_pass(self):
        self.assertEqual(self.run_sql("SELECT count(*) FROM t"), [(1,)])
        self.run_sql("BEGIN READ ONLY")
        self.assertEqual(self.run_sql("SELECT id FROM t"), [(1,)])
        self.run_sql("COMMIT")
        self.run_sql("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        self.run_sql("COMMIT")
        self.run_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        self.assertEqual(self.setting("default_transaction_read_only"), "on")
        self.assert_denied("INSERT INTO t VALUES (2)")


if __name__ == "__main__":
    h.main()
