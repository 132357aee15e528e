"""The config API over TLS (admin.tls; issue 10, "also noted": approver and
admin tokens must not cross the network in the clear). A real gateway with a
test CA's certificate: curl and Python verify it, plain HTTP to the port gets
nothing, and an approval made over HTTPS releases a held command."""

import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import identity_harness as ih  # noqa: E402
import pg_harness as h  # noqa: E402

POLICY = {
    "default_action": "allow",
    "rules": [{"id": "bulk-writes", "match": {"sql": {"statements": ["UPDATE"], "without_where": True}},
               "action": "require_approval", "approvers": ["dba"], "timeout_s": 30}],
}


class AdminTlsTest(h.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="agentgate-admintls-")
        cls.world = ih.IdentityWorld().__enter__()
        cls.pg = h.PostgresServer().__enter__()
        cls.pg.admin_sql("CREATE TABLE t (id int, n int default 0); INSERT INTO t (id) VALUES (1), (2); "
                         f"ALTER TABLE t OWNER TO {cls.pg.user}", dbname=cls.pg.database)
        policy_file = os.path.join(cls.dir, "policy.json")
        with open(policy_file, "w") as f:
            json.dump(POLICY, f)
        cls.admin_token = secrets.token_hex(16)
        token_file = os.path.join(cls.dir, "admin-token")
        with open(token_file, "w") as f:
            f.write(cls.admin_token + "\n")
        cls.admin_port = h.free_port()
        cls.gw = ih.IdentityGateway(cls.pg, cls.world, extra={
            "policy_file": policy_file,
            "admin": {"listen": f"127.0.0.1:{cls.admin_port}", "token_file": token_file,
                      "tls": cls.world.tls_config()}}).__enter__()
        cls.ctx = ssl.create_default_context(cafile=cls.world.pki["ca_cert"])
        cls.ctx.check_hostname = False  # the test certificate names localhost / 127.0.0.1 either way

    @classmethod
    def tearDownClass(cls):
        cls.gw.__exit__(None, None, None)
        cls.pg.__exit__(None, None, None)
        cls.world.__exit__(None, None, None)
        h.shutil.rmtree(cls.dir, ignore_errors=True)

    def api(self, method, path, token=None, body=None):
        req = urllib.request.Request(f"https://127.0.0.1:{self.admin_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ctx) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def test_https_with_python_and_curl(self):
        status, body = self.api("GET", "/v1/sessions")
        self.assertEqual(status, 200, body)
        status, _ = self.api("GET", "/v1/sessions", token="wrong-token-wrong-token")
        self.assertEqual(status, 401)
        out = subprocess.run(["curl", "-sS", "--cacert", self.world.pki["ca_cert"], "-f",
                              "-H", f"Authorization: Bearer {self.admin_token}",
                              f"https://127.0.0.1:{self.admin_port}/v1/policy"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("rules", out.stdout)
        # Keep-alive: several requests on one TLS connection.
        import http.client
        conn = http.client.HTTPSConnection("127.0.0.1", self.admin_port, context=self.ctx, timeout=10)
        for _ in range(5):
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            r.read()
        conn.close()

    def test_plain_http_gets_no_answer(self):
        s = socket.create_connection(("127.0.0.1", self.admin_port), timeout=5)
        s.sendall(f"GET /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.admin_token}\r\n\r\n".encode())
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        s.close()
        self.assertNotIn(b"HTTP/1.1 200", data)
        self.assertNotIn(b"sessions", data)
        self.assertTrue(self.gw.alive())

    def test_approval_over_https(self):
        alice = self.world.token(sub="alice", groups=("dev",))
        bob = self.world.token(sub="bob", groups=("dba",))
        out = {}

        def work():
            try:
                conn = self.gw.connect_token(alice)
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("UPDATE t SET n = n + 1")
                    out["rows"] = cur.rowcount
                conn.close()
            except Exception as e:  # noqa: BLE001
                out["error"] = e

        t = threading.Thread(target=work)
        t.start()
        deadline = time.monotonic() + 10
        pending = []
        while not pending and time.monotonic() < deadline:
            _, body = self.api("GET", "/v1/approvals")
            pending = body.get("approvals", [])
            time.sleep(0.05)
        self.assertEqual(len(pending), 1)
        status, body = self.api("POST", f"/v1/approvals/{pending[0]['id']}/approve", token=bob)
        self.assertEqual(status, 200, body)
        t.join(10)
        self.assertEqual(out, {"rows": 2})


if __name__ == "__main__":
    h.main()
