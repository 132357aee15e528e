#pragma once
// `agentgate approvals list | show ID | approve ID | deny ID`: a client of the
// config API's approval routes (docs/approvals.md), over libcurl.
//
// Credentials: `list` and `show` take the admin token, `approve` and `deny`
// the approver's own JWT. Either comes from --token, else --token-file (read
// and trimmed), else the environment (AGENTGATE_ADMIN_TOKEN for the admin
// token, AGENTGATE_TOKEN for the JWT). The admin URL comes from --admin-url,
// else AGENTGATE_ADMIN_URL, else http://127.0.0.1:8081.
//
// Exit codes: 0 success; 1 the server refused (its error message is printed)
// or could not be reached; 2 a usage error (nothing was sent).
//
// Text that came from agents (commands, names) is printed with control
// characters and bidirectional overrides escaped, so a command cannot hide
// part of itself from the approver's terminal.

#include <cstdint>
#include <cstdio>
#include <string>

namespace agentgate {

struct approvals_cli_options {
  std::string action;      // "list", "show", "approve" or "deny"
  std::string id;          // show, approve, deny: the approval id
  std::string reason;      // approve, deny: optional, kept with the decision
  bool all = false;        // list: decided ones too (--all)
  bool json = false;       // print the server's JSON instead of a table (--json)
  std::string admin_url;   // --admin-url
  std::string token;       // --token
  std::string token_file;  // --token-file
  uint32_t timeout_ms = 10'000;  // --timeout-ms: the whole HTTP exchange
  std::FILE* out = stdout;       // tests redirect these
  std::FILE* err = stderr;
};

int run_approvals_cli(const approvals_cli_options& options);

}  // namespace agentgate
