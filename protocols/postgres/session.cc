#include "protocols/postgres/session.h"

#include <strings.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "core/clock.h"
#include "core/log.h"
#include "core/text.h"

namespace agentgate::pg {
namespace {

// Startup parameters a client may set on the upstream session. Everything
// else (user, database, options, replication, session_authorization, ...) is
// the gateway's to decide: `options=-c role=...` must never slip through.
// client_encoding is the gateway's too: it is resolved, checked and sent
// once (choose_client_encoding), with standard_conforming_strings=on.
constexpr std::array<const char*, 8> forwarded_parameters = {
    "application_name", "DateStyle",   "TimeZone",  "extra_float_digits",
    "IntervalStyle",    "search_path", "lc_monetary", "geqo",
};

bool is_forwarded_parameter(const std::string& name) {
  for (const char* allowed : forwarded_parameters)
    if (strcasecmp(allowed, name.c_str()) == 0) return true;
  return false;
}

bytes as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string_view as_view(bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

int64_t now_s() { return unix_s_coarse(); }
int64_t now_us() { return unix_us(); }

bool is_command(char type) { return type == 'Q' || type == 'P' || type == 'F'; }

// Command tags after which the server's prepared statements may differ from
// what the client's protocol messages told the gateway.
bool changes_prepared_statements(std::span<const statement_facts> statements) {
  static constexpr std::string_view tags[] = {"PREPARE", "DEALLOCATE", "DISCARD", "DO", "CALL"};
  for (const statement_facts& f : statements) {
    const std::string_view kind = f.kind;
    for (std::string_view t : tags)
      if (kind.substr(0, t.size()) == t && (kind.size() == t.size() || kind[t.size()] == ' ')) return true;
  }
  return false;
}

}  // namespace

// ---- sinks: adapt frame_stream callbacks to the session's handlers ---------

class session::client_sink final : public frame_sink {
 public:
  explicit client_sink(session& s) : s_(s) {}
  bool on_frame(const frame_header& h, bytes frame) override { return s_.on_client_frame(h, frame); }
  bool on_frame_piece(const frame_header& h, bytes piece, bool first, bool last) override {
    // Only CopyData streams from the client; its content is opaque.
    if (s_.state_ != state::relaying) {
      s_.fail("08P01", "unexpected message from the client during login");
      return false;
    }
    if (s_.discarding_until_sync_) return true;  // part of a refused batch
    if (first) ++s_.probe_.frames_from_client;
    s_.io_->send(peer::upstream, piece);
    return true;
  }
  void on_desync(const char* error) override {
    ++s_.probe_.client_protocol_errors;
    s_.fail("08P01", std::string("invalid frontend message: ") + error);
  }

 private:
  session& s_;
};

class session::upstream_sink final : public frame_sink {
 public:
  explicit upstream_sink(session& s) : s_(s) {}
  bool on_frame(const frame_header& h, bytes frame) override {
    if (s_.state_ == state::upstream_auth) return s_.on_upstream_login_frame(h, frame);
    return s_.on_upstream_frame(h, frame);
  }
  bool on_frame_piece(const frame_header& h, bytes piece, bool first, bool last) override {
    if (s_.state_ != state::relaying) {
      s_.fail("08P01", "unexpected message from the upstream during login");
      return false;
    }
    if (first) {
      ++s_.probe_.frames_from_upstream;
      if (h.type == 'D') {
        ++s_.result_rows_total_;
        s_.result_rows_truncated_ = true;  // streamed, not kept
      }
    }
    if (first ? s_.filter_.active() : s_.filter_.streaming()) {
      // Bigger than masking holds whole (limits.masked_row_bytes_max): each
      // value is masked in place as it streams; `out` may lag the piece.
      std::string& out = s_.rewritten_;
      out.clear();
      const uint64_t rewritten_before = s_.filter_.values_rewritten();
      s_.hits_before();
      const result_filter::action a = s_.filter_.on_backend_piece(h, piece, first, last, out);
      s_.hits_after();
      switch (a) {
        case result_filter::action::pass:
          break;
        case result_filter::action::rewritten:
          s_.probe_.values_masked += s_.filter_.values_rewritten() - rewritten_before;
          piece = as_bytes(out);
          break;
        case result_filter::action::fail:
        case result_filter::action::drop:  // never for a piece
          ++s_.probe_.masking_refusals;
          s_.fail("0A000", "masking: " + s_.filter_.failure());
          return false;
      }
    }
    s_.client_mid_frame_ = !last;
    if (piece.empty()) return true;
    s_.bytes_to_client_ += piece.size();
    s_.io_->send(peer::client, piece);
    return true;
  }
  void on_desync(const char* error) override {
    ++s_.probe_.upstream_protocol_errors;
    AG_WARN("target %s: upstream protocol error from %s: %s", s_.target_.config.name.c_str(),
            s_.target_.upstream_address.text.c_str(), error);
    s_.fail("08P01", std::string("the upstream server broke the protocol: ") + error);
  }

