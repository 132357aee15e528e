#pragma once
// One bounded HTTPS GET, for fetching an issuer's jwks_uri on the control
// plane. Blocking: never call it on a shard.
//
// TLS 1.2+, certificate and host name always verified (against ca_file
// alone when given, else the system's store); https only, redirects too;
// connect and total timeouts; the body is cut off (and the fetch fails) past
// body_bytes_max; only a 200 answer counts.

#include <atomic>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace agentgate::identity {

struct https_fetch_options {
  std::string ca_file;                     // empty: the system's CA store
  uint32_t connect_timeout_ms = 5000;
  uint32_t total_timeout_ms = 15000;
  size_t body_bytes_max = 256u << 10;
  uint32_t redirects_max = 3;
  const std::atomic<bool>* cancel = nullptr;  // when set to true, the fetch stops promptly
};

// The response body, or errc::io with what went wrong (no body text).
result<std::string> https_get(const std::string& url, const https_fetch_options& options);

}  // namespace agentgate::identity
