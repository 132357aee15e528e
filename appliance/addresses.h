#pragma once
// Addresses for the gateway binaries (agentgate and agentgate-dpdk): a
// literal into a sockaddr, or a host name resolved once at start, never on a
// shard.

#include <cstdint>
#include <string>

#include "core/session.h"
#include "core/status.h"

namespace agentgate {

// An IPv4 or IPv6 literal and a port; errc::invalid_argument for anything
// else. IPv6 text is bracketed: "[::1]:5432".
result<net_address> literal_address(const std::string& host, uint16_t port);

// A literal as literal_address, else the first address the resolver gives.
result<net_address> resolve_address(const std::string& host, uint16_t port);

// The first IPv4 address of host (lwIP runs without IPv6 addresses).
result<net_address> resolve_ipv4(const std::string& host, uint16_t port);

}  // namespace agentgate
