// The agentgate binary: subcommands over the appliance's pieces.

#include <CLI/CLI.hpp>

#include <cstdio>
#include <sstream>

#include "appliance/approvals_cli.h"
#include "appliance/recordings_cli.h"
#include "appliance/server.h"
#include "core/identity/token_signer.h"

namespace {

std::vector<std::string> split_groups(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"agentgate: an access gateway between AI agents and production systems"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "agentgate 0.1.0");

  std::string config_path;
  CLI::App* serve = app.add_subcommand("serve", "run the gateway in the foreground");
  serve->add_option("--config", config_path, "JSON config file (docs/config.md)")->required();

  // agentgate token: a signed JWT for demos, tests and load tests.
  std::string key_path, iss, aud, sub, email, groups, kid;
  int64_t ttl_s = 3600;
  bool print_jwks = false;
  CLI::App* token = app.add_subcommand("token", "print a signed JWT (or the key's JWKS)");
  token->add_option("--key", key_path, "PEM private key: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA)")
      ->required();
  token->add_option("--iss", iss, "issuer");
  token->add_option("--aud", aud, "audience");
  token->add_option("--sub", sub, "subject");
  token->add_option("--email", email, "email claim");
  token->add_option("--groups", groups, "comma-separated groups");
  token->add_option("--ttl", ttl_s, "seconds until the token expires")->check(CLI::Range(int64_t{1}, int64_t{31536000}));
  token->add_option("--kid", kid, "key id (default: the key's RFC 7638 thumbprint)");
  token->add_flag("--print-jwks", print_jwks, "print the public key as a JWKS document instead");

  // agentgate approvals list | show ID | approve ID | deny ID
  agentgate::approvals_cli_options approvals_options;
  CLI::App* approvals = app.add_subcommand("approvals", "list, show, approve or deny held commands");
  approvals->add_option("action", approvals_options.action, "list | show | approve | deny")
      ->required()
      ->check(CLI::IsMember({"list", "show", "approve", "deny"}));
  approvals->add_option("id", approvals_options.id, "approval id (show, approve, deny)");
  approvals->add_option("--reason", approvals_options.reason, "kept with the decision");
  approvals->add_flag("--all", approvals_options.all, "list decided requests too");
  approvals->add_flag("--json", approvals_options.json, "print JSON");
  approvals->add_option("--admin-url", approvals_options.admin_url,
                        "config API (default $AGENTGATE_ADMIN_URL or http://127.0.0.1:8081)");
  approvals->add_option("--token", approvals_options.token,
                        "list/show: the admin token; approve/deny: your own JWT");
  approvals->add_option("--token-file", approvals_options.token_file, "read the token from a file");
  approvals->add_option("--timeout-ms", approvals_options.timeout_ms, "HTTP timeout");

  // agentgate recordings verify --dir DIR; agentgate replay --dir DIR [--session ID] [--format F]
  agentgate::recordings_cli_options recordings_options;
  CLI::App* recordings = app.add_subcommand("recordings", "check recording segment files");
  recordings->require_subcommand(1);
  CLI::App* verify = recordings->add_subcommand("verify", "check every segment's records and checksums (read-only)");
  verify->add_option("--dir", recordings_options.dir, "recording.dir")->required();
  CLI::App* replay = app.add_subcommand("replay", "list recorded sessions, or print one");
  replay->add_option("--dir", recordings_options.dir, "recording.dir")->required();
  replay->add_option("--session", recordings_options.session, "session id (32 hex digits); without it, list sessions");
  replay->add_option("--format", recordings_options.format, "text | jsonl | asciicast")
      ->check(CLI::IsMember({"text", "jsonl", "asciicast"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Usage errors share the config errors' exit code: the operator must fix the call.
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (*serve) return agentgate::run_server(config_path);
  if (*approvals) return agentgate::run_approvals_cli(approvals_options);
  if (*verify) return agentgate::run_recordings_verify(recordings_options);
  if (*replay) return agentgate::run_replay(recordings_options);
  if (*token) {
    namespace id = agentgate::identity;
    if (print_jwks) {
      agentgate::result<std::string> jwks = id::jwks_for_key(key_path, kid);
      if (!jwks) {
        fprintf(stderr, "agentgate token: %s\n", jwks.error().message().c_str());
        return 2;
      }
      printf("%s\n", jwks->c_str());
      return 0;
    }
    if (iss.empty() || aud.empty() || sub.empty()) {
      fprintf(stderr, "agentgate token: --iss, --aud and --sub are required\n");
      return 2;
    }
    id::token_claims claims;
    claims.iss = iss;
    claims.aud = aud;
    claims.sub = sub;
    claims.email = email;
    claims.groups = split_groups(groups);
    claims.ttl_s = ttl_s;
    claims.kid = kid;
    agentgate::result<std::string> jwt = id::sign_token(key_path, claims);
    if (!jwt) {
      fprintf(stderr, "agentgate token: %s\n", jwt.error().message().c_str());
      return 2;
    }
    printf("%s\n", jwt->c_str());
    return 0;
  }
  return 2;
}
