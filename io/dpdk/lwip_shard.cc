#include "io/dpdk/lwip_shard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <time.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cstring>

// lwIP's own headers, with the lwipopts.h Debian's liblwip was built with.
#include "lwip/etharp.h"
#include "lwip/init.h"
#include "lwip/ip_addr.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/tcp.h"
#include "lwip/timeouts.h"
#include "netif/ethernet.h"

#include "core/log.h"

static_assert(sizeof(err_t) == sizeof(int8_t));

namespace agentgate::io::dpdk {
namespace {

constexpr size_t inbox_capacity = 1024;
constexpr uint64_t deadline_scan_interval_ms = 50;
constexpr uint64_t stop_linger_ms = 2000;
constexpr size_t tx_pieces_max = 16;  // pbufs per frame; lwIP sends one (LWIP_NETIF_TX_SINGLE_PBUF)
constexpr size_t tcp_write_bytes_max = 0xffff;  // tcp_write takes a u16_t

bool lwip_started = false;  // lwIP's state is process-wide

uint64_t monotonic_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

peer other(peer p) { return p == peer::client ? peer::upstream : peer::client; }
int index_of(peer p) { return static_cast<int>(p); }

std::string lwip_error_text(err_t err) {
  switch (err) {
    case ERR_RST: return "connection reset";
    case ERR_ABRT: return "connection aborted (retransmissions exhausted or out of memory)";
    case ERR_CLSD: return "connection closed";
    case ERR_MEM: return "out of memory";
    case ERR_RTE: return "no route to host";
    case ERR_CONN: return "not connected";
    case ERR_TIMEOUT: return "timed out";
    default: return "lwIP error " + std::to_string(err);
  }
}

std::string address_text(const ip_addr_t& ip, uint16_t port) {
  char host[IPADDR_STRLEN_MAX] = "?";
  ipaddr_ntoa_r(&ip, host, sizeof(host));
  return std::string(host) + ":" + std::to_string(port);
}

// tcp_recved takes a u16_t.
void window_update(tcp_pcb* pcb, size_t bytes) {
  while (bytes > 0) {
    const u16_t n = static_cast<u16_t>(std::min<size_t>(bytes, 0xffff));
    tcp_recved(pcb, n);
    bytes -= n;
  }
}

}  // namespace

result<ipv4_interface> parse_ipv4_interface(std::string_view cidr, std::string_view gateway) {
  ipv4_interface out;
  out.text = std::string(cidr);
  const size_t slash = cidr.find('/');
  const std::string host(cidr.substr(0, slash));
  in_addr a{};
  if (inet_pton(AF_INET, host.c_str(), &a) != 1)
    return status(errc::invalid_argument, "not an IPv4 address: " + host);
  out.address = ntohl(a.s_addr);
  if (slash != std::string_view::npos) {
    const std::string_view len = cidr.substr(slash + 1);
    uint32_t value = 0;
    auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), value);
    if (ec != std::errc() || end != len.data() + len.size() || value < 1 || value > 32)
      return status(errc::invalid_argument, "bad prefix length in " + std::string(cidr));
    out.prefix_length = value;
  }
  if (!gateway.empty()) {
    const std::string g(gateway);
    if (inet_pton(AF_INET, g.c_str(), &a) != 1)
      return status(errc::invalid_argument, "not an IPv4 address: " + g);
    out.gateway = ntohl(a.s_addr);
  }
  return out;
}

// ---- connections -------------------------------------------------------------------

struct lwip_shard::listener {
  lwip_shard* owner = nullptr;
  tcp_pcb* pcb = nullptr;
  session_factory* factory = nullptr;
  const target_config* target = nullptr;
  uint16_t port = 0;
};

struct lwip_shard::connection final : session_io {
  struct side_state {
    connection* conn = nullptr;
    peer which = peer::client;
    tcp_pcb* pcb = nullptr;           // null: not open, or lwIP freed it (error)
    std::vector<uint8_t> pending;     // queued by send(), not yet taken by tcp_write
    size_t pending_head = 0;
    std::deque<pbuf*> received;       // arrived, not yet (fully) delivered to the handler
    size_t received_offset = 0;       // bytes of received.front() already delivered
    uint8_t paused = 0;               // pause_reason bits; not delivered while any is set
    bool eof = false;                 // the peer's FIN arrived
    bool failed = false;              // lwIP reported an error; pcb is gone
    err_t error = ERR_OK;
    bool end_reported = false;

