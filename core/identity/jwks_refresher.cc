#include "core/identity/jwks_refresher.h"

#include <algorithm>
#include <string>

#include "core/identity/https_fetch.h"
#include "core/log.h"

namespace agentgate::identity {
namespace {

std::string issuer_path(size_t index, const char* key) {
  return "identity.issuers[" + std::to_string(index) + "]." + key;
}

}  // namespace

jwks_refresher::jwks_refresher(const identity_config& config, publish_fn publish)
    : config_(config), publish_(std::move(publish)) {}

jwks_refresher::~jwks_refresher() { stop(); }

result<std::unique_ptr<jwks_refresher>> jwks_refresher::create(const identity_config& config,
                                                               publish_fn publish) {
  std::unique_ptr<jwks_refresher> r(new jwks_refresher(config, std::move(publish)));
  r->issuers_.resize(config.issuers.size());
  std::vector<key_set> initial(config.issuers.size());
  clock::time_point now = clock::now();
  for (size_t i = 0; i < config.issuers.size(); ++i) {
    const issuer_config& issuer = config.issuers[i];
    if (issuer.jwks_file.empty() && issuer.jwks_uri.empty()) {
      return status(errc::invalid_argument,
                    "identity.issuers[" + std::to_string(i) + "]: needs jwks_file or jwks_uri");
    }
    if (!issuer.jwks_file.empty()) {
      auto keys = load_jwks_file(issuer.jwks_file);
      if (!keys) {
        return status(errc::invalid_argument,
                      issuer_path(i, "jwks_file") + ": " + keys.error().message());
      }
      r->issuers_[i].file_keys = std::move(*keys);
      initial[i] = r->issuers_[i].file_keys;
    }
    if (!issuer.jwks_uri.empty()) {
      ++r->uri_issuers_;
      r->issuers_[i].next_fetch = now;
    }
  }
  r->snapshot_ = verifier::create(config, std::move(initial));
  return r;
}

std::shared_ptr<const verifier> jwks_refresher::current() const {
  std::lock_guard lock(snapshot_mutex_);
  return snapshot_;
}

status jwks_refresher::fetch_issuer(size_t i) {
  const issuer_config& issuer = config_.issuers[i];
  https_fetch_options options;
  options.ca_file = issuer.jwks_ca_file;
  options.body_bytes_max = jwks_bytes_max;
  options.cancel = &cancel_;
  // The network wait happens without update_mutex_, so a slow IdP never
  // holds up a file reload or another issuer's result.
  auto body = https_get(issuer.jwks_uri, options);
  result<key_set> keys = body ? parse_jwks(*body) : result<key_set>(body.error());
  fetches_.fetch_add(1, std::memory_order_relaxed);

  std::lock_guard lock(update_mutex_);
  issuer_state& state = issuers_[i];
  clock::time_point now = clock::now();
  if (!keys) {
    if (cancel_.load()) return status(errc::io, issuer_path(i, "jwks_uri") + ": cancelled");
    if (!state.failing) {
      AG_WARN("identity: fetching the JWKS of issuer %s from %s failed: %s; keeping the previous "
              "keys and retrying",
              issuer.issuer.c_str(), issuer.jwks_uri.c_str(), keys.error().message().c_str());
      state.failing = true;
    }
    uint32_t retry_s = std::min(issuer.jwks_refresh_s, jwks_failure_retry_s_max);
    state.next_fetch = now + std::chrono::seconds(std::max<uint32_t>(retry_s, 1));
    return status(errc::io, issuer_path(i, "jwks_uri") + ": " + keys.error().message());
  }
  if (state.failing) {
    AG_INFO("identity: fetching the JWKS of issuer %s works again", issuer.issuer.c_str());
    state.failing = false;
  }
  state.uri_keys = std::move(*keys);
  state.have_uri_keys = true;
  state.next_fetch = now + std::chrono::seconds(std::max<uint32_t>(issuer.jwks_refresh_s, 1));
  return status::ok();
}

void jwks_refresher::publish_if_changed() {
  std::shared_ptr<const verifier> old = current();
  bool changed = false;
  std::vector<key_set> keys;
  keys.reserve(issuers_.size());
  for (size_t i = 0; i < issuers_.size(); ++i) {
    keys.push_back(effective(issuers_[i]));
    changed = changed || keys.back().fingerprint != old->keys_of(i).fingerprint;
  }
  if (!changed) return;
  auto fresh = verifier::create(config_, std::move(keys));
  {
    std::lock_guard lock(snapshot_mutex_);
    snapshot_ = fresh;
  }
  AG_INFO("identity: new signing keys in effect (snapshot %llu)",
          static_cast<unsigned long long>(fresh->generation()));
  if (publish_) publish_(std::move(fresh));
}

status jwks_refresher::refresh_uris() {
  status first_error;
  for (size_t i = 0; i < config_.issuers.size(); ++i) {
    if (config_.issuers[i].jwks_uri.empty()) continue;
    status s = fetch_issuer(i);
    if (!s && first_error) first_error = s;
  }
  std::lock_guard lock(update_mutex_);
  publish_if_changed();
  return first_error;
}

status jwks_refresher::reload_files() {
  std::vector<key_set> loaded(config_.issuers.size());
  for (size_t i = 0; i < config_.issuers.size(); ++i) {
    const std::string& file = config_.issuers[i].jwks_file;
    if (file.empty()) continue;
    auto keys = load_jwks_file(file);
    if (!keys) {
      return status(errc::invalid_argument,
                    issuer_path(i, "jwks_file") + ": " + keys.error().message());
    }
    loaded[i] = std::move(*keys);
  }
  std::lock_guard lock(update_mutex_);
  for (size_t i = 0; i < config_.issuers.size(); ++i) {
    if (!config_.issuers[i].jwks_file.empty()) issuers_[i].file_keys = std::move(loaded[i]);
  }
  publish_if_changed();
  return status::ok();
}

void jwks_refresher::start() {
  if (uri_issuers_ == 0 || thread_.joinable()) return;
  {
    std::lock_guard lock(wake_mutex_);
    if (stop_requested_) return;
  }
  thread_ = std::thread([this] { run(); });
}

void jwks_refresher::request_refresh() {
  {
    std::lock_guard lock(wake_mutex_);
    refresh_requested_ = true;
  }
  wake_.notify_all();
}

void jwks_refresher::stop() {
  {
    std::lock_guard lock(wake_mutex_);
    stop_requested_ = true;
  }
  cancel_.store(true);
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void jwks_refresher::run() {
  for (;;) {
    clock::time_point due = clock::time_point::max();
    {
      std::lock_guard lock(update_mutex_);
      for (size_t i = 0; i < issuers_.size(); ++i) {
        if (!config_.issuers[i].jwks_uri.empty()) due = std::min(due, issuers_[i].next_fetch);
      }
    }
    bool fetch_all = false;
    {
      std::unique_lock lock(wake_mutex_);
      wake_.wait_until(lock, due, [&] {
        return stop_requested_ || refresh_requested_ || clock::now() >= due;
      });
      if (stop_requested_) return;
      fetch_all = refresh_requested_;
      refresh_requested_ = false;
    }
    clock::time_point now = clock::now();
    for (size_t i = 0; i < config_.issuers.size(); ++i) {
      if (config_.issuers[i].jwks_uri.empty()) continue;
      bool is_due;
      {
        std::lock_guard lock(update_mutex_);
        is_due = issuers_[i].next_fetch <= now;
      }
      // Failures are logged (once per streak) and rescheduled inside.
      if (fetch_all || is_due) (void)fetch_issuer(i);
    }
    std::lock_guard lock(update_mutex_);
    publish_if_changed();
  }
}

}  // namespace agentgate::identity
