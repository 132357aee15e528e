#include "io/dpdk/dpdk_port.h"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <cassert>
#include <cstring>

#include "core/log.h"

namespace agentgate::io::dpdk {
namespace {

constexpr uint16_t burst_max = 32;
constexpr unsigned tx_flush_attempts = 4;  // a full TX ring gets a few tries, then frames drop
constexpr size_t frame_bytes_max = 9216;    // a chained (multi-segment) frame is copied into this

std::string dpdk_error(const char* step, int rc) {
  return std::string(step) + ": " + rte_strerror(rc < 0 ? -rc : rte_errno);
}

bool eal_started = false;  // rte_eal_init may run only once per process

}  // namespace

struct dpdk_port::state {
  uint16_t port_id = 0;
  rte_mempool* pool = nullptr;
  rte_mbuf* tx[burst_max] = {};
  uint16_t tx_count = 0;
  bool started = false;
  uint8_t scratch[frame_bytes_max];
};

dpdk_port::dpdk_port() : state_(std::make_unique<state>()) {}

dpdk_port::~dpdk_port() {
  for (uint16_t i = 0; i < state_->tx_count; ++i) rte_pktmbuf_free(state_->tx[i]);
  if (state_->started) {
    if (int rc = rte_eth_dev_stop(state_->port_id); rc != 0)
      AG_WARN("dpdk: %s", dpdk_error("rte_eth_dev_stop", rc).c_str());
    rte_eth_dev_close(state_->port_id);
  }
  if (state_->pool != nullptr) rte_mempool_free(state_->pool);
  rte_eal_cleanup();
}

result<std::unique_ptr<dpdk_port>> dpdk_port::open(const port_options& options) {
  if (eal_started) return status(errc::invalid_argument, "the DPDK EAL is already running in this process");
  std::vector<std::string> args;
  args.push_back("agentgate-dpdk");
  args.insert(args.end(), options.eal_args.begin(), options.eal_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (rte_eal_init(static_cast<int>(args.size()), argv.data()) < 0)
    return status(errc::io, dpdk_error("rte_eal_init", -rte_errno));
  eal_started = true;
  std::unique_ptr<dpdk_port> port(new dpdk_port());
  state& s = *port->state_;

  if (rte_eth_dev_count_avail() == 0)
    return status(errc::io, "DPDK found no Ethernet port: pass a device, e.g. --vdev=net_tap0,iface=agtap0");
  bool found = false;
  uint16_t id = 0;
  RTE_ETH_FOREACH_DEV(id) {
    s.port_id = id;
    found = true;
    break;
  }
  assert(found);
  (void)found;

  s.pool = rte_pktmbuf_pool_create("agentgate_mbufs", options.mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                   rte_socket_id());
  if (s.pool == nullptr) return status(errc::io, dpdk_error("rte_pktmbuf_pool_create", -rte_errno));

  rte_eth_dev_info info{};
  if (int rc = rte_eth_dev_info_get(s.port_id, &info); rc != 0)
    return status(errc::io, dpdk_error("rte_eth_dev_info_get", rc));
  rte_eth_conf conf{};
  if (int rc = rte_eth_dev_configure(s.port_id, 1, 1, &conf); rc != 0)
    return status(errc::io, dpdk_error("rte_eth_dev_configure", rc));
  uint16_t rx_descriptors = options.rx_descriptors;
  uint16_t tx_descriptors = options.tx_descriptors;
  if (int rc = rte_eth_dev_adjust_nb_rx_tx_desc(s.port_id, &rx_descriptors, &tx_descriptors); rc != 0)
    return status(errc::io, dpdk_error("rte_eth_dev_adjust_nb_rx_tx_desc", rc));
  const int socket = rte_eth_dev_socket_id(s.port_id);
  const unsigned socket_id = socket < 0 ? 0 : static_cast<unsigned>(socket);
  if (int rc = rte_eth_rx_queue_setup(s.port_id, 0, rx_descriptors, socket_id, nullptr, s.pool); rc != 0)
    return status(errc::io, dpdk_error("rte_eth_rx_queue_setup", rc));
  if (int rc = rte_eth_tx_queue_setup(s.port_id, 0, tx_descriptors, socket_id, nullptr); rc != 0)
    return status(errc::io, dpdk_error("rte_eth_tx_queue_setup", rc));
  if (int rc = rte_eth_dev_start(s.port_id); rc != 0)
    return status(errc::io, dpdk_error("rte_eth_dev_start", rc));
  s.started = true;
  // Some virtual devices (tap) start with the link down; not every driver
  // implements this, so a refusal is not an error.
  rte_eth_dev_set_link_up(s.port_id);

  rte_ether_addr mac{};
  if (int rc = rte_eth_macaddr_get(s.port_id, &mac); rc != 0)
    return status(errc::io, dpdk_error("rte_eth_macaddr_get", rc));
  memcpy(port->mac_.data(), mac.addr_bytes, 6);
  uint16_t mtu = 1500;
  if (rte_eth_dev_get_mtu(s.port_id, &mtu) == 0 && mtu >= 576) port->mtu_ = mtu;
  char name[RTE_ETH_NAME_MAX_LEN] = "?";
  rte_eth_dev_get_name_by_port(s.port_id, name);
  port->description_ = std::string(name) + " (port " + std::to_string(s.port_id) + ", driver " +
                       (info.driver_name != nullptr ? info.driver_name : "?") + ")";
  return port;
}

size_t dpdk_port::receive(frame_fn on_frame, void* context) {
  state& s = *state_;
  rte_mbuf* frames[burst_max];
  const uint16_t n = rte_eth_rx_burst(s.port_id, 0, frames, burst_max);
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = frames[i];
    ++probe_.frames_in;
    probe_.bytes_in += m->pkt_len;
    if (m->nb_segs == 1) {
      on_frame(context, {rte_pktmbuf_mtod(m, const uint8_t*), m->data_len});
    } else if (m->pkt_len <= frame_bytes_max) {
      const void* data = rte_pktmbuf_read(m, 0, m->pkt_len, s.scratch);
      on_frame(context, {static_cast<const uint8_t*>(data), m->pkt_len});
    }
    rte_pktmbuf_free(m);
  }
  return n;
}

bool dpdk_port::transmit(std::span<const std::span<const uint8_t>> pieces) {
  state& s = *state_;
  if (s.tx_count == burst_max && flush() == 0 && s.tx_count == burst_max) {
    ++probe_.tx_dropped;
    return false;
  }
  size_t total = 0;
  for (const auto& piece : pieces) total += piece.size();
  rte_mbuf* m = rte_pktmbuf_alloc(s.pool);
  if (m == nullptr) {
    ++probe_.tx_dropped;
    return false;
  }
  char* out = total <= rte_pktmbuf_tailroom(m) ? rte_pktmbuf_append(m, static_cast<uint16_t>(total)) : nullptr;
  if (out == nullptr) {
    rte_pktmbuf_free(m);
    ++probe_.tx_dropped;
    return false;
  }
  for (const auto& piece : pieces) {
    memcpy(out, piece.data(), piece.size());
    out += piece.size();
  }
  s.tx[s.tx_count++] = m;
  probe_.bytes_out += total;
  return true;
}

size_t dpdk_port::flush() {
  state& s = *state_;
  size_t sent_total = 0;
  for (unsigned attempt = 0; attempt < tx_flush_attempts && s.tx_count > 0; ++attempt) {
    const uint16_t sent = rte_eth_tx_burst(s.port_id, 0, s.tx, s.tx_count);
    if (sent < s.tx_count) memmove(s.tx, s.tx + sent, (s.tx_count - sent) * sizeof(rte_mbuf*));
    s.tx_count = static_cast<uint16_t>(s.tx_count - sent);
    sent_total += sent;
  }
  probe_.frames_out += sent_total;
  return sent_total;
}

}  // namespace agentgate::io::dpdk
