#pragma once
// The DPDK backend's shard: lwIP's TCP/IP stack (raw API) over one
// frame_port, driven by one poll loop on one thread. It implements the same
// seams as the io_uring shard (core/session.h, core/shard.h), so protocol
// sessions run on it unchanged.
//
// lwIP has process-wide state, so there is exactly one lwip_shard per
// process: the DPDK backend is single-shard. Debian's liblwip is built with
// NO_SYS=0 (the GNU Hurd's options); we use its raw API only, call
// lwip_init() ourselves and never start its tcpip thread, so every lwIP call
// happens on this shard's thread, as with NO_SYS=1. Its memory comes from
// malloc (MEM_LIBC_MALLOC, MEMP_MEM_MALLOC): no fixed pools, and the
// per-connection bounds are lwIP's TCP_WND and TCP_SND_BUF (64 KiB each).
//
// lwIP's callbacks only record what happened (bytes arrived, connected,
// acknowledged, failed) and put the connection on a list; the loop then
// calls the session handler outside of any lwIP callback, so a handler may
// close or abort a connection at any time without re-entering lwIP.
//
// Per connection and side:
// - received pbufs wait in a queue until the handler has taken them; only
//   then does tcp_recved() reopen the peer's window. Pausing a side (back-
//   pressure) is simply not delivering: its window closes after TCP_WND bytes.
// - send() appends to a pending buffer; the loop moves as much as lwIP takes
//   (tcp_sndbuf, its segment queue) with tcp_write and calls tcp_output.
//   When the pending bytes for one side pass limits.unsent_bytes_max, the
//   other side is paused until they drain below half of that.
//
// Not implemented here: TLS (client_tls_available() is false and
// start_upstream_tls() refuses), IPv6, more than one shard.

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "core/control_inbox.h"
#include "core/session.h"
#include "core/shard.h"
#include "core/status.h"
#include "io/dpdk/frame_port.h"

struct netif;
struct pbuf;
struct tcp_pcb;

namespace agentgate::io::dpdk {

// An IPv4 interface address, host byte order.
struct ipv4_interface {
  uint32_t address = 0;
  uint32_t prefix_length = 24;
  uint32_t gateway = 0;  // 0: none (only the local subnet is reachable)
  std::string text;      // "10.77.0.2/24"
};

// Parses "a.b.c.d/len" and an optional gateway "a.b.c.d" (empty: none).
result<ipv4_interface> parse_ipv4_interface(std::string_view cidr, std::string_view gateway);

struct lwip_listener_spec {
  uint16_t port = 0;
  session_factory* factory = nullptr;    // owned by the caller
  const target_config* target = nullptr;
};

struct lwip_probe {
  uint64_t accepted = 0;
  uint64_t refused_overload = 0;
  uint64_t sessions_open = 0;
  uint64_t bytes_from_client = 0;
  uint64_t bytes_from_upstream = 0;
  uint64_t recv_paused = 0;        // back-pressure engagements
  uint64_t client_reads_paused = 0;  // clients not read because they did not read their replies
  uint64_t frames_ignored = 0;     // neither IPv4 nor ARP
  uint64_t idle_sleeps = 0;
};

struct lwip_shard_options {
  ipv4_interface ip;
  // Never sleep when idle: lowest latency, one core at 100 %. Otherwise the
  // loop sleeps idle_sleep_us after idle_polls_max empty polls in a row.
  bool busy_poll = false;
  uint32_t idle_polls_max = 256;
  uint32_t idle_sleep_us = 50;
};

class lwip_shard final : public shard_services {
 public:
  lwip_shard(const gateway_config& config, frame_port& port, lwip_shard_options options,
             std::vector<lwip_listener_spec> listeners);
  ~lwip_shard() override;
  lwip_shard(const lwip_shard&) = delete;
  lwip_shard& operator=(const lwip_shard&) = delete;

  // Starts lwIP, the network interface and the listeners; call on the
  // thread that will run().
  status init();
  // Polls until stop becomes true, then closes every session, lets the
  // closing handshakes go out (at most 2 s) and returns.
  void run(const std::atomic<bool>& stop);

  const lwip_probe& probe() const { return probe_; }

  // shard_services
  int shard_id() const override { return 0; }
  int shard_count() const override { return 1; }
  bool post(int target, std::unique_ptr<shard_task> task) override;
  bool post_from_control(std::unique_ptr<shard_task> task) override;
  void start_outbound(std::unique_ptr<session_handler> handler) override;

  struct connection;
  struct listener;

  // lwIP's C callbacks reach the shard through these.
  void on_frame(std::span<const uint8_t> frame);
  int8_t on_link_output(::pbuf* p);
  int8_t on_accept(listener& l, tcp_pcb* pcb);
  void mark_ready(connection& c);
  void mark_dirty(connection& c);

 private:
  friend struct connection;

  connection* new_connection(tcp_pcb* client, const listener* from);
  void start_connect(connection& c, const net_address& address);
  enum pause_reason : uint8_t {
    paused_for_other_side = 1,   // the other side's unsent bytes are over the limit
    paused_for_own_replies = 2,  // this (client) side's own unsent bytes are
  };
  void pause(connection& c, peer side, pause_reason why);
  void resume(connection& c, peer side, pause_reason why);
  void deliver(connection& c, peer side);
  void process(connection& c);
  void flush(connection& c, peer side);
  void finalize(connection& c);
  void maybe_finish_close(connection& c);
  void process_ready();
  void flush_dirty();
  void check_deadlines();
  void sweep();
  bool drain_inboxes();
  void shutdown_all();

  const gateway_config& config_;
  frame_port& port_;
  lwip_shard_options options_;
  std::vector<std::unique_ptr<listener>> listeners_;
  std::unique_ptr<::netif> netif_;
  bool lwip_ready_ = false;

  std::deque<std::unique_ptr<shard_task>> local_tasks_;
  control_inbox control_inbox_{1024};

  std::vector<connection*> connections_;
  std::vector<connection*> ready_;     // lwIP reported something; the handler has not seen it
  std::vector<connection*> dirty_;     // bytes pending for lwIP
  std::vector<connection*> graveyard_; // closed; freed at the end of the pass
  uint64_t now_ms_ = 0;
  uint64_t last_deadline_scan_ms_ = 0;
  lwip_probe probe_;
};

}  // namespace agentgate::io::dpdk
