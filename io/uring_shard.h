#pragma once
// The io_uring backend: one shard = one thread pinned to a core, one ring,
// one provided-buffer ring, its own listeners (SO_REUSEPORT) and sessions.
// Nothing here is shared with other shards.
//
// Per connection pair (client + upstream) the shard keeps, for each side, a
// multishot recv into the provided buffer ring and at most one send in
// flight. Bytes a session queues while a send is in flight wait in a second
// buffer (so the kernel's buffer never moves under it). When the unsent
// bytes for one side pass limits.unsent_bytes_max, the other side's recv is
// cancelled until they drain below half of that: back-pressure, so a slow
// client never makes the gateway hold a whole result. The client's own recv
// is cancelled too when its unsent bytes pass the limit: the gateway answers
// some commands itself (denials), and a client that sends them without
// reading must not grow the buffer (nor the log, nor the recording).
//
// Each socket is also registered in the ring's file table at the slot of its
// fd number (sends and recvs skip the per-operation file lookup); the slot is
// cleared before the fd is closed, since the table holds its own reference.
//
// Every submission's user_data is a pointer to its owner (connection or
// listener) with the operation and side in the low bits; a connection is
// freed only when its last operation has completed.

#include <liburing.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <openssl/ssl.h>

#include "core/config.h"
#include "core/control_inbox.h"
#include "core/session.h"
#include "core/shard.h"
#include "core/spsc_queue.h"
#include "core/status.h"

namespace agentgate::io {

// Checks that this kernel offers everything the backend uses; the error says
// in one line what is missing (io_uring disabled, an opcode, a feature).
status probe_io_uring();

// A listening TCP socket with SO_REUSEPORT, so every shard can have its own.
result<int> make_listener(const net_address& address, int backlog);

// Whether nothing else listens on address. SO_REUSEPORT would let our bind
// join another process's group on the same port silently, so this binds once
// without it.
status check_address_free(const net_address& address);

struct listener_spec {
  int fd = -1;                          // owned by the shard from run() on
  session_factory* factory = nullptr;   // owned by the caller, used only by this shard
  const target_config* target = nullptr;
};

class uring_shard;

// All shards of the process, so that each can post to the others' inboxes.
// Built before any shard runs and never changed after.
struct shard_group {
  std::vector<uring_shard*> shards;
};

struct shard_probe {
  uint64_t accepted = 0;
  uint64_t refused_overload = 0;
  uint64_t sessions_open = 0;
  uint64_t bytes_from_client = 0;
  uint64_t bytes_from_upstream = 0;
  uint64_t recv_paused = 0;   // back-pressure engagements
  uint64_t client_reads_paused = 0;  // clients not read because they did not read their replies
  uint64_t buffer_exhausted = 0;
};

class uring_shard final : public shard_services {
 public:
  uring_shard(int shard_id, int cpu, const gateway_config& config, std::vector<listener_spec> listeners,
              const shard_group& group);
  ~uring_shard();
  uring_shard(const uring_shard&) = delete;
  uring_shard& operator=(const uring_shard&) = delete;

  // Sets up the ring and the buffer ring; call on the shard's own thread.
  status init();
  // Runs until stop becomes true, then closes every session and returns.
  void run(const std::atomic<bool>& stop);

  const shard_probe& probe() const { return probe_; }

  // shard_services
  int shard_id() const override { return shard_id_; }
  int shard_count() const override { return static_cast<int>(group_.shards.size()); }
  bool post(int target, std::unique_ptr<shard_task> task) override;
  void start_outbound(std::unique_ptr<session_handler> handler) override;

  // From the control plane (any thread): queues a task for this shard; see
  // control_inbox for what happens when the shard is behind.
  bool post_from_control(std::unique_ptr<shard_task> task) override;
  control_inbox_probe control_probe() { return control_inbox_.probe(); }
  // The sessions' own descriptions as a JSON array's items. Shard thread only.
  void describe_sessions(std::string& out) const;
  // Replaces the client TLS context; the shard takes the reference. Shard thread only.
  void set_server_tls_context(SSL_CTX* ctx);

  struct connection;
  struct listener;

 private:
  friend struct connection;

  io_uring_sqe* get_sqe();
  void arm_accept(listener& l);
  void arm_recv(connection& c, peer side);
  // Why a side is not read; resumed when no reason is left.
  enum pause_reason : uint8_t {
    paused_for_other_side = 1,   // the other side's unsent bytes are over the limit
    paused_for_own_replies = 2,  // this (client) side's own unsent bytes are
    paused_for_close = 4,        // flushing the last words; never resumed
  };
  void pause_recv(connection& c, peer side, pause_reason why);
  void resume_recv(connection& c, peer side, pause_reason why);
  void start_send(connection& c, peer side);
  void start_connect(connection& c, const net_address& address);
  void mark_dirty(connection& c);
  void register_file(connection& c, peer side);
  void unregister_file(connection& c, peer side);
  void finalize(connection& c);
  void maybe_finish_close(connection& c);
  void release(connection& c);

  void handle_cqe(const io_uring_cqe& cqe);
  void on_accept(listener& l, const io_uring_cqe& cqe);
  void on_recv(connection& c, peer side, const io_uring_cqe& cqe);
  void on_send(connection& c, peer side, const io_uring_cqe& cqe);
  void on_connect(connection& c, const io_uring_cqe& cqe);
  void deliver(connection& c, peer side, std::span<const uint8_t> data);
  void recycle_buffer(uint16_t bid);
  void after_batch();
  void check_deadlines();
  void shutdown_all();
  bool push(int sender, std::unique_ptr<shard_task> task);
  void wake();
  void arm_wake();
  void drain_inboxes();
  connection* new_connection(int client_fd, const listener* from);

  const int shard_id_;
  const int cpu_;
  const gateway_config& config_;
  const shard_group& group_;
  std::vector<std::unique_ptr<listener>> listeners_;
  // inboxes_[sender]: one queue per shard (this one's own included).
  std::vector<std::unique_ptr<spsc_queue<std::unique_ptr<shard_task>>>> inboxes_;
  control_inbox control_inbox_;
  int wake_fd_ = -1;
  uint64_t wake_value_ = 0;
  bool wake_armed_ = false;
  SSL_CTX* server_tls_ = nullptr;                 // null: no TLS for clients
  std::vector<SSL_CTX*> upstream_tls_;            // per listener; null: upstream.tls disabled
  io_uring ring_{};
  bool ring_ready_ = false;
  unsigned fixed_file_slots_ = 0;  // registered file table size; 0: none

  io_uring_buf_ring* buf_ring_ = nullptr;
  size_t buf_ring_bytes_ = 0;
  uint8_t* buffers_ = nullptr;
  int buffers_added_ = 0;  // recycled buffers not yet published to the kernel

  std::vector<connection*> connections_;   // every live connection, for deadlines
  std::vector<connection*> dirty_;         // connections with bytes to send
  std::vector<connection*> rearm_;         // recvs that stopped for lack of buffers
  std::vector<connection*> graveyard_;     // closed, no operation in flight
  uint64_t now_ms_ = 0;
  uint64_t last_deadline_scan_ms_ = 0;
  shard_probe probe_;
};

}  // namespace agentgate::io