 private:
  session& s_;
};

// ---- lifecycle ---------------------------------------------------------------

session::session(const target_runtime& target, session_probe& probe, const shard_context& shard,
                 table_catalog& catalog)
    : target_(target),
      probe_(probe),
      shard_(shard),
      catalog_(catalog),
      from_client_(direction::frontend, target.limits.frame_bytes_max),
      from_upstream_(direction::backend, target.limits.frame_bytes_max),
      client_sink_(std::make_unique<client_sink>(*this)),
      upstream_sink_(std::make_unique<upstream_sink>(*this)) {
  id_ = session_id::generate();
}

session::~session() {
  if (const uint64_t held_back = denial_log_.take_suppressed(); held_back > 0)
    AG_INFO("target %s: session %s: %llu more denials in this session not logged", target_.config.name.c_str(),
            id_.hex().c_str(), static_cast<unsigned long long>(held_back));
  if (recorded_start_ && shard_.recorder != nullptr) {
    record_repeated_denials();
    rec_session_end e;
    e.id = id_;
    e.unix_us = now_us();
    e.reason = end_reason_;
    e.commands = command_seq_;
    e.bytes_from_client = bytes_from_client_;
    e.bytes_to_client = bytes_to_client_;
    shard_.recorder->session_end(e);
  }
  // A client that goes while its command is held withdraws the request.
  if (!approval_id_.empty() && shard_.approvals != nullptr) shard_.approvals->withdraw(approval_id_);
  if (shard_.cancels == nullptr || io_ == nullptr) return;
  cancel_registry& registry = *shard_.cancels->per_shard[io_->shard().shard_id()];
  if (minted_pid_ != 0) registry.remove(minted_pid_);
  if (cancel_waiter_ != 0) registry.remove_waiter(cancel_waiter_);
  if (approval_waiter_ != 0) registry.remove_waiter(approval_waiter_);
}

void session::on_start(session_io& io) {
  io_ = &io;
  started_at_s_ = now_s();
  ++probe_.sessions_started;
  // The filter always follows the conversation: besides masking and
  // recording, it knows which client messages the server will answer (COPY
  // mode, skipped messages), which the session's own books depend on.
  filter_.set_catalog(&catalog_);
  if (shard_.masker != nullptr) {
    filter_.set_masker(*shard_.masker);
    if (filter_.active()) from_upstream_.set_collect_bytes_max(target_.limits.masked_row_bytes_max);
  }
  io_->set_deadline_ms(target_.limits.auth_timeout_ms);
}

void session::on_data(peer from, std::span<const uint8_t> data) {
  if (state_ == state::closed) return;
  if (from == peer::client) {
    if (state_ == state::startup) {
      on_startup_bytes(data);
    } else if (state_ == state::relaying) {
      // The client spoke: the session is busy until the next ReadyForQuery.
      if (target_.limits.idle_timeout_ms > 0) io_->set_deadline_ms(0);
      bytes_from_client_ += data.size();
      if (!from_client_.feed(data, *client_sink_) && from_client_.held_overflow())
        fail("54000", "too much data from the client while a command waited for approval");
    } else if (state_ == state::client_auth) {
      on_password_bytes(data);
    } else {
      // A client may pipeline its first messages behind the startup packet
      // (PostgreSQL reads them after login): hold them, bounded, until then.
      hold_early_client_bytes(data);
    }
  } else if (state_ == state::upstream_tls) {
    on_upstream_tls_answer(data);
  } else {
    from_upstream_.feed(data, *upstream_sink_);
  }
}

void session::fail(const char* sqlstate, const std::string& message) {
  if (state_ == state::closed) return;
  const bool was_relaying = state_ == state::relaying;
  state_ = state::closed;
  if (!was_relaying) ++probe_.sessions_refused;
  end_reason_ = std::string(sqlstate) + ": " + message;
  AG_INFO("target %s: session %s: closing session from %s: %s (SQLSTATE %s)", target_.config.name.c_str(),
          id_.hex().c_str(), io_->client_address().c_str(), message.c_str(), sqlstate);
  // An error in the middle of a DataRow would corrupt the client's stream.
  if (client_mid_frame_) {
    io_->abort();
    return;
  }
  std::string out;
  append_error(out, "FATAL", sqlstate, message);
  send_to_client(out);
  io_->close_after_flush();
}

void session::send_to_client(const std::string& bytes) { io_->send(peer::client, as_bytes(bytes)); }
void session::send_to_upstream(const std::string& bytes) { io_->send(peer::upstream, as_bytes(bytes)); }

// ---- startup phase -------------------------------------------------------------

void session::on_startup_bytes(bytes data) {
  if (startup_buffer_.size() + data.size() > target_.limits.startup_bytes_max * 2u) {
    ++probe_.client_protocol_errors;
    fail("08P01", "too much data in the startup phase");
    return;
  }
  startup_buffer_.append(reinterpret_cast<const char*>(data.data()), data.size());
  while (state_ == state::startup && !startup_buffer_.empty()) {
    const startup_length_result len =
        decode_startup_length(as_bytes(startup_buffer_), target_.limits.startup_bytes_max);
    if (len.status == frame_status::need_more) return;
    if (len.status == frame_status::desync) {
      ++probe_.client_protocol_errors;
      fail("08P01", len.error);
      return;
    }
    result<startup_packet> packet = parse_startup(as_bytes(startup_buffer_).first(len.length));
    if (!packet) {
      ++probe_.client_protocol_errors;
      fail("08P01", packet.error().message());
      return;
    }
    const bool more = startup_buffer_.size() > len.length;
    startup_buffer_.erase(0, len.length);
    if (!handle_startup_packet(*packet, more)) return;
  }
}

bool session::handle_startup_packet(const startup_packet& packet, bool more_bytes_follow) {
  switch (packet.kind) {
    case startup_kind::ssl_request:
    case startup_kind::gssenc_request: {
      // Bytes behind an encryption request, sent before our answer, would be
      // read as if they had been protected by it (CVE-2021-23214): refuse.
      if (more_bytes_follow) {
        ++probe_.client_protocol_errors;
        fail("08P01", "received unencrypted data after SSL request");
        return false;
      }
      if (io_->tls_active(peer::client)) {
        ++probe_.client_protocol_errors;
        fail("08P01", "encryption request inside an encrypted connection");
        return false;
      }
      // GSSAPI encryption is not offered; TLS is when a certificate is configured.
      if (packet.kind == startup_kind::gssenc_request || !io_->client_tls_available()) {
        send_to_client("N");
        return true;
      }
      send_to_client("S");
      if (const status st = io_->start_client_tls(); !st) {
        fail("08006", "cannot start TLS: " + st.message());
        return false;
      }
      return true;
    }
    case startup_kind::cancel_request: {
      // The connection carries nothing else; the owner shard does the rest
      // and tells us when the request is delivered, so we close only then.
      ++probe_.cancels_forwarded;
      if (shard_.cancels == nullptr) {
        state_ = state::closed;
        io_->abort();
        return false;
      }
      state_ = state::cancel_wait;
      cancel_waiter_ = shard_.cancels->per_shard[io_->shard().shard_id()]->add_waiter(*this);
      if (!route_cancel(io_->shard(), *shard_.cancels, packet.cancel_pid, packet.cancel_key,
                        cancel_waiter_))
        on_cancel_done();
      return false;
    }
    case startup_kind::startup:
      break;
  }
  const uint32_t major = packet.protocol >> 16;
  const uint32_t minor = packet.protocol & 0xffff;
  if (major != 3) {
    ++probe_.client_protocol_errors;
    fail("0A000", "unsupported frontend protocol " + std::to_string(major) + "." +
                      std::to_string(minor) + ": server supports 3.0 to 3.0");
    return false;
  }
  const std::string* user = packet.find("user");
  if (user == nullptr || user->empty()) {
    fail("28000", "no PostgreSQL user name specified in startup packet");
    return false;
  }
  const std::string* replication = packet.find("replication");
  if (replication != nullptr && strcasecmp(replication->c_str(), "false") != 0 &&
      strcasecmp(replication->c_str(), "off") != 0 && *replication != "0") {
    fail("0A000", "replication connections are not supported by the gateway");
    return false;
  }
  std::vector<std::string> unknown_options;
  for (const auto& [name, value] : packet.parameters)
    if (name.rfind("_pq_.", 0) == 0) unknown_options.push_back(name);
  if (minor > 0 || !unknown_options.empty()) {
    std::string out;
    append_negotiate_protocol_version(out, unknown_options);
    send_to_client(out);
  }
  startup_ = packet;
  if (!choose_client_encoding()) return false;
  if (const std::string* options = packet.find("options")) prompt_ = prompt_from_options(*options);
  if (target_.config.client_auth == client_auth_mode::jwt) {
    if (!io_->tls_active(peer::client) && !target_.config.allow_plaintext_auth) {
      ++probe_.client_logins_refused;
      fail("28000", "token login requires TLS: connect with sslmode=require");
      return false;
    }
    // The token travels as a cleartext password, protected by TLS.
    state_ = state::client_auth;
    std::string out;
    std::string body;
    append_u32(body, 3);
    append_frame(out, 'R', body);
    send_to_client(out);
    if (more_bytes_follow) {
      const std::string rest = std::move(startup_buffer_);
      startup_buffer_.clear();
      on_password_bytes(as_bytes(rest));
    }
    return false;
  }
  state_ = state::connecting;
  if (more_bytes_follow) {
    hold_early_client_bytes(as_bytes(startup_buffer_));
    startup_buffer_.clear();
  }
  if (state_ == state::connecting) connect_upstream();
  return false;
}

void session::connect_upstream() {
  state_ = state::connecting;
  io_->connect_upstream(target_.upstream_address);
}

// The password message is framed here, not by from_client_, so that whatever
// follows it is held raw and replayed into a stream that has seen nothing.
void session::on_password_bytes(bytes data) {
  if (startup_buffer_.size() + data.size() > password_message_bytes_max + early_client_bytes_max) {
    ++probe_.client_protocol_errors;
    fail("08P01", "too much data from the client before authentication completed");
    return;
  }
  startup_buffer_.append(reinterpret_cast<const char*>(data.data()), data.size());
  const header_result h = decode_header(direction::frontend, as_bytes(startup_buffer_),
                                        target_.limits.frame_bytes_max);
  if (h.status == frame_status::need_more) return;
  if (h.status == frame_status::desync) {
    ++probe_.client_protocol_errors;
    fail("08P01", std::string("invalid frontend message: ") + h.error);
    return;
  }
  if (h.header.length > password_message_bytes_max) {
    ++probe_.client_protocol_errors;
    fail("08P01", "password message too long: a token is at most " +
                      std::to_string(password_message_bytes_max) + " bytes here");
    return;
  }
  if (startup_buffer_.size() < h.header.frame_bytes()) return;
  const std::string buffered = std::move(startup_buffer_);
  startup_buffer_.clear();
  const bytes all = as_bytes(buffered);
  if (!on_client_login_frame(h.header, all.first(h.header.frame_bytes()))) return;
  if (all.size() > h.header.frame_bytes()) hold_early_client_bytes(all.subspan(h.header.frame_bytes()));
}

bool session::on_client_login_frame(const frame_header& header, bytes frame) {
  if (header.type != 'p') {
    ++probe_.client_protocol_errors;
    fail("08P01", std::string("expected a password message, got '") + header.type + "'");
    return false;
  }
  const bytes body = frame.subspan(header_bytes);
  if (body.empty() || body.back() != 0 || memchr(body.data(), 0, body.size() - 1) != nullptr) {
    ++probe_.client_protocol_errors;
    fail("08P01", "malformed password message");
    return false;
  }
  const std::string_view token(reinterpret_cast<const char*>(body.data()), body.size() - 1);
  if (shard_.auth == nullptr) {
    fail("28000", "token login is not configured on this gateway");
    return false;
  }
  result<session_identity> who = shard_.auth->authenticate(token, now_s());
  if (!who) {
    ++probe_.client_logins_refused;
    fail("28P01", "token refused: " + who.error().message());
    return false;
  }
  identity_ = std::move(*who);
  AG_DEBUG("target %s: %s logged in as %s (%s)", target_.config.name.c_str(),
           io_->client_address().c_str(), identity_.subject.c_str(), identity_.email.c_str());
  connect_upstream();
  return true;
}

bool session::token_expired() {
  if (target_.config.client_auth != client_auth_mode::jwt || identity_.valid_until_s == 0 ||
      target_.on_token_expiry == token_expiry_action::ignore)
    return false;
  return now_s() >= identity_.valid_until_s;
}

bool session::hold_early_client_bytes(bytes data) {
  if (early_client_bytes_.size() + data.size() > early_client_bytes_max) {
    ++probe_.client_protocol_errors;
    fail("08P01", "too much data from the client before authentication completed");
    return false;
  }
  early_client_bytes_.append(reinterpret_cast<const char*>(data.data()), data.size());
  return true;
}


void session::on_cancel_done() {
  if (state_ != state::cancel_wait) return;
  state_ = state::closed;
  io_->abort();
}

void session::on_upstream_connected(const status& result) {
  if (state_ == state::closed) return;
  if (!result) {
    AG_WARN("target %s: cannot connect to upstream %s: %s", target_.config.name.c_str(),
            target_.upstream_address.text.c_str(), result.message().c_str());
    fail("08006", "could not connect to the upstream of target " + target_.config.name);
    return;
  }
  if (target_.config.upstream.tls != upstream_tls_mode::disable) {
    std::string out;
    append_u32(out, 8);
    append_u32(out, ssl_request_code);
    send_to_upstream(out);
    state_ = state::upstream_tls;
    return;
  }
  send_upstream_startup();
  state_ = state::upstream_auth;
}

void session::on_upstream_tls_answer(bytes data) {
  if (data.size() != 1 || (data[0] != 'S' && data[0] != 'N')) {
    // More than the one-byte answer means someone wrote into the stream
    // before the handshake could protect it (CVE-2021-23222): refuse.
    ++probe_.upstream_protocol_errors;
    fail("08006", "the upstream answered the TLS request with unexpected data");
    return;
  }
  if (data[0] == 'N') {
    fail("08006", "the upstream of target " + target_.config.name + " refused TLS");
    return;
  }
  if (const status st = io_->start_upstream_tls(); !st) {
    fail("08006", "cannot start TLS to the upstream: " + st.message());
    return;
  }
  send_upstream_startup();
  state_ = state::upstream_auth;
}

void session::send_upstream_startup() {
  std::vector<std::pair<std::string, std::string>> params;
  params.emplace_back("user", target_.config.upstream.user);
  params.emplace_back("database", target_.config.upstream.database);
  for (const auto& [name, value] : startup_.parameters)
    if (is_forwarded_parameter(name)) params.emplace_back(name, value);
  // The two settings the classifier's reading depends on, fixed for the
  // session; watch_parameter_status() ends it if either ever changes.
  params.emplace_back("client_encoding", encoding_.name);
  params.emplace_back("standard_conforming_strings", "on");
  std::string out;
  append_startup(out, params);
  send_to_upstream(out);
}

// ---- upstream login ---------------------------------------------------------------

bool session::on_upstream_login_frame(const frame_header& header, bytes frame) {
  const bytes body = frame.subspan(header_bytes);
  switch (header.type) {
    case 'R':
      return answer_authentication(body);
    case 'E': {
      const error_fields f = parse_error_fields(body);
      ++probe_.upstream_login_failures;
      AG_WARN("target %s: upstream %s refused the gateway's login: %s (SQLSTATE %s)",
              target_.config.name.c_str(), target_.upstream_address.text.c_str(),
              f.message.c_str(), f.sqlstate.c_str());
      // The upstream's words may name the gateway's own account: keep them in
      // the log, tell the client only what class of failure it was.
      const bool credentials = f.sqlstate.rfind("28", 0) == 0;
      fail(credentials ? "08006" : (f.sqlstate.size() == 5 ? f.sqlstate.c_str() : "08006"),
           credentials ? "upstream login failed: the gateway's credentials were refused"
                       : "upstream login failed: " + f.message);
      return false;
    }
    case 'N':
      return true;  // notices during login are of no use to the client
    default:
      ++probe_.upstream_protocol_errors;
      fail("08P01", std::string("unexpected message '") + header.type +
                        "' from the upstream during login");
      return false;
  }
}

bool session::answer_authentication(bytes body) {
  if (!upstream_login_) {
    const upstream_config& upstream = target_.config.upstream;
    upstream_login_.emplace(upstream.user, upstream.password, upstream.auth_methods);
  }
  result<upstream_login::step> step = upstream_login_->on_request(body);
  if (!step) {
    const status& why = step.error();
    AG_WARN("target %s: upstream %s: login refused: %s", target_.config.name.c_str(),
            target_.upstream_address.text.c_str(), why.message().c_str());
    if (why.code() == errc::protocol) {
      ++probe_.upstream_protocol_errors;
      fail("08P01", "malformed authentication request from the upstream");
    } else {
      ++probe_.upstream_login_failures;
      fail("08006", "upstream login failed: " + why.message());
    }
    return false;
  }
  std::string out;
  if (!step->authenticated) {
    if (!step->password_message.empty()) {
      append_frame(out, 'p', step->password_message);
      send_to_upstream(out);
    }
    return true;
  }
  // AuthenticationOk: the client may go on; the rest is relayed.
  upstream_login_.reset();
  state_ = state::relaying;
  append_authentication_ok(out);
  send_to_client(out);
  record_session_start();
  // The client's messages wait for the login's ReadyForQuery: one sent
  // before it would reach the server ahead of the catalog read, its
  // result masked without table rules and its rows read as the catalog.
  login_ready_pending_ = true;
  from_client_.pause();
  if (!early_client_bytes_.empty()) {
    std::string early;
    early.swap(early_client_bytes_);
    if (!from_client_.feed(as_bytes(early), *client_sink_) && state_ == state::closed) return false;
  }
  return true;
}

// ---- relaying ----------------------------------------------------------------------

bool session::on_client_frame(const frame_header& header, bytes frame) {
  if (const char* error = validate_frontend_body(header.type, frame.subspan(header_bytes))) {
    ++probe_.client_protocol_errors;
    fail("08P01", error);
    return false;
  }
  if (header.type == 'p') {
    // Password and SASL messages belong to the login the gateway already did.
    ++probe_.client_protocol_errors;
    fail("08P01", "unexpected authentication message after login");
    return false;
  }
  if (header.type == 'X') {
    client_terminated_ = true;
  } else if ((header.type == 'Q' || header.type == 'P' || header.type == 'B' || header.type == 'E' ||
              header.type == 'F') &&
             token_expired() &&
             shard_.auth != nullptr) {
    ++probe_.sessions_expired;
    fail("28000", "the session's token expired; log in again with a fresh token");
    return false;
  }
  switch (guard(header, frame)) {
    case verdict::forward:
      break;
    case verdict::drop:
      return true;
    case verdict::stop:
      return false;
  }
  return forward_client_frame(header, frame);
}

// A client message the guardrails let through (at once, or on an
// approval's verdict) goes upstream here, and only here: the filter and the
// session's batch state follow it.
bool session::forward_client_frame(const frame_header& header, bytes frame) {
  ++probe_.frames_from_client;
  if (!filter_.on_frontend(header.type, frame.subspan(header_bytes), command_seq_)) {
    fail("54000", "too many client messages waiting for their responses");
    return false;
  }
  if (forget_statements_) {
    filter_.forget_after_last();
    forget_statements_ = false;
  }
  if (header.type == 'B' || header.type == 'E') batch_executed_ = true;
  else if (header.type == 'S') batch_executed_ = false;
  if (header.type == 'P' || header.type == 'B' || header.type == 'E' || header.type == 'D' || header.type == 'C')
    extended_open_ = true;
  else if (header.type == 'S')
    extended_open_ = false;
  if (header.type == 'E' && !filter_.describe_to_inject().empty()) send_to_upstream(filter_.describe_to_inject());
  io_->send(peer::upstream, frame);
  return true;
}

// ---- guardrails ---------------------------------------------------------------------

// Decides whether a client message may go upstream, and keeps the books of
// which responses the client is owed.
session::verdict session::guard(const frame_header& header, bytes frame) {
  forget_statements_ = false;
  const bool extended = header.type == 'P' || header.type == 'B' || header.type == 'E' ||
                        header.type == 'D' || header.type == 'C' || header.type == 'H';
  if (discarding_until_sync_) {
    // As the server does after an error in an extended-protocol batch: skip
    // to the Sync, whose ReadyForQuery carries the refusal.
    if (extended || header.type == 'd' || header.type == 'c' || header.type == 'f') return verdict::drop;
    if (header.type == 'S') {
      discarding_until_sync_ = false;
      if (!expect_response()) return verdict::stop;
      slots_.back().error = std::move(batch_denial_);
      batch_denial_.clear();
      return verdict::forward;
    }
  }
  if ((header.type == 'Q' || header.type == 'F') && (extended_open_ || discarding_until_sync_)) {
    // The server answers such a Query (or skips it, after an error in the
    // batch) in ways the gateway's books cannot follow; no driver sends one.
    ++probe_.client_protocol_errors;
    fail("08P01", "a simple Query or FunctionCall inside an unfinished extended-protocol batch: send Sync first");
    return verdict::stop;
  }
  if (header.type == 'S' && filter_.copy_in()) return verdict::forward;  // ignored by the server in COPY mode
  if (header.type == 'Q') {
    const bytes body = frame.subspan(header_bytes);
    const std::string_view sql = as_view(body.first(body.size() - 1));
    if (sql.size() < 4096 && (sql.find("agentgate.") != std::string_view::npos ||
                              sql.find("AGENTGATE.") != std::string_view::npos))
      if (const verdict v = answer_prompt_set(sql); v != verdict::forward) return v;
  }
  if (is_command(header.type) && recording_refuses()) {
    ++probe_.commands_unrecordable;
    return refuse_with("58030",
                       "recording is unavailable (" + std::string(shard_.recorder->failure_reason()) +
                           "); the gateway runs no command it cannot record",
                       header.type == 'P');
  }
  std::string_view sql;
  if (header.type == 'Q' || header.type == 'P') {
    sql = command_text(header, frame);
    if (const verdict v = settle_before(header, frame, sql); v != verdict::forward) return v;
    bool refused = false;
    sql = sql_for_classifier(sql, header.type == 'P', refused);
    if (refused) return verdict::drop;
  }
  if (const verdict v = check_object_names(header, frame); v != verdict::forward) return v;
  const policy_decision* decision = nullptr;
  if (shard_.inspector != nullptr) {
    if (header.type == 'Q' || header.type == 'P') {
      decision = &shard_.inspector->inspect_sql(target_.config.name, identity_, sql);
    } else if (header.type == 'F') {
      decision = &shard_.inspector->inspect_function_call(target_.config.name, identity_);
    }
  }
  if (header.type == 'B' ||
      (decision != nullptr && decision->action == policy_action::allow && (header.type == 'Q' || header.type == 'P')))
    if (const verdict v = gate_execution(header, frame); v != verdict::forward) return v;
  if (is_command(header.type) && !record_command(header, frame, decision)) return refuse_unrecorded(header.type != 'Q' && header.type != 'F');
  forget_statements_ = decision != nullptr && header.type != 'F' &&
                       changes_prepared_statements(shard_.inspector->last_statements());
  if (decision != nullptr && decision->action == policy_action::require_approval &&
      shard_.approvals != nullptr)
    return hold(header, frame, *decision);
  if (decision != nullptr && decision->action != policy_action::allow)
    return refuse(*decision, header.type == 'P',
                  header.type == 'F' ? std::string_view() : shard_.inspector->parse_error());
  if (decision != nullptr) ++probe_.commands_allowed;
  if (header.type == 'Q' || header.type == 'S' || header.type == 'F')
    return expect_response() ? verdict::forward : verdict::stop;
  return verdict::forward;
}

std::string_view session::command_text(const frame_header& header, bytes frame) const {
  const bytes body = frame.subspan(header_bytes);
  if (header.type == 'Q') return as_view(body.first(body.size() - 1));
  const void* nul = memchr(body.data(), 0, body.size());
  const auto* query = static_cast<const uint8_t*>(nul) + 1;
  const void* end = memchr(query, 0, body.data() + body.size() - query);
  return {reinterpret_cast<const char*>(query), static_cast<size_t>(static_cast<const uint8_t*>(end) - query)};
}

// Verdict of an approval, carried from the control plane to the session's shard.
class approval_verdict_task final : public shard_task {
 public:
  approval_verdict_task(cancel_registry& registry, uint64_t waiter, bool approved, std::string reason,
                        std::string approver)
      : registry_(registry),
        waiter_(waiter),
        approved_(approved),
        reason_(std::move(reason)),
        approver_(std::move(approver)) {}
  void run(shard_services&) override {
    if (session* s = registry_.find_waiter(waiter_)) s->on_approval_verdict(approved_, reason_, approver_);
  }