    size_t unsent() const { return pending.size() - pending_head; }
  };

  lwip_shard* owner = nullptr;
  const listener* origin = nullptr;  // null for outbound-only sessions
  std::unique_ptr<session_handler> handler;
  side_state sides[2];
  bool started = false;
  bool closing = false;     // close_after_flush: flushing, then close
  bool closed = false;
  bool connecting = false;
  bool connect_done = false;  // a connect result waits for the handler
  status connect_result;
  bool ready = false;
  bool dirty = false;
  bool in_graveyard = false;
  uint64_t deadline_ms = 0;
  uint64_t connect_deadline_ms = 0;
  size_t index = 0;
  std::string client_addr;

  connection() {
    for (peer p : {peer::client, peer::upstream}) {
      sides[index_of(p)].conn = this;
      sides[index_of(p)].which = p;
    }
  }

  side_state& side(peer p) { return sides[index_of(p)]; }

  void send(peer to, std::span<const uint8_t> bytes) override {
    if (closed || bytes.empty()) return;
    side_state& s = side(to);
    if (s.pcb == nullptr) return;
    s.pending.insert(s.pending.end(), bytes.begin(), bytes.end());
    owner->mark_dirty(*this);
    if (s.unsent() > owner->config_.limits.unsent_bytes_max) {
      owner->pause(*this, other(to), paused_for_other_side);
      // A client that does not read its replies is not read either (see uring_shard.h).
      if (to == peer::client) owner->pause(*this, peer::client, paused_for_own_replies);
    }
  }

  void connect_upstream(const net_address& address) override {
    if (closed || connecting || side(peer::upstream).pcb != nullptr) return;
    owner->start_connect(*this, address);
  }

  void close_after_flush() override {
    if (closed || closing) return;
    closing = true;
    owner->maybe_finish_close(*this);
  }

  void abort() override {
    if (closed) return;
    for (auto& s : sides) {
      s.pending.clear();
      s.pending_head = 0;
    }
    owner->finalize(*this);
  }

  void set_deadline_ms(uint32_t ms) override { deadline_ms = ms == 0 ? 0 : owner->now_ms_ + ms; }

  const std::string& client_address() const override { return client_addr; }

  bool client_tls_available() const override { return false; }
  status start_client_tls() override {
    return {errc::unsupported, "TLS is not available on the DPDK backend"};
  }
  status start_upstream_tls() override {
    return {errc::unsupported, "upstream TLS is not available on the DPDK backend"};
  }
  bool tls_active(peer) const override { return false; }
  std::string tls_description(peer) const override { return "plaintext"; }

  class shard_services& shard() override { return *owner; }
};

