"""The gateway and the server read every command with the same characters
(issue 10, findings 1, 2 and 4), against a real PostgreSQL 15:

- every client encoding PostgreSQL accepts is tried at login: UTF8 (and
  SQL_ASCII, read as UTF8) and the single-byte encodings work, the others
  are refused with a clear error; the SJIS string-splitting payload cannot
  run under any of them;
- a single-byte session's commands are classified in UTF-8, so a rule on a
  table with a non-ASCII name matches LATIN1 bytes;
- client_encoding or standard_conforming_strings changed by a route the
  classifier cannot see (a function, an UPDATE of pg_settings) ends the
  session, and a command pipelined behind the change never runs;
- statement and portal names must be ASCII.
"""

import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

POLICY = {
    "default_action": "allow",
    "rules": [
        {"id": "no-drops", "match": {"sql": {"statements": ["DROP TABLE"]}}, "action": "deny",
         "message": "dropping data needs a change request"},
        {"id": "no-cafe", "match": {"sql": {"tables": ["café_secret"]}}, "action": "deny",
         "message": "that table is off limits"},
    ],
}

# What the gateway does with each canonical client encoding.
UTF8_LIKE = {"UTF8", "SQL_ASCII"}
SINGLE_BYTE = {"LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5", "LATIN6", "LATIN7", "LATIN8", "LATIN9",
               "LATIN10", "WIN1256", "WIN1258", "WIN866", "WIN874", "KOI8R", "WIN1251", "WIN1252",
               "ISO_8859_5", "ISO_8859_6", "ISO_8859_7", "ISO_8859_8", "WIN1250", "WIN1253", "WIN1254",
               "WIN1255", "WIN1257", "KOI8U"}

# 0x95 0x5C is one SJIS character: to a byte reader the backslash escapes
# the quote and the rest is one string; to a server reading SJIS, the quote
# closes the string and DROP TABLE runs.
SJIS_PAYLOAD = b"SELECT E'\x95\\'; DROP TABLE victim; --'"
# With standard_conforming_strings on, '' is a quote inside one string; with
# it off, \' is, and the string ends before DROP TABLE.
SCS_PAYLOAD = b"SELECT 'a\\''; DROP TABLE victim; --'"


def q(sql_bytes):
    return h.frame(b"Q", sql_bytes + b"\0")


class RawSession:
    """Raw wire sessions for a GatewayTestCase."""

    def login(self, **params):
        """A raw session; returns (socket, reader, ParameterStatus dict) or
        (None, None, error fields) when the gateway refused the login."""
        s = h.raw_connect(self.gw.host, self.gw.port)
        s.sendall(h.startup_message("agent", self.pg.database, **params))
        r = h.WireReader(s)
        status = {}
        while True:
            m = r.read_message()
            self.assertIsNotNone(m, "connection closed during login")
            t, body = m
            if t == "E":
                s.close()
                return None, None, h.error_fields(body)
            if t == "S":
                k, v = body.split(b"\0")[:2]
                status[k.decode()] = v.decode()
            if t == "Z":
                return s, r, status

    def until_z(self, r):
        msgs = []
        while True:
            m = r.read_message()
            self.assertIsNotNone(m, f"closed early after {msgs}")
            msgs.append(m)
            if m[0] == "Z":
                return msgs


