#!/usr/bin/python3
"""pgbench through agentgate: init, then bounded runs in every query protocol."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pg_harness as h  # noqa: E402

CLIENTS = 4
THREADS = 2
TX_PER_CLIENT = 200


class PgbenchTest(h.GatewayTestCase):
    gateway_options = {"shards": 2}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.init = cls.pgbench(["-i", "-s", "1", "-q"])
        cls.tpcb_done = 0

    @classmethod
    def pgbench(cls, args):
        return h.run_pgbench(cls.gw.host, cls.gw.port, cls.gw.client_user, cls.pg.database,
                             args, timeout=300)

    def direct_scalar(self, sql):
        res = self.psql_direct(["-Atc", sql])
        self.assertEqual(res.returncode, 0, res.stderr)
        return res.stdout.strip()

    def require_init(self):
        if self.init.returncode != 0:
            self.fail("pgbench -i through the gateway failed (see test_1_init)")

    def run_bench(self, args, expected_tx):
        res = self.pgbench(args)
        out = res.stdout + res.stderr
        detail = f"pgbench {' '.join(args)}\n{out}\n--- gateway log:\n{self.gw.stderr_text()[-4000:]}"
        self.assertEqual(res.returncode, 0, detail)
        m = re.search(r"number of transactions actually processed: (\d+)/(\d+)", out)
        self.assertIsNotNone(m, detail)
        self.assertEqual((int(m.group(1)), int(m.group(2))), (expected_tx, expected_tx), detail)
        m = re.search(r"number of failed transactions: (\d+)", out)
        self.assertIsNotNone(m, detail)
        self.assertEqual(int(m.group(1)), 0, detail)
        self.assertNotIn("error", res.stderr.lower().replace("number of errors", ""), detail)
        return out

    def test_1_init(self):
        self.assertEqual(self.init.returncode, 0,
                         f"{self.init.stdout}\n{self.init.stderr}\n--- gateway log:\n"
                         f"{self.gw.stderr_text()[-4000:]}")
        self.assertEqual(self.direct_scalar("SELECT count(*) FROM pgbench_accounts"), "100000")
        self.assertEqual(self.direct_scalar("SELECT count(*) FROM pgbench_branches"), "1")
        self.assertEqual(self.direct_scalar("SELECT count(*) FROM pgbench_tellers"), "10")

    def _tpcb(self, protocol):
        self.require_init()
        n = CLIENTS * TX_PER_CLIENT
        self.run_bench(["-M", protocol, "-c", str(CLIENTS), "-j", str(THREADS),
                        "-t", str(TX_PER_CLIENT)], n)
        # pgbench truncates pgbench_history before a run (no -n), and every
        # TPC-B-like transaction inserts exactly one history row.
        self.assertEqual(int(self.direct_scalar("SELECT count(*) FROM pgbench_history")), n)
        # The bench keeps the balances consistent across the three tables.
        self.assertEqual(
            self.direct_scalar("SELECT (SELECT sum(abalance) FROM pgbench_accounts) = "
                               "(SELECT sum(bbalance) FROM pgbench_branches) AND "
                               "(SELECT sum(bbalance) FROM pgbench_branches) = "
                               "(SELECT sum(tbalance) FROM pgbench_tellers)"), "t")

    def test_2_tpcb_simple(self):
        self._tpcb("simple")

    def test_2_tpcb_extended(self):
        self._tpcb("extended")

    def test_2_tpcb_prepared(self):
        self._tpcb("prepared")

    def test_3_select_only(self):
        self.require_init()
        for protocol in ("simple", "extended", "prepared"):
            with self.subTest(protocol=protocol):
                self.run_bench(["-S", "-M", protocol, "-c", str(CLIENTS), "-j", str(THREADS),
                                "-t", str(TX_PER_CLIENT)], CLIENTS * TX_PER_CLIENT)

    def test_4_connect_per_transaction(self):
        # -C: a new session through the gateway for every transaction.
        self.require_init()
        self.run_bench(["-S", "-C", "-c", str(CLIENTS), "-j", str(THREADS), "-t", "50"],
                       CLIENTS * 50)
        self.gw.assert_alive()

    def test_5_server_side_init(self):
        # 'G': server-side data generation (INSERT ... SELECT generate_series) instead of COPY.
        res = self.pgbench(["-i", "-s", "1", "-q", "-I", "dtGvp"])
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertEqual(self.direct_scalar("SELECT count(*) FROM pgbench_accounts"), "100000")


if __name__ == "__main__":
    h.main()
