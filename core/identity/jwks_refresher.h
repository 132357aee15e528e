#pragma once
// Control-plane owner of the issuers' keys: loads every jwks_file at start,
// fetches jwks_uri over HTTPS on a background thread every jwks_refresh_s,
// and publishes a new verifier snapshot whenever the keys actually changed.
// The engine hands each published snapshot to every shard; shards never call
// into this class.
//
// Key sources, per issuer:
// - jwks_file: read by create() (a bad file fails start-up) and again by
//   reload_files() (SIGHUP); a bad file on reload keeps the previous keys.
// - jwks_uri: once a fetch succeeds, its key set *replaces* the file's keys
//   for that issuer (the file is the fallback until the first fetch, so an
//   issuer can start with pinned keys and follow the IdP's rotation from
//   then on). A failed fetch keeps the previous keys, logs one warning per
//   failure streak and is retried after min(jwks_refresh_s, 30) seconds.
//   A fetched set that no longer holds a kid stops that key at once: the new
//   snapshot does not know it, and shard caches empty on a new snapshot.
//
// Threads: create(), current(), reload_files(), refresh_uris(), start() and
// stop() may be called from any control-plane thread. publish is called
// with no lock of this class's readers held, from the background thread or
// from the thread calling reload_files() / refresh_uris(), one call at a
// time and in snapshot order; it must not call back into this object.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/config.h"
#include "core/identity/jwks.h"
#include "core/identity/jwt.h"
#include "core/status.h"

namespace agentgate::identity {

// A failing jwks_uri is retried at least this often, whatever jwks_refresh_s.
inline constexpr uint32_t jwks_failure_retry_s_max = 30;

class jwks_refresher {
 public:
  using publish_fn = std::function<void(std::shared_ptr<const verifier>)>;
  using clock = std::chrono::steady_clock;

  // Reads every issuer's jwks_file (paths as given; the config loader has
  // resolved them). Errors name the key: `identity.issuers[1].jwks_file: ...`.
  // Fetches nothing yet; current() holds the snapshot built from the files.
  static result<std::unique_ptr<jwks_refresher>> create(const identity_config& config,
                                                        publish_fn publish);
  ~jwks_refresher();  // stop()s
  jwks_refresher(const jwks_refresher&) = delete;
  jwks_refresher& operator=(const jwks_refresher&) = delete;

  // The newest snapshot (the one last published, or the initial one).
  std::shared_ptr<const verifier> current() const;

  // Fetches every jwks_uri once, now, on the calling thread, and publishes
  // if any issuer's keys changed. Returns the first failure (with the
  // issuer's config path); issuers that succeeded are applied anyway.
  status refresh_uris();

  // Re-reads every jwks_file; all or nothing: on an error nothing changes.
  status reload_files();

  // Starts the background thread when some issuer has a jwks_uri (else does
  // nothing). Issuers not fetched yet are fetched at once; after a
  // successful refresh_uris() the first fetch is one interval later.
  void start();
  // Asks the background thread to fetch every jwks_uri now.
  void request_refresh();
  // Stops the background thread promptly (a fetch in flight is cancelled)
  // and joins it. Idempotent.
  void stop();

  bool has_uris() const { return uri_issuers_ > 0; }
  // Completed fetch attempts, successful or not (for tests and metrics).
  uint64_t fetches() const { return fetches_.load(std::memory_order_relaxed); }

 private:
  struct issuer_state {
    key_set file_keys;       // empty when the issuer has no jwks_file
    key_set uri_keys;
    bool have_uri_keys = false;
    bool failing = false;    // inside a failure streak (warned once)
    clock::time_point next_fetch;
  };

  jwks_refresher(const identity_config& config, publish_fn publish);
  const key_set& effective(const issuer_state& s) const {
    return s.have_uri_keys ? s.uri_keys : s.file_keys;
  }
  // Fetches issuer i's jwks_uri and records the outcome. Takes update_mutex_.
  status fetch_issuer(size_t i);
  // Builds and publishes a snapshot if the effective keys differ from the
  // current snapshot's. Caller holds update_mutex_.
  void publish_if_changed();
  void run();

  const identity_config config_;
  const publish_fn publish_;
  size_t uri_issuers_ = 0;

  // Serializes updates (fetch results, file reloads, publication).
  mutable std::mutex update_mutex_;
  std::vector<issuer_state> issuers_;  // guarded by update_mutex_

  mutable std::mutex snapshot_mutex_;
  std::shared_ptr<const verifier> snapshot_;  // guarded by snapshot_mutex_

  std::mutex wake_mutex_;
  std::condition_variable wake_;
  bool stop_requested_ = false;     // guarded by wake_mutex_
  bool refresh_requested_ = false;  // guarded by wake_mutex_
  std::atomic<bool> cancel_{false};  // aborts a fetch in flight on stop()
  std::atomic<uint64_t> fetches_{0};
  std::thread thread_;
};

}  // namespace agentgate::identity
