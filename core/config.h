#pragma once
// The gateway's configuration after it was loaded and validated (appliance/
// owns the loading). Plain values: every shard reads its own copy.
// Key names match docs/config.md; units are last in names.

#include <cstdint>
#include <string>
#include <vector>

namespace agentgate {

struct upstream_config {
  std::string host;          // name or address; resolved once at start
  uint16_t port = 5432;
  std::string user;
  std::string password_file; // path as configured
  std::string password;      // contents of password_file, trailing newline stripped
  std::string database;
};

enum class client_auth_mode { trust };

struct target_config {
  std::string name;
  std::string protocol = "postgres";
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 0;
  upstream_config upstream;
  client_auth_mode client_auth = client_auth_mode::trust;
};

struct limits_config {
  uint32_t frame_bytes_max = 64u << 20;        // largest PostgreSQL message accepted
  uint32_t startup_bytes_max = 10000;          // PostgreSQL's own MAX_STARTUP_PACKET_LENGTH
  uint32_t unsent_bytes_max = 256u << 10;      // back-pressure: pause the other side above this
  uint32_t connect_timeout_ms = 5000;
  uint32_t auth_timeout_ms = 10000;
  uint32_t idle_timeout_ms = 0;                // 0: no idle timeout
  uint32_t sessions_per_shard_max = 10000;
};

struct io_config {
  uint32_t ring_entries = 4096;                // submission queue depth per shard
  uint32_t recv_buffer_bytes = 16384;          // one provided buffer
  uint32_t recv_buffers = 1024;                // provided buffers per shard (power of two)
  bool pin_threads = true;                     // pin shard i to CPU i
};

struct gateway_config {
  uint32_t shards = 0;                         // 0: one per online CPU
  std::string log_level = "info";
  std::vector<target_config> targets;
  limits_config limits;
  io_config io;
};

}  // namespace agentgate
