// The agentgate binary: subcommands over the appliance's pieces.

#include <CLI/CLI.hpp>

#include <cstdio>
#include <sstream>

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Usage errors share the config errors' exit code: the operator must fix the call.
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (*serve) return agentgate::run_server(config_path);
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