class EncodingTest(RawSession, h.GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        cls.gateway_options = {"shards": 1, "extra": h.admin_setup(cls, "agentgate-enc-", POLICY)}
        super().setUpClass()

    @classmethod
    def prepare_database(cls):
        u = cls.pg.user
        cls.pg.admin_sql(
            "CREATE TABLE victim (id int); INSERT INTO victim VALUES (1); "
            f"ALTER TABLE victim OWNER TO {u}; "
            "CREATE TABLE \"café_secret\" (v text); INSERT INTO \"café_secret\" VALUES ('hidden'); "
            f"ALTER TABLE \"café_secret\" OWNER TO {u}; "
            # Functions whose bodies the classifier does not read: they switch
            # the settings its reading depends on.
            "CREATE FUNCTION scs_off() RETURNS text LANGUAGE sql "
            "AS $$ SELECT set_config('standard_conforming_strings', 'off', false) $$; "
            "CREATE FUNCTION to_sjis() RETURNS text LANGUAGE sql "
            "AS $$ SELECT set_config('client_encoding', 'SJIS', false) $$; "
            f"GRANT ALL ON FUNCTION scs_off(), to_sjis() TO {u}",
            dbname=cls.pg.database)

    def setUp(self):
        super().setUp()
        self.pg.admin_sql("DROP TABLE IF EXISTS victim; CREATE TABLE victim (id int); INSERT INTO victim VALUES (1); "
                          f"ALTER TABLE victim OWNER TO {self.pg.user}", dbname=self.pg.database)

    # -- helpers ----------------------------------------------------------------

    def victim_exists(self):
        return self.pg.admin_sql("SELECT to_regclass('public.victim') IS NOT NULL",
                                 dbname=self.pg.database).strip() == "t"

    def server_encodings(self):
        out = self.pg.admin_sql("SELECT pg_encoding_to_char(i) FROM generate_series(0, 63) i "
                                "WHERE pg_encoding_to_char(i) <> ''")
        return [line.strip() for line in out.splitlines() if line.strip()]

    # -- finding 1: the startup route -------------------------------------------------

    def test_every_client_encoding(self):
        tried = 0
        for name in self.server_encodings():
            # The server-only encodings (not valid from a client) come after
            # the client ones; PostgreSQL itself refuses those.
            with self.subTest(encoding=name):
                s, r, status = self.login(client_encoding=name)
                if name in UTF8_LIKE or name in SINGLE_BYTE:
                    self.assertIsNotNone(s, f"{name} refused: {status}")
                    tried += 1
                    want = "UTF8" if name in UTF8_LIKE else name
                    self.assertEqual(status.get("client_encoding"), want)
                    self.assertEqual(status.get("standard_conforming_strings"), "on")
                    s.sendall(q(SJIS_PAYLOAD))
                    msgs = self.until_z(r)
                    types = [t for t, _ in msgs]
                    if "E" in types:
                        # Not valid text in this encoding (0x95 alone is no
                        # UTF-8): refused, by the gateway as unreadable or by
                        # the server. The table below proves nothing ran.
                        pass
                    else:
                        self.assertIn("D", types)
                    s.sendall(q(b"DROP TABLE victim"))
                    msgs = self.until_z(r)
                    self.assertEqual(h.error_fields(msgs[0][1]).get("C"), "42501", msgs)
                    s.sendall(h.TERMINATE)
                    s.close()
                else:
                    self.assertIsNone(s, f"{name} was accepted")
                    self.assertIn(status.get("C"), ("0A000", "22023"), status)
                    self.assertIn("client_encoding", status.get("M", ""))
                self.assertTrue(self.victim_exists(), f"victim dropped under {name}")
        self.assertGreaterEqual(tried, 29)

    def test_sjis_payload_refused_at_login_in_any_spelling(self):
        for spelling in ("SJIS", "sjis", "Shift_JIS", "mskanji", "win932", "WINDOWS-932", "BIG5", "gbk",
                         "UHC", "GB18030", "JOHAB", "EUC_JP"):
            with self.subTest(spelling=spelling):
                s, _, err = self.login(client_encoding=spelling)
                self.assertIsNone(s)
                self.assertEqual(err.get("C"), "0A000", err)
        # Duplicated, in other cases: the last one counts, as on the server.
        s = h.raw_connect(self.gw.host, self.gw.port)
        body = struct.pack("!I", h.PROTOCOL_V3)
        for k, v in [("user", "agent"), ("database", self.pg.database), ("client_encoding", "UTF8"),
                     ("CLIENT_ENCODING", "SJIS")]:
            body += k.encode() + b"\0" + v.encode() + b"\0"
        body += b"\0"
        s.sendall(struct.pack("!I", len(body) + 4) + body)
        msgs = h.WireReader(s).read_until_eof()
        self.assertEqual(msgs[0][0], "E", msgs)
        self.assertEqual(h.error_fields(msgs[0][1]).get("C"), "0A000")
        s.close()
        self.assertTrue(self.victim_exists())

    def test_unknown_encoding_refused(self):
        s, _, err = self.login(client_encoding="klingon")
        self.assertIsNone(s)
        self.assertEqual(err.get("C"), "22023", err)

    def test_latin1_names_compared_in_utf8(self):
        s, r, status = self.login(client_encoding="LATIN1")
        self.assertEqual(status.get("client_encoding"), "LATIN1")
        s.sendall(q("SELECT v FROM café_secret".encode("latin-1")))
        msgs = self.until_z(r)
        f = h.error_fields(msgs[0][1])
        self.assertEqual(f.get("C"), "42501", msgs)
        self.assertIn("no-cafe", f.get("M"))
        # Ordinary LATIN1 text still works, both ways.
        s.sendall(q("SELECT 'déjà vu'".encode("latin-1")))
        msgs = self.until_z(r)
        rows = [b for t, b in msgs if t == "D"]
        self.assertEqual(len(rows), 1, msgs)
        self.assertIn("déjà vu".encode("latin-1"), rows[0])
        s.sendall(h.TERMINATE)
        s.close()

    def test_win1252_undefined_byte_refused(self):
        s, r, _ = self.login(client_encoding="WIN1252")
        s.sendall(q(b"SELECT '\x81'"))
        msgs = self.until_z(r)
        self.assertEqual(h.error_fields(msgs[0][1]).get("C"), "22021", msgs)
        s.sendall(h.TERMINATE)
        s.close()

    # -- finding 2: settings changed where the classifier cannot see -----------------

    def assert_session_ended(self, r, why):
        msgs = r.read_until_eof()
        errors = [h.error_fields(b) for t, b in msgs if t == "E"]
        self.assertTrue(errors, msgs)
        self.assertEqual(errors[-1].get("S"), "FATAL", errors)
        self.assertEqual(errors[-1].get("C"), "0A000", errors)
        self.assertIn(why, errors[-1].get("M"))
        return msgs

    def test_function_switching_scs_ends_session(self):
        s, r, _ = self.login()
        s.sendall(q(b"SELECT scs_off()"))
        self.assert_session_ended(r, "standard_conforming_strings")
        s.close()

    def test_pg_settings_update_ends_session(self):
        s, r, _ = self.login()
        s.sendall(q(b"UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'"))
        self.assert_session_ended(r, "standard_conforming_strings")
        s.close()

    def test_function_switching_encoding_ends_session(self):
        s, r, _ = self.login()
        s.sendall(q(b"SELECT to_sjis()"))
        self.assert_session_ended(r, "client_encoding")
        s.close()

    def test_pipelined_payload_behind_scs_switch_never_runs(self):
        s, r, _ = self.login()
        # One write: the payload reaches the gateway before the server has
        # answered the switch.
        s.sendall(q(b"SELECT scs_off()") + q(SCS_PAYLOAD))
        msgs = self.assert_session_ended(r, "standard_conforming_strings")
        self.assertNotIn("DROP TABLE", repr(msgs))
        s.close()
        time.sleep(0.2)
        self.assertTrue(self.victim_exists())

    def test_pipelined_payload_behind_encoding_switch_never_runs(self):
        s, r, _ = self.login()
        s.sendall(q(b"SELECT to_sjis()") + q(SJIS_PAYLOAD))
        self.assert_session_ended(r, "client_encoding")
        s.close()
        time.sleep(0.2)
        self.assertTrue(self.victim_exists())

    def test_extended_batch_payload_after_execute_refused(self):
        s, r, _ = self.login()
        parse1 = h.frame(b"P", b"\0SELECT scs_off()\0" + struct.pack("!H", 0))
        bind1 = h.frame(b"B", b"\0\0" + struct.pack("!HHH", 0, 0, 0))
        exe1 = h.frame(b"E", b"\0" + struct.pack("!I", 0))
        parse2 = h.frame(b"P", b"s2\0" + SCS_PAYLOAD + b"\0" + struct.pack("!H", 0))
        sync = h.frame(b"S", b"")
        s.sendall(parse1 + bind1 + exe1 + parse2 + sync)
        msgs = r.read_until_eof()
        errors = [h.error_fields(b) for t, b in msgs if t == "E"]
        # Either the refusal of the second Parse, or the session's end once
        # the switch is seen: never the DROP.
        self.assertTrue(errors, msgs)
        self.assertIn(errors[0].get("C"), ("0A000",), errors)
        s.close()
        time.sleep(0.2)
        self.assertTrue(self.victim_exists())

    def test_plain_pipelining_still_works(self):
        s, r, _ = self.login()
        s.sendall(q(b"SELECT 1") + q("SELECT 'é\\n'".encode()) + q(b"SELECT 3"))
        rows = []
        for _ in range(3):
            rows += [b for t, b in self.until_z(r) if t == "D"]
        self.assertEqual(len(rows), 3)
        self.assertIn("é\\n".encode(), rows[1])
        s.sendall(h.TERMINATE)
        s.close()

    def test_extended_copy_from_stdin_leaves_the_books_straight(self):
        # What libpq sends for COPY FROM STDIN over the extended protocol:
        # the Sync behind the Execute is ignored by the server in COPY mode.
        # Afterwards text that waits for earlier commands, and a denial, are
        # still answered (review of issue 10: they used to wait forever).
        s, r, _ = self.login()
        s.sendall(h.frame(b"P", b"\0COPY victim FROM STDIN\0" + struct.pack("!H", 0)) +
                  h.frame(b"B", b"\0\0" + struct.pack("!HHH", 0, 0, 0)) +
                  h.frame(b"E", b"\0" + struct.pack("!I", 0)) + h.frame(b"S", b""))
        while True:
            m = r.read_message()
            self.assertIsNotNone(m)
            if m[0] == "G":
                break
        s.sendall(h.frame(b"d", b"7\n") + h.frame(b"c", b"") + h.frame(b"S", b""))
        self.until_z(r)
        s.sendall(q("SELECT 'é'".encode()))
        self.assertIn("D", [t for t, _ in self.until_z(r)])
        s.sendall(q(b"DROP TABLE victim"))
        self.assertEqual(h.error_fields(self.until_z(r)[0][1]).get("C"), "42501")
        s.sendall(h.TERMINATE)
        s.close()
        self.assertEqual(self.pg.admin_sql("SELECT count(*) FROM victim", dbname=self.pg.database).strip(), "2")

    # -- finding 4: names -----------------------------------------------------------------

    def test_non_ascii_statement_name_refused(self):
        s, r, _ = self.login()
        parse = h.frame(b"P", "stmt_é\0".encode() + b"SELECT 1\0" + struct.pack("!H", 0))
        s.sendall(parse + h.frame(b"S", b""))
        msgs = self.until_z(r)
        self.assertEqual(h.error_fields(msgs[0][1]).get("C"), "42602", msgs)
        s.sendall(q(b"SELECT 1"))
        self.assertIn("D", [t for t, _ in self.until_z(r)])
        s.sendall(h.TERMINATE)
        s.close()



class NonUtf8DatabaseTest(RawSession, h.GatewayTestCase):
    """A LATIN1 database folds and cuts identifiers by its own rules: the
    gateway refuses non-ASCII SQL there (review of issue 10, finding 7)."""

    @classmethod
    def setUpClass(cls):
        cls.gateway_options = {"shards": 1, "extra": h.admin_setup(cls, "agentgate-enc1-", POLICY)}
        super().setUpClass()

    @classmethod
    def prepare_database(cls):
        db, u = cls.pg.database, cls.pg.user
        cls.pg.admin_sql(f"DROP DATABASE {db}")
        cls.pg.admin_sql(f"CREATE DATABASE {db} OWNER {u} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
                         "TEMPLATE template0")

    def test_non_ascii_sql_refused_ascii_works(self):
        s, r, _ = self.login(client_encoding="LATIN1")
        self.assertIsNotNone(s, r)
        s.sendall(q("SELECT 'É'".encode("latin-1")))
        msgs = self.until_z(r)
        f = h.error_fields(msgs[0][1])
        self.assertEqual(f.get("C"), "0A000", msgs)
        self.assertIn("UTF8", f.get("M"))
        s.sendall(q(b"SELECT current_setting('server_encoding')"))
        rows = [b for t, b in self.until_z(r) if t == "D"]
        self.assertEqual(len(rows), 1)
        self.assertIn(b"LATIN1", rows[0])
        s.sendall(h.TERMINATE)
        s.close()

if __name__ == "__main__":
    h.main()
