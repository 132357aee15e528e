#include "appliance/addresses.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <cstring>

namespace agentgate {
namespace {

result<net_address> lookup(const std::string& host, uint16_t port, int family, const char* failure) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_family = family;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0 || found == nullptr) return status(errc::invalid_argument, std::string(failure) + gai_strerror(rc));
  net_address a;
  memcpy(&a.storage, found->ai_addr, found->ai_addrlen);
  a.length = found->ai_addrlen;
  a.text = host + ":" + std::to_string(port);
  freeaddrinfo(found);
  return a;
}

}  // namespace

result<net_address> literal_address(const std::string& host, uint16_t port) {
  net_address a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    a.length = sizeof(sockaddr_in);
    a.text = host + ":" + std::to_string(port);
    return a;
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    a.length = sizeof(sockaddr_in6);
    a.text = "[" + host + "]:" + std::to_string(port);
    return a;
  }
  return status(errc::invalid_argument, "not an IP address");
}

result<net_address> resolve_address(const std::string& host, uint16_t port) {
  result<net_address> literal = literal_address(host, port);
  if (literal) return literal;
  return lookup(host, port, AF_UNSPEC, "cannot resolve: ");
}

result<net_address> resolve_ipv4(const std::string& host, uint16_t port) {
  return lookup(host, port, AF_INET, "cannot resolve to an IPv4 address: ");
}

}  // namespace agentgate
