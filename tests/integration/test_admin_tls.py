"""The config API over TLS (admin.tls; issue 10, "also noted": approver and
admin tokens must not cross the network in the clear). A real gateway with a
test CA's certificate: curl and Python verify it, plain HTTP to the port gets
nothing, and an approval made over HTTPS releases a held command."""

import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import identity_harness as ih  # noqa: E402
import pg_harness as h  # noqa: E402

POLICY = {
    "default_action": "allow",
    "rules": [{"id": "bulk-writes", "match": {"sql": {"statements": ["UPDATE"], "without_where": True}},
               "action": "require_approval", "approvers": ["dba"], "timeout_s": 30}],
}


class AdminTlsTest(ih.ApprovalGatewayCase):
    policy = POLICY
    rows = 2
    prefix = "agentgate-admintls-"

    @classmethod
    def admin_extra(cls):
        return {"tls": cls.world.tls_config()}

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
        conn = http.client.HTTPSConnection("127.0.0.1", self.admin_port, context=self.admin_ssl, timeout=10)
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
        t, out = self.run_held("UPDATE t SET n = n + 1", alice)
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
        self.assertEqual(out, {"rowcount": 2})


if __name__ == "__main__":
    h.main()
