"""identity.issuers[].approver_audience: approval tokens and login tokens are
different tokens. A token for the approvals audience cannot log in through a
target (a token sniffed off a plain-HTTP config API is no key to the
database), and a login token, which every agent holds, cannot approve a held
command, even when its groups include the rule's approvers."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import identity_harness as ih  # noqa: E402
import pg_harness as h  # noqa: E402

APPROVER_AUDIENCE = "agentgate-approvals"

POLICY = {
    "version": 1,
    "default_action": "allow",
    "rules": [
        {"id": "bulk-writes", "match": {"sql": {"statements": ["UPDATE"], "without_where": True}},
         "action": "require_approval", "approvers": ["dba"], "timeout_s": 60},
    ],
}


class ApproverAudienceTest(ih.ApprovalGatewayCase):
    policy = POLICY
    rows = 3
    prefix = "agentgate-apaud-"

    @classmethod
    def gateway_config(cls):
        return {"identity_extra": {"issuer_extra": {"approver_audience": APPROVER_AUDIENCE}}}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.alice = cls.world.token(sub="alice", groups=("dev",))
        cls.bob_login = cls.world.token(sub="bob", groups=("dba",))
        cls.bob_approval = cls.world.token(sub="bob", groups=("dba",), aud=APPROVER_AUDIENCE)

    def pending(self, timeout_s=10):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, body = self.api("GET", "/v1/approvals")
            self.assertEqual(status, 200, body)
            if body["approvals"]:
                return body["approvals"]
            time.sleep(0.05)
        self.fail("no pending approval")

    def login(self, token):
        return ih.wire_login(self.gw.host, self.gw.port, token, database=self.pg.database,
                             ca_file=self.world.pki["ca_cert"])

    def test_approval_token_cannot_log_in(self):
        res = self.login(self.bob_approval)
        self.assertFalse(res.ok, res)
        self.assertIsNotNone(res.error, res)
        self.assertEqual((res.error.get("S"), res.error.get("C")), ("FATAL", "28P01"), res.error)
        self.assertEqual(res.error.get("M"), "token refused: token audience does not include this gateway")
        # Nor can one that names both audiences: it is an approval token.
        both = self.world.crafted(sub="bob", groups=("dba",), aud=[ih.AUDIENCE, APPROVER_AUDIENCE])
        res = self.login(both)
        self.assertFalse(res.ok, res)
        self.assertEqual(res.error.get("M"), "token refused: token is for approvals, not for logging in")
        # The same person's login token does log in.
        ok = self.login(self.bob_login)
        self.assertTrue(ok.ok, ok)
        ok.close()

    def test_login_token_cannot_approve(self):
        t, out = self.run_held("UPDATE t SET n = n + 1")
        try:
            [req] = self.pending()
            # bob is in the approver group, but this is his login token.
            status, body = self.api("POST", f"/v1/approvals/{req['id']}/approve", self.bob_login)
            self.assertEqual(status, 401, body)
            self.assertIn("token audience is not this gateway's approvals", body.get("error", ""))
            [still] = self.pending()
            self.assertEqual((still["id"], still["state"]), (req["id"], "pending"))
            # His approval token approves.
            status, body = self.api("POST", f"/v1/approvals/{req['id']}/approve", self.bob_approval)
            self.assertEqual(status, 200, body)
            t.join(20)
            self.assertFalse(t.is_alive())
            self.assertNotIn("error", out, out)
            self.assertEqual(out.get("rowcount"), 3)
        finally:
            if t.is_alive():
                status, body = self.api("GET", "/v1/approvals")
                for r in body.get("approvals", []):
                    self.api("POST", f"/v1/approvals/{r['id']}/deny", self.bob_approval)
                t.join(20)


if __name__ == "__main__":
    h.main()
