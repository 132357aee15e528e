#include "io/uring_shard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>

#include "core/clock.h"
#include "core/log.h"
#include "io/tls_channel.h"

namespace agentgate::io {
namespace {

constexpr uint16_t buffer_group = 0;
constexpr uint64_t deadline_scan_interval_ms = 50;

enum op : uint64_t {
  op_accept = 1,
  op_recv = 2,
  op_send = 3,
  op_connect = 4,
  op_wake = 5,     // the shard's eventfd: another shard posted to our inbox
};
constexpr size_t inbox_capacity = 1024;
constexpr uint64_t op_mask = 0x7;
constexpr uint64_t side_bit = 0x8;
constexpr uint64_t ignored_user_data = 0;  // cancels and link timeouts
// Registered file slots per shard. A socket's slot is its fd number (unique
// in the process, so shards never collide); sockets above this stay unregistered.
constexpr rlim_t fixed_files_max = 1 << 16;

uint64_t make_user_data(void* owner, op o, peer side = peer::client) {
  const auto p = reinterpret_cast<uint64_t>(owner);
  assert((p & 0xf) == 0);
  return p | o | (side == peer::upstream ? side_bit : 0);
}

std::string errno_text(int err) { return std::string(strerror(err)); }

int index_of(peer p) { return static_cast<int>(p); }
peer other(peer p) { return p == peer::client ? peer::upstream : peer::client; }

std::string address_text(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    port = ntohs(a->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    port = ntohs(a->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return "?";
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

// ---- connection -----------------------------------------------------------------

struct uring_shard::listener {
  int fd = -1;
  session_factory* factory = nullptr;
  const target_config* target = nullptr;
  size_t index = 0;
  bool armed = false;
} __attribute__((aligned(16)));

struct uring_shard::connection final : session_io {
  struct side_state {
    int fd = -1;
    std::vector<uint8_t> pending;   // queued by send(), not yet handed to the kernel
    std::vector<uint8_t> inflight;  // the buffer of the send in flight; never moves meanwhile
    size_t inflight_offset = 0;
    bool send_in_flight = false;
    bool recv_armed = false;
    uint8_t recv_paused = 0;        // pause_reason bits; recv is off while any is set
    bool eof = false;
    bool fixed = false;             // registered in the ring's file table at slot fd
    std::unique_ptr<tls_channel> tls;  // set once TLS starts on this side

    size_t unsent() const { return pending.size() + inflight.size() - inflight_offset; }
  };

  uring_shard* owner = nullptr;
  const listener* origin = nullptr;  // null for outbound-only sessions
  std::unique_ptr<session_handler> handler;
  side_state sides[2];
  int ops_in_flight = 0;
  bool dirty = false;
  bool closing = false;   // close_after_flush: flushing, then close
  bool closed = false;    // sockets shut; waiting for operations to finish
  bool connecting = false;
  bool in_graveyard = false;
  uint64_t deadline_ms = 0;
  size_t index = 0;       // in owner->connections_
  std::string client_addr;
  __kernel_timespec connect_timeout{};

  side_state& side(peer p) { return sides[index_of(p)]; }

  void send(peer to, std::span<const uint8_t> bytes) override {
    if (closed || bytes.empty()) return;
    side_state& s = side(to);
    if (s.fd < 0) return;
    if (s.tls != nullptr) {
      if (status st = s.tls->write(bytes, s.pending); !st) {
        AG_WARN("%s: %s", peer_name(to), st.message().c_str());
        owner->finalize(*this);
        return;
      }
    } else {
      s.pending.insert(s.pending.end(), bytes.begin(), bytes.end());
    }
    owner->mark_dirty(*this);
    if (s.unsent() > owner->config_.limits.unsent_bytes_max) {
      owner->pause_recv(*this, other(to), paused_for_other_side);
      // A client that does not read what it is sent is not read either, as
      // a server would do: else one whose every command the gateway answers
      // itself (a denial) grows this buffer, the log and the recording
      // without bound while the upstream stays idle.
      if (to == peer::client) owner->pause_recv(*this, peer::client, paused_for_own_replies);
    }
  }

  void connect_upstream(const net_address& address) override {
    if (closed || connecting || side(peer::upstream).fd >= 0) return;
    owner->start_connect(*this, address);
  }

  void close_after_flush() override {
    if (closed || closing) return;
    closing = true;
    owner->pause_recv(*this, peer::client, paused_for_close);
    owner->pause_recv(*this, peer::upstream, paused_for_close);
    owner->maybe_finish_close(*this);
  }

  void abort() override {
    if (closed) return;
    owner->finalize(*this);
  }

  void set_deadline_ms(uint32_t ms) override {
    deadline_ms = ms == 0 ? 0 : owner->now_ms_ + ms;
  }

  const std::string& client_address() const override { return client_addr; }

  bool client_tls_available() const override { return owner->server_tls_ != nullptr; }

  status start_client_tls() override {
    auto& s = side(peer::client);
    if (owner->server_tls_ == nullptr) return {errc::unsupported, "no TLS certificate configured"};
    if (s.tls != nullptr) return {errc::protocol, "TLS already started"};
    s.tls = tls_channel::server(owner->server_tls_);
    if (s.tls == nullptr) return {errc::io, "cannot create a TLS session"};
    return status::ok();
  }

  status start_upstream_tls() override {
    auto& s = side(peer::upstream);
    SSL_CTX* ctx = origin != nullptr ? owner->upstream_tls_[origin->index] : nullptr;
    if (ctx == nullptr) return {errc::unsupported, "upstream TLS is not configured for this target"};
    if (s.tls != nullptr) return {errc::protocol, "TLS already started"};
    const upstream_config& up = origin->target->upstream;
    s.tls = tls_channel::client(ctx, up.host, up.tls == upstream_tls_mode::verify_full);
    if (s.tls == nullptr) return {errc::io, "cannot create a TLS session"};
    status st = s.tls->start(s.pending);
    owner->mark_dirty(*this);
    return st;
  }

  bool tls_active(peer which) const override { return sides[index_of(which)].tls != nullptr; }

  std::string tls_description(peer which) const override {
    const auto& tls = sides[index_of(which)].tls;
    return tls == nullptr ? "plaintext" : tls->description();
  }

  class shard_services& shard() override { return *owner; }
} __attribute__((aligned(16)));

// ---- probing and listeners ------------------------------------------------------------

status probe_io_uring() {
  io_uring ring{};
  const int rc = io_uring_queue_init(8, &ring, 0);
  if (rc < 0) {
    std::string disabled;
    std::ifstream f("/proc/sys/kernel/io_uring_disabled");
    if (f >> disabled) disabled = " (kernel.io_uring_disabled=" + disabled + ")";
    return {errc::unsupported, "io_uring is unavailable: io_uring_setup failed: " +
                                   errno_text(-rc) + disabled};
  }
  std::string missing;
  if (!(ring.features & IORING_FEAT_EXT_ARG)) missing += " IORING_FEAT_EXT_ARG";
  if (!(ring.features & IORING_FEAT_NODROP)) missing += " IORING_FEAT_NODROP";
  io_uring_probe* probe = io_uring_get_probe_ring(&ring);
  if (probe == nullptr) {
    io_uring_queue_exit(&ring);
    return {errc::unsupported, "io_uring is unavailable: the kernel cannot list its opcodes"};
  }
  const std::pair<int, const char*> needed[] = {
      {IORING_OP_ACCEPT, "ACCEPT"},       {IORING_OP_RECV, "RECV"},
      {IORING_OP_SEND, "SEND"},           {IORING_OP_CONNECT, "CONNECT"},
      {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"}, {IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"},
  };
  for (const auto& [opcode, name] : needed)
    if (!io_uring_opcode_supported(probe, opcode)) missing += std::string(" IORING_OP_") + name;
  io_uring_free_probe(probe);

  // Provided buffer rings (5.19) and multishot recv (6.0) cannot be probed by
  // opcode: register a small ring and check the kernel version.
  const size_t bytes = 8 * sizeof(io_uring_buf);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem != MAP_FAILED) {
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(mem);
    reg.ring_entries = 8;
    reg.bgid = 0;
    if (io_uring_register_buf_ring(&ring, &reg, 0) != 0) missing += " provided-buffer-rings";
    munmap(mem, bytes);
  }
  utsname u{};
  int major = 0, minor = 0;
  if (uname(&u) == 0 && sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
      (major < 6))
    missing += " multishot-recv(kernel>=6.0)";
  io_uring_queue_exit(&ring);
  if (!missing.empty())
    return {errc::unsupported, "io_uring lacks what the gateway needs:" + missing};
  return status::ok();
}

result<int> make_listener(const net_address& address, int backlog) {
  const int fd = socket(address.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return status(errc::io, "socket: " + errno_text(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    const int err = errno;
    close(fd);
    return status(errc::io, "SO_REUSEPORT: " + errno_text(err));
  }
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address.storage), address.length) != 0) {
    const int err = errno;
    close(fd);
    return status(errc::io, err == EADDRINUSE ? "address in use" : "bind: " + errno_text(err));
  }
  if (listen(fd, backlog) != 0) {
    const int err = errno;
    close(fd);
    return status(errc::io, "listen: " + errno_text(err));
  }
  return fd;
}

status check_address_free(const net_address& address) {
  const int fd = socket(address.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {errc::io, "socket: " + errno_text(errno)};
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const int rc = bind(fd, reinterpret_cast<const sockaddr*>(&address.storage), address.length);
  const int err = errno;
  close(fd);
  if (rc == 0) return status::ok();
  return {errc::io, err == EADDRINUSE ? "address in use" : "bind: " + errno_text(err)};
}

// ---- shard set-up ---------------------------------------------------------------------

uring_shard::uring_shard(int shard_id, int cpu, const gateway_config& config,
                         std::vector<listener_spec> listeners, const shard_group& group)
    : shard_id_(shard_id), cpu_(cpu), config_(config), group_(group), control_inbox_(inbox_capacity) {
  for (const listener_spec& spec : listeners) {
    auto l = std::make_unique<listener>();
    l->fd = spec.fd;
    l->factory = spec.factory;
    l->target = spec.target;
    l->index = listeners_.size();
    listeners_.push_back(std::move(l));
  }
  upstream_tls_.assign(listeners_.size(), nullptr);
  // Queues are made here, before any thread runs, so senders never race their creation.
  const size_t senders = group.shards.empty() ? 1 : group.shards.size();
  for (size_t i = 0; i < senders; ++i)
    inboxes_.push_back(std::make_unique<spsc_queue<std::unique_ptr<shard_task>>>(inbox_capacity));
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

uring_shard::~uring_shard() {
  for (connection* c : connections_) {
    c->handler.reset();
    for (auto& s : c->sides)
      if (s.fd >= 0) close(s.fd);
    delete c;
  }
  for (auto& l : listeners_)
    if (l->fd >= 0) close(l->fd);
  if (wake_fd_ >= 0) close(wake_fd_);
  SSL_CTX_free(server_tls_);
  for (SSL_CTX* ctx : upstream_tls_) SSL_CTX_free(ctx);
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (buf_ring_ != nullptr) munmap(buf_ring_, buf_ring_bytes_);
  free(buffers_);
}

status uring_shard::init() {
  set_log_shard(shard_id_);
  if (cpu_ >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu_, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
      AG_WARN("cannot pin shard %d to CPU %d", shard_id_, cpu_);
  }
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  params.cq_entries = config_.io.ring_entries * 4;
  int rc = io_uring_queue_init_params(config_.io.ring_entries, &ring_, &params);
  if (rc == -EINVAL) {
    // Kernels before 6.1 lack DEFER_TASKRUN; the ring works without it.
    params = io_uring_params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = config_.io.ring_entries * 4;
    rc = io_uring_queue_init_params(config_.io.ring_entries, &ring_, &params);
  }
  if (rc < 0) return {errc::io, "io_uring_queue_init: " + errno_text(-rc)};
  ring_ready_ = true;
  // Both save a file lookup per operation: the ring's own fd on every
  // io_uring_enter, each socket's on every send. A failure only costs that.
  (void)io_uring_register_ring_fd(&ring_);
  rlimit files{};
  const rlim_t slots =
      getrlimit(RLIMIT_NOFILE, &files) == 0 ? std::min<rlim_t>(files.rlim_cur, fixed_files_max) : 0;
  if (slots > 0 && io_uring_register_files_sparse(&ring_, static_cast<unsigned>(slots)) == 0)
    fixed_file_slots_ = static_cast<unsigned>(slots);

  // liburing 2.3 has no io_uring_setup_buf_ring: map and register by hand.
  const uint32_t entries = config_.io.recv_buffers;
  buf_ring_bytes_ = entries * sizeof(io_uring_buf);
  void* mem = mmap(nullptr, buf_ring_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) return {errc::io, "mmap buffer ring: " + errno_text(errno)};
  buf_ring_ = static_cast<io_uring_buf_ring*>(mem);
  io_uring_buf_ring_init(buf_ring_);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(buf_ring_);
  reg.ring_entries = entries;
  reg.bgid = buffer_group;
  rc = io_uring_register_buf_ring(&ring_, &reg, 0);
  if (rc != 0) return {errc::io, "io_uring_register_buf_ring: " + errno_text(-rc)};
  const size_t buffer_bytes = config_.io.recv_buffer_bytes;
  if (posix_memalign(reinterpret_cast<void**>(&buffers_), 4096, buffer_bytes * entries) != 0)
    return {errc::io, "cannot allocate receive buffers"};
  const int mask = io_uring_buf_ring_mask(entries);
  for (uint32_t i = 0; i < entries; ++i)
    io_uring_buf_ring_add(buf_ring_, buffers_ + i * buffer_bytes, buffer_bytes, i, mask, i);
  io_uring_buf_ring_advance(buf_ring_, entries);

  if (wake_fd_ < 0) return {errc::io, "eventfd: " + errno_text(errno)};
  if (!config_.tls.cert.empty()) {
    result<SSL_CTX*> ctx = make_server_tls_context(config_.tls.cert, config_.tls.key);
    if (!ctx) return ctx.error();
    server_tls_ = *ctx;
  }
  for (const auto& l : listeners_) {
    const upstream_config& up = l->target->upstream;
    if (up.tls == upstream_tls_mode::disable) continue;
    result<SSL_CTX*> ctx = make_client_tls_context(up.tls == upstream_tls_mode::verify_full, up.ca_file);
    if (!ctx) return ctx.error();
    upstream_tls_[l->index] = *ctx;
  }
  return status::ok();
}

bool uring_shard::push(int sender, std::unique_ptr<shard_task> task) {
  if (!inboxes_[sender]->push(std::move(task))) return false;
  wake();
  return true;
}

void uring_shard::wake() {
  const uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_, &one, sizeof(one));
  (void)ignored;
}

bool uring_shard::post(int target, std::unique_ptr<shard_task> task) {
  if (target < 0 || target >= shard_count()) return false;
  if (target == shard_id_) return push(shard_id_, std::move(task));
  return group_.shards[target]->push(shard_id_, std::move(task));
}

bool uring_shard::post_from_control(std::unique_ptr<shard_task> task) {
  if (!control_inbox_.post(std::move(task))) return false;
  wake();
  return true;
}

void uring_shard::describe_sessions(std::string& out) const {
  for (const connection* c : connections_) {
    if (c->closed || c->handler == nullptr) continue;
    std::string item = c->handler->describe_json();
    if (item.empty()) continue;
    if (!out.empty()) out += ",";
    out += item;
  }
}

void uring_shard::set_server_tls_context(SSL_CTX* ctx) {
  // Sessions already in TLS hold their own reference to the old context.
  SSL_CTX_free(server_tls_);
  server_tls_ = ctx;
}

void uring_shard::arm_wake() {
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_poll_multishot(sqe, wake_fd_, POLLIN);
  io_uring_sqe_set_data64(sqe, op_wake);
  wake_armed_ = true;
}

void uring_shard::drain_inboxes() {
  for (auto& inbox : inboxes_) {
    // Bounded per pass so one busy sender cannot starve the ring.
    for (size_t i = 0; i < inbox_capacity; ++i) {
      std::optional<std::unique_ptr<shard_task>> task = inbox->pop();
      if (!task) break;
      (*task)->run(*this);
    }
  }
  control_inbox_.drain(*this, inbox_capacity);
}

uring_shard::connection* uring_shard::new_connection(int client_fd, const listener* from) {
  auto* c = new connection();
  c->owner = this;
  c->origin = from;
  c->sides[index_of(peer::client)].fd = client_fd;
  c->index = connections_.size();
  connections_.push_back(c);
  ++probe_.sessions_open;
  return c;
}

void uring_shard::start_outbound(std::unique_ptr<session_handler> handler) {
  connection* c = new_connection(-1, nullptr);
  c->client_addr = "gateway";
  c->handler = std::move(handler);
  c->handler->on_start(*c);
  if (!c->closed && c->side(peer::upstream).fd < 0 && !c->connecting) finalize(*c);
}

io_uring_sqe* uring_shard::get_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  assert(sqe != nullptr);
  return sqe;
}

void uring_shard::arm_accept(listener& l) {
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_multishot_accept(sqe, l.fd, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, make_user_data(&l, op_accept));
  l.armed = true;
}

void uring_shard::arm_recv(connection& c, peer side) {
  auto& s = c.side(side);
  if (s.recv_armed || s.recv_paused || s.eof || s.fd < 0 || c.closed) return;
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_recv_multishot(sqe, s.fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT | (s.fixed ? IOSQE_FIXED_FILE : 0);
  sqe->buf_group = buffer_group;
  io_uring_sqe_set_data64(sqe, make_user_data(&c, op_recv, side));
  s.recv_armed = true;
  ++c.ops_in_flight;
}

void uring_shard::pause_recv(connection& c, peer side, pause_reason why) {
  auto& s = c.side(side);
  if (s.recv_paused & why) return;
  const bool was_paused = s.recv_paused != 0;
  s.recv_paused |= why;
  if (why == paused_for_own_replies) ++probe_.client_reads_paused;
  if (why == paused_for_other_side) ++probe_.recv_paused;
  if (was_paused || !s.recv_armed) return;
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_cancel64(sqe, make_user_data(&c, op_recv, side), 0);
  io_uring_sqe_set_data64(sqe, ignored_user_data);
}

void uring_shard::resume_recv(connection& c, peer side, pause_reason why) {
  auto& s = c.side(side);
  if (!(s.recv_paused & why) || c.closing) return;
  s.recv_paused &= static_cast<uint8_t>(~why);
  if (s.recv_paused != 0) return;
  arm_recv(c, side);
}

void uring_shard::register_file(connection& c, peer side) {
  auto& s = c.side(side);
  if (s.fd < 0 || static_cast<unsigned>(s.fd) >= fixed_file_slots_) return;
  s.fixed = io_uring_register_files_update(&ring_, static_cast<unsigned>(s.fd), &s.fd, 1) == 1;
}

// The table holds its own reference to the socket: without this, close()
// would leave the socket open until its fd number is registered again.
void uring_shard::unregister_file(connection& c, peer side) {
  auto& s = c.side(side);
  if (!s.fixed) return;
  int none = -1;
  (void)io_uring_register_files_update(&ring_, static_cast<unsigned>(s.fd), &none, 1);
  s.fixed = false;
}

void uring_shard::mark_dirty(connection& c) {
  if (c.dirty) return;
  c.dirty = true;
  dirty_.push_back(&c);
}

void uring_shard::start_send(connection& c, peer side) {
  auto& s = c.side(side);
  if (s.send_in_flight || s.pending.empty() || s.fd < 0 || c.closed) return;
  s.inflight.swap(s.pending);
  s.pending.clear();
  s.inflight_offset = 0;
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_send(sqe, s.fd, s.inflight.data(), s.inflight.size(), MSG_NOSIGNAL);
  if (s.fixed) sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, make_user_data(&c, op_send, side));
  s.send_in_flight = true;
  ++c.ops_in_flight;
}

void uring_shard::start_connect(connection& c, const net_address& address) {
  const int fd = socket(address.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    c.handler->on_upstream_connected(status(errc::io, "socket: " + errno_text(errno)));
    return;
  }
  set_nodelay(fd);
  c.side(peer::upstream).fd = fd;
  c.connecting = true;
  const uint32_t timeout_ms = config_.limits.connect_timeout_ms;
  c.connect_timeout.tv_sec = timeout_ms / 1000;
  c.connect_timeout.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1000000;
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_connect(sqe, fd, reinterpret_cast<const sockaddr*>(&address.storage), address.length);
  io_uring_sqe_set_data64(sqe, make_user_data(&c, op_connect, peer::upstream));
  sqe->flags |= IOSQE_IO_LINK;
  ++c.ops_in_flight;
  io_uring_sqe* timeout = get_sqe();
  io_uring_prep_link_timeout(timeout, &c.connect_timeout, 0);
  io_uring_sqe_set_data64(timeout, ignored_user_data);
  // Both must reach the kernel in one submission, before connect_timeout can change.
  io_uring_submit(&ring_);
}

// Shuts both sockets so every operation in flight completes; the connection
// is freed once the last one has.
void uring_shard::finalize(connection& c) {
  if (c.closed) return;
  c.closed = true;
  for (auto& s : c.sides) {
    if (s.fd < 0) continue;
    shutdown(s.fd, SHUT_RDWR);
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_cancel_fd(sqe, s.fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, ignored_user_data);
  }
  release(c);
}

void uring_shard::maybe_finish_close(connection& c) {
  if (!c.closing || c.closed) return;
  for (auto& s : c.sides)
    if (s.fd >= 0 && s.unsent() > 0) return;
  finalize(c);
}

void uring_shard::release(connection& c) {
  if (!c.closed || c.ops_in_flight > 0 || c.in_graveyard) return;
  c.in_graveyard = true;
  graveyard_.push_back(&c);
}

// ---- completions -------------------------------------------------------------------------

void uring_shard::handle_cqe(const io_uring_cqe& cqe) {
  const uint64_t ud = cqe.user_data;
  if (ud == ignored_user_data) return;
  void* owner = reinterpret_cast<void*>(ud & ~uint64_t{0xf});
  const peer side = (ud & side_bit) ? peer::upstream : peer::client;
  switch (ud & op_mask) {
    case op_accept:
      on_accept(*static_cast<listener*>(owner), cqe);
      break;
    case op_recv:
      on_recv(*static_cast<connection*>(owner), side, cqe);
      break;
    case op_send:
      on_send(*static_cast<connection*>(owner), side, cqe);
      break;
    case op_connect:
      on_connect(*static_cast<connection*>(owner), cqe);
      break;
    case op_wake: {
      uint64_t value = 0;
      ssize_t ignored = ::read(wake_fd_, &value, sizeof(value));
      (void)ignored;
      if (!(cqe.flags & IORING_CQE_F_MORE)) wake_armed_ = false;
      break;
    }
    default:
      assert(false);
  }
}

void uring_shard::on_accept(listener& l, const io_uring_cqe& cqe) {
  if (!(cqe.flags & IORING_CQE_F_MORE)) l.armed = false;
  if (cqe.res < 0) {
    if (cqe.res != -ECANCELED) AG_WARN("accept failed: %s", errno_text(-cqe.res).c_str());
    return;
  }
  const int fd = cqe.res;
  ++probe_.accepted;
  if (connections_.size() >= config_.limits.sessions_per_shard_max) {
    ++probe_.refused_overload;
    const std::string refusal = l.factory->overload_response();
    ssize_t ignored = ::send(fd, refusal.data(), refusal.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)ignored;
    close(fd);
    return;
  }
  set_nodelay(fd);
  connection* c = new_connection(fd, &l);
  register_file(*c, peer::client);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  c->client_addr = getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 ? address_text(ss) : "?";
  c->handler = l.factory->create();
  c->handler->on_start(*c);
  arm_recv(*c, peer::client);
}

void uring_shard::on_recv(connection& c, peer side, const io_uring_cqe& cqe) {
  auto& s = c.side(side);
  const bool more = cqe.flags & IORING_CQE_F_MORE;
  if (!more) {
    s.recv_armed = false;
    --c.ops_in_flight;
  }
  if (cqe.flags & IORING_CQE_F_BUFFER) {
    const uint16_t bid = static_cast<uint16_t>(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
    if (cqe.res > 0 && !c.closed) {
      (side == peer::client ? probe_.bytes_from_client : probe_.bytes_from_upstream) += cqe.res;
      const uint8_t* data = buffers_ + size_t{bid} * config_.io.recv_buffer_bytes;
      deliver(c, side, {data, static_cast<size_t>(cqe.res)});
    }
    recycle_buffer(bid);
  }
  if (c.closed) {
    release(c);
    return;
  }
  if (cqe.res == 0 || (cqe.res < 0 && cqe.res != -ECANCELED && cqe.res != -ENOBUFS)) {
    s.eof = true;
    const status reason = cqe.res == 0 ? status::ok() : status(errc::io, errno_text(-cqe.res));
    if (!c.closing) c.handler->on_peer_closed(side, reason);
    if (!c.closed && c.closing) maybe_finish_close(c);
    if (!c.closed && !c.closing) finalize(c);  // a handler that ignores EOF still loses the peer
    return;
  }
  if (!more) {
    if (cqe.res == -ENOBUFS) {
      ++probe_.buffer_exhausted;
      rearm_.push_back(&c);
      ++c.ops_in_flight;  // held until re-armed, so the connection stays alive
    } else {
      arm_recv(c, side);  // a multishot recv may end at any time; carry on unless paused
    }
  }
}

void uring_shard::deliver(connection& c, peer side, std::span<const uint8_t> data) {
  auto& s = c.side(side);
  if (s.tls == nullptr) {
    c.handler->on_data(side, data);
    return;
  }
  // Keep the channel alive even if the handler closes the session meanwhile.
  tls_channel& tls = *s.tls;
  const size_t before = s.pending.size();
  const status st = tls.feed(data, s.pending, [&](std::span<const uint8_t> plain) {
    if (!c.closed) c.handler->on_data(side, plain);
  });
  if (s.pending.size() != before) mark_dirty(c);
  if (!st && !c.closed) {
    AG_INFO("%s %s: %s", peer_name(side), c.client_addr.c_str(), st.message().c_str());
    c.handler->on_peer_closed(side, st);
    if (!c.closed && c.closing) maybe_finish_close(c);  // let the handler's last words out
    if (!c.closed && !c.closing) finalize(c);
  }
}

void uring_shard::on_send(connection& c, peer side, const io_uring_cqe& cqe) {
  auto& s = c.side(side);
  --c.ops_in_flight;
  s.send_in_flight = false;
  if (c.closed) {
    release(c);
    return;
  }
  if (cqe.res < 0) {
    s.eof = true;
    s.pending.clear();
    s.inflight.clear();
    if (!c.closing) c.handler->on_peer_closed(side, status(errc::io, errno_text(-cqe.res)));
    if (!c.closed) finalize(c);
    return;
  }
  s.inflight_offset += static_cast<size_t>(cqe.res);
  if (s.inflight_offset < s.inflight.size()) {
    // A short send: the rest goes out from the same, unmoved buffer.
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_send(sqe, s.fd, s.inflight.data() + s.inflight_offset,
                       s.inflight.size() - s.inflight_offset, MSG_NOSIGNAL);
    if (s.fixed) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, make_user_data(&c, op_send, side));
    s.send_in_flight = true;
    ++c.ops_in_flight;
    return;
  }
  s.inflight.clear();
  s.inflight_offset = 0;
  start_send(c, side);
  if (s.unsent() <= config_.limits.unsent_bytes_max / 2) {
    resume_recv(c, other(side), paused_for_other_side);
    if (side == peer::client) resume_recv(c, peer::client, paused_for_own_replies);
  }
  maybe_finish_close(c);
}

void uring_shard::on_connect(connection& c, const io_uring_cqe& cqe) {
  --c.ops_in_flight;
  c.connecting = false;
  if (c.closed) {
    release(c);
    return;
  }
  if (cqe.res < 0) {
    const int err = -cqe.res;
    auto& up = c.side(peer::upstream);
    close(up.fd);
    up.fd = -1;
    c.handler->on_upstream_connected(
        status(err == ECANCELED ? errc::timeout : errc::io,
               err == ECANCELED ? "connect timed out" : errno_text(err)));
    return;
  }
  register_file(c, peer::upstream);
  arm_recv(c, peer::upstream);
  c.handler->on_upstream_connected(status::ok());
}

void uring_shard::recycle_buffer(uint16_t bid) {
  io_uring_buf_ring_add(buf_ring_, buffers_ + size_t{bid} * config_.io.recv_buffer_bytes,
                        config_.io.recv_buffer_bytes, bid, io_uring_buf_ring_mask(config_.io.recv_buffers),
                        buffers_added_++);
}

void uring_shard::after_batch() {
  if (buffers_added_ > 0) {
    io_uring_buf_ring_advance(buf_ring_, buffers_added_);
    buffers_added_ = 0;
  }
  if (!rearm_.empty()) {
    std::vector<connection*> rearm;
    rearm.swap(rearm_);
    for (connection* c : rearm) {
      --c->ops_in_flight;
      for (peer p : {peer::client, peer::upstream}) arm_recv(*c, p);
      release(*c);
    }
  }
  for (size_t i = 0; i < dirty_.size(); ++i) {
    connection* c = dirty_[i];
    c->dirty = false;
    start_send(*c, peer::client);
    start_send(*c, peer::upstream);
  }
  dirty_.clear();
  for (connection* c : graveyard_) {
    // The handler goes first: its destructor may still ask the connection for its shard.
    c->handler.reset();
    for (peer p : {peer::client, peer::upstream}) {
      unregister_file(*c, p);
      if (c->side(p).fd >= 0) close(c->side(p).fd);
    }
    // Swap-remove from the live list.
    connection* last = connections_.back();
    connections_[c->index] = last;
    last->index = c->index;
    connections_.pop_back();
    --probe_.sessions_open;
    delete c;
  }
  graveyard_.clear();
}

void uring_shard::check_deadlines() {
  for (size_t i = 0; i < connections_.size(); ++i) {
    connection* c = connections_[i];
    if (c->closed || c->deadline_ms == 0 || c->deadline_ms > now_ms_) continue;
    c->deadline_ms = 0;
    c->handler->on_deadline();
  }
}

void uring_shard::shutdown_all() {
  for (auto& l : listeners_) {
    if (l->fd < 0) continue;
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_cancel_fd(sqe, l->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, ignored_user_data);
  }
  for (connection* c : connections_) finalize(*c);
  after_batch();
}

void uring_shard::run(const std::atomic<bool>& stop) {
  for (auto& l : listeners_) arm_accept(*l);
  arm_wake();
  now_ms_ = static_cast<uint64_t>(monotonic_ms());
  bool stopping = false;
  uint64_t stop_deadline_ms = 0;
  for (;;) {
    if (!stopping && stop.load(std::memory_order_relaxed)) {
      stopping = true;
      stop_deadline_ms = now_ms_ + 2000;
      shutdown_all();
    }
    if (stopping) {
      bool listeners_armed = false;
      for (auto& l : listeners_) listeners_armed |= l->armed;
      if ((connections_.empty() && !listeners_armed) || now_ms_ > stop_deadline_ms) break;
    }
    __kernel_timespec wait{};
    wait.tv_nsec = deadline_scan_interval_ms * 1000000;
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &wait, nullptr);
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN)
      AG_ERROR("io_uring wait failed: %s", errno_text(-rc).c_str());
    now_ms_ = static_cast<uint64_t>(monotonic_ms());
    unsigned head = 0;
    unsigned count = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      handle_cqe(*cqe);
      ++count;
    }
    io_uring_cq_advance(&ring_, count);
    if (!stopping) {
      for (auto& l : listeners_)
        if (!l->armed) arm_accept(*l);
      if (!wake_armed_) arm_wake();
    }
    drain_inboxes();
    after_batch();
    if (now_ms_ - last_deadline_scan_ms_ >= deadline_scan_interval_ms) {
      last_deadline_scan_ms_ = now_ms_;
      check_deadlines();
      after_batch();
    }
  }
  io_uring_submit(&ring_);
}

}  // namespace agentgate::io
