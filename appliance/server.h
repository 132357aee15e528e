#pragma once
// `agentgate serve`: wires the config, the targets, the I/O backend and the
// protocol sessions together, runs the shards, and stops them on SIGINT or
// SIGTERM. Control plane: runs on the main thread.

#include <string>

namespace agentgate {

// Exit codes: 0 clean stop, 1 run-time failure (e.g. io_uring unavailable),
// 2 bad configuration (a key path is named on stderr).
int run_server(const std::string& config_path);

}  // namespace agentgate
