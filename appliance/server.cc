#include "appliance/server.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "appliance/addresses.h"
#include "appliance/admin_server.h"
#include "appliance/approvals.h"
#include "appliance/config_loader.h"
#include "appliance/control.h"
#include "appliance/guard.h"
#include "appliance/shard_tasks.h"
#include "core/clock.h"
#include "core/identity/jwks_refresher.h"
#include "core/identity/jwt_authenticator.h"
#include "core/log.h"
#include "io/recording/shard_recorder.h"
#include "io/tls_channel.h"
#include "io/uring_shard.h"
#include "masking/platform.h"
#include "protocols/postgres/session.h"

namespace agentgate {
namespace {

constexpr int exit_runtime = 1;
constexpr int exit_config = 2;
constexpr int listen_backlog = 4096;

constexpr int recorder_poll_interval_ms = 20;

// Runs on the recorder's shard.
class poll_recorder_task final : public shard_task {
 public:
  explicit poll_recorder_task(recording::shard_recorder& recorder) : recorder_(recorder) {}
  void run(shard_services&) override { recorder_.poll(monotonic_ms()); }
  // A nudge every 20 ms: a busy shard skips some.
  control_delivery delivery() const override { return control_delivery::best_effort; }

 private:
  recording::shard_recorder& recorder_;
};

int config_error(const std::string& message) {
  fprintf(stderr, "agentgate: config error: %s\n", message.c_str());
  return exit_config;
}

// Hands a shard its own new client TLS context (shared nothing: one per shard).
class swap_tls_task final : public shard_task {
 public:
  swap_tls_task(io::uring_shard& shard, SSL_CTX* ctx) : shard_(shard), ctx_(ctx) {}
  ~swap_tls_task() override { SSL_CTX_free(ctx_); }  // dropped before it ran
  void run(shard_services&) override {
    shard_.set_server_tls_context(ctx_);
    ctx_ = nullptr;
  }
  control_delivery delivery() const override { return control_delivery::latest_wins; }
  const void* slot() const override { return &shard_; }

 private:
  io::uring_shard& shard_;
  SSL_CTX* ctx_;
};

// SIGHUP: reload the certificate and key. A bad pair is logged and the
// running one stays.
void reload_tls(const gateway_config& config, std::vector<std::unique_ptr<io::uring_shard>>& shards) {
  if (config.tls.cert.empty()) return;
  std::vector<SSL_CTX*> fresh;
  for (size_t i = 0; i < shards.size(); ++i) {
    result<SSL_CTX*> ctx = io::make_server_tls_context(config.tls.cert, config.tls.key);
    if (!ctx) {
      AG_ERROR("TLS reload failed, keeping the current certificate: %s", ctx.error().message().c_str());
      for (SSL_CTX* c : fresh) SSL_CTX_free(c);
      return;
    }
    fresh.push_back(*ctx);
  }
  for (size_t i = 0; i < shards.size(); ++i)
    if (!shards[i]->post_from_control(std::make_unique<swap_tls_task>(*shards[i], fresh[i])))
      AG_ERROR("shard %zu did not take the new certificate", i);
  AG_INFO("TLS certificate reloaded from %s", config.tls.cert.c_str());
}

// The data plane's door to the approvals service.
class service_gate final : public approval_gate {
 public:
  explicit service_gate(approval_service& service) : service_(service) {}
  result<std::string> request(approval_ticket t, approval_callback on_verdict) override {
    approval_request q;
    q.target = std::move(t.target);
    q.issuer = t.requester.issuer;
    q.subject = t.requester.subject;
    q.email = t.requester.email;
    q.groups = t.requester.groups;
    q.command = std::move(t.command);
    q.rule_id = std::move(t.rule_id);
    q.rule_message = std::move(t.rule_message);
    q.approvers = std::move(t.approvers);
    q.timeout_s = t.timeout_s;
    q.client_address = std::move(t.client_address);
    q.session_id = std::move(t.session_id);
    q.prompt_id = std::move(t.prompt_id);
    return service_.submit(std::move(q), [cb = std::move(on_verdict)](const approval_verdict& v) {
      cb(v.approved, v.reason, v.approver);
    });
  }
  void withdraw(const std::string& id) override { service_.withdraw(id); }

