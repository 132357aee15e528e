#pragma once
// The facts the guardrails know about one SQL statement. Filled by the
// classifier (masking/sql_classifier.h), judged by the policy (core/policy.h).

#include <cstdint>
#include <string>
#include <vector>

namespace agentgate {

// What one statement is and does. A string with several statements yields one
// entry per statement; a statement that runs another statement inside it (a
// data-modifying CTE, PREPARE ... AS, EXPLAIN ANALYZE) also yields an entry for
// the inner one, marked `nested`, so a rule on DELETE catches
// `WITH d AS (DELETE FROM t) SELECT 1` without knowing about CTEs.
struct statement_facts {
  // PostgreSQL's command tag as CreateCommandTag() names it: "SELECT",
  // "DELETE", "DROP TABLE", "TRUNCATE TABLE", "GRANT ROLE", "SET", ...
  std::string kind;
  // Relations named anywhere in the statement (and its nested statements), as
  // written, schema-qualified when written so: "public.users". Unquoted names
  // are lowercased by the parser, quoted ones keep their case. A CTE's name
  // used in FROM is listed too (conservative: it may shadow a table). Also a
  // constant cast to regclass ('payments'::regclass) and the tables read by
  // built-ins given a table or SQL text (table_to_xml, query_to_xml, ...).
  // Wildcards for built-ins that read every table they can see:
  // "<schema>.*" (schema_to_xml) and "*" (database_to_xml); policy rules
  // treat them as matching every table (core/policy.h).
  std::vector<std::string> tables;
  // Functions called by name anywhere (targets, FROM, WHERE, CTEs, subqueries,
  // DEFAULTs, CALL, trigger functions), and functions a definition makes
  // callable under another name (CREATE AGGREGATE's SFUNC, CREATE OPERATOR's
  // FUNCTION, CREATE CAST ... WITH FUNCTION, a type's INPUT, ...), lowercased,
  // as written ("pg_catalog.pg_read_file"). Match with calls_function(),
  // which compares the last part.
  std::vector<std::string> functions;
  bool without_where = false;  // UPDATE/DELETE without WHERE (WHERE CURRENT OF counts as a WHERE)
  bool copy_program = false;   // COPY ... TO/FROM PROGRAM
  // Modifies stored data or schema: DML, COPY FROM, TRUNCATE, SELECT INTO,
  // DDL, DO, CALL, and anything containing a statement that writes. Reads,
  // SET/SHOW, transaction control, EXPLAIN without ANALYZE, LISTEN/NOTIFY,
  // cursors and EXECUTE (its statement was judged at PREPARE) do not.
  bool writes = false;
  // The run-time parameters the statement sets, lowercased, sorted, unique:
  // SET/RESET ("role", "session_authorization", "search_path"; "all" for
  // RESET ALL), ALTER ROLE/DATABASE ... SET, ALTER SYSTEM, a function's SET
  // clause, transaction modes (SET TRANSACTION / BEGIN ... READ WRITE:
  // "transaction_read_only"; SET SESSION CHARACTERISTICS: "default_transaction_
  // read_only"; ISOLATION LEVEL, [NOT] DEFERRABLE likewise), and writes to the
  // pg_settings view (the parameter of a constant WHERE name = '...').
  // "*" when the statement may set a parameter the classifier cannot name
  // (a pg_settings write without such a WHERE, a view over pg_settings): rules
  // on any parameter treat it as theirs (core/policy.h).
  std::vector<std::string> set_parameters;
  std::uint32_t top_level_index = 0;  // which statement of the string this belongs to
  bool nested = false;                // runs inside the top-level statement
};

}  // namespace agentgate