namespace {

using side_state = lwip_shard::connection::side_state;

err_t on_recv(void* arg, tcp_pcb* pcb, pbuf* p, err_t err) {
  auto* s = static_cast<side_state*>(arg);
  if (s == nullptr) {  // detached: behave like lwIP's tcp_recv_null
    if (p != nullptr) {
      tcp_recved(pcb, p->tot_len);
      pbuf_free(p);
    }
    return ERR_OK;
  }
  if (p == nullptr)
    s->eof = true;
  else
    s->received.push_back(p);
  s->conn->owner->mark_ready(*s->conn);
  return ERR_OK;
}

err_t on_sent(void* arg, tcp_pcb*, u16_t) {
  auto* s = static_cast<side_state*>(arg);
  if (s != nullptr) s->conn->owner->mark_dirty(*s->conn);
  return ERR_OK;
}

// lwIP has already freed the pcb when it calls this.
void on_error(void* arg, err_t err) {
  auto* s = static_cast<side_state*>(arg);
  if (s == nullptr) return;
  lwip_shard::connection& c = *s->conn;
  s->pcb = nullptr;
  if (s->which == peer::upstream && c.connecting) {
    c.connecting = false;
    c.connect_done = true;
    c.connect_result = status(errc::io, err == ERR_RST ? "connection refused" : lwip_error_text(err));
  } else {
    s->failed = true;
    s->error = err;
  }
  c.owner->mark_ready(c);
}

err_t on_connected(void* arg, tcp_pcb*, err_t err) {
  auto* s = static_cast<side_state*>(arg);
  if (s == nullptr) return ERR_OK;
  lwip_shard::connection& c = *s->conn;
  c.connecting = false;
  c.connect_done = true;
  c.connect_result = err == ERR_OK ? status::ok() : status(errc::io, lwip_error_text(err));
  c.owner->mark_ready(c);
  return ERR_OK;
}

err_t on_accept_cb(void* arg, tcp_pcb* pcb, err_t err) {
  auto* l = static_cast<lwip_shard::listener*>(arg);
  if (err != ERR_OK || pcb == nullptr || l == nullptr) return ERR_VAL;
  return l->owner->on_accept(*l, pcb);
}

void attach(side_state& s, tcp_pcb* pcb) {
  s.pcb = pcb;
  tcp_arg(pcb, &s);
  tcp_recv(pcb, on_recv);
  tcp_sent(pcb, on_sent);
  tcp_err(pcb, on_error);
}

void detach(tcp_pcb* pcb) {
  tcp_arg(pcb, nullptr);
  tcp_recv(pcb, nullptr);
  tcp_sent(pcb, nullptr);
  tcp_err(pcb, nullptr);
}

void frame_in(void* context, std::span<const uint8_t> frame) {
  static_cast<lwip_shard*>(context)->on_frame(frame);
}

err_t link_output(struct netif* n, pbuf* p) {
  return static_cast<lwip_shard*>(n->state)->on_link_output(p);
}

err_t netif_setup(struct netif* n) {
  n->name[0] = 'd';
  n->name[1] = 'k';
  n->output = etharp_output;
  n->linkoutput = link_output;
  return ERR_OK;
}

}  // namespace

// ---- set-up -------------------------------------------------------------------------------

lwip_shard::lwip_shard(const gateway_config& config, frame_port& port, lwip_shard_options options,
                       std::vector<lwip_listener_spec> listeners)
    : config_(config), port_(port), options_(std::move(options)), netif_(std::make_unique<::netif>()) {
  for (const lwip_listener_spec& spec : listeners) {
    auto l = std::make_unique<listener>();
    l->owner = this;
    l->factory = spec.factory;
    l->target = spec.target;
    l->port = spec.port;
    listeners_.push_back(std::move(l));
  }
}

lwip_shard::~lwip_shard() {
  for (connection* c : connections_) {
    c->handler.reset();
    for (auto& s : c->sides) {
      for (pbuf* p : s.received) pbuf_free(p);
      if (s.pcb != nullptr) {
        detach(s.pcb);
        tcp_abort(s.pcb);
      }
    }
    delete c;
  }
  for (auto& l : listeners_)
    if (l->pcb != nullptr) tcp_close(l->pcb);
  if (lwip_ready_) {
    netif_set_down(netif_.get());
    netif_remove(netif_.get());
  }
}