 private:
  approval_service& service_;
};

}  // namespace

int run_server(const std::string& config_path) {
  result<gateway_config> loaded = load_config_file(config_path);
  if (!loaded) return config_error(loaded.error().message());
  const gateway_config& config = *loaded;
  log_level level = log_level::info;
  if (parse_log_level(config.log_level, &level)) set_log_level(level);
  for (const std::string& warning : config_warnings(config)) AG_WARN("%s", warning.c_str());

  std::vector<pg::target_runtime> targets(config.targets.size());
  std::vector<net_address> listen_addresses;
  for (size_t i = 0; i < config.targets.size(); ++i) {
    const target_config& t = config.targets[i];
    const std::string path = "targets[" + std::to_string(i) + "]";
    result<net_address> upstream = resolve_address(t.upstream.host, t.upstream.port);
    if (!upstream) return config_error(path + ".upstream.host: " + upstream.error().message());
    result<net_address> listen = literal_address(t.listen_host, t.listen_port);
    if (!listen) return config_error(path + ".listen: " + listen.error().message());
    targets[i].config = t;
    targets[i].upstream_address = *upstream;
    targets[i].limits = config.limits;
    targets[i].on_token_expiry = config.identity.on_expiry;
    listen_addresses.push_back(*listen);
  }

  if (const status io_ok = io::probe_io_uring(); !io_ok) {
    fprintf(stderr, "agentgate: %s\n", io_ok.message().c_str());
    return exit_runtime;
  }
  if (const status hs_ok = masking::check_hyperscan_platform(); !hs_ok)
    AG_WARN("%s; masking will be unavailable", hs_ok.message().c_str());

  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  const unsigned shard_count = config.shards != 0 ? config.shards : cpus;

  // Bind every listener before any shard starts, so a port in use is a
  // config error at start and clients queue in the backlog meanwhile.
  for (size_t i = 0; i < targets.size(); ++i) {
    if (const status free = io::check_address_free(listen_addresses[i]); !free)
      return config_error("targets[" + std::to_string(i) + "].listen: " + free.message() + " (" +
                          listen_addresses[i].text + ")");
  }
  std::vector<std::vector<io::listener_spec>> shard_listeners(shard_count);
  std::vector<std::vector<std::unique_ptr<pg::pg_session_factory>>> factories(shard_count);
  pg::cancel_directory cancels;
  std::vector<pg::shard_context> contexts(shard_count);
  for (unsigned s = 0; s < shard_count; ++s) {
    cancels.per_shard.push_back(std::make_unique<pg::cancel_registry>(s));
    contexts[s].cancels = &cancels;
  }

  // Guardrails: the policy store (control plane) and one guard per shard.
  policy_store policies;
  std::vector<std::unique_ptr<policy_guard>> guards(shard_count);
  if (!config.policy_file.empty()) {
    result<std::vector<guard_snapshot>> snapshots = load_policy_file(policies, config.policy_file, shard_count);
    if (!snapshots) return config_error(snapshots.error().message());
    for (unsigned s = 0; s < shard_count; ++s) {
      guards[s] = std::make_unique<policy_guard>(std::move((*snapshots)[s]));
      contexts[s].inspector = guards[s].get();
      contexts[s].masker = &guards[s]->masker();
    }
  }

  // Recording: one writer per shard, recovered here before any shard runs,
  // then used only by its shard's thread.
  std::vector<std::unique_ptr<recording::shard_recorder>> recorders(shard_count);
  if (!config.recording.dir.empty()) {
    for (unsigned s = 0; s < shard_count; ++s) {
      recording::shard_recorder_options o;
      o.dir = config.recording.dir;
      o.shard = static_cast<int>(s);
      o.segment_bytes = config.recording.segment_bytes;
      o.fsync_interval_ms = config.recording.fsync_interval_ms;
      o.fsync_bytes = config.recording.fsync_bytes;
      o.fsync_always = config.recording.fsync_always;
      o.result_bytes_max = config.recording.result_bytes_max;
      o.failure = config.recording.on_failure == recording_failure_action::fail_open
                      ? recording::on_failure::fail_open
                      : recording::on_failure::fail_closed;
      o.retention.hours = config.recording.retention_hours;
      o.retention.bytes = config.recording.retention_bytes;
      result<std::unique_ptr<recording::shard_recorder>> r = recording::shard_recorder::open(o, monotonic_ms());
      if (!r) return config_error("recording.dir: " + r.error().message());
      recorders[s] = std::move(*r);
      contexts[s].recorder = recorders[s].get();
    }
    AG_INFO("recording sessions to %s (%u shards, fsync %s)", config.recording.dir.c_str(), shard_count,
            config.recording.fsync_always ? "always" : "by interval");
  }

  // Just-in-time approvals: a control-plane service, reached from the shards
  // only for held commands.
  approval_options approval_opts;
  approval_opts.webhook_url = config.approvals.webhook_url;
  approval_service approvals(approval_opts);
  service_gate gate(approvals);
  for (unsigned s = 0; s < shard_count; ++s) contexts[s].approvals = &gate;

  // Token login: the refresher owns the keys (control plane); each shard has
  // its own authenticator with its own cache, fed new snapshots by message.
  std::vector<std::unique_ptr<identity::jwt_authenticator>> authenticators(shard_count);
  std::unique_ptr<identity::jwks_refresher> refresher;
  std::vector<std::unique_ptr<io::uring_shard>> shards;
  if (!config.identity.issuers.empty()) {
    auto publish = [&](std::shared_ptr<const identity::verifier> v) {
      for (unsigned s = 0; s < shards.size(); ++s)
        if (!shards[s]->post_from_control(std::make_unique<swap_verifier_task>(*authenticators[s], v)))
          AG_ERROR("shard %u did not take the new signing keys", s);
      AG_INFO("identity: new signing keys published to %zu shards", shards.size());
    };
    result<std::unique_ptr<identity::jwks_refresher>> made =
        identity::jwks_refresher::create(config.identity, publish);
    if (!made) return config_error(made.error().message());
    refresher = std::move(*made);
    for (unsigned s = 0; s < shard_count; ++s) {
      authenticators[s] = std::make_unique<identity::jwt_authenticator>(
          refresher->current(), config.identity.cache_entries_max);
      contexts[s].auth = authenticators[s].get();
    }
  }
  for (unsigned s = 0; s < shard_count; ++s) {
    for (size_t i = 0; i < targets.size(); ++i) {
      result<int> fd = io::make_listener(listen_addresses[i], listen_backlog);
      if (!fd) {
        for (auto& specs : shard_listeners)
          for (auto& spec : specs) close(spec.fd);
        return config_error("targets[" + std::to_string(i) + "].listen: " + fd.error().message() +
                            " (" + listen_addresses[i].text + ")");
      }
      factories[s].push_back(std::make_unique<pg::pg_session_factory>(targets[i], contexts[s]));
      shard_listeners[s].push_back({*fd, factories[s].back().get(), &targets[i].config});
    }
  }

  // Signals go to the main thread only: block them before threads inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::atomic<unsigned> ready{0};
  io::shard_group group;
  std::vector<std::thread> threads;
  for (unsigned s = 0; s < shard_count; ++s) group.shards.push_back(nullptr);
  for (unsigned s = 0; s < shard_count; ++s) {
    const int cpu = config.io.pin_threads ? static_cast<int>(s % cpus) : -1;
    shards.push_back(
        std::make_unique<io::uring_shard>(s, cpu, config, std::move(shard_listeners[s]), group));
    group.shards[s] = shards.back().get();
  }
  for (unsigned s = 0; s < shard_count; ++s) {
    threads.emplace_back([&, s] {
      io::uring_shard& shard = *shards[s];
      if (const status ok = shard.init(); !ok) {
        AG_ERROR("shard %u cannot start: %s", s, ok.message().c_str());
        failed.store(1);
        stop.store(true);
        kill(getpid(), SIGTERM);
        return;
      }
      ready.fetch_add(1);
      shard.run(stop);
    });
  }
  // The config API, off the data path, on its own thread.
  std::vector<shard_parts> parts(shard_count);
  for (unsigned s = 0; s < shard_count; ++s) {
    parts[s].shard = shards[s].get();
    for (auto& f : factories[s]) parts[s].factories.push_back(f.get());
    parts[s].guard = guards[s].get();
    parts[s].recorder = recorders[s].get();
  }
  control_plane control(std::move(parts), policies, config.recording.dir);
  // The recorders' clock: written data is synced, segments rolled and
  // retention applied from each shard's own thread, prompted every 20 ms.
  SSL_CTX* admin_tls = nullptr;
  if (!config.admin.listen.empty() && !config.admin.tls.cert.empty()) {
    result<SSL_CTX*> ctx = io::make_server_tls_context(config.admin.tls.cert, config.admin.tls.key);
    if (!ctx) {
      stop.store(true);
      for (auto& t : threads) t.join();
      return config_error("admin.tls: " + ctx.error().message());
    }
    admin_tls = *ctx;
  }
  std::mutex ticker_mutex;
  std::condition_variable ticker_cv;
  bool ticker_stop = false;
  std::thread ticker;
  if (!config.recording.dir.empty()) {
    ticker = std::thread([&] {
      std::unique_lock<std::mutex> lock(ticker_mutex);
      while (!ticker_cv.wait_for(lock, std::chrono::milliseconds(recorder_poll_interval_ms), [&] { return ticker_stop; })) {
        for (unsigned s = 0; s < shard_count; ++s)
          shards[s]->post_from_control(std::make_unique<poll_recorder_task>(*recorders[s]));
      }
    });
  }
  std::unique_ptr<admin_server> admin;
  if (!config.admin.listen.empty()) {
    admin_server_options options;
    options.listen = config.admin.listen;
    options.admin_token = config.admin.token;
    if (!config.admin.tls.cert.empty()) {
      options.tls_context = admin_tls;
    } else if (config.admin.listen.rfind("127.", 0) != 0 && config.admin.listen.rfind("[::1]", 0) != 0 &&
               config.admin.listen.rfind("localhost:", 0) != 0) {
      AG_WARN("admin API on %s speaks plain HTTP: admin and approver tokens cross the network in the clear; "
              "set admin.tls", config.admin.listen.c_str());
    }
    admin = std::make_unique<admin_server>(options);
    if (options.tls_context != nullptr) SSL_CTX_free(options.tls_context);  // the server holds its own reference
    control.add_metrics_source([&approvals](std::string& out) { append_approval_metrics(out, approvals.stats()); });
    control.register_routes(*admin);
    approver_verifier verify_approver = [&refresher](std::string_view token)
        -> result<identity::verified_identity> {
      if (refresher == nullptr) return status(errc::auth, "no identity issuers are configured");
      return refresher->current()->verify(token, static_cast<int64_t>(time(nullptr)),
                                          identity::token_use::approval);
    };
    if (const status st = register_approval_routes(*admin, approvals, verify_approver); !st)
      return config_error(st.message());
    if (const status st = admin->start(); !st) {
      AG_ERROR("%s", st.message().c_str());
      stop.store(true);
      for (auto& t : threads) t.join();
      if (ticker.joinable()) {
        {
          std::lock_guard<std::mutex> lock(ticker_mutex);
          ticker_stop = true;
        }
        ticker_cv.notify_all();
        ticker.join();
      }
      return config_error(st.message());
    }
    AG_INFO("config API listening on %s", admin->address().c_str());
  }

  for (size_t i = 0; i < targets.size(); ++i)
    AG_INFO("target %s: listening on %s, upstream %s, %u shards", targets[i].config.name.c_str(),
            listen_addresses[i].text.c_str(), targets[i].upstream_address.text.c_str(), shard_count);

  if (refresher != nullptr) refresher->start();
  if (const status st = approvals.start(); !st) AG_ERROR("approvals: %s", st.message().c_str());
  int signal_number = 0;
  for (;;) {
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP || stop.load()) break;
    reload_tls(config, shards);
    if (refresher != nullptr) {
      if (const status st = refresher->reload_files(); !st)
        AG_ERROR("identity: keeping the previous keys: %s", st.message().c_str());
      refresher->request_refresh();
    }
  }
  if (refresher != nullptr) refresher->stop();
  if (admin != nullptr) admin->stop();
  approvals.stop();
  if (!stop.load()) AG_INFO("received %s, stopping", signal_number == SIGINT ? "SIGINT" : "SIGTERM");
  if (ticker.joinable()) {
    {
      std::lock_guard<std::mutex> lock(ticker_mutex);
      ticker_stop = true;
    }
    ticker_cv.notify_all();
    ticker.join();
  }
  stop.store(true);
  for (auto& t : threads) t.join();
  // The shards are gone: their recorders' last words are written here.
  for (auto& r : recorders)
    if (r != nullptr)
      if (const status st = r->flush(); !st) AG_ERROR("recording: final flush failed: %s", st.message().c_str());
  uint64_t accepted = 0;
  for (auto& s : shards) accepted += s->probe().accepted;
  AG_INFO("stopped; %llu connections accepted", static_cast<unsigned long long>(accepted));
  return failed.load() ? exit_runtime : 0;
}

}  // namespace agentgate
