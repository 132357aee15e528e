"""Portal descriptions the gateway may no longer trust (issue 10, finding 3),
against a real PostgreSQL 15: protocol portals and SQL cursors share one
namespace on the server, which drops portals at transaction end and lets
any SQL (DECLARE, a PL/pgSQL cursor) open one under a name the gateway once
saw described. Each test would leak a raw SSN, email or card number if the
gateway masked rows with a stale description."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402
from test_masking_wire import SYNC, bind, describe, execute, parse, read_until_ready  # noqa: E402

SSN = "123-45-6789"
EMAIL = "alice@example.com"
CARD = "4111 1111 1111 1111"

POLICY = {
    "default_action": "allow",
    "rules": [],
    "masking": {"detectors": {"credit_card": "partial", "email": "partial", "us_ssn": "redact"}},
}


class PortalAttackTest(h.GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        cls.gateway_options = {"shards": 1, "extra": h.admin_setup(cls, "agentgate-portal-", POLICY)}
        super().setUpClass()

    @classmethod
    def prepare_database(cls):
        with cls.pg.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE people (ssn text, email text, card_number text)")
            cur.execute("INSERT INTO people VALUES (%s, %s, %s)", (SSN, EMAIL, CARD))
            cur.execute("CREATE FUNCTION open_cursor(name text) RETURNS refcursor LANGUAGE plpgsql AS $$ "
                        "DECLARE c refcursor := name; BEGIN "
                        "OPEN c FOR SELECT ssn, email, card_number FROM people; RETURN c; END $$")
            cur.execute(f"GRANT ALL ON people TO {cls.pg.user}")
            conn.commit()

    def assert_no_pii(self, msgs):
        raw = b"".join(body for _, body in msgs)
        for secret in (SSN, EMAIL, CARD):
            self.assertNotIn(secret.encode(), raw, msgs)

    def session(self):
        return h.raw_login(self.gw.host, self.gw.port, database=self.pg.database)

    def describe_as_booleans(self, s, r, portal):
        s.sendall(parse("", "SELECT true, false, true") + bind(portal, "") + describe(b"P", portal) +
                  execute(portal) + SYNC)
        msgs = read_until_ready(r)
        self.assertIn("T", [t for t, _ in msgs])

    def cursor_after_described_portal(self, name, binary):
        """A portal described as booleans, then a SQL cursor of that name
        (WITH HOLD: it outlives the transaction that dropped the portal),
        executed over the protocol: its rows must be masked."""
        s, r, _ = self.session()
        self.describe_as_booleans(s, r, name)
        kind = "BINARY CURSOR" if binary else "CURSOR"
        s.sendall(h.query_message(f"DECLARE {name} {kind} WITH HOLD FOR SELECT ssn, email, card_number FROM people"))
        read_until_ready(r)
        s.sendall(execute(name) + SYNC)
        msgs = read_until_ready(r)
        self.assertIn("D", [t for t, _ in msgs], msgs)
        self.assertNotIn("T", [t for t, _ in msgs])  # the gateway's own Describe is not the client's
        self.assert_no_pii(msgs)
        s.sendall(h.query_message(f"CLOSE {name}"))
        read_until_ready(r)
        s.close()

    def test_sql_cursor_with_a_described_portals_name(self):
        self.cursor_after_described_portal("c1", binary=False)

    def test_binary_sql_cursor(self):
        self.cursor_after_described_portal("c2", binary=True)

    def test_plpgsql_cursor_opened_in_the_same_transaction(self):
        s, r, _ = self.session()
        s.sendall(h.query_message("BEGIN"))
        read_until_ready(r)
        # A portal described as booleans, closed and reopened under the same
        # name by code the gateway cannot see into.
        s.sendall(parse("", "SELECT true, false, true") + bind("c3", "") + describe(b"P", "c3") + SYNC)
        read_until_ready(r)
        s.sendall(h.query_message("CLOSE c3; SELECT open_cursor('c3')"))
        read_until_ready(r)
        s.sendall(execute("c3") + SYNC)
        msgs = read_until_ready(r)
        self.assertIn("D", [t for t, _ in msgs], msgs)
        self.assert_no_pii(msgs)
        s.sendall(h.query_message("COMMIT"))
        read_until_ready(r)
        s.close()

    def test_drivers_still_work(self):
        # psycopg2 (simple protocol) and psql through the gateway, masked.
        with self.gw.connect(dbname=self.pg.database) as conn, conn.cursor() as cur:
            cur.execute("SELECT ssn, email FROM people")
            row = cur.fetchone()
        self.assertNotEqual(row[0], SSN)
        self.assertNotEqual(row[1], EMAIL)


if __name__ == "__main__":
    h.main()