 private:
  cancel_registry& registry_;
  uint64_t waiter_;
  bool approved_;
  std::string reason_;
  std::string approver_;
};

// require_approval: nothing goes upstream; the client's further messages
// wait (bounded) in from_client_ until the verdict.
session::verdict session::hold(const frame_header& header, bytes frame, const policy_decision& decision,
                               std::string command) {
  approval_ticket ticket;
  ticket.target = target_.config.name;
  ticket.requester = identity_;
  ticket.command = command.empty() ? std::string(command_text(header, frame)) : std::move(command);
  ticket.rule_id = std::string(decision.rule_id);
  ticket.rule_message = std::string(decision.message);
  ticket.approvers.assign(decision.approvers.begin(), decision.approvers.end());
  ticket.timeout_s = decision.timeout_s;
  ticket.client_address = io_->client_address();
  ticket.session_id = id_.hex();
  prompt_context from_comment;
  ticket.prompt_id = prompt_from_comment(ticket.command, from_comment) ? from_comment.prompt_id : prompt_.prompt_id;
  cancel_registry& registry = *shard_.cancels->per_shard[io_->shard().shard_id()];
  const uint64_t waiter = registry.add_waiter(*this);
  shard_services* shard = &io_->shard();
  result<std::string> id = shard_.approvals->request(
      std::move(ticket), [shard, &registry, waiter](bool approved, std::string reason, std::string approver) {
        shard->post_from_control(
            std::make_unique<approval_verdict_task>(registry, waiter, approved, std::move(reason), std::move(approver)));
      });
  if (!id) {
    registry.remove_waiter(waiter);
    return refuse_message("denied by rule " + std::string(decision.rule_id) +
                              ": the command needs an approval and none can be requested now (" +
                              id.error().message() + ")",
                          header.type == 'P');
  }
  ++probe_.commands_held;
  approval_id_ = std::move(*id);
  approval_waiter_ = waiter;
  held_frame_.assign(reinterpret_cast<const char*>(frame.data()), frame.size());
  held_rule_ = gate_rule::of(decision);
  held_prepares_ = false;
  if ((header.type == 'Q' || header.type == 'P') && shard_.inspector != nullptr)
    for (const statement_facts& f : shard_.inspector->last_statements())
      if (f.kind == "PREPARE" || f.kind == "DO" || f.kind == "CALL") held_prepares_ = true;
  AG_INFO("target %s: session %s: %s: command held for approval %s (rule %s)", target_.config.name.c_str(),
          id_.hex().c_str(), identity_.subject.c_str(), approval_id_.c_str(), std::string(decision.rule_id).c_str());
  from_client_.pause();
  return verdict::drop;
}

void session::on_approval_verdict(bool approved, const std::string& reason, const std::string& approver) {
  if (approval_id_.empty() || state_ != state::relaying) return;
  shard_.cancels->per_shard[io_->shard().shard_id()]->remove_waiter(approval_waiter_);
  approval_waiter_ = 0;
  approval_id_.clear();
  std::string frame;
  frame.swap(held_frame_);
  const frame_header header{frame[0], read_u32(reinterpret_cast<const uint8_t*>(frame.data()) + 1)};
  const bool recorded = record_decision(command_seq_, approved ? "approved" : "denied", {}, approver, reason) ||
                        shard_.recorder->fail_open();
  if (approved && !recorded) {
    refuse_unrecorded(header.type != 'Q' && header.type != 'F');
  } else if (approved) {
    // Goes upstream exactly once: the held copy, now. What it prepares
    // runs once on this approval; later executions ask again.
    if (header.type == 'P') {
      body_reader in(as_bytes(frame).subspan(header_bytes));
      std::string_view name;
      in.cstr(&name);
      gated_statement& g = gated_[std::string(name.substr(0, 63))];
      g.rule = held_rule_;
      g.sql = std::string(command_text(header, as_bytes(frame)));
      g.used = false;
    }
    if ((header.type == 'Q' || header.type == 'P') && held_prepares_) sql_gate_ = std::make_unique<gate_rule>(held_rule_);
    if ((header.type == 'Q' || header.type == 'F') && !expect_response()) return;
    if (!forward_client_frame(header, as_bytes(frame))) return;
    if (header.type == 'P') filter_.mark_last_parse_approved();
  } else {
    refuse_message("denied: " + reason, header.type != 'Q' && header.type != 'F');
  }
  if (state_ == state::relaying && !from_client_.resume(*client_sink_) && from_client_.held_overflow())
    fail("54000", "too much data from the client while a command waited for approval");
}

// An approval covers one execution. A statement prepared under one runs at
// its first Bind; every later Bind is held again, the approver shown the
// parameters. SQL EXECUTE after an approved SQL PREPARE likewise. A gate is
// never lifted when a Close or Parse goes up (the server may skip it after
// an error): only the unnamed statement's, once the server has answered a
// Parse that replaced it (on_upstream_frame). A Close leaves the gate: at
// worst a new statement of the same name asks again.
session::verdict session::gate_execution(const frame_header& header, bytes frame) {
  body_reader in(frame.subspan(header_bytes));
  if (header.type == 'Q' || header.type == 'P') {
    // Prepared statements made by Parse and by SQL PREPARE share one
    // namespace: while any approval-gated one exists, SQL EXECUTE of any
    // name asks again.
    if ((sql_gate_ == nullptr && gated_.empty()) || shard_.inspector == nullptr) return verdict::forward;
    for (const statement_facts& f : shard_.inspector->last_statements())
      if (f.kind == "EXECUTE") {
        if (!record_command(header, frame, nullptr)) return refuse_unrecorded(header.type == 'P');
        const gate_rule rule = sql_gate_ != nullptr ? *sql_gate_ : gated_.begin()->second.rule;
        return hold(header, frame, rule.decision());
      }
    return verdict::forward;
  }
  // Bind: portal, statement.
  std::string_view portal, statement;
  in.cstr(&portal);
  in.cstr(&statement);
  const std::string name(statement.substr(0, 63));
  const auto it = gated_.find(name);
  const bool gated = it != gated_.end() || (sql_gate_ != nullptr && !filter_.knows_statement(name));
  // Rendered only for a recording or an approver: not per Bind otherwise.
  const std::string parameters =
      shard_.recorder != nullptr || gated ? bind_parameters_text(frame.subspan(header_bytes)) : std::string();
  if (!record_bind(frame, it == gated_.end() ? std::string_view() : std::string_view(it->second.sql), parameters))
    return refuse_unrecorded(true);
  if (it == gated_.end()) {
    // After an approved SQL PREPARE (or code that can run one), a Bind of a
    // statement no Parse of this session made may be that one.
    if (sql_gate_ != nullptr && !filter_.knows_statement(name)) {
      const gate_rule rule = *sql_gate_;
      return hold(header, frame, rule.decision(), "(Bind of prepared statement \"" + name + "\")\n-- parameters: " + parameters);
    }
    return verdict::forward;
  }
  if (!it->second.used) {
    it->second.used = true;
    return verdict::forward;
  }
  if (shard_.approvals == nullptr)
    return refuse(it->second.rule.decision(), true, "executing it again needs another approval");
  std::string command = it->second.sql + "\n-- executed again with parameters: " + parameters;
  const gate_rule rule = it->second.rule;
  return hold(header, frame, rule.decision(), std::move(command));
}

// A Bind's parameters for the approver and the recording: text values
// masked like results, binary ones by size, each cut at 256 bytes.
std::string session::bind_parameters_text(bytes body) {
  body_reader in(body);
  std::string_view skip;
  in.cstr(&skip);
  in.cstr(&skip);
  uint16_t nformats = 0, nparams = 0;
  in.u16(&nformats);
  std::vector<uint16_t> formats(nformats);
  for (uint16_t& f : formats) in.u16(&f);
  in.u16(&nparams);
  std::string out;
  std::string masked;
  for (uint16_t i = 0; i < nparams; ++i) {
    uint32_t len = 0;
    if (!in.u32(&len)) break;
    if (!out.empty()) out += ", ";
    out += "$" + std::to_string(i + 1) + " = ";
    if (len == 0xffffffffu) {
      out += "NULL";
      continue;
    }
    const bytes value = in.rest().first(std::min<size_t>(len, in.rest().size()));
    in.skip(len);
    const uint16_t format = formats.empty() ? 0 : (formats.size() == 1 ? formats[0] : (i < formats.size() ? formats[i] : 0));
    if (format != 0) {
      // Binary values of types the gateway does not decode: shown as bytes
      // (an int2 10 reads 0x000a).
      static constexpr char hex[] = "0123456789abcdef";
      out += "(binary) 0x";
      for (size_t b = 0; b < value.size() && b < 64; ++b) {
        out += hex[value[b] >> 4];
        out += hex[value[b] & 15];
      }
      if (value.size() > 64) out += "...";
      continue;
    }
    std::string_view text = as_view(value);
    masked.clear();
    if (filter_.active() && filter_.masker()->mask_text(value, masked) == mask_outcome::rewritten) text = masked;
    uint8_t bad = 0;
    std::string utf8;
    if (encoding_.how == client_encoding::kind::single_byte && transcribe_to_utf8(encoding_, text, utf8, bad)) text = utf8;
    out += '\'';
    for (char c : text.substr(0, 256)) {
      if (c == '\'') out += '\'';
      out += c;
    }
    out += '\'';
    if (text.size() > 256) out += "...";
    if (out.size() > 4096) {
      out += ", ...";
      break;
    }
  }
  return out.empty() ? "(none)" : out;
}

// Every execution is recorded, with its parameters: a Bind is a command of
// its own, and its rows are recorded under it.
bool session::record_bind(bytes frame, std::string_view statement_sql, std::string_view parameters) {
  ++command_seq_;
  command_started_us_ = now_us();
  if (shard_.recorder == nullptr) return true;
  record_repeated_denials();  // a run of denials ends here
  repeated_denial_.seq = 0;
  body_reader in(frame.subspan(header_bytes));
  std::string_view portal, statement;
  in.cstr(&portal);
  in.cstr(&statement);
  std::string text = "EXECUTE ";
  text += statement.empty() ? std::string_view("(unnamed statement)") : statement;
  if (!statement_sql.empty()) {
    text += " -- ";
    text += statement_sql.substr(0, 1024);
  }
  text += "\n-- parameters: ";
  text += parameters;
  rec_command c;
  c.id = id_;
  c.unix_us = command_started_us_;
  c.seq = command_seq_;
  c.message_kind = 'B';
  c.text = text;
  c.prompt = {prompt_.prompt_id, prompt_.prompt_text, prompt_.traceparent};
  return shard_.recorder->command(c) || shard_.recorder->fail_open();
}

// A command whose record could not be appended (or synced, with fsync
// "always") does not run: 58030, the session stays usable.
session::verdict session::refuse_unrecorded(bool extended) {
  ++probe_.commands_unrecordable;
  const std::string why = shard_.recorder != nullptr ? std::string(shard_.recorder->failure_reason()) : "";
  return refuse_with("58030",
                     "recording failed" + (why.empty() ? std::string() : " (" + why + ")") +
                         "; the gateway runs no command it cannot record",
                     extended);
}

bool session::on_cancel_requested() {
  if (approval_id_.empty()) return false;
  shard_.approvals->withdraw(approval_id_);
  approval_id_.clear();
  std::string frame;
  frame.swap(held_frame_);
  const bool extended = frame[0] != 'Q' && frame[0] != 'F';
  std::string error;
  append_error(error, "ERROR", "57014", "canceling statement due to user request (its approval was withdrawn)");
  if (extended) {
    discarding_until_sync_ = true;
    batch_denial_ = std::move(error);
  } else {
    respond_error(std::move(error));
  }
  if (state_ == state::relaying && !from_client_.resume(*client_sink_) && from_client_.held_overflow())
    fail("54000", "too much data from the client while a command waited for approval");
  return true;
}

bool session::expect_response() {
  if (slots_.size() >= pending_responses_max) {
    fail("54000", "too many commands waiting for their results");
    return false;
  }
  slots_.push_back(response_slot{});
  ++upstream_pending_;
  return true;
}

session::verdict session::refuse(const policy_decision& decision, bool extended, std::string_view detail) {
  std::string message = "denied by rule ";
  message += decision.rule_id.empty() ? std::string_view("(default)") : decision.rule_id;
  if (!decision.message.empty()) {
    message += ": ";
    message += decision.message;
  }
  if (!detail.empty()) {
    message += " (";
    message += detail;
    message += ")";
  }
  // Without an approvals service nobody can approve: failing closed is the
  // only safe answer to a command that needs one.
  if (decision.action == policy_action::require_approval) message += " (needs an approval; none can be taken here)";
  return refuse_message(std::move(message), extended);
}

session::verdict session::refuse_message(std::string message, bool extended) {
  ++probe_.commands_denied;
  return refuse_with("42501", std::move(message), extended);
}

session::verdict session::refuse_with(const char* sqlstate, std::string message, bool extended) {
  std::string error;
  append_error(error, "ERROR", sqlstate, message);
  uint64_t held_back = 0;
  if (denial_log_.allow(static_cast<uint64_t>(monotonic_ms()), held_back))
    AG_INFO("target %s: session %s: %s: %s%s", target_.config.name.c_str(), id_.hex().c_str(),
            identity_.subject.empty() ? io_->client_address().c_str() : identity_.subject.c_str(), message.c_str(),
            held_back == 0 ? "" : (" (" + std::to_string(held_back) + " more denials in this session not logged)").c_str());
  if (extended) {
    discarding_until_sync_ = true;
    batch_denial_ = std::move(error);
    return verdict::drop;
  }
  respond_error(std::move(error));
  return verdict::drop;
}

// A refusal of a simple Query or FunctionCall: an ErrorResponse, then
// ReadyForQuery with the upstream's own transaction status (it never saw the
// command, so its transaction is as it was), after every earlier response.
void session::respond_error(std::string error) {
  if (slots_.size() >= pending_responses_max) {
    fail("54000", "too many commands waiting for their results");
    return;
  }
  response_slot slot;
  slot.synthetic = true;
  slot.error = std::move(error);
  slots_.push_back(std::move(slot));
  flush_synthetic_responses();
}

void session::flush_synthetic_responses() {
  while (!slots_.empty() && slots_.front().synthetic) {
    std::string out = std::move(slots_.front().error);
    const char status[1] = {transaction_status_};
    append_frame(out, 'Z', std::string_view(status, 1));
    send_to_client(out);
    slots_.pop_front();
  }
}

bool session::on_upstream_frame(const frame_header& header, bytes frame) {
  if (catalog_pending_) return on_catalog_frame(header, frame);
  switch (header.type) {
    case 'R':
      ++probe_.upstream_protocol_errors;
      fail("08P01", "unexpected authentication message from the upstream after login");
      return false;
    case 'Z': {
      // The first ReadyForQuery ends the login; the session is now idle-timed.
      io_->set_deadline_ms(target_.limits.idle_timeout_ms);
      transaction_status_ = static_cast<char>(frame[header_bytes]);
      const bool upstream_failed = upstream_error_in_batch_;
      upstream_error_in_batch_ = false;
      if (login_ready_pending_) {  // the login's own
        login_ready_pending_ = false;
        if (start_catalog_read(frame)) return true;
        if (!relay_upstream_frame(header, frame)) return false;
        if (!from_client_.resume(*client_sink_) && from_client_.held_overflow())
          fail("54000", "too much data from the client before its login completed");
        return state_ != state::closed;
      }
      if (slots_.empty()) break;
      response_slot done = std::move(slots_.front());
      slots_.pop_front();
      if (upstream_pending_ > 0) --upstream_pending_;
      // The server skips the rest of a batch after its own error, as it
      // would have skipped the refused Parse: then one error is enough.
      if (!done.error.empty() && !upstream_failed) send_to_client(done.error);
      if (!relay_upstream_frame(header, frame)) return false;
      flush_synthetic_responses();
      if (!deferred_frame_.empty() && upstream_pending_ == 0) return run_deferred_frame();
      return true;
    }
    case 'K':
      return on_backend_key_data(frame);
    case 'S':
      if (!watch_parameter_status(frame)) return false;
      break;
    case '1': {
      if (!relay_upstream_frame(header, frame)) return false;
      // The unnamed statement was replaced: a gate on the old one goes.
      const result_filter::parse_completion& done = filter_.last_parse_completion();
      if (done.done && !done.approved && done.name.empty()) gated_.erase(std::string());
      return true;
    }
    case 'G':
      if (!relay_upstream_frame(header, frame)) return false;
      drop_ignored_syncs(filter_.take_ignored_syncs());
      return true;
    case 'E': {
      const error_fields f = parse_error_fields(frame.subspan(header_bytes));
      if (f.severity == "FATAL" || f.severity == "PANIC") upstream_sent_fatal_ = true;
      upstream_error_in_batch_ = true;
      break;
    }
    default:
      break;
  }
  return relay_upstream_frame(header, frame);
}

// The client gets a key the gateway minted; the upstream's stays here.
bool session::on_backend_key_data(bytes frame) {
  const bytes body = frame.subspan(header_bytes);
  const upstream_key upstream{read_u32(body.data()), read_u32(body.data() + 4)};
  upstream_key minted{0, 0};
  if (shard_.cancels != nullptr && minted_pid_ == 0) {
    minted = shard_.cancels->per_shard[io_->shard().shard_id()]->add(upstream, target_, *this);
    minted_pid_ = minted.pid;
  }
  std::string out;
  std::string key_body;
  append_u32(key_body, minted.pid);
  append_u32(key_body, minted.key);
  append_frame(out, 'K', key_body);
  ++probe_.frames_from_upstream;
  send_to_client(out);
  return true;
}

void session::on_peer_closed(peer which, const status& reason) {
  if (state_ == state::closed) return;
  if (which == peer::client) {
    // Flush what the client said last (its Terminate) before closing upstream.
    state_ = state::closed;
    io_->close_after_flush();
    return;
  }
  if (state_ == state::relaying && (client_terminated_ || upstream_sent_fatal_)) {
    state_ = state::closed;
    io_->close_after_flush();
    return;
  }
  AG_WARN("target %s: upstream %s closed the connection: %s", target_.config.name.c_str(),
          target_.upstream_address.text.c_str(), reason.message().c_str());
  if (state_ != state::relaying && !reason.is_ok()) {
    fail("08006", "upstream login failed: " + reason.message());
    return;
  }
  fail("08006", "the upstream server closed the connection unexpectedly");
}

void session::on_deadline() {
  switch (state_) {
    case state::startup:
    case state::client_auth:
      fail("08006", "timeout waiting for the client to log in");
      return;
    case state::connecting:
    case state::upstream_tls:
    case state::upstream_auth:
      fail("08006", "timeout logging in to the upstream of target " + target_.config.name);
      return;
    case state::relaying:
      fail("57P05", "terminating connection due to idle-session timeout");
      return;
    case state::cancel_wait:
      on_cancel_done();  // the owner never answered: close anyway
      return;
    case state::closed:
      return;
  }
}

namespace {



const char* state_name(int s) {
  static const char* names[] = {"startup", "client_auth", "connecting", "upstream_tls",
                                "upstream_auth", "relaying", "cancel_wait", "closed"};
  return names[s];
}

}  // namespace

std::string session::describe_json() const {
  if (state_ == state::cancel_wait || state_ == state::closed || io_ == nullptr) return {};
  std::string out = "{\"target\":";
  append_json_string(out, target_.config.name);
  out += ",\"shard\":" + std::to_string(io_->shard().shard_id());
  out += ",\"client\":";
  append_json_string(out, io_->client_address());
  out += ",\"subject\":";
  append_json_string(out, identity_.subject);
  out += ",\"email\":";
  append_json_string(out, identity_.email);
  out += ",\"groups\":[";
  for (size_t i = 0; i < identity_.groups.size(); ++i) {
    if (i) out += ",";
    append_json_string(out, identity_.groups[i]);
  }
  out += "],\"state\":";
  append_json_string(out, state_name(static_cast<int>(state_)));
  out += ",\"tls\":";
  append_json_string(out, io_->tls_description(peer::client));
  out += ",\"started_at\":" + std::to_string(started_at_s_);
  out += ",\"id\":";
  append_json_string(out, id_.hex());
  out += ",\"prompt_id\":";
  append_json_string(out, prompt_.prompt_id);
  out += ",\"held_for_approval\":";
  append_json_string(out, approval_id_);
  out += "}";
  return out;
}

// ---- masking and recording ---------------------------------------------------------

// Every upstream frame after login reaches the client through here: masked
// when the policy masks, captured for the recording when one is kept.
bool session::relay_upstream_frame(const frame_header& header, bytes frame) {
  ++probe_.frames_from_upstream;
  if (header.type == 'Z' && shard_.masker != nullptr && filter_.masker() != *shard_.masker) {
    // A new policy's masking starts with the next command, never mid-result.
    filter_.set_masker(*shard_.masker);
    from_upstream_.set_collect_bytes_max(filter_.active() ? target_.limits.masked_row_bytes_max : 0);
  }
  bytes out = frame;
  hits_before();
  const result_filter::action a = filter_.on_backend(header, frame, rewritten_);
  hits_after();
  switch (a) {
    case result_filter::action::pass:
      break;
    case result_filter::action::rewritten:
      out = as_bytes(rewritten_);
      ++probe_.values_masked;
      break;
    case result_filter::action::fail:
      ++probe_.masking_refusals;
      fail("0A000", "masking: " + filter_.failure());
      return false;
    case result_filter::action::drop:
      return true;
  }
  if (shard_.recorder != nullptr) {
    if (header.type == 'D') {
      ++result_rows_total_;
      const bytes body = out.subspan(header_bytes);
      if (result_rows_.size() + body.size() <= shard_.recorder->result_bytes_max())
        result_rows_.append(reinterpret_cast<const char*>(body.data()), body.size());
      else
        result_rows_truncated_ = true;
    }
    if (filter_.ended_seq() != 0 || header.type == 'C' || header.type == 'E')
      record_result(filter_.ended_seq(), header, out);
  }
  bytes_to_client_ += out.size();
  io_->send(peer::client, out);
  return true;
}

// Column rules follow result columns to their source columns, which needs
// RowDescription's table OIDs resolved: after login, before the client's
// first ReadyForQuery, the gateway reads the upstream's catalog itself (once
// a minute per target and shard at most).
bool session::start_catalog_read(bytes ready_for_query) {
  if (!filter_.active() || catalog_pending_) return false;
  if (!filter_.masker()->has_column_rules()) return false;
  if (catalog_.fresh(now_s())) return false;
  ++probe_.catalog_reads;
  catalog_pending_ = true;
  catalog_error_.clear();
  // Read beside the shared one, which other sessions keep using meanwhile
  // and keep as it was if this read fails.
  catalog_reading_ = std::make_unique<table_catalog>();
  login_ready_.assign(reinterpret_cast<const char*>(ready_for_query.data()), ready_for_query.size());
  std::string query;
  std::string body = catalog_query();
  body.push_back('\0');
  append_frame(query, 'Q', body);
  send_to_upstream(query);
  from_client_.pause();  // the client waits for its ReadyForQuery anyway
  return true;
}

bool session::on_catalog_frame(const frame_header& header, bytes frame) {
  const bytes body = frame.subspan(header_bytes);
  switch (header.type) {
    case 'D':
      if (!catalog_reading_->add_row(body) && catalog_error_.empty()) catalog_error_ = "malformed catalog row";
      return true;
    case 'E':
      catalog_error_ = parse_error_fields(body).message;
      return true;
    case 'Z': {
      catalog_pending_ = false;
      std::unique_ptr<table_catalog> read = std::move(catalog_reading_);
      // This session's read replaces the shard's only when it looks whole: a
      // read something filtered (an operator of the session's own) must not
      // switch column rules off for the other sessions.
      if (catalog_error_.empty()) catalog_error_ = read->implausible();
      if (!catalog_error_.empty()) {
        // Without the catalog, column rules cannot be applied: fail closed.
        fail("58000", "masking: cannot read the upstream's catalog for column rules: " + catalog_error_);
        return false;
      }
      read->read_at_s = now_s();
      catalog_ = std::move(*read);
      std::string ready;
      ready.swap(login_ready_);
      if (!relay_upstream_frame(header, as_bytes(ready))) return false;
      if (!from_client_.resume(*client_sink_) && from_client_.held_overflow())
        fail("54000", "too much data from the client while the gateway read the catalog");
      return state_ != state::closed;
    }
    default:
      return true;  // RowDescription, CommandComplete, notices: the gateway's own query
  }
}

// Matches found for this session: the shard's masker counts for every
// session on the shard, so the counters are read around this session's own
// calls into the filter and only what changed meanwhile is this session's.
uint64_t session::masker_total(const data_masker& m) {
  uint64_t total = 0;
  for (uint64_t h : m.hits()) total += h;
  return total;
}

void session::hits_before() {
  if (shard_.recorder == nullptr || shard_.masker == nullptr || *shard_.masker == nullptr) return;
  const data_masker* m = shard_.masker->get();
  if (m != hits_masker_) {
    hits_masker_ = m;  // a new policy version: a new set of counters
    command_hits_.assign(m->hits().size(), 0);
    hits_seen_total_ = ~uint64_t{0};
  }
  const uint64_t total = masker_total(*m);
  if (total == hits_seen_total_) return;
  hits_seen_.assign(m->hits().begin(), m->hits().end());
  hits_seen_total_ = total;
}

void session::hits_after() {
  if (hits_masker_ == nullptr || shard_.masker == nullptr || shard_.masker->get() != hits_masker_) return;
  const uint64_t total = masker_total(*hits_masker_);
  if (total == hits_seen_total_) return;
  const std::span<const uint64_t> hits = hits_masker_->hits();
  for (size_t i = 0; i < hits.size() && i < hits_seen_.size() && i < command_hits_.size(); ++i) {
    command_hits_[i] += hits[i] - hits_seen_[i];
    hits_seen_[i] = hits[i];
  }
  hits_seen_total_ = total;
}

bool session::recording_refuses() {
  return shard_.recorder != nullptr && !shard_.recorder->available() && !shard_.recorder->fail_open();
}

void session::record_session_start() {
  if (shard_.recorder == nullptr || recorded_start_) return;
  recorded_start_ = true;
  const std::string tls = io_->tls_description(peer::client);
  rec_session_start e;
  e.id = id_;
  e.unix_us = now_us();
  e.shard = io_->shard().shard_id();
  e.protocol = "postgres";
  e.target = target_.config.name;
  e.subject = identity_.subject;
  e.email = identity_.email;
  e.groups = identity_.groups;
  e.client_address = io_->client_address();
  e.tls = tls;
  if (const std::string* db = startup_.find("database")) e.database = *db;
  if (const std::string* user = startup_.find("user")) e.user = *user;
  e.prompt = {prompt_.prompt_id, prompt_.prompt_text, prompt_.traceparent};
  shard_.recorder->session_start(e);
}

bool session::record_command(const frame_header& header, bytes frame, const policy_decision* decision) {
  ++command_seq_;
  command_started_us_ = now_us();
  // COPY TO STDOUT names its columns only in its text.
  if (header.type != 'F') filter_.note_command_text(command_seq_, command_text(header, frame));
  if (shard_.recorder == nullptr) return true;
  const std::string_view text = header.type == 'F' ? std::string_view("(function call)") : command_text(header, frame);
  // A run of identical denials is recorded once, then counted.
  const bool denied = decision != nullptr && decision->action == policy_action::deny;
  repeated_denial& run = repeated_denial_;
  if (denied && run.seq != 0 && header.type == run.kind && text == run.text && decision->rule_id == run.rule_id) {
    ++run.repeats;
    run.last_seq = command_seq_;
    return true;
  }
  record_repeated_denials();
  run.seq = 0;
  if (denied) {
    run.kind = header.type;
    run.text.assign(text);
    run.rule_id.assign(decision->rule_id);
    run.seq = command_seq_;
  }
  prompt_context from_comment;
  const bool commented = header.type != 'F' && prompt_from_comment(text, from_comment);
  const prompt_context& prompt = commented ? from_comment : prompt_;
  std::string kinds;  // "SELECT", "BEGIN,UPDATE,COMMIT"
  if (shard_.inspector != nullptr && header.type != 'F')
    for (const statement_facts& f : shard_.inspector->last_statements()) {
      if (!kinds.empty()) kinds += ',';
      kinds += f.kind;
    }
  rec_command c;
  c.id = id_;
  c.unix_us = command_started_us_;
  c.seq = command_seq_;
  c.message_kind = header.type;
  c.text = text;
  c.classification = kinds;
  c.prompt = {prompt.prompt_id, prompt.prompt_text, prompt.traceparent};
  bool recorded = shard_.recorder->command(c);
  if (decision != nullptr)
    recorded &= record_decision(command_seq_, to_string(decision->action), decision->rule_id, {}, decision->message);
  // A command whose record is not where the recorder promised (appended;
  // with fsync "always", synced) runs only when recording fails open.
  return recorded || shard_.recorder->fail_open();
}

// Closes a run of identical denials: one decision on the recorded command
// says how many followed it, and which sequence numbers they had.
void session::record_repeated_denials() {
  repeated_denial& run = repeated_denial_;
  if (run.repeats == 0) return;
  const std::string reason = "repeated " + std::to_string(run.repeats) + " more times (commands " +
                             std::to_string(run.seq + 1) + " to " + std::to_string(run.last_seq) +
                             "), each denied by the same rule; not recorded one by one";
  record_decision(run.seq, "deny", run.rule_id, {}, reason);
  run.repeats = 0;
}

bool session::record_decision(uint64_t seq, std::string_view action, std::string_view rule,
                              std::string_view approver, std::string_view reason) {
  if (shard_.recorder == nullptr) return true;
  rec_decision d;
  d.id = id_;
  d.unix_us = now_us();
  d.seq = seq;
  d.action = action;
  d.rule_id = rule;
  d.approver = approver;
  d.reason = reason;
  return shard_.recorder->decision(d);
}

void session::record_result(uint64_t seq, const frame_header& header, bytes frame) {
  const bytes body = frame.subspan(header_bytes);
  std::string tag, error;
  if (header.type == 'C' && !body.empty()) {
    tag.assign(reinterpret_cast<const char*>(body.data()), body.size() - 1);
  } else if (header.type == 'E') {
    const error_fields f = parse_error_fields(body);
    error = f.sqlstate + ": " + f.message;
  } else if (header.type == 's') {
    tag = "(portal suspended)";
  }
  // Kept between results: its strings keep their capacity.
  const std::vector<row_column>& described = filter_.last_columns();
  result_columns_.resize(described.size());
  for (size_t i = 0; i < described.size(); ++i) result_columns_[i].assign(described[i].name);
  std::vector<std::pair<std::string, uint64_t>> masked;
  if (hits_masker_ != nullptr) {
    const std::span<const std::string> names = hits_masker_->hit_names();
    for (size_t i = 0; i < command_hits_.size() && i < names.size(); ++i)
      if (command_hits_[i] != 0) masked.emplace_back(names[i], command_hits_[i]);
  }
  std::fill(command_hits_.begin(), command_hits_.end(), 0);
  rec_result r;
  r.id = id_;
  r.unix_us = now_us();
  r.seq = seq != 0 ? seq : command_seq_;
  r.columns = result_columns_;
  r.rows = result_rows_;
  r.rows_total = result_rows_total_;
  r.rows_truncated = result_rows_truncated_;
  r.duration_us = command_started_us_ != 0 ? r.unix_us - command_started_us_ : 0;
  r.command_tag = tag;
  r.error = error;
  r.masked = masked;
  shard_.recorder->result(r);
  result_rows_.clear();
  if (result_rows_.capacity() > (1u << 20)) result_rows_.shrink_to_fit();
  result_rows_total_ = 0;
  result_rows_truncated_ = false;
}

// ---- reading SQL as the server does ----------------------------------------------

bool session::choose_client_encoding() {
  // The server applies startup parameters in order, so the last one counts;
  // whatever the client sent, exactly one value goes upstream.
  std::string_view requested;
  for (const auto& [name, value] : startup_.parameters)
    if (strcasecmp(name.c_str(), "client_encoding") == 0) requested = value;
  encoding_ = resolve_client_encoding(requested);
  switch (encoding_.how) {
    case client_encoding::kind::utf8:
    case client_encoding::kind::single_byte:
      return true;
    case client_encoding::kind::refused:
      fail("0A000", "client_encoding \"" + encoding_.name +
                        "\" is not supported through the gateway, which must read every command as the "
                        "server does; use UTF8 (or a single-byte encoding such as LATIN1)");
      return false;
    case client_encoding::kind::unknown:
      break;
  }
  fail("22023", "invalid value for parameter \"client_encoding\": \"" + std::string(requested) + "\"");
  return false;
}

// The server reports client_encoding and standard_conforming_strings
// whenever they change, by whatever route (SET, set_config in a function, an
// UPDATE of pg_settings, ...). Either leaving the value fixed at login means
// the server may now read commands differently from the classifier: the
// session ends before another command goes up.
bool session::watch_parameter_status(bytes frame) {
  body_reader in(frame.subspan(header_bytes));
  std::string_view name, value;
  if (!in.cstr(&name) || !in.cstr(&value)) {
    ++probe_.upstream_protocol_errors;
    fail("08P01", "malformed ParameterStatus from the upstream");
    return false;
  }
  const std::string lower = clean_encoding_name(name);
  std::string why;
  if (lower == "clientencoding") {
    // Exactly the name sent at login: SQL_ASCII, which resolves to the same
    // reading for a client, means no conversion at all on the server.
    if (clean_encoding_name(value) != clean_encoding_name(encoding_.name))
      why = "client_encoding changed to \"" + std::string(value) + "\"";
  } else if (lower == "serverencoding") {
    server_utf8_ = clean_encoding_name(value) == "utf8";
  } else if (lower == "standardconformingstrings") {
    if (value != "on") why = "standard_conforming_strings changed to \"" + std::string(value) + "\"";
  }
  if (why.empty()) return true;
  AG_WARN("target %s: session %s: %s: %s; ending the session", target_.config.name.c_str(), id_.hex().c_str(),
          identity_.subject.c_str(), why.c_str());
  fail("0A000", "the server's " + why +
                    ": the gateway could no longer read commands as the server does, so the session ends");
  return false;
}

// The text the classifier reads: as sent for UTF-8 sessions, transcribed
// for single-byte ones. A byte with no character in the encoding is refused
// (the server would refuse it too).
std::string_view session::sql_for_classifier(std::string_view sql, bool extended, bool& refused) {
  if (!server_utf8_ && !is_ascii(sql)) {
    // A database in another encoding folds and cuts identifiers by its own
    // rules (high-bit letters lowercased, 63 bytes of its encoding), which
    // the classifier's UTF-8 reading does not reproduce.
    refused = true;
    refuse_with("0A000", "non-ASCII SQL is only accepted through the gateway when the database encoding is UTF8",
                extended);
    return {};
  }
  if (encoding_.how != client_encoding::kind::single_byte) return sql;
  uint8_t bad = 0;
  if (transcribe_to_utf8(encoding_, sql, sql_utf8_, bad)) return sql_utf8_;
  refused = true;
  char hex[8];
  snprintf(hex, sizeof hex, "0x%02x", bad);
  refuse_with("22021", std::string("character with byte sequence ") + hex + " in encoding \"" + encoding_.name +
                           "\" has no equivalent in encoding \"UTF8\"",
              extended);
  return {};
}

// A setting can change inside any command that runs code (a function that
// calls set_config, an UPDATE of pg_settings), and the server reports it
// only at that command's ReadyForQuery. Text that reads the same under every
// client encoding and either standard_conforming_strings (ASCII, no
// backslash) goes on at once; other text waits until every earlier command
// has answered, so any change was seen first. Inside an extended batch it
// cannot wait (the Sync comes after it): it is refused.
session::verdict session::settle_before(const frame_header& header, bytes frame, std::string_view sql) {
  if (is_ascii(sql) && sql.find('\\') == std::string_view::npos) return verdict::forward;
  if (batch_executed_)
    return refuse_with("0A000",
                       "a statement with non-ASCII characters or backslashes cannot follow a Bind or Execute "
                       "in the same batch through the gateway (a setting the gateway has not yet seen may have "
                       "changed how the server reads it); send a Sync first",
                       header.type == 'P');
  if (upstream_pending_ == 0) return verdict::forward;
  deferred_frame_.assign(reinterpret_cast<const char*>(frame.data()), frame.size());
  from_client_.pause();
  return verdict::drop;
}

// COPY FROM STDIN: the server ignores Syncs sent before the client's
// CopyDone; the answers expected for them never come.
void session::drop_ignored_syncs(size_t n) {
  for (auto it = slots_.begin(); n > 0 && it != slots_.end();) {
    if (it->synthetic) {
      ++it;
      continue;
    }
    it = slots_.erase(it);
    --n;
    if (upstream_pending_ > 0) --upstream_pending_;
  }
  flush_synthetic_responses();
}

bool session::run_deferred_frame() {
  std::string frame;
  frame.swap(deferred_frame_);
  const frame_header header{frame[0], read_u32(reinterpret_cast<const uint8_t*>(frame.data()) + 1)};
  if (!on_client_frame(header, as_bytes(frame))) return false;
  if (state_ != state::relaying) return false;
  // Still waiting: held for approval, or deferred again.
  if (!approval_id_.empty() || !deferred_frame_.empty()) return true;
  if (!from_client_.resume(*client_sink_) && from_client_.held_overflow())
    fail("54000", "too much data from the client while a command waited");
  return state_ != state::closed;
}

// Statement and portal names are keys the server compares after converting
// them from the client's encoding and cutting them at NAMEDATALEN-1 bytes;
// ASCII names are the same bytes on both sides, others are refused.
session::verdict session::check_object_names(const frame_header& header, bytes frame) {
  body_reader in(frame.subspan(header_bytes));
  std::string_view a, b;
  uint8_t what = 0;
  switch (header.type) {
    case 'P':
    case 'E':
      in.cstr(&a);
      break;
    case 'B':
      in.cstr(&a);
      in.cstr(&b);
      break;
    case 'D':
    case 'C':
      in.u8(&what);
      in.cstr(&a);
      break;
    default:
      return verdict::forward;
  }
  if (is_ascii(a) && is_ascii(b)) return verdict::forward;
  return refuse_with("42602", "prepared statement and portal names must be ASCII through the gateway", true);
}

// SET agentgate.prompt_id = '...' is the gateway's: answered here, never sent upstream.
session::verdict session::answer_prompt_set(std::string_view sql) {
  std::string key, value;
  if (!parse_prompt_set(sql, key, value)) return verdict::forward;
  if (key == "prompt_id") prompt_.prompt_id = value.substr(0, 256);
  else if (key == "prompt_text") prompt_.prompt_text = value.substr(0, 4096);
  else prompt_.traceparent = value.substr(0, 128);
  std::string out;
  append_frame(out, 'C', std::string_view("SET\0", 4));
  if (slots_.size() >= pending_responses_max) {
    fail("54000", "too many commands waiting for their results");
    return verdict::stop;
  }
  response_slot slot;
  slot.synthetic = true;
  slot.error = std::move(out);
  slots_.push_back(std::move(slot));
  flush_synthetic_responses();
  return verdict::drop;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r' ||
                        s.back() == ';'))
    s.remove_suffix(1);
  return s;
}

