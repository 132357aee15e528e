// agentgate-dpdk: the PostgreSQL gateway over the DPDK backend (io/dpdk/):
// DPDK moves Ethernet frames, lwIP is the TCP/IP stack, and the sessions
// are the same protocols/postgres sessions the io_uring binary runs.
// One shard, on the thread that starts the EAL. docs/dpdk.md says what
// works and what does not yet.
//
//   agentgate-dpdk --config FILE --ip 10.77.0.2/24
//       --dpdk-args "--no-huge --no-pci --no-shconf --vdev=net_tap0,iface=agtap0"
//
// Exit codes as `agentgate serve`: 0 clean stop, 1 run-time failure (e.g.
// the EAL cannot start), 2 bad configuration.

#include <CLI/CLI.hpp>

#include <arpa/inet.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "appliance/addresses.h"
#include "appliance/config_loader.h"
#include "appliance/guard.h"
#include "appliance/shard_tasks.h"
#include "core/identity/jwks_refresher.h"
#include "core/identity/jwt_authenticator.h"
#include "core/log.h"
#include "core/policy.h"
#include "io/dpdk/dpdk_port.h"
#include "io/dpdk/lwip_shard.h"
#include "protocols/postgres/session.h"

namespace agentgate {
namespace {

constexpr int exit_runtime = 1;
constexpr int exit_config = 2;
constexpr const char* default_dpdk_args =
    "--no-huge --no-pci --no-shconf --no-telemetry -m 256 --vdev=net_tap0,iface=agtap0";

std::atomic<bool> stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");

void on_stop_signal(int) { stop_requested.store(true); }

int config_error(const std::string& message) {
  fprintf(stderr, "agentgate-dpdk: config error: %s\n", message.c_str());
  return exit_config;
}

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string word;
  while (in >> word) out.push_back(word);
  return out;
}

struct options {
  std::string config_path;
  std::string ip = "10.77.0.2/24";
  std::string gateway;
  std::string dpdk_args = default_dpdk_args;
  bool busy_poll = false;
};

int run(const options& opt) {
  result<gateway_config> loaded = load_config_file(opt.config_path);
  if (!loaded) return config_error(loaded.error().message());
  const gateway_config& config = *loaded;
  log_level level = log_level::info;
  if (parse_log_level(config.log_level, &level)) set_log_level(level);
  for (const std::string& warning : config_warnings(config)) AG_WARN("%s", warning.c_str());

  result<io::dpdk::ipv4_interface> ip = io::dpdk::parse_ipv4_interface(opt.ip, opt.gateway);
  if (!ip) {
    fprintf(stderr, "agentgate-dpdk: --ip/--gateway: %s\n", ip.error().message().c_str());
    return exit_config;
  }

  // What this backend cannot do is refused at start when ignoring it would
  // weaken what the config asks for, and logged when it is a convenience.
  if (!config.recording.dir.empty())
    return config_error("recording.dir: recording is not available on the DPDK backend yet");
  if (!config.tls.cert.empty())
    AG_WARN("tls: client TLS is not available on the DPDK backend; SSLRequest is answered 'N'");
  if (!config.admin.listen.empty()) AG_WARN("admin.listen: the config API is not served by agentgate-dpdk");
  if (!config.approvals.webhook_url.empty())
    AG_WARN("approvals: not available on agentgate-dpdk; require_approval rules deny");
  if (config.shards > 1) AG_WARN("shards: the DPDK backend runs one shard");

  std::vector<pg::target_runtime> targets(config.targets.size());
  for (size_t i = 0; i < config.targets.size(); ++i) {
    const target_config& t = config.targets[i];
    const std::string path = "targets[" + std::to_string(i) + "]";
    if (t.upstream.tls != upstream_tls_mode::disable)
      return config_error(path + ".upstream.tls: upstream TLS is not available on the DPDK backend");
    in_addr listen_ip{};
    if (inet_pton(AF_INET, t.listen_host.c_str(), &listen_ip) != 1 ||
        (listen_ip.s_addr != 0 && ntohl(listen_ip.s_addr) != ip->address))
      return config_error(path + ".listen: the host must be 0.0.0.0 or the --ip address (" + opt.ip + ")");
    for (size_t j = 0; j < i; ++j)
      if (config.targets[j].listen_port == t.listen_port)
        return config_error(path + ".listen: port " + std::to_string(t.listen_port) + " is used twice");
    result<net_address> upstream = resolve_ipv4(t.upstream.host, t.upstream.port);
    if (!upstream) return config_error(path + ".upstream.host: " + upstream.error().message());
    targets[i].config = t;
    targets[i].upstream_address = *upstream;
    targets[i].limits = config.limits;
    targets[i].on_token_expiry = config.identity.on_expiry;
  }

  pg::cancel_directory cancels;
  cancels.per_shard.push_back(std::make_unique<pg::cancel_registry>(0));
  pg::shard_context context;
  context.cancels = &cancels;

  // Guardrails and masking: the policy at start (no PUT /v1/policy here).
  policy_store policies;
  std::unique_ptr<policy_guard> guard;
  if (!config.policy_file.empty()) {
    result<std::vector<guard_snapshot>> snapshots = load_policy_file(policies, config.policy_file, 1);
    if (!snapshots) return config_error(snapshots.error().message());
    guard = std::make_unique<policy_guard>(std::move((*snapshots)[0]));
    context.inspector = guard.get();
    context.masker = &guard->masker();
  }

  // The EAL first: it may pin this thread, and the shard runs on it.
  io::dpdk::port_options port_options;
  port_options.eal_args = split_words(opt.dpdk_args);
  result<std::unique_ptr<io::dpdk::dpdk_port>> port = io::dpdk::dpdk_port::open(port_options);
  if (!port) {
    fprintf(stderr, "agentgate-dpdk: %s\n", port.error().message().c_str());
    return exit_runtime;
  }
  AG_INFO("dpdk: %s, MTU %u", (*port)->description().c_str(), (*port)->mtu());

  std::vector<std::unique_ptr<pg::pg_session_factory>> factories;
  std::vector<io::dpdk::lwip_listener_spec> listeners;
  for (const pg::target_runtime& t : targets) {
    factories.push_back(std::make_unique<pg::pg_session_factory>(t, context));
    listeners.push_back({t.config.listen_port, factories.back().get(), &t.config});
  }
  io::dpdk::lwip_shard_options shard_options;
  shard_options.ip = *ip;
  shard_options.busy_poll = opt.busy_poll;
  auto shard = std::make_unique<io::dpdk::lwip_shard>(config, **port, shard_options, std::move(listeners));

  // Token login: the refresher owns the keys; the shard's authenticator is
  // fed new snapshots through its control inbox.
  std::unique_ptr<identity::jwt_authenticator> authenticator;
  std::unique_ptr<identity::jwks_refresher> refresher;
  if (!config.identity.issuers.empty()) {
    auto publish = [&](std::shared_ptr<const identity::verifier> v) {
      if (!shard->post_from_control(std::make_unique<swap_verifier_task>(*authenticator, v)))
        AG_ERROR("the shard did not take the new signing keys: its inbox is full");
    };
    result<std::unique_ptr<identity::jwks_refresher>> made = identity::jwks_refresher::create(config.identity, publish);
    if (!made) return config_error(made.error().message());
    refresher = std::move(*made);
    authenticator = std::make_unique<identity::jwt_authenticator>(refresher->current(),
                                                                  config.identity.cache_entries_max);
    context.auth = authenticator.get();
  }

  if (const status st = shard->init(); !st) {
    fprintf(stderr, "agentgate-dpdk: %s\n", st.message().c_str());
    return exit_runtime;
  }
  for (const pg::target_runtime& t : targets)
    AG_INFO("target %s: listening on %s port %u (lwIP), upstream %s", t.config.name.c_str(), opt.ip.c_str(),
            t.config.listen_port, t.upstream_address.text.c_str());

  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
  if (refresher != nullptr) refresher->start();

  shard->run(stop_requested);

  if (refresher != nullptr) refresher->stop();
  const io::dpdk::lwip_probe& probe = shard->probe();
  const io::dpdk::port_probe& wire = (*port)->probe();
  AG_INFO("stopped; %llu connections accepted; %llu frames in, %llu out, %llu dropped on transmit",
          static_cast<unsigned long long>(probe.accepted), static_cast<unsigned long long>(wire.frames_in),
          static_cast<unsigned long long>(wire.frames_out), static_cast<unsigned long long>(wire.tx_dropped));
  shard.reset();
  factories.clear();
  port->reset();  // stops the port and the EAL
  return 0;
}

}  // namespace
}  // namespace agentgate

int main(int argc, char** argv) {
  CLI::App app{"agentgate-dpdk: the PostgreSQL gateway on DPDK and lwIP (docs/dpdk.md)"};
  agentgate::options opt;
  app.add_option("--config", opt.config_path, "JSON config file (docs/config.md)")->required();
  app.add_option("--ip", opt.ip, "the gateway's IPv4 address on the DPDK port, with its prefix length")
      ->capture_default_str();
  app.add_option("--gateway", opt.gateway, "IPv4 next hop for addresses outside --ip's subnet");
  app.add_option("--dpdk-args", opt.dpdk_args, "EAL arguments, split at spaces")->capture_default_str();
  app.add_flag("--busy-poll", opt.busy_poll, "never sleep when idle (one core at 100 %)");
  CLI11_PARSE(app, argc, argv);
  return agentgate::run(opt);
}
