#include "appliance/control.h"

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "core/log.h"

namespace agentgate {
namespace {

constexpr auto shard_answer_timeout = std::chrono::seconds(2);

class function_task final : public shard_task {
 public:
  explicit function_task(std::function<void()> fn) : fn_(std::move(fn)) {}
  void run(shard_services&) override { fn_(); }

 private:
  std::function<void()> fn_;
};

void counter(std::string& out, const char* name, const char* help, const char* type) {
  out += "# HELP ";
  out += name;
  out += " ";
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += " ";
  out += type;
  out += "\n";
}

void sample(std::string& out, const char* name, const std::string& labels, uint64_t value) {
  out += name;
  out += "{" + labels + "} " + std::to_string(value) + "\n";
}

}  // namespace

control_plane::control_plane(std::vector<shard_parts> shards, policy_store& store)
    : shards_(std::move(shards)), store_(store) {}

bool control_plane::run_on_all_shards(const std::function<void(unsigned)>& fn) {
  struct state {
    std::mutex mu;
    std::condition_variable cv;
    unsigned done = 0;
  };
  auto st = std::make_shared<state>();
  unsigned posted = 0;
  for (unsigned i = 0; i < shards_.size(); ++i) {
    auto task = std::make_unique<function_task>([st, fn, i] {
      fn(i);
      std::lock_guard<std::mutex> lock(st->mu);
      ++st->done;
      st->cv.notify_all();
    });
    if (shards_[i].shard->post_from_control(std::move(task))) ++posted;
  }
  std::unique_lock<std::mutex> lock(st->mu);
  return st->cv.wait_for(lock, shard_answer_timeout, [&] { return st->done == posted; }) &&
         posted == shards_.size();
}

status control_plane::publish(std::shared_ptr<const policy> rules) {
  std::lock_guard<std::mutex> lock(publish_mutex_);
  result<std::vector<guard_snapshot>> built = build_guard_snapshots(rules, shards_.size());
  if (!built) return built.error();
  // Each shard takes its own scanner; the tasks own them until they run.
  auto snapshots = std::make_shared<std::vector<guard_snapshot>>(std::move(*built));
  const bool all = run_on_all_shards([this, snapshots](unsigned i) {
    shards_[i].guard->install(std::move((*snapshots)[i]));
  });
  if (!all) return {errc::timeout, "not every shard took the new policy in time"};
  AG_INFO("policy version %llu is in force on %zu shards",
          static_cast<unsigned long long>(rules->version()), shards_.size());
  return status::ok();
}

std::string control_plane::metrics_text() {
  struct shard_numbers {
    io::shard_probe io;
    std::vector<std::pair<std::string, pg::session_probe>> targets;
    uint64_t policy_version = 0;
  };
  std::vector<shard_numbers> numbers(shards_.size());
  run_on_all_shards([&](unsigned i) {
    numbers[i].io = shards_[i].shard->probe();
    for (const pg::pg_session_factory* f : shards_[i].factories)
      numbers[i].targets.emplace_back(f->target_name(), f->probe());
    if (shards_[i].guard != nullptr) numbers[i].policy_version = shards_[i].guard->version();
  });
  std::string out;
  counter(out, "agentgate_sessions_open", "Sessions open, per shard.", "gauge");
  for (unsigned i = 0; i < numbers.size(); ++i)
    sample(out, "agentgate_sessions_open", "shard=\"" + std::to_string(i) + "\"", numbers[i].io.sessions_open);
  counter(out, "agentgate_connections_accepted_total", "Client connections accepted.", "counter");
  for (unsigned i = 0; i < numbers.size(); ++i)
    sample(out, "agentgate_connections_accepted_total", "shard=\"" + std::to_string(i) + "\"", numbers[i].io.accepted);
  counter(out, "agentgate_bytes_total", "Bytes received, by side.", "counter");
  for (unsigned i = 0; i < numbers.size(); ++i) {
    const std::string shard = "shard=\"" + std::to_string(i) + "\"";
    sample(out, "agentgate_bytes_total", shard + ",direction=\"in\",side=\"client\"", numbers[i].io.bytes_from_client);
    sample(out, "agentgate_bytes_total", shard + ",direction=\"in\",side=\"upstream\"", numbers[i].io.bytes_from_upstream);
  }
  counter(out, "agentgate_backpressure_pauses_total", "Times a side stopped being read because the other was slow.", "counter");
  for (unsigned i = 0; i < numbers.size(); ++i)
    sample(out, "agentgate_backpressure_pauses_total", "shard=\"" + std::to_string(i) + "\"", numbers[i].io.recv_paused);
  counter(out, "agentgate_commands_total", "Commands judged by the policy, by action.", "counter");
  for (unsigned i = 0; i < numbers.size(); ++i)
    for (const auto& [target, p] : numbers[i].targets) {
      const std::string labels = "shard=\"" + std::to_string(i) + "\",target=\"" + target + "\"";
      sample(out, "agentgate_commands_total", labels + ",action=\"allow\"", p.commands_allowed);
      sample(out, "agentgate_commands_total", labels + ",action=\"deny\"", p.commands_denied);
      sample(out, "agentgate_commands_total", labels + ",action=\"require_approval\"", p.commands_held);
    }
  counter(out, "agentgate_logins_refused_total", "Client logins refused (bad or expired tokens).", "counter");
  for (unsigned i = 0; i < numbers.size(); ++i)
    for (const auto& [target, p] : numbers[i].targets)
      sample(out, "agentgate_logins_refused_total",
             "shard=\"" + std::to_string(i) + "\",target=\"" + target + "\"", p.client_logins_refused);
  counter(out, "agentgate_protocol_errors_total", "Malformed messages, by peer.", "counter");
  for (unsigned i = 0; i < numbers.size(); ++i)
    for (const auto& [target, p] : numbers[i].targets) {
      const std::string labels = "shard=\"" + std::to_string(i) + "\",target=\"" + target + "\"";
      sample(out, "agentgate_protocol_errors_total", labels + ",peer=\"client\"", p.client_protocol_errors);
      sample(out, "agentgate_protocol_errors_total", labels + ",peer=\"upstream\"", p.upstream_protocol_errors);
    }
  counter(out, "agentgate_policy_version", "Policy version in force, per shard.", "gauge");
  for (unsigned i = 0; i < numbers.size(); ++i)
    sample(out, "agentgate_policy_version", "shard=\"" + std::to_string(i) + "\"", numbers[i].policy_version);
  for (const auto& source : metrics_sources_) source(out);
  return out;
}

std::string control_plane::sessions_json() {
  std::vector<std::string> parts(shards_.size());
  run_on_all_shards([&](unsigned i) { shards_[i].shard->describe_sessions(parts[i]); });
  std::string out = "{\"sessions\":[";
  bool first = true;
  for (const std::string& p : parts) {
    if (p.empty()) continue;
    if (!first) out += ",";
    out += p;
    first = false;
  }
  out += "]}";
  return out;
}

void control_plane::register_routes(admin_server& server) {
  (void)server.route("GET", "/healthz", route_auth::none,
                     [](const http_request&) { return http_response::json(200, "{\"status\":\"ok\"}"); });
  (void)server.route("GET", "/openapi.yaml", route_auth::none,
                     serve_document("application/yaml", openapi_document()));
  (void)server.route("GET", "/metrics", [this](const http_request&) {
    return http_response::text(200, metrics_text(), "text/plain; version=0.0.4");
  });
  (void)server.route("GET", "/v1/sessions", [this](const http_request&) {
    return http_response::json(200, sessions_json());
  });
  (void)server.route("GET", "/v1/policy", [this](const http_request&) {
    std::shared_ptr<const policy> current = store_.current();
    if (current == nullptr) return http_response::error(404, "no policy is loaded");
    http_response r = http_response::json(200, current->text());
    r.headers.push_back({"X-Policy-Version", std::to_string(current->version())});
    return r;
  });
  (void)server.route("GET", "/v1/policy/versions", [this](const http_request&) {
    std::string out = "{\"versions\":[";
    bool first = true;
    for (const policy_version_info& v : store_.versions()) {
      if (!first) out += ",";
      out += policy_version_json(v);
      first = false;
    }
    out += "]}";
    return http_response::json(200, out);
  });
  (void)server.route("PUT", "/v1/policy", [this](const http_request& req) {
    if (shards_.empty() || shards_[0].guard == nullptr)
      return http_response::error(409, "this gateway runs without a policy_file; start it with one to use the policy API");
    // Validate and compile first: a document that cannot run never becomes current.
    std::vector<policy_error> errors;
    result<std::shared_ptr<const policy>> parsed = policy::parse(req.body, errors);
    if (!parsed) return http_response::json(400, policy_errors_json(parsed.error(), errors));
    result<std::vector<guard_snapshot>> probe = build_guard_snapshots(*parsed, 1);
    if (!probe) return http_response::error(400, probe.error().message());
    result<std::shared_ptr<const policy>> stored = store_.put(req.body, "api " + req.peer, errors);
    if (!stored) return http_response::json(400, policy_errors_json(stored.error(), errors));
    if (const status st = publish(*stored); !st) return http_response::error(503, st.message());
    return http_response::json(200, "{\"version\":" + std::to_string((*stored)->version()) + "}");
  });
}

}  // namespace agentgate