status lwip_shard::init() {
  if (lwip_started) return {errc::invalid_argument, "lwIP is already running in this process"};
  lwip_started = true;
  set_log_shard(0);
  // Idle sleeps of a few tens of microseconds should not grow by the default 50 µs slack.
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  lwip_init();

  ip4_addr_t address, netmask, gateway;
  ip4_addr_set_u32(&address, htonl(options_.ip.address));
  const uint32_t mask = options_.ip.prefix_length == 32 ? 0xffffffffu
                                                        : ~(0xffffffffu >> options_.ip.prefix_length);
  ip4_addr_set_u32(&netmask, htonl(mask));
  ip4_addr_set_u32(&gateway, htonl(options_.ip.gateway));
  ::netif* n = netif_.get();
  if (netif_add(n, &address, &netmask, &gateway, this, netif_setup, ethernet_input) == nullptr)
    return {errc::io, "lwIP refused the network interface"};
  const auto mac = port_.mac_address();
  n->hwaddr_len = ETH_HWADDR_LEN;
  memcpy(n->hwaddr, mac.data(), mac.size());
  n->mtu = port_.mtu();
  n->flags |= NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET;
  netif_set_default(n);
  netif_set_up(n);
  netif_set_link_up(n);
  lwip_ready_ = true;

  for (auto& l : listeners_) {
    tcp_pcb* pcb = tcp_new_ip_type(IPADDR_TYPE_V4);
    if (pcb == nullptr) return {errc::io, "lwIP: out of memory for a listener"};
    ip_set_option(pcb, SOF_REUSEADDR);
    if (err_t err = tcp_bind(pcb, IP4_ADDR_ANY, l->port); err != ERR_OK) {
      tcp_close(pcb);
      return {errc::io, "lwIP: cannot bind port " + std::to_string(l->port) + ": " + lwip_error_text(err)};
    }
    err_t err = ERR_OK;
    tcp_pcb* listening = tcp_listen_with_backlog_and_err(pcb, TCP_DEFAULT_LISTEN_BACKLOG, &err);
    if (listening == nullptr) {
      tcp_close(pcb);
      return {errc::io, "lwIP: cannot listen on port " + std::to_string(l->port) + ": " + lwip_error_text(err)};
    }
    l->pcb = listening;
    tcp_arg(listening, l.get());
    tcp_accept(listening, on_accept_cb);
  }
  return status::ok();
}

// ---- frames ---------------------------------------------------------------------------------

void lwip_shard::on_frame(std::span<const uint8_t> frame) {
  if (frame.size() < SIZEOF_ETH_HDR) return;
  // Only IPv4 and ARP reach lwIP; the host's IPv6 chatter on a tap (router
  // solicitations, MLD) would only cost time.
  const uint16_t type = static_cast<uint16_t>(frame[12] << 8 | frame[13]);
  if (type != ETHTYPE_IP && type != ETHTYPE_ARP) {
    ++probe_.frames_ignored;
    return;
  }
  pbuf* p = pbuf_alloc(PBUF_RAW, static_cast<u16_t>(frame.size()), PBUF_RAM);
  if (p == nullptr) return;  // out of memory: dropped like on the wire
  memcpy(p->payload, frame.data(), frame.size());
  if (netif_->input(p, netif_.get()) != ERR_OK) pbuf_free(p);
}

int8_t lwip_shard::on_link_output(pbuf* p) {
  std::span<const uint8_t> pieces[tx_pieces_max];
  size_t count = 0;
  for (pbuf* q = p; q != nullptr; q = q->next) {
    if (count == tx_pieces_max) return ERR_MEM;
    pieces[count++] = {static_cast<const uint8_t*>(q->payload), q->len};
  }
  return port_.transmit({pieces, count}) ? ERR_OK : ERR_MEM;
}

// ---- inboxes --------------------------------------------------------------------------------

bool lwip_shard::post(int target, std::unique_ptr<shard_task> task) {
  if (target != 0 || local_tasks_.size() >= inbox_capacity) return false;
  local_tasks_.push_back(std::move(task));
  return true;
}

bool lwip_shard::post_from_control(std::unique_ptr<shard_task> task) {
  return control_inbox_.post(std::move(task));
}

bool lwip_shard::drain_inboxes() {
  bool ran = false;
  // Bounded: tasks posted by these tasks run in the next pass.
  for (size_t n = local_tasks_.size(); n > 0 && !local_tasks_.empty(); --n) {
    std::unique_ptr<shard_task> task = std::move(local_tasks_.front());
    local_tasks_.pop_front();
    task->run(*this);
    ran = true;
  }
  ran |= control_inbox_.drain(*this, inbox_capacity) > 0;
  return ran;
}

// ---- connections ------------------------------------------------------------------------------

lwip_shard::connection* lwip_shard::new_connection(tcp_pcb* client, const listener* from) {
  auto* c = new connection();
  c->owner = this;
  c->origin = from;
  if (client != nullptr) attach(c->side(peer::client), client);
  c->index = connections_.size();
  connections_.push_back(c);
  ++probe_.sessions_open;
  return c;
}