bool take_word(std::string_view& s, std::string_view word) {
  s = trim(s);
  if (s.size() < word.size() || strncasecmp(s.data(), word.data(), word.size()) != 0) return false;
  if (s.size() > word.size()) {
    const char next = s[word.size()];
    if (isalnum(static_cast<unsigned char>(next)) || next == '_' || next == '.') return false;
  }
  s.remove_prefix(word.size());
  return true;
}

bool prompt_key(std::string_view name, std::string& key) {
  static constexpr std::string_view keys[] = {"prompt_id", "prompt_text", "traceparent"};
  for (std::string_view k : keys)
    if (name.size() == k.size() && strncasecmp(name.data(), k.data(), k.size()) == 0) {
      key = k;
      return true;
    }
  return false;
}

// sqlcommenter values are URL-encoded.
std::string url_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

bool parse_prompt_set(std::string_view sql, std::string& key, std::string& value) {
  std::string_view s = trim(sql);
  if (s.find(';') != std::string_view::npos) return false;  // one statement only
  const bool reset = take_word(s, "RESET");
  if (!reset && !take_word(s, "SET")) return false;
  if (!reset) take_word(s, "SESSION");
  if (!take_word(s, "agentgate.")) {
    s = trim(s);
    if (s.size() < 10 || strncasecmp(s.data(), "agentgate.", 10) != 0) return false;
    s.remove_prefix(10);
  }
  size_t n = 0;
  while (n < s.size() && (isalnum(static_cast<unsigned char>(s[n])) || s[n] == '_')) ++n;
  if (!prompt_key(s.substr(0, n), key)) return false;
  s.remove_prefix(n);
  if (reset) {
    value.clear();
    return trim(s).empty();
  }
  s = trim(s);
  if (!s.empty() && s.front() == '=') s.remove_prefix(1);
  else if (!take_word(s, "TO")) return false;
  s = trim(s);
  value.clear();
  if (!s.empty() && s.front() == '\'') {
    size_t i = 1;
    for (; i < s.size(); ++i) {
      if (s[i] == '\'') {
        if (i + 1 < s.size() && s[i + 1] == '\'') {
          value.push_back('\'');
          ++i;
          continue;
        }
        break;
      }
      value.push_back(s[i]);
    }
    if (i >= s.size()) return false;
    return trim(s.substr(i + 1)).empty();
  }
  for (char c : s) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
    value.push_back(c);
  }
  return !value.empty();
}

