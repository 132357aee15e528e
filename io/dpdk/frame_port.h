#pragma once
// What the user-space TCP/IP stack needs from a network port: Ethernet
// frames in and out, nothing else. dpdk_port implements it over one DPDK
// ethdev; the stack (lwip_shard) never sees a DPDK header, and a test or
// another device (AF_XDP, a pcap file) can stand in for it.
//
// Owned by one shard and used only from its thread.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace agentgate::io::dpdk {

struct port_probe {
  uint64_t frames_in = 0;
  uint64_t frames_out = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t tx_dropped = 0;   // no mbuf, frame too big, or the TX ring stayed full
};

class frame_port {
 public:
  using frame_fn = void (*)(void* context, std::span<const uint8_t> frame);

  virtual ~frame_port() = default;
  virtual std::array<uint8_t, 6> mac_address() const = 0;
  virtual uint16_t mtu() const = 0;
  // Receives at most one burst and calls on_frame for each frame (valid only
  // during the call). Returns how many frames there were.
  virtual size_t receive(frame_fn on_frame, void* context) = 0;
  // Queues one frame made of pieces (copied). False if it was dropped; TCP
  // retransmits, so a drop is a counter, not an error.
  virtual bool transmit(std::span<const std::span<const uint8_t>> pieces) = 0;
  // Hands the queued frames to the device. Returns how many went out.
  virtual size_t flush() = 0;
  virtual const port_probe& probe() const = 0;
};

}  // namespace agentgate::io::dpdk
