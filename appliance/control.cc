#include "appliance/control.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "core/log.h"
#include "core/text.h"
#include "io/recording/replay.h"

namespace agentgate {
namespace {

class function_task final : public shard_task {
 public:
  function_task(std::function<void()> fn, control_delivery delivery, const void* slot)
      : fn_(std::move(fn)), delivery_(delivery), slot_(slot) {}
  void run(shard_services&) override { fn_(); }
  control_delivery delivery() const override { return delivery_; }
  const void* slot() const override { return slot_; }

 private:
  std::function<void()> fn_;
  control_delivery delivery_;
  const void* slot_;
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

control_plane::control_plane(std::vector<shard_parts> shards, policy_store& store, std::string recording_dir)
    : shards_(std::move(shards)),
      store_(store),
      recording_dir_(std::move(recording_dir)),
      applied_(std::make_unique<std::atomic<uint64_t>[]>(shards_.size())) {
  for (size_t i = 0; i < shards_.size(); ++i)
    applied_[i].store(shards_[i].guard != nullptr ? shards_[i].guard->version() : 0);
}

// The answers live here, owned jointly by the asker and every task: a shard
// that answers after the asker gave up writes into this, never into the
// asker's freed stack or heap.
template <typename T>
struct control_plane::fan_out {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::optional<T>> answers;
  size_t waiting = 0;  // tasks posted and not yet answered
};

template <typename T>
std::vector<std::optional<T>> control_plane::ask_all_shards(std::function<T(unsigned)> fn, control_delivery delivery,
                                                            const std::function<const void*(unsigned)>& slot) {
  auto st = std::make_shared<fan_out<T>>();
  st->answers.resize(shards_.size());
  auto shared_fn = std::make_shared<const std::function<T(unsigned)>>(std::move(fn));
  for (unsigned i = 0; i < shards_.size(); ++i) {
    {
      std::lock_guard<std::mutex> lock(st->mu);
      ++st->waiting;  // before posting: the task may run at once
    }
    auto task = std::make_unique<function_task>(
        [st, shared_fn, i] {
          T answer = (*shared_fn)(i);
          std::lock_guard<std::mutex> lock(st->mu);
          st->answers[i] = std::move(answer);
          --st->waiting;
          st->cv.notify_all();
        },
        delivery, slot ? slot(i) : nullptr);
    if (!shards_[i].shard->post_from_control(std::move(task))) {
      std::lock_guard<std::mutex> lock(st->mu);
      --st->waiting;
    }
  }
  std::unique_lock<std::mutex> lock(st->mu);
  st->cv.wait_for(lock, std::chrono::milliseconds(answer_timeout_ms_), [&] { return st->waiting == 0; });
  // Moved out under the lock; a late answer lands in the emptied slot.
  std::vector<std::optional<T>> out = std::move(st->answers);
  st->answers.assign(shards_.size(), std::nullopt);
  return out;
}

bool control_plane::run_on_all_shards(const std::function<void(unsigned)>& fn) {
  const std::vector<std::optional<bool>> done = ask_all_shards<bool>(
      [fn](unsigned i) {
        fn(i);
        return true;
      },
      control_delivery::best_effort);
  return std::all_of(done.begin(), done.end(), [](const std::optional<bool>& d) { return d.has_value(); });
}

std::vector<unsigned> control_plane::shards_without(uint64_t version) const {
  std::vector<unsigned> out;
  for (unsigned i = 0; i < shards_.size(); ++i)
    if (shards_[i].guard != nullptr && applied_[i].load(std::memory_order_acquire) != version) out.push_back(i);
  return out;
}

result<std::vector<unsigned>> control_plane::publish(std::shared_ptr<const policy> rules) {
  std::lock_guard<std::mutex> lock(publish_mutex_);
  return publish_locked(std::move(rules));
}

result<std::vector<unsigned>> control_plane::publish_locked(std::shared_ptr<const policy> rules) {
  result<std::vector<guard_snapshot>> built = build_guard_snapshots(rules, shards_.size());
  if (!built) return built.error();
  // Each shard takes its own scanner; the tasks own them until they run. A
  // busy shard gets the swap late, never not at all (latest_wins: a newer
  // swap replaces this one if both wait), and says so in applied_.
  auto snapshots = std::make_shared<std::vector<guard_snapshot>>(std::move(*built));
  const uint64_t version = rules->version();
  (void)ask_all_shards<bool>(
      [this, snapshots, version](unsigned i) {
        shards_[i].guard->install(std::move((*snapshots)[i]));
        applied_[i].store(version, std::memory_order_release);
        return true;
      },
      control_delivery::latest_wins, [this](unsigned i) -> const void* { return shards_[i].guard; });
  std::vector<unsigned> pending = shards_without(version);
  if (pending.empty())
    AG_INFO("policy version %llu is in force on %zu shards", static_cast<unsigned long long>(version), shards_.size());
  else
    AG_WARN("policy version %llu is not yet in force on %zu of %zu shards (busy); they take it when they next read their inbox",
            static_cast<unsigned long long>(version), pending.size(), shards_.size());
  return pending;
}

std::string control_plane::metrics_text() {
  struct shard_numbers {
    io::shard_probe io;
    std::vector<std::pair<std::string, pg::session_probe>> targets;
    uint64_t policy_version = 0;
    std::vector<std::pair<std::string, uint64_t>> mask_hits;
    uint64_t mask_bytes = 0;
    recording::recording_probe rec;
    bool rec_available = false;
  };
  // Runs on shard i's thread; fills its own copy, which the fan-out keeps.
  auto collect = [this](unsigned i) {
    shard_numbers n;
    n.io = shards_[i].shard->probe();
    for (const pg::pg_session_factory* f : shards_[i].factories) n.targets.emplace_back(f->target_name(), f->probe());
    if (shards_[i].recorder != nullptr) {
      n.rec = shards_[i].recorder->probe();
      n.rec_available = shards_[i].recorder->available();
    }
    if (shards_[i].guard != nullptr) {
      n.policy_version = shards_[i].guard->version();
      if (const std::shared_ptr<data_masker>& m = shards_[i].guard->masker(); m != nullptr) {
        const auto names = m->hit_names();
        const auto hits = m->hits();
        for (size_t k = 0; k < names.size() && k < hits.size(); ++k) n.mask_hits.emplace_back(names[k], hits[k]);
        n.mask_bytes = m->bytes_scanned();
      }
    }
    return n;
  };
  const std::vector<std::optional<shard_numbers>> answers =
      ask_all_shards<shard_numbers>(collect, control_delivery::best_effort);
  // A shard that did not answer in time has no samples in this scrape, only
  // agentgate_shard_answered 0.
  std::vector<std::pair<unsigned, const shard_numbers*>> numbers;
  for (unsigned i = 0; i < answers.size(); ++i)
    if (answers[i]) numbers.emplace_back(i, &*answers[i]);
  std::string out;
  auto shard_label = [](unsigned i) { return "shard=\"" + std::to_string(i) + "\""; };
  auto target_labels = [&](unsigned i, const std::string& target) {
    return shard_label(i) + ",target=\"" + target + "\"";
  };
  // One sample a shard, value(shard_numbers).
  auto per_shard = [&](const char* name, const auto& value) {
    for (const auto& [i, n] : numbers) sample(out, name, shard_label(i), value(*n));
  };
  // One sample a shard and target, value(pg::session_probe).
  auto per_target = [&](const char* name, const auto& value) {
    for (const auto& [i, n] : numbers)
      for (const auto& [target, p] : n->targets) sample(out, name, target_labels(i, target), value(p));
  };
  counter(out, "agentgate_shard_answered", "1 if the shard answered this scrape in time.", "gauge");
  for (unsigned i = 0; i < answers.size(); ++i) sample(out, "agentgate_shard_answered", shard_label(i), answers[i] ? 1 : 0);
  counter(out, "agentgate_sessions_open", "Sessions open, per shard.", "gauge");
  per_shard("agentgate_sessions_open", [](const shard_numbers& n) { return n.io.sessions_open; });
  counter(out, "agentgate_connections_accepted_total", "Client connections accepted.", "counter");
  per_shard("agentgate_connections_accepted_total", [](const shard_numbers& n) { return n.io.accepted; });
  counter(out, "agentgate_bytes_total", "Bytes received, by side.", "counter");
  for (const auto& [i, n] : numbers) {
    const std::string shard = shard_label(i);
    sample(out, "agentgate_bytes_total", shard + ",direction=\"in\",side=\"client\"", n->io.bytes_from_client);
    sample(out, "agentgate_bytes_total", shard + ",direction=\"in\",side=\"upstream\"", n->io.bytes_from_upstream);
  }
  counter(out, "agentgate_backpressure_pauses_total", "Times a side stopped being read because the other was slow.", "counter");
  per_shard("agentgate_backpressure_pauses_total", [](const shard_numbers& n) { return n.io.recv_paused; });
  counter(out, "agentgate_client_reads_paused_total",
          "Times a client stopped being read because it did not read its own replies.", "counter");
  per_shard("agentgate_client_reads_paused_total", [](const shard_numbers& n) { return n.io.client_reads_paused; });
  counter(out, "agentgate_commands_total", "Commands judged by the policy, by action.", "counter");
  for (const auto& [i, n] : numbers)
    for (const auto& [target, p] : n->targets) {
      const std::string labels = target_labels(i, target);
      sample(out, "agentgate_commands_total", labels + ",action=\"allow\"", p.commands_allowed);
      sample(out, "agentgate_commands_total", labels + ",action=\"deny\"", p.commands_denied);
      sample(out, "agentgate_commands_total", labels + ",action=\"require_approval\"", p.commands_held);
    }
  counter(out, "agentgate_logins_refused_total", "Client logins refused (bad or expired tokens).", "counter");
  per_target("agentgate_logins_refused_total", [](const pg::session_probe& p) { return p.client_logins_refused; });
  counter(out, "agentgate_protocol_errors_total", "Malformed messages, by peer.", "counter");
  for (const auto& [i, n] : numbers)
    for (const auto& [target, p] : n->targets) {
      const std::string labels = target_labels(i, target);
      sample(out, "agentgate_protocol_errors_total", labels + ",peer=\"client\"", p.client_protocol_errors);
      sample(out, "agentgate_protocol_errors_total", labels + ",peer=\"upstream\"", p.upstream_protocol_errors);
    }
  counter(out, "agentgate_masked_values_total", "Values and text fields rewritten by masking.", "counter");
  per_target("agentgate_masked_values_total", [](const pg::session_probe& p) { return p.values_masked; });
  counter(out, "agentgate_masking_refusals_total", "Sessions ended because a result could not be masked.", "counter");
  per_target("agentgate_masking_refusals_total", [](const pg::session_probe& p) { return p.masking_refusals; });
  counter(out, "agentgate_mask_matches_total", "Masking matches, by detector, column rule or pattern.", "counter");
  for (const auto& [i, n] : numbers)
    for (const auto& [name, hits] : n->mask_hits)
      sample(out, "agentgate_mask_matches_total", shard_label(i) + ",detector=\"" + name + "\"", hits);
  counter(out, "agentgate_mask_scanned_bytes_total", "Bytes handed to the masking engine.", "counter");
  per_shard("agentgate_mask_scanned_bytes_total", [](const shard_numbers& n) { return n.mask_bytes; });
  counter(out, "agentgate_commands_unrecorded_total", "Commands refused because recording was unavailable.", "counter");
  per_target("agentgate_commands_unrecorded_total", [](const pg::session_probe& p) { return p.commands_unrecordable; });
  if (!recording_dir_.empty()) {
    counter(out, "agentgate_recording_offset_bytes", "Recording watermarks per shard: appended, written, synced.", "gauge");
    for (const auto& [i, n] : numbers) {
      const std::string shard = shard_label(i);
      sample(out, "agentgate_recording_offset_bytes", shard + ",watermark=\"appended\"", n->rec.appended);
      sample(out, "agentgate_recording_offset_bytes", shard + ",watermark=\"written\"", n->rec.written);
      sample(out, "agentgate_recording_offset_bytes", shard + ",watermark=\"synced\"", n->rec.synced);
    }
    counter(out, "agentgate_recording_events_total", "Events recorded.", "counter");
    per_shard("agentgate_recording_events_total", [](const shard_numbers& n) { return n.rec.events; });
    counter(out, "agentgate_recording_events_unrecorded_total", "Events lost to recording failures (fail_open) or refused.", "counter");
    per_shard("agentgate_recording_events_unrecorded_total", [](const shard_numbers& n) { return n.rec.events_unrecorded; });
    counter(out, "agentgate_recording_errors_total", "Recording write and sync errors.", "counter");
    per_shard("agentgate_recording_errors_total",
              [](const shard_numbers& n) { return n.rec.write_errors + n.rec.sync_errors; });
    counter(out, "agentgate_recording_available", "1 while the shard can record.", "gauge");
    per_shard("agentgate_recording_available", [](const shard_numbers& n) { return n.rec_available ? 1u : 0u; });
  }
  counter(out, "agentgate_policy_version", "Policy version in force, per shard.", "gauge");
  per_shard("agentgate_policy_version", [](const shard_numbers& n) { return n.policy_version; });
  for (const auto& source : metrics_sources_) source(out);
  return out;
}

std::string control_plane::sessions_json() {
  const std::vector<std::optional<std::string>> parts = ask_all_shards<std::string>(
      [this](unsigned i) {
        std::string part;
        shards_[i].shard->describe_sessions(part);
        return part;
      },
      control_delivery::best_effort);
  std::string out = "{\"sessions\":[";
  bool first = true;
  std::string unanswered;
  for (unsigned i = 0; i < parts.size(); ++i) {
    if (!parts[i]) {
      if (!unanswered.empty()) unanswered += ",";
      unanswered += std::to_string(i);
      continue;
    }
    if (parts[i]->empty()) continue;
    if (!first) out += ",";
    out += *parts[i];
    first = false;
  }
  out += "]";
  // Shards too busy to answer in time: their sessions are missing above.
  if (!unanswered.empty()) out += ",\"shards_unanswered\":[" + unanswered + "]";
  out += "}";
  return out;
}

// "1,3"
std::string number_list(const std::vector<unsigned>& numbers) {
  std::string out;
  for (unsigned n : numbers) {
    if (!out.empty()) out += ",";
    out += std::to_string(n);
  }
  return out;
}

// An optional unsigned query parameter within [lo, hi]; false if malformed.
bool query_number(const http_request& req, std::string_view name, size_t lo, size_t hi, size_t& out) {
  const std::string* text = req.query_param(name);
  if (text == nullptr) return true;
  if (text->empty() || text->size() > 19) return false;
  size_t v = 0;
  for (char c : *text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<size_t>(c - '0');
  }
  if (v < lo || v > hi) return false;
  out = v;
  return true;
}

result<std::string> control_plane::recorded_sessions_json(size_t limit) {
  if (recording_dir_.empty()) return status(errc::not_found, "recording is off on this gateway (no recording.dir)");
  result<std::vector<recording::session_summary>> sessions = recording::list_sessions(recording_dir_, limit);
  if (!sessions) return sessions.error();
  // Newest first.
  std::reverse(sessions->begin(), sessions->end());
  return recording::sessions_json(*sessions);
}

result<std::string> control_plane::session_events_json(const std::string& id_text, size_t after, size_t limit) {
  if (recording_dir_.empty()) return status(errc::not_found, "recording is off on this gateway (no recording.dir)");
  session_id id;
  if (!session_id::parse(id_text, id)) return status(errc::invalid_argument, "a session id is 32 hex digits");
  std::string out = "{\"session\":";
  append_json_string(out, id.hex());
  out += ",\"events\":[";
  bool first = true;
  size_t seen = 0;       // events of the session so far; the API numbers them from 1
  size_t returned = 0;
  bool more = false;
  constexpr size_t response_bytes_max = 16u << 20;
  const status st = recording::for_each_event(recording_dir_, id, [&](const recording::event& e) {
    ++seen;
    if (seen <= after) return true;
    if (returned == limit || out.size() > response_bytes_max) {
      more = true;
      return false;
    }
    if (!first) out += ",";
    first = false;
    out += recording::event_json(e);
    ++returned;
    return true;
  });
  if (!st) return st;
  if (seen == 0) return status(errc::not_found, "no recorded session " + id.hex());
  out += "],\"next\":";
  out += more ? std::to_string(after + returned) : std::string("null");
  out += "}";
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
  (void)server.route("GET", "/v1/sessions", [this](const http_request& req) {
    const std::string* state = req.query_param("state");
    if (state == nullptr || *state == "open") return http_response::json(200, sessions_json());
    if (*state != "recorded") return http_response::error(400, "state: expected open or recorded");
    size_t limit = 1000;
    if (!query_number(req, "limit", 1, 100000, limit)) return http_response::error(400, "limit: expected 1 to 100000");
    result<std::string> body = recorded_sessions_json(limit);
    if (!body) return http_response::error(body.error().code() == errc::not_found ? 404 : 500, body.error().message());
    return http_response::json(200, *body);
  });
  (void)server.route("GET", "/v1/sessions/{id}/events", [this](const http_request& req) {
    size_t after = 0, limit = 1000;
    if (!query_number(req, "after", 0, SIZE_MAX / 2, after)) return http_response::error(400, "after: expected a number");
    if (!query_number(req, "limit", 1, 10000, limit)) return http_response::error(400, "limit: expected 1 to 10000");
    result<std::string> body = session_events_json(*req.param("id"), after, limit);
    if (!body) {
      const errc code = body.error().code();
      return http_response::error(code == errc::not_found ? 404 : code == errc::invalid_argument ? 400 : 500,
                                  body.error().message());
    }
    return http_response::json(200, *body);
  });
  (void)server.route("GET", "/v1/policy", [this](const http_request&) {
    std::shared_ptr<const policy> current = store_.current();
    if (current == nullptr) return http_response::error(404, "no policy is loaded");
    http_response r = http_response::json(200, current->text());
    r.headers.push_back({"X-Policy-Version", std::to_string(current->version())});
    // Stored is not in force until every shard has swapped it in.
    const std::vector<unsigned> pending = shards_without(current->version());
    r.headers.push_back({"X-Policy-In-Force", pending.empty() ? "all-shards" : "pending"});
    if (!pending.empty()) r.headers.push_back({"X-Policy-Shards-Pending", number_list(pending)});
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
    // Stored and published under one lock, so versions reach the shards in order.
    std::lock_guard<std::mutex> lock(publish_mutex_);
    result<std::shared_ptr<const policy>> stored = store_.put(req.body, "api " + req.peer, errors);
    if (!stored) return http_response::json(400, policy_errors_json(stored.error(), errors));
    const std::string version = std::to_string((*stored)->version());
    result<std::vector<unsigned>> pending = publish_locked(*stored);
    if (!pending) return http_response::error(500, pending.error().message());
    if (pending->empty()) return http_response::json(200, "{\"version\":" + version + ",\"in_force\":true}");
    // Accepted and on its way, not yet in force everywhere: say where not.
    return http_response::json(
        202, "{\"version\":" + version + ",\"in_force\":false,\"shards_pending\":[" + number_list(*pending) +
                 "],\"message\":\"stored; not yet in force on every shard (busy shards take it when they next read "
                 "their inbox; GET /v1/policy says when)\"}");
  });
}

}  // namespace agentgate
