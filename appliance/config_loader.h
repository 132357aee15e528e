#pragma once
// Loads the JSON document behind `agentgate serve --config FILE` into a
// gateway_config (core/config.h). Control plane only: runs once at start,
// before any shard exists. The accepted keys, types, defaults and ranges are
// documented in docs/config.md; keep the two in step.
//
// Contract:
// - Everything is validated here, so the shards never see a bad value.
//   The one check left for later is whether a listen address can be bound.
// - Errors carry errc::invalid_argument and one line that starts with the
//   JSON path of the offending key, e.g.
//   `targets[0].upstream.port: expected an integer between 1 and 65535`.
//   Only the first error found, in document order, is reported.
// - upstream.password_file is read here, so a missing secret stops the
//   gateway at start rather than at the first client's login.

#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "core/status.h"

namespace agentgate {

// Largest config file load_config_file reads; a config is a few KiB.
inline constexpr size_t config_file_bytes_max = 1u << 20;
// Largest password_file; a secret is a line, not a document.
inline constexpr size_t password_file_bytes_max = 1024;

// Parses and validates a config document. base_dir resolves relative paths
// (password_file): normally the config file's directory; empty means the
// current directory.
result<gateway_config> parse_config(std::string_view json, const std::string& base_dir);

// Reads the file at path and calls parse_config with the file's directory.
result<gateway_config> load_config_file(const std::string& path);

// What a valid config allows that weakens the gateway, for the log at every
// start: targets with client_auth "trust", upstreams whose certificate is not
// verified (upstream.tls other than "verify-full"), and upstream methods that
// hand the password to whoever answers. One line each, starting with the key
// path; empty for a config with nothing to warn about.
std::vector<std::string> config_warnings(const gateway_config& config);

}  // namespace agentgate
