#pragma once
// One DPDK Ethernet port: EAL start-up, one mbuf pool, one RX and one TX
// queue, bursts in both directions. Built only with -DAGENTGATE_DPDK=ON.
//
// This header includes no DPDK header on purpose: DPDK's pkg-config flags
// (`-include rte_config.h -march=corei7`) apply to dpdk_port.cc alone, and
// whatever includes this file compiles with the project's normal flags.
//
// Without NIC hardware the port is a virtual device, e.g. EAL arguments
// `--no-huge --no-pci --no-shconf --vdev=net_tap0,iface=agtap0`: DPDK then
// creates the kernel tap interface agtap0 and the host talks to the port
// through it (docs/dpdk.md).

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/dpdk/frame_port.h"

namespace agentgate::io::dpdk {

struct port_options {
  std::vector<std::string> eal_args;  // what follows argv[0] for rte_eal_init
  uint32_t mbufs = 8191;              // in the pool; 2 KiB each
  uint16_t rx_descriptors = 1024;
  uint16_t tx_descriptors = 1024;
};

class dpdk_port final : public frame_port {
 public:
  // Starts the EAL (once per process) and the first available port. Errors
  // say which step failed with DPDK's own reason.
  static result<std::unique_ptr<dpdk_port>> open(const port_options& options);
  ~dpdk_port() override;  // stops the port and cleans up the EAL
  dpdk_port(const dpdk_port&) = delete;
  dpdk_port& operator=(const dpdk_port&) = delete;

  std::array<uint8_t, 6> mac_address() const override { return mac_; }
  uint16_t mtu() const override { return mtu_; }
  size_t receive(frame_fn on_frame, void* context) override;
  bool transmit(std::span<const std::span<const uint8_t>> pieces) override;
  size_t flush() override;
  const port_probe& probe() const override { return probe_; }

  // "net_tap0 (port 0, driver net_tap)", for logs.
  const std::string& description() const { return description_; }

 private:
  struct state;
  dpdk_port();

  std::unique_ptr<state> state_;
  std::array<uint8_t, 6> mac_{};
  uint16_t mtu_ = 1500;
  std::string description_;
  port_probe probe_;
};

}  // namespace agentgate::io::dpdk
