#pragma once
// The guardrail seam: a protocol session asks its shard's inspector what to
// do with each command before any of it goes upstream. Implemented by the
// appliance (classifier + policy snapshot); one per shard, used only by that
// shard's thread.

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/authenticator.h"
#include "core/policy.h"
#include "core/sql_facts.h"

namespace agentgate {

class command_inspector {
 public:
  virtual ~command_inspector() = default;
  // The decision for a SQL text (one or several statements). The reference
  // stays valid until the next call on this inspector.
  virtual const policy_decision& inspect_sql(std::string_view target, const session_identity& who,
                                             std::string_view sql) = 0;
  // Why the last inspect_sql could not read the SQL (the parser's message);
  // empty when it could.
  virtual std::string_view parse_error() const = 0;
  // The legacy FunctionCall message, whose function the gateway cannot see by name.
  virtual const policy_decision& inspect_function_call(std::string_view target,
                                                       const session_identity& who) = 0;
  // The statements the last inspect_sql saw (valid until the next call),
  // e.g. for their command tags; empty when it could not read them.
  virtual std::span<const statement_facts> last_statements() const { return {}; }
};

// A command held for a human's approval, as the approvals service sees it.
struct approval_ticket {
  std::string target;
  session_identity requester;
  std::string command;
  std::string rule_id;
  std::string rule_message;
  std::vector<std::string> approvers;
  uint32_t timeout_s = 0;
  std::string client_address;
  std::string session_id;  // 32 hex digits, as in the logs and recordings
  std::string prompt_id;   // the prompt attribution of the command, if any
};

// Called once with the verdict, from a control-plane thread; the session's
// side posts it to its own shard.
// approver: who decided (email, else subject); empty when it timed out.
using approval_callback = std::function<void(bool approved, std::string reason, std::string approver)>;

// The data plane's door to the approvals service (control plane).
class approval_gate {
 public:
  virtual ~approval_gate() = default;
  // The request's id, or an error (errc::limit when too many are pending).
  virtual result<std::string> request(approval_ticket ticket, approval_callback on_verdict) = 0;
  // The client went away or cancelled: no verdict will come.
  virtual void withdraw(const std::string& id) = 0;
};

}  // namespace agentgate