int8_t lwip_shard::on_accept(listener& l, tcp_pcb* pcb) {
  ++probe_.accepted;
  if (connections_.size() >= config_.limits.sessions_per_shard_max) {
    ++probe_.refused_overload;
    const std::string refusal = l.factory->overload_response();
    tcp_write(pcb, refusal.data(), static_cast<u16_t>(std::min(refusal.size(), tcp_write_bytes_max)),
              TCP_WRITE_FLAG_COPY);
    tcp_output(pcb);
    if (tcp_close(pcb) != ERR_OK) {
      tcp_abort(pcb);
      return ERR_ABRT;
    }
    return ERR_OK;
  }
  tcp_nagle_disable(pcb);
  connection* c = new_connection(pcb, &l);
  c->client_addr = address_text(pcb->remote_ip, pcb->remote_port);
  c->handler = l.factory->create();
  mark_ready(*c);  // on_start runs from the loop, outside this callback
  return ERR_OK;
}

void lwip_shard::start_outbound(std::unique_ptr<session_handler> handler) {
  connection* c = new_connection(nullptr, nullptr);
  c->client_addr = "gateway";
  c->started = true;
  c->handler = std::move(handler);
  c->handler->on_start(*c);
  if (!c->closed && c->side(peer::upstream).pcb == nullptr && !c->connecting && !c->connect_done)
    finalize(*c);
}

void lwip_shard::start_connect(connection& c, const net_address& address) {
  auto fail = [&](status why) {
    c.connect_done = true;
    c.connect_result = std::move(why);
    mark_ready(c);
  };
  if (address.storage.ss_family != AF_INET)
    return fail(status(errc::unsupported, "IPv6 upstreams are not supported by the DPDK backend"));
  const auto* v4 = reinterpret_cast<const sockaddr_in*>(&address.storage);
  tcp_pcb* pcb = tcp_new_ip_type(IPADDR_TYPE_V4);
  if (pcb == nullptr) return fail(status(errc::io, "lwIP: out of memory"));
  tcp_nagle_disable(pcb);
  connection::side_state& s = c.side(peer::upstream);
  attach(s, pcb);
  ip_addr_t ip;
  ip_addr_set_ip4_u32_val(ip, v4->sin_addr.s_addr);
  c.connecting = true;
  c.connect_deadline_ms = now_ms_ + config_.limits.connect_timeout_ms;
  if (err_t err = tcp_connect(pcb, &ip, ntohs(v4->sin_port), on_connected); err != ERR_OK) {
    detach(pcb);
    tcp_abort(pcb);
    s.pcb = nullptr;
    c.connecting = false;
    return fail(status(errc::io, "connect to " + address.text + ": " + lwip_error_text(err)));
  }
}

void lwip_shard::mark_ready(connection& c) {
  if (c.ready || c.closed) return;
  c.ready = true;
  ready_.push_back(&c);
}

void lwip_shard::mark_dirty(connection& c) {
  if (c.dirty || c.closed) return;
  c.dirty = true;
  dirty_.push_back(&c);
}

void lwip_shard::pause(connection& c, peer side, pause_reason why) {
  auto& s = c.side(side);
  if (s.paused & why) return;
  s.paused |= why;
  ++(why == paused_for_own_replies ? probe_.client_reads_paused : probe_.recv_paused);
}

void lwip_shard::resume(connection& c, peer side, pause_reason why) {
  auto& s = c.side(side);
  if (!(s.paused & why)) return;
  s.paused &= static_cast<uint8_t>(~why);
  if (s.paused != 0) return;
  if (!s.received.empty() || s.eof || s.failed) mark_ready(c);
}

