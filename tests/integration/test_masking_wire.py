"""Masking against clients that drive the wire protocol themselves: a real
PostgreSQL 15 decides what each message means, so these prove the gateway
follows the server's own books (statement names, skipped messages, the
login's ReadyForQuery) rather than its own guess of them.

Each test would leak a raw card number or a table-rule column if the
gateway paired a response with the wrong message."""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

CARD = "4111 1111 1111 1111"
VAULT_SECRET = "top-secret-key"

POLICY = {
    "default_action": "allow",
    "rules": [],
    "masking": {
        "detectors": {"credit_card": "partial"},
        "columns": [{"table": "public.vault", "name": ".*", "style": "null"}],
    },
}


def parse(name, sql):
    return h.frame(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!H", 0))


def bind(portal, statement, result_formats=()):
    body = portal.encode() + b"\0" + statement.encode() + b"\0" + struct.pack("!HH", 0, 0)
    body += struct.pack("!H", len(result_formats)) + b"".join(struct.pack("!H", f) for f in result_formats)
    return h.frame(b"B", body)


def describe(what, name):
    return h.frame(b"D", what + name.encode() + b"\0")


def close(what, name):
    return h.frame(b"C", what + name.encode() + b"\0")


def execute(portal=""):
    return h.frame(b"E", portal.encode() + b"\0" + struct.pack("!I", 0))


SYNC = h.frame(b"S", b"")


def read_until_ready(reader, count=1):
    """Messages up to and including the count-th ReadyForQuery."""
    msgs = []
    while count:
        m = reader.read_message()
        if m is None:
            raise AssertionError(f"connection closed; got {msgs}")
        msgs.append(m)
        if m[0] == "Z":
            count -= 1
    return msgs


class MaskingWireTest(h.GatewayTestCase):
    @classmethod
    def setUpClass(cls):
        cls.gateway_options = {"shards": 1, "extra": h.admin_setup(cls, "agentgate-maskwire-", POLICY)}
        super().setUpClass()

    @classmethod
    def prepare_database(cls):
        with cls.pg.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE customers (id int, card text);"
                        "CREATE TABLE vault (id int, secret_key text);")
            cur.execute("INSERT INTO customers VALUES (1, %s)", (CARD,))
            cur.execute("INSERT INTO vault VALUES (1, %s)", (VAULT_SECRET,))
            conn.commit()

    def exchange(self, messages, ready=1):
        """Messages up to the ready-th ReadyForQuery, or up to the
        gateway's closing error."""
        s, r, _ = h.raw_login("127.0.0.1", self.gw.port)
        msgs = []
        try:
            s.sendall(b"".join(messages))
            while ready:
                m = r.read_message()
                if m is None:
                    break
                msgs.append(m)
                if m[0] == "Z":
                    ready -= 1
            return msgs
        finally:
            s.close()

    def assert_not_leaked(self, msgs, raw, what):
        blob = b"".join(body for _, body in msgs if body)
        self.assertNotIn(raw.encode(), blob, f"{what}: {msgs}")

    def assert_masked_or_refused(self, msgs):
        """Rows came (masked), or the gateway refused rows it could not
        check (undescribed rows while the policy has column rules: 0A000)."""
        types = [t for t, _ in msgs]
        refused = [b for t, b in msgs if t == "E" and b"C0A000" in b and b"never described" in b]
        self.assertTrue("D" in types or refused, msgs)

    # Named so it runs first: the shard's catalog has not been read yet.
    def test_0_query_pipelined_behind_the_login_sees_table_rules(self):
        s = h.raw_connect("127.0.0.1", self.gw.port)
        try:
            s.sendall(h.startup_message("agent", "postgres") +
                      h.query_message("SELECT secret_key FROM vault"))
            msgs = read_until_ready(h.WireReader(s), 2)
        finally:
            s.close()
        self.assertIn("D", [t for t, _ in msgs], msgs)
        self.assert_not_leaked(msgs, VAULT_SECRET, "first pipelined query")

    def test_describe_of_a_replaced_unnamed_statement(self):
        msgs = self.exchange([parse("", "SELECT true"), describe(b"S", ""),
                              parse("", "SELECT card FROM customers"), bind("", ""), execute(), SYNC])
        self.assert_masked_or_refused(msgs)
        self.assert_not_leaked(msgs, CARD, "re-parsed unnamed statement")

    def test_statement_names_longer_than_namedatalen(self):
        a, b = "n" * 63 + "1", "n" * 63 + "2"
        msgs = self.exchange([parse(a, "SELECT true"), describe(b"S", a), SYNC,
                              close(b"S", b), parse(b, "SELECT card FROM customers"),
                              bind("", a), execute(), SYNC], ready=2)
        self.assert_masked_or_refused(msgs)
        self.assert_not_leaked(msgs, CARD, "long statement names")

    def test_error_skips_a_pipelined_query(self):
        msgs = self.exchange([parse("", "SELECT 1/0"), bind("", ""), execute(),
                              h.query_message("SELECT 1"), SYNC,
                              parse("b", "SELECT true"), describe(b"S", "b"),
                              parse("t", "SELECT card FROM customers"), bind("", "t"), execute(), SYNC],
                             ready=2)
        # A Query inside an unfinished extended batch (which the server
        # skips after the error) is refused with the session: the gateway's
        # books could no longer follow what the server answers.
        fatal = [h.error_fields(b) for t, b in msgs if t == "E" and h.error_fields(b).get("S") == "FATAL"]
        self.assertEqual([f.get("C") for f in fatal], ["08P01"], msgs)
        self.assert_not_leaked(msgs, CARD, "after a skipped query")

    def test_sql_deallocate_and_prepare_behind_the_protocol(self):
        # s is described as a boolean, then replaced through SQL, then bound
        # in binary: the old description must not be trusted.
        msgs = self.exchange([parse("s", "SELECT true"), describe(b"S", "s"), SYNC,
                              h.query_message("DEALLOCATE s; PREPARE s AS SELECT card FROM customers"),
                              bind("", "s"), execute(), SYNC], ready=3)
        self.assert_not_leaked(msgs, CARD, "statement replaced by SQL")

    def test_parameter_status_is_masked(self):
        msgs = self.exchange([h.query_message(
            "SELECT set_config('application_name', card, false) IS NOT NULL FROM customers")])
        self.assertIn("S", [t for t, _ in msgs], msgs)
        self.assert_not_leaked(msgs, CARD, "ParameterStatus")


if __name__ == "__main__":
    h.main()