bool prompt_from_comment(std::string_view sql, prompt_context& out) {
  const std::string_view s = trim(sql);
  if (s.size() < 4 || s.substr(s.size() - 2) != "*/") return false;
  const size_t open = s.rfind("/*");
  if (open == std::string_view::npos) return false;
  std::string_view body = s.substr(open + 2, s.size() - open - 4);
  bool any = false;
  while (!body.empty()) {
    body = trim(body);
    const size_t eq = body.find('=');
    if (eq == std::string_view::npos) break;
    const std::string_view name = trim(body.substr(0, eq));
    body.remove_prefix(eq + 1);
    if (body.empty() || body.front() != '\'') break;
    const size_t close = body.find('\'', 1);
    if (close == std::string_view::npos) break;
    const std::string value = url_decode(body.substr(1, close - 1));
    body.remove_prefix(close + 1);
    std::string key;
    if (prompt_key(name, key)) {
      any = true;
      if (key == "prompt_id") out.prompt_id = value.substr(0, 256);
      else if (key == "prompt_text") out.prompt_text = value.substr(0, 4096);
      else out.traceparent = value.substr(0, 128);
    }
    body = trim(body);
    if (!body.empty() && body.front() == ',') body.remove_prefix(1);
  }
  return any;
}

prompt_context prompt_from_options(std::string_view options) {
  // "-c agentgate.prompt_id=abc --agentgate.traceparent=00-..." (libpq
  // splits on spaces; a backslash escapes one).
  prompt_context out;
  std::vector<std::string> words;
  std::string word;
  for (size_t i = 0; i < options.size(); ++i) {
    const char c = options[i];
    if (c == '\\' && i + 1 < options.size()) {
      word.push_back(options[++i]);
    } else if (c == ' ' || c == '\t') {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word.push_back(c);
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  for (size_t i = 0; i < words.size(); ++i) {
    std::string_view setting;
    if (words[i] == "-c" && i + 1 < words.size()) setting = words[++i];
    else if (words[i].rfind("--", 0) == 0) setting = std::string_view(words[i]).substr(2);
    else if (words[i].rfind("-c", 0) == 0) setting = std::string_view(words[i]).substr(2);
    if (setting.size() < 10 || strncasecmp(setting.data(), "agentgate.", 10) != 0) continue;
    setting.remove_prefix(10);
    const size_t eq = setting.find('=');
    if (eq == std::string_view::npos) continue;
    std::string key;
    if (!prompt_key(setting.substr(0, eq), key)) continue;
    const std::string value(setting.substr(eq + 1));
    if (key == "prompt_id") out.prompt_id = value.substr(0, 256);
    else if (key == "prompt_text") out.prompt_text = value.substr(0, 4096);
    else out.traceparent = value.substr(0, 128);
  }
  return out;
}

// ---- factory ---------------------------------------------------------------------------

std::unique_ptr<session_handler> pg_session_factory::create() {
  return std::make_unique<session>(target_, probe_, shard_, catalog_);
}

std::string pg_session_factory::overload_response() const {
  std::string out;
  append_error(out, "FATAL", "53300", "sorry, too many clients already");
  return out;
}

}  // namespace agentgate::pg