// Hands the handler what arrived, segment by segment, until the side is
// paused or the session closes; reopens the peer's window for what it took.
void lwip_shard::deliver(connection& c, peer side) {
  auto& s = c.side(side);
  while (!s.received.empty() && !s.paused && !c.closing) {
    pbuf* head = s.received.front();
    size_t skip = s.received_offset;
    for (pbuf* q = head; q != nullptr; q = q->next) {
      if (skip >= q->len) {
        skip -= q->len;
        continue;
      }
      const std::span<const uint8_t> bytes(static_cast<const uint8_t*>(q->payload) + skip, q->len - skip);
      skip = 0;
      s.received_offset += bytes.size();
      (side == peer::client ? probe_.bytes_from_client : probe_.bytes_from_upstream) += bytes.size();
      c.handler->on_data(side, bytes);
      if (c.closed) return;  // finalize freed the queue, head included
      if (s.paused || c.closing) break;
    }
    if (s.received_offset < head->tot_len) return;
    s.received.pop_front();
    s.received_offset = 0;
    if (s.pcb != nullptr) window_update(s.pcb, head->tot_len);
    pbuf_free(head);
  }
  if (!s.received.empty() || s.end_reported || !(s.eof || s.failed)) return;
  s.end_reported = true;
  const status reason = s.failed ? status(errc::io, lwip_error_text(s.error)) : status::ok();
  if (!c.closing) c.handler->on_peer_closed(side, reason);
  if (!c.closed && c.closing) maybe_finish_close(c);
  if (!c.closed && !c.closing) finalize(c);  // a handler that ignores EOF still loses the peer
}

void lwip_shard::process(connection& c) {
  if (c.closed) return;
  if (!c.started) {
    c.started = true;
    c.handler->on_start(c);
    if (c.closed) return;
  }
  if (c.connect_done) {
    c.connect_done = false;
    c.handler->on_upstream_connected(c.connect_result);
    if (c.closed) return;
  }
  for (peer p : {peer::client, peer::upstream}) {
    deliver(c, p);
    if (c.closed) return;
  }
}

void lwip_shard::process_ready() {
  // Handlers may make more connections ready meanwhile: index, not iterators.
  for (size_t i = 0; i < ready_.size(); ++i) {
    connection* c = ready_[i];
    c->ready = false;
    process(*c);
  }
  ready_.clear();
}

void lwip_shard::flush(connection& c, peer side) {
  auto& s = c.side(side);
  if (s.pcb == nullptr) {
    s.pending.clear();
    s.pending_head = 0;
    return;
  }
  bool wrote = false;
  while (s.unsent() > 0) {
    const size_t room = tcp_sndbuf(s.pcb);
    if (room == 0 || tcp_sndqueuelen(s.pcb) >= TCP_SND_QUEUELEN) break;
    const size_t n = std::min({s.unsent(), room, tcp_write_bytes_max});
    const u8_t more = n < s.unsent() ? TCP_WRITE_FLAG_MORE : 0;
    const err_t err = tcp_write(s.pcb, s.pending.data() + s.pending_head, static_cast<u16_t>(n),
                                TCP_WRITE_FLAG_COPY | more);
    if (err == ERR_MEM) break;  // lwIP's queue is full: on_sent brings us back
    if (err != ERR_OK) {
      s.failed = true;
      s.error = err;
      s.pending.clear();
      s.pending_head = 0;
      mark_ready(c);
      return;
    }
    s.pending_head += n;
    wrote = true;
  }
  if (s.pending_head == s.pending.size()) {
    s.pending.clear();
    s.pending_head = 0;
  } else if (s.pending_head > (64u << 10) && s.pending_head * 2 > s.pending.size()) {
    s.pending.erase(s.pending.begin(), s.pending.begin() + static_cast<ptrdiff_t>(s.pending_head));
    s.pending_head = 0;
  }
  if (wrote) tcp_output(s.pcb);
}

void lwip_shard::flush_dirty() {
  for (size_t i = 0; i < dirty_.size(); ++i) {
    connection& c = *dirty_[i];
    c.dirty = false;
    if (c.closed) continue;
    for (peer p : {peer::client, peer::upstream}) {
      flush(c, p);
      if (c.side(p).unsent() <= config_.limits.unsent_bytes_max / 2) {
        resume(c, other(p), paused_for_other_side);
        if (p == peer::client) resume(c, peer::client, paused_for_own_replies);
      }
    }
    maybe_finish_close(c);
  }
  dirty_.clear();
}

