// The agentgate binary: subcommands over the appliance's pieces.

#include <CLI/CLI.hpp>

#include "appliance/server.h"

int main(int argc, char** argv) {
  CLI::App app{"agentgate: an access gateway between AI agents and production systems"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "agentgate 0.1.0");

  std::string config_path;
  CLI::App* serve = app.add_subcommand("serve", "run the gateway in the foreground");
  serve->add_option("--config", config_path, "JSON config file (docs/config.md)")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Usage errors share the config errors' exit code: the operator must fix the call.
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (*serve) return agentgate::run_server(config_path);
  return 2;
}
