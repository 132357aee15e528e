"""TLS between the gateway and the upstream: a PostgreSQL that takes only
hostssl logins, the gateway with upstream.tls require / verify-full (with the
test CA), a verify-full against the wrong CA refused, and disable refused by
the server. The gateway's own upstream session reports ssl = true."""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import identity_harness as ih  # noqa: E402
import pg_harness as h  # noqa: E402


class UpstreamTlsTest(h.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="agentgate-uptls-")
        os.chmod(cls.dir, 0o755)
        cls.pki = ih.make_pki(cls.dir)
        other = os.path.join(cls.dir, "other")
        os.makedirs(other)
        cls.other_ca = ih.make_pki(other)["ca_cert"]
        # PostgreSQL wants its key owned by itself and private.
        for name in ("cert", "key"):
            h._chown_to_postgres(cls.pki[name])
        cls.pg = h.PostgresServer(settings={
            "ssl": "on", "ssl_cert_file": f"'{cls.pki['cert']}'", "ssl_key_file": f"'{cls.pki['key']}'"})
        cls.pg.__enter__()
        with open(os.path.join(cls.pg.datadir, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
        cls.pg.admin_sql("SELECT pg_reload_conf()")

    @classmethod
    def tearDownClass(cls):
        cls.pg.__exit__(None, None, None)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def gateway(self, **upstream):
        gw = h.Agentgate(self.pg)
        base = gw.config

        def config():
            cfg = base()
            cfg["targets"][0]["upstream"].update(upstream)
            return cfg

        gw.config = config
        return gw

    def ssl_in_use(self, gw):
        return h.run_psql(gw.dsn(), ["-qAt", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"])

    def test_require(self):
        with self.gateway(tls="require") as gw:
            res = self.ssl_in_use(gw)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout.strip(), "t")

    def test_verify_full(self):
        with self.gateway(tls="verify-full", ca_file=self.pki["ca_cert"]) as gw:
            res = self.ssl_in_use(gw)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout.strip(), "t")

    def test_verify_full_wrong_ca_refused(self):
        with self.gateway(tls="verify-full", ca_file=self.other_ca) as gw:
            res = self.ssl_in_use(gw)
            log = gw.stderr_text()
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("upstream", res.stderr)
        self.assertIn("certificate verify failed", log)

    def test_disable_refused_by_server(self):
        with self.gateway(tls="disable") as gw:
            res = self.ssl_in_use(gw)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("upstream login failed", res.stderr)


if __name__ == "__main__":
    h.main()