// Both pcbs go back to lwIP: tcp_close sends what lwIP already holds, then
// FIN. Everything received is acknowledged first, since lwIP answers a close
// with unread data with a reset.
void lwip_shard::finalize(connection& c) {
  if (c.closed) return;
  c.closed = true;
  c.connecting = false;
  for (auto& s : c.sides) {
    size_t unread = 0;
    for (pbuf* p : s.received) {
      unread += p->tot_len;
      pbuf_free(p);
    }
    s.received.clear();
    s.pending.clear();
    s.pending_head = 0;
    if (s.pcb == nullptr) continue;
    tcp_pcb* pcb = s.pcb;
    s.pcb = nullptr;
    detach(pcb);
    window_update(pcb, unread);
    if (tcp_close(pcb) != ERR_OK) tcp_abort(pcb);
  }
  if (!c.in_graveyard) {
    c.in_graveyard = true;
    graveyard_.push_back(&c);
  }
}

void lwip_shard::maybe_finish_close(connection& c) {
  if (!c.closing || c.closed) return;
  for (auto& s : c.sides)
    if (s.pcb != nullptr && s.unsent() > 0) return;
  finalize(c);
}

void lwip_shard::check_deadlines() {
  for (size_t i = 0; i < connections_.size(); ++i) {
    connection* c = connections_[i];
    if (c->closed) continue;
    if (c->connecting && c->connect_deadline_ms <= now_ms_) {
      auto& s = c->side(peer::upstream);
      if (s.pcb != nullptr) {
        detach(s.pcb);
        tcp_abort(s.pcb);
        s.pcb = nullptr;
      }
      c->connecting = false;
      c->handler->on_upstream_connected(status(errc::timeout, "connect timed out"));
      if (c->closed) continue;
    }
    if (c->deadline_ms == 0 || c->deadline_ms > now_ms_) continue;
    c->deadline_ms = 0;
    c->handler->on_deadline();
  }
}

void lwip_shard::sweep() {
  if (graveyard_.empty()) return;
  std::erase_if(ready_, [](connection* c) { return c->closed; });
  std::erase_if(dirty_, [](connection* c) { return c->closed; });
  for (connection* c : graveyard_) {
    // The handler goes first: its destructor may still ask the connection for its shard.
    c->handler.reset();
    connection* last = connections_.back();
    connections_[c->index] = last;
    last->index = c->index;
    connections_.pop_back();
    --probe_.sessions_open;
    delete c;
  }
  graveyard_.clear();
}

void lwip_shard::shutdown_all() {
  for (auto& l : listeners_) {
    if (l->pcb == nullptr) continue;
    tcp_arg(l->pcb, nullptr);
    tcp_close(l->pcb);
    l->pcb = nullptr;
  }
  for (size_t i = 0; i < connections_.size(); ++i) finalize(*connections_[i]);
  sweep();
}

void lwip_shard::run(const std::atomic<bool>& stop) {
  now_ms_ = monotonic_ms();
  bool stopping = false;
  uint64_t stop_deadline_ms = 0;
  uint32_t idle_polls = 0;
  for (;;) {
    if (!stopping && stop.load(std::memory_order_relaxed)) {
      stopping = true;
      stop_deadline_ms = now_ms_ + stop_linger_ms;
      shutdown_all();
    }
    // Stopping: wait until the closing handshakes are done (the peers'
    // FINs acknowledged), or the linger time is over.
    if (stopping && connections_.empty() && (tcp_active_pcbs == nullptr || now_ms_ > stop_deadline_ms))
      break;

    bool busy = port_.receive(frame_in, this) > 0;
    now_ms_ = monotonic_ms();
    sys_check_timeouts();
    busy |= drain_inboxes();
    busy |= !ready_.empty();
    process_ready();
    if (now_ms_ - last_deadline_scan_ms_ >= deadline_scan_interval_ms) {
      last_deadline_scan_ms_ = now_ms_;
      check_deadlines();
      process_ready();
    }
    busy |= !dirty_.empty();
    flush_dirty();
    busy |= port_.flush() > 0;
    sweep();

    if (busy || options_.busy_poll) {
      idle_polls = 0;
    } else if (++idle_polls >= options_.idle_polls_max) {
      ++probe_.idle_sleeps;
      timespec pause{0, static_cast<long>(options_.idle_sleep_us) * 1000};
      nanosleep(&pause, nullptr);
    }
  }
}

}  // namespace agentgate::io::dpdk
