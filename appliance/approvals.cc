#include "appliance/approvals.h"

#include <curl/curl.h>
#include <openssl/rand.h>
#include <simdjson.h>

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <ctime>
#include <memory>

#include "appliance/admin_server.h"
#include "core/log.h"

namespace agentgate {
namespace {

using steady = std::chrono::steady_clock;

constexpr size_t id_random_bytes = 16;
constexpr size_t summary_command_bytes_max = 200;  // the webhook's one-line text
constexpr size_t decision_body_bytes_max = 8 * 1024;
constexpr size_t list_limit_max = 1000;

int64_t wall_now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string rfc3339(int64_t s) {
  const time_t t = static_cast<time_t>(s);
  tm parts{};
  gmtime_r(&t, &parts);
  char buf[32];
  const size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return std::string(buf, n);
}

result<std::string> random_id() {
  unsigned char raw[id_random_bytes];
  if (RAND_bytes(raw, sizeof raw) != 1) return status(errc::io, "no randomness for an approval id");
  static constexpr char hex[] = "0123456789abcdef";
  std::string id;
  id.reserve(2 * sizeof raw);
  for (unsigned char b : raw) {
    id.push_back(hex[b >> 4]);
    id.push_back(hex[b & 15]);
  }
  return id;
}

void append_strings(std::string& out, const std::vector<std::string>& items) {
  out += '[';
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    out += json_quote(items[i]);
  }
  out += ']';
}

// null for an empty optional string: clients test presence, not emptiness.
std::string quote_or_null(const std::string& s) { return s.empty() ? "null" : json_quote(s); }

// The approver's name as people read it: the email when the token has one.
const std::string& display_name(const identity::verified_identity& who) {
  return who.email.empty() ? who.sub : who.email;
}

bool in_any_group(const std::vector<std::string>& groups, const std::vector<std::string>& approvers) {
  for (const std::string& g : groups)
    if (std::find(approvers.begin(), approvers.end(), g) != approvers.end()) return true;
  return false;
}

// One line for Slack: control characters and runs of blanks become one
// space, backticks a quote (they would end the code span), cut at a UTF-8
// boundary.
std::string command_excerpt(std::string_view command) {
  std::string out;
  bool blank = false;
  for (char c : command) {
    const bool is_blank = static_cast<unsigned char>(c) < 0x20 || c == ' ' || c == 0x7f;
    if (is_blank) {
      if (!blank && !out.empty()) out += ' ';
      blank = true;
      continue;
    }
    blank = false;
    out += c == '`' ? '\'' : c;
    if (out.size() > summary_command_bytes_max) break;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (out.size() > summary_command_bytes_max) {
    size_t cut = summary_command_bytes_max;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xc0) == 0x80) --cut;
    out.resize(cut);
    out += "\xe2\x80\xa6";  // U+2026 HORIZONTAL ELLIPSIS
  }
  return out;
}

// Slack reads &, < and > as markup.
std::string slack_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else out += c;
  }
  return out;
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += sep;
    out += items[i];
  }
  return out;
}

std::string summary_text(const approval_record& r) {
  const approval_request& q = r.request;
  std::string who = q.subject;
  if (!q.email.empty() && q.email != q.subject) who += " (" + q.email + ")";
  std::string text = "agentgate: " + who + " wants to run `" + command_excerpt(q.command) + "` on " +
                     q.target + ", held by rule " + q.rule_id;
  if (!q.rule_message.empty()) text += " (" + q.rule_message + ")";
  text += ". Approvers: " + join(q.approvers, ", ") + "; expires in " + std::to_string(q.timeout_s) +
          " s at " + rfc3339(r.expires_at_s) + ". Approve: `agentgate approvals approve " + r.id +
          "`, deny: `agentgate approvals deny " + r.id + "`";
  return slack_escape(text);
}

status check_request(const approval_request& q, const approval_options& o) {
  if (q.timeout_s == 0 || q.timeout_s > o.timeout_s_max)
    return status(errc::invalid_argument, "approval timeout must be 1 to " +
                                              std::to_string(o.timeout_s_max) + " s, got " +
                                              std::to_string(q.timeout_s));
  if (q.approvers.empty()) return status(errc::invalid_argument, "the rule names no approver group");
  if (q.command.size() > o.command_bytes_max)
    return status(errc::limit, "command too long to hold for approval (" + std::to_string(q.command.size()) +
                                   " bytes, at most " + std::to_string(o.command_bytes_max) + ")");
  if (q.groups.size() > o.groups_max || q.approvers.size() > o.groups_max)
    return status(errc::limit, "too many groups to hold for approval");
  const std::string* fields[] = {&q.target,       &q.issuer,    &q.subject,   &q.email,
                                 &q.rule_id,      &q.rule_message, &q.prompt_id, &q.session_id,
                                 &q.client_address};
  for (const std::string* f : fields)
    if (f->size() > o.field_bytes_max) return status(errc::limit, "approval request field too long");
  for (const auto* list : {&q.groups, &q.approvers})
    for (const std::string& g : *list)
      if (g.size() > o.field_bytes_max) return status(errc::limit, "approval request group name too long");
  return status::ok();
}

// libcurl plumbing for the webhook.
struct curl_deleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct slist_deleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

size_t discard_body(char*, size_t size, size_t count, void*) { return size * count; }

int cancel_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const std::atomic<bool>*>(user)->load(std::memory_order_relaxed) ? 1 : 0;
}

bool curl_ready() {
  // curl_global_init is not thread-safe in every build: once, and early (the
  // constructor runs on the thread that builds the appliance).
  static const bool ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  return ok;
}

bool is_http_url(std::string_view url) {
  return url.starts_with("http://") || url.starts_with("https://");
}

}  // namespace

std::string_view to_string(approval_state state) {
  switch (state) {
    case approval_state::pending: return "pending";
    case approval_state::approved: return "approved";
    case approval_state::denied: return "denied";
    case approval_state::expired: return "expired";
    case approval_state::withdrawn: return "withdrawn";
  }
  return "unknown";
}

bool parse_approval_state(std::string_view text, approval_state* out) {
  for (approval_state s : {approval_state::pending, approval_state::approved, approval_state::denied,
                           approval_state::expired, approval_state::withdrawn}) {
    if (to_string(s) == text) {
      *out = s;
      return true;
    }
  }
  return false;
}

approval_service::approval_service(approval_options options) : options_(std::move(options)) {
  if (!options_.webhook_url.empty()) (void)curl_ready();
}

approval_service::~approval_service() { stop(); }

status approval_service::start() {
  if (!options_.webhook_url.empty() && !is_http_url(options_.webhook_url))
    return status(errc::invalid_argument, "approvals.webhook_url: expected an http:// or https:// URL");
  if (!options_.webhook_url.empty() && !curl_ready())
    return status(errc::io, "approvals.webhook_url: libcurl failed to initialize");
  std::lock_guard lock(mu_);
  if (running_) return status::ok();
  running_ = true;
  stopping_ = false;
  cancel_webhook_.store(false);
  expiry_thread_ = std::thread([this] { expiry_loop(); });
  if (!options_.webhook_url.empty()) webhook_thread_ = std::thread([this] { webhook_loop(); });
  return status::ok();
}

void approval_service::stop() {
  {
    std::lock_guard lock(mu_);
    if (!running_ || stopping_) return;
    stopping_ = true;
    cancel_webhook_.store(true);
  }
  expiry_cv_.notify_all();
  webhook_cv_.notify_all();
  if (expiry_thread_.joinable()) expiry_thread_.join();
  if (webhook_thread_.joinable()) webhook_thread_.join();
  std::lock_guard lock(mu_);
  if (!webhooks_.empty()) {
    AG_WARN("approvals: %zu webhook announcements dropped at stop", webhooks_.size());
    stats_.webhook_dropped += webhooks_.size();
    webhooks_.clear();
  }
  running_ = false;
  stopping_ = false;
}

namespace {
// Whose pending requests count together: issuer and subject, which no
// issuer or subject string can forge (the separator is not allowed in them
// unescaped: a NUL).
std::string identity_key(const approval_request& q) {
  std::string key = q.issuer;
  key.push_back('\0');
  key += q.subject;
  return key;
}
}  // namespace

result<std::string> approval_service::submit(approval_request request, verdict_fn on_verdict) {
  if (status s = check_request(request, options_); !s) {
    std::lock_guard lock(mu_);
    ++stats_.refused;
    return s;
  }
  result<std::string> id = random_id();
  if (!id) return id;

  entry e;
  e.record.id = *id;
  e.record.created_at_s = wall_now_s();
  e.record.expires_at_s = e.record.created_at_s + request.timeout_s;
  e.deadline = steady::now() + std::chrono::seconds(request.timeout_s);
  e.record.request = std::move(request);
  e.on_verdict = std::move(on_verdict);
  std::string webhook_body;
  if (!options_.webhook_url.empty()) webhook_body = approval_webhook_json(e.record);

  bool earliest = false;
  {
    std::lock_guard lock(mu_);
    if (deadlines_.size() >= options_.pending_max) {
      ++stats_.refused;
      return status(errc::limit, "too many approval requests pending (" +
                                     std::to_string(options_.pending_max) + ")");
    }
    const std::string who = identity_key(e.record.request);
    size_t& mine = pending_by_identity_[who];
    if (mine >= options_.pending_per_identity_max) {
      if (mine == 0) pending_by_identity_.erase(who);
      ++stats_.refused;
      return status(errc::limit, "too many approval requests pending for this identity (" +
                                     std::to_string(options_.pending_per_identity_max) + ")");
    }
    ++mine;
    e.seq = next_seq_++;
    earliest = deadlines_.empty() || e.deadline < deadlines_.begin()->first;
    deadlines_.emplace(e.deadline, *id);
    const approval_request& q = e.record.request;
    AG_INFO("approval %s requested: %s on target %s, rule %s, %u s", id->c_str(), q.subject.c_str(),
            q.target.c_str(), q.rule_id.c_str(), q.timeout_s);
    entries_.emplace(*id, std::move(e));
    ++stats_.submitted;
    ++stats_.pending;
    if (!options_.webhook_url.empty()) {
      if (webhooks_.size() >= options_.webhook_queue_max) {
        ++stats_.webhook_dropped;
        AG_WARN("approval %s: webhook queue full (%zu), announcement dropped", id->c_str(),
                options_.webhook_queue_max);
      } else {
        webhooks_.push_back({*id, std::move(webhook_body), 0, steady::now()});
      }
    }
  }
  if (earliest) expiry_cv_.notify_all();
  if (!options_.webhook_url.empty()) webhook_cv_.notify_all();
  return id;
}

verdict_fn approval_service::finish_locked(entry& e, approval_state state, int64_t now_s) {
  deadlines_.erase({e.deadline, e.record.id});
  if (auto it = pending_by_identity_.find(identity_key(e.record.request)); it != pending_by_identity_.end()) {
    assert(it->second > 0);
    if (--it->second == 0) pending_by_identity_.erase(it);
  }
  e.record.state = state;
  e.record.decided_at_s = now_s;
  --stats_.pending;
  switch (state) {
    case approval_state::approved: ++stats_.approved; break;
    case approval_state::denied: ++stats_.denied; break;
    case approval_state::expired: ++stats_.expired; break;
    case approval_state::withdrawn: ++stats_.withdrawn; break;
    case approval_state::pending: break;
  }
  verdict_fn fn = std::move(e.on_verdict);
  e.on_verdict = nullptr;
  history_.push_back(e.record.id);
  // e may be the entry evicted here when history_max is 0: nothing touches
  // it after this point.
  while (history_.size() > options_.history_max) {
    entries_.erase(history_.front());
    history_.pop_front();
  }
  return fn;
}

void approval_service::expire_locked(entry& e, int64_t now_s, std::vector<delivery>& out) {
  approval_verdict v;
  v.approved = false;
  v.reason = "timed out after " + std::to_string(e.record.request.timeout_s) + " s";
  e.record.verdict = v.reason;
  AG_INFO("approval %s expired after %u s", e.record.id.c_str(), e.record.request.timeout_s);
  verdict_fn fn = finish_locked(e, approval_state::expired, now_s);
  if (fn) out.push_back({std::move(fn), std::move(v)});
}

void approval_service::withdraw(const std::string& id) {
  verdict_fn dropped;  // destroyed after the lock is released: it may own anything
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.record.state != approval_state::pending) return;
  it->second.record.verdict = "withdrawn";
  AG_INFO("approval %s withdrawn", id.c_str());
  dropped = finish_locked(it->second, approval_state::withdrawn, wall_now_s());
}

result<approval_record> approval_service::decide(const std::string& id, bool approve,
                                                 const identity::verified_identity& approver,
                                                 std::string reason) {
  if (reason.size() > options_.reason_bytes_max)
    return status(approval_too_large,
                  "reason longer than " + std::to_string(options_.reason_bytes_max) + " bytes");
  std::vector<delivery> deliveries;
  result<approval_record> out = status(approval_not_found, "no such approval request");
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return out;
    entry& e = it->second;
    const approval_request& q = e.record.request;
    if (e.record.state != approval_state::pending) {
      return status(approval_not_pending,
                    "approval request is already " + std::string(to_string(e.record.state)));
    }
    if (steady::now() >= e.deadline) {
      // The expiry thread has not come round yet: the deadline decides, and
      // the requester hears "timed out" exactly once, from here.
      expire_locked(e, wall_now_s(), deliveries);
      out = status(approval_not_pending, "approval request is already expired");
    } else if (approver.issuer == q.issuer && approver.sub == q.subject) {
      return status(approval_forbidden, "requesters cannot approve their own commands");
    } else if (!in_any_group(approver.groups, q.approvers)) {
      return status(approval_forbidden, "not an approver for rule " + q.rule_id);
    } else {
      approval_verdict v;
      v.approved = approve;
      v.approver = display_name(approver);
      v.reason = std::string(approve ? "approved by " : "denied by ") + v.approver;
      if (!reason.empty()) v.reason += ": " + reason;
      e.record.approver = v.approver;
      e.record.approver_issuer = approver.issuer;
      e.record.approver_subject = approver.sub;
      e.record.approver_email = approver.email;
      e.record.reason = std::move(reason);
      e.record.verdict = v.reason;
      AG_INFO("approval %s %s by %s", id.c_str(), approve ? "approved" : "denied", v.approver.c_str());
      const approval_state state = approve ? approval_state::approved : approval_state::denied;
      const int64_t now_s = wall_now_s();
      approval_record record = e.record;  // copied first: finish_locked may evict e
      record.state = state;
      record.decided_at_s = now_s;
      verdict_fn fn = finish_locked(e, state, now_s);
      if (fn) deliveries.push_back({std::move(fn), std::move(v)});
      out = std::move(record);
    }
  }
  for (delivery& d : deliveries) d.fn(d.verdict);
  return out;
}

std::vector<approval_record> approval_service::list(bool include_decided) const {
  std::vector<std::pair<uint64_t, const entry*>> picked;
  std::vector<approval_record> out;
  std::lock_guard lock(mu_);
  picked.reserve(entries_.size());
  for (const auto& [id, e] : entries_)
    if (include_decided || e.record.state == approval_state::pending) picked.emplace_back(e.seq, &e);
  std::sort(picked.begin(), picked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  out.reserve(picked.size());
  for (const auto& p : picked) out.push_back(p.second->record);
  return out;
}

std::optional<approval_record> approval_service::get(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  return it->second.record;
}

approval_stats approval_service::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void approval_service::expiry_loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    const steady::time_point now = steady::now();
    std::vector<delivery> due;
    const int64_t now_s = wall_now_s();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      auto it = entries_.find(deadlines_.begin()->second);
      if (it == entries_.end()) {  // cannot happen: pending entries are never evicted
        deadlines_.erase(deadlines_.begin());
        continue;
      }
      expire_locked(it->second, now_s, due);
    }
    if (!due.empty()) {
      lock.unlock();
      for (delivery& d : due) d.fn(d.verdict);
      due.clear();  // the callbacks are destroyed outside the lock too
      lock.lock();
      continue;
    }
    if (deadlines_.empty()) {
      expiry_cv_.wait(lock);
    } else {
      // A copy: wait_until keeps reading its deadline while the lock is
      // released, and another thread may erase the set's node meanwhile.
      const steady::time_point next = deadlines_.begin()->first;
      expiry_cv_.wait_until(lock, next);
    }
  }
}

void approval_service::webhook_loop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (webhooks_.empty()) {
      webhook_cv_.wait(lock);
      continue;
    }
    // Retries wait out their back-off; new announcements must not queue
    // behind them, so take whichever is due first.
    auto next = std::min_element(webhooks_.begin(), webhooks_.end(),
                                 [](const webhook_job& a, const webhook_job& b) { return a.next_at < b.next_at; });
    if (next->next_at > steady::now()) {
      const steady::time_point at = next->next_at;  // the queue may move while we wait
      webhook_cv_.wait_until(lock, at);
      continue;
    }
    webhook_job job = std::move(*next);
    webhooks_.erase(next);
    auto it = entries_.find(job.id);
    if (it == entries_.end() || it->second.record.state != approval_state::pending) {
      ++stats_.webhook_skipped;  // decided already: announcing it would only mislead
      continue;
    }
    lock.unlock();
    status sent = post_webhook(job.body);
    lock.lock();
    ++job.attempts;
    if (sent) {
      ++stats_.webhook_sent;
      continue;
    }
    if (stopping_) {
      webhooks_.push_back(std::move(job));  // counted as dropped by stop()
      break;
    }
    if (job.attempts > options_.webhook_retries) {
      ++stats_.webhook_failed;
      AG_WARN("approval %s: webhook failed (%s) after %u attempts; giving up", job.id.c_str(),
              sent.message().c_str(), job.attempts);
      continue;
    }
    uint64_t backoff_ms = options_.webhook_backoff_initial_ms;
    for (uint32_t i = 1; i < job.attempts && backoff_ms < options_.webhook_backoff_max_ms; ++i) backoff_ms *= 2;
    backoff_ms = std::min<uint64_t>(backoff_ms, options_.webhook_backoff_max_ms);
    ++stats_.webhook_retried;
    AG_WARN("approval %s: webhook failed (%s), attempt %u of %u; retry in %llu ms", job.id.c_str(),
            sent.message().c_str(), job.attempts, options_.webhook_retries + 1,
            static_cast<unsigned long long>(backoff_ms));
    job.next_at = steady::now() + std::chrono::milliseconds(backoff_ms);
    webhooks_.push_back(std::move(job));
  }
}

status approval_service::post_webhook(const std::string& body) {
  std::unique_ptr<CURL, curl_deleter> curl(curl_easy_init());
  if (!curl) return status(errc::io, "libcurl failed to initialize");
  curl_slist* raw_headers = curl_slist_append(nullptr, "Content-Type: application/json");
  if (raw_headers != nullptr) raw_headers = curl_slist_append(raw_headers, "Expect:");  // no 100-continue round trip
  std::unique_ptr<curl_slist, slist_deleter> headers(raw_headers);
  if (!headers) return status(errc::io, "libcurl failed to initialize");
  CURL* c = curl.get();
  const long timeout_ms = static_cast<long>(options_.webhook_timeout_ms);
  bool ok = curl_easy_setopt(c, CURLOPT_URL, options_.webhook_url.c_str()) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
            // A redirected POST turns into a GET or repeats the body elsewhere: neither is wanted.
            curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
            // Signals are the gateway's; curl's timeouts must not use them.
            curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_POST, 1L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data()) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size())) ==
                CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get()) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_USERAGENT, "agentgate") == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, cancel_progress) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_XFERINFODATA, &cancel_webhook_) == CURLE_OK;
  if (ok && !options_.webhook_ca_file.empty())
    ok = curl_easy_setopt(c, CURLOPT_CAINFO, options_.webhook_ca_file.c_str()) == CURLE_OK;
  if (!ok) return status(errc::io, "libcurl refused an option");
  // curl_easy_strerror, not the error buffer: the buffer can quote the URL,
  // and the URL is a secret.
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) return status(errc::io, curl_easy_strerror(rc));
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (code < 200 || code > 299) return status(errc::io, "HTTP " + std::to_string(code));
  return status::ok();
}

int approval_http_status(const status& error) {
  switch (error.code()) {
    case errc::ok: return 200;
    case approval_not_found: return 404;
    case approval_not_pending: return 409;
    case approval_forbidden: return 403;
    case approval_too_large: return 400;
    default: return 500;
  }
}

std::string approval_json(const approval_record& r) {
  const approval_request& q = r.request;
  std::string out = "{\"id\": " + json_quote(r.id);
  out += ", \"state\": " + json_quote(to_string(r.state));
  out += ", \"requested_at\": " + json_quote(rfc3339(r.created_at_s));
  out += ", \"expires_at\": " + json_quote(rfc3339(r.expires_at_s));
  out += ", \"timeout_s\": " + std::to_string(q.timeout_s);
  out += ", \"requester\": {\"subject\": " + json_quote(q.subject);
  out += ", \"issuer\": " + json_quote(q.issuer);
  out += ", \"email\": " + quote_or_null(q.email);
  out += ", \"groups\": ";
  append_strings(out, q.groups);
  out += "}, \"target\": " + json_quote(q.target);
  out += ", \"session\": " + quote_or_null(q.session_id);
  out += ", \"client\": " + quote_or_null(q.client_address);
  out += ", \"command\": " + json_quote(q.command);
  out += ", \"rule\": " + json_quote(q.rule_id);
  out += ", \"rule_message\": " + quote_or_null(q.rule_message);
  out += ", \"approvers\": ";
  append_strings(out, q.approvers);
  out += ", \"prompt_id\": " + quote_or_null(q.prompt_id);
  if (r.state == approval_state::pending) {
    out += ", \"decided_at\": null";
  } else {
    out += ", \"decided_at\": " + json_quote(rfc3339(r.decided_at_s));
  }
  if (r.approver_subject.empty()) {
    out += ", \"decided_by\": null";
  } else {
    out += ", \"decided_by\": {\"subject\": " + json_quote(r.approver_subject);
    out += ", \"issuer\": " + json_quote(r.approver_issuer);
    out += ", \"email\": " + quote_or_null(r.approver_email) + "}";
  }
  out += ", \"reason\": " + quote_or_null(r.reason);
  out += ", \"verdict\": " + quote_or_null(r.verdict);
  out += "}";
  return out;
}

std::string approval_webhook_json(const approval_record& r) {
  const approval_request& q = r.request;
  std::string out = "{\"text\": " + json_quote(summary_text(r));
  out += ", \"event\": \"approval_requested\"";
  out += ", \"id\": " + json_quote(r.id);
  out += ", \"target\": " + json_quote(q.target);
  out += ", \"issuer\": " + json_quote(q.issuer);
  out += ", \"subject\": " + json_quote(q.subject);
  out += ", \"email\": " + quote_or_null(q.email);
  out += ", \"groups\": ";
  append_strings(out, q.groups);
  out += ", \"command\": " + json_quote(q.command);
  out += ", \"rule_id\": " + json_quote(q.rule_id);
  out += ", \"rule_message\": " + quote_or_null(q.rule_message);
  out += ", \"approvers\": ";
  append_strings(out, q.approvers);
  out += ", \"timeout_s\": " + std::to_string(q.timeout_s);
  out += ", \"created_at\": " + json_quote(rfc3339(r.created_at_s));
  out += ", \"expires_at\": " + json_quote(rfc3339(r.expires_at_s));
  out += ", \"prompt_id\": " + quote_or_null(q.prompt_id);
  out += ", \"session_id\": " + quote_or_null(q.session_id);
  out += ", \"client_address\": " + quote_or_null(q.client_address);
  out += "}";
  return out;
}

void append_approval_metrics(std::string& out, const approval_stats& s) {
  auto line = [&out](const char* series, uint64_t value) {
    out += series;
    out += ' ';
    out += std::to_string(value);
    out += '\n';
  };
  out += "# HELP agentgate_approvals_pending Approval requests waiting for a decision.\n"
         "# TYPE agentgate_approvals_pending gauge\n";
  line("agentgate_approvals_pending", s.pending);
  out += "# HELP agentgate_approvals_total Approval requests, by outcome.\n"
         "# TYPE agentgate_approvals_total counter\n";
  line("agentgate_approvals_total{outcome=\"submitted\"}", s.submitted);
  line("agentgate_approvals_total{outcome=\"refused\"}", s.refused);
  line("agentgate_approvals_total{outcome=\"approved\"}", s.approved);
  line("agentgate_approvals_total{outcome=\"denied\"}", s.denied);
  line("agentgate_approvals_total{outcome=\"expired\"}", s.expired);
  line("agentgate_approvals_total{outcome=\"withdrawn\"}", s.withdrawn);
  out += "# HELP agentgate_approval_webhooks_total Webhook announcements, by result.\n"
         "# TYPE agentgate_approval_webhooks_total counter\n";
  line("agentgate_approval_webhooks_total{result=\"sent\"}", s.webhook_sent);
  line("agentgate_approval_webhooks_total{result=\"retried\"}", s.webhook_retried);
  line("agentgate_approval_webhooks_total{result=\"failed\"}", s.webhook_failed);
  line("agentgate_approval_webhooks_total{result=\"dropped\"}", s.webhook_dropped);
  line("agentgate_approval_webhooks_total{result=\"skipped\"}", s.webhook_skipped);
}

// ---------------------------------------------------------------------------
// Routes

namespace {

// The optional decision body: {} or {"reason": "..."}; anything else is 400.
result<std::string> parse_decision_body(std::string_view body) {
  if (body.size() > decision_body_bytes_max)
    return status(errc::limit, "decision body exceeds " + std::to_string(decision_body_bytes_max) + " bytes");
  std::string_view rest = body;
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t' || rest.front() == '\r' ||
                           rest.front() == '\n'))
    rest.remove_prefix(1);
  if (rest.empty()) return std::string();
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::object members;
  if (parser.parse(body.data(), body.size()).get(root) != simdjson::SUCCESS)
    return status(errc::invalid_argument, "body is not valid JSON");
  if (root.get_object().get(members) != simdjson::SUCCESS)
    return status(errc::invalid_argument, "body must be a JSON object");
  std::string reason;
  bool seen = false;
  for (auto member : members) {
    if (member.key != "reason")
      return status(errc::invalid_argument, "unknown member " + json_quote(member.key));
    if (seen) return status(errc::invalid_argument, "reason given twice");
    seen = true;
    std::string_view text;
    if (member.value.get_string().get(text) != simdjson::SUCCESS)
      return status(errc::invalid_argument, "reason must be a string");
    reason.assign(text);
  }
  return reason;
}

http_response list_approvals(const http_request& req, approval_service& service) {
  const std::string* state_param = req.query_param("state");
  const std::string* all_param = req.query_param("all");
  const std::string* limit_param = req.query_param("limit");
  bool all = false;
  std::optional<approval_state> only = approval_state::pending;
  if (all_param != nullptr) {
    if (*all_param == "1" || *all_param == "true") all = true;
    else if (*all_param != "0" && *all_param != "false")
      return http_response::error(400, "all: expected 1 or 0");
    if (state_param != nullptr) return http_response::error(400, "give state or all, not both");
    if (all) only.reset();
  }
  if (state_param != nullptr) {
    approval_state s;
    if (*state_param == "all") {
      only.reset();
    } else if (parse_approval_state(*state_param, &s)) {
      only = s;
    } else {
      return http_response::error(
          400, "state: expected one of pending, approved, denied, expired, withdrawn, all");
    }
  }
  size_t limit = list_limit_max;
  if (limit_param != nullptr) {
    const std::string& v = *limit_param;
    size_t n = 0;
    bool ok = !v.empty() && v.size() <= 4;
    for (char c : v) {
      if (c < '0' || c > '9') ok = false;
      else n = n * 10 + static_cast<size_t>(c - '0');
    }
    if (!ok || n < 1 || n > list_limit_max) return http_response::error(400, "limit: expected an integer from 1 to 1000");
    limit = n;
  }
  const bool include_decided = !only.has_value() || *only != approval_state::pending;
  std::string body = "{\"approvals\": [";
  size_t n = 0;
  for (const approval_record& r : service.list(include_decided)) {
    if (only.has_value() && r.state != *only) continue;
    if (n == limit) break;
    if (n++ > 0) body += ",\n  ";
    else body += "\n  ";
    body += approval_json(r);
  }
  body += n > 0 ? "\n]}\n" : "]}\n";
  return http_response::json(200, std::move(body));
}

http_response decide_route(const http_request& req, approval_service& service,
                           const approver_verifier& verify, bool approve) {
  result<identity::verified_identity> who = verify(req.bearer_token);
  if (!who) return http_response::unauthorized(who.error().message());
  result<std::string> reason = parse_decision_body(req.body);
  if (!reason) return http_response::error(reason.error().code() == errc::limit ? 413 : 400,
                                           reason.error().message());
  const std::string* id = req.param("id");
  if (id == nullptr) return http_response::error(404, "no such approval request");
  result<approval_record> decided = service.decide(*id, approve, *who, std::move(*reason));
  if (!decided) return http_response::error(approval_http_status(decided.error()), decided.error().message());
  return http_response::json(200, approval_json(*decided) + "\n");
}

}  // namespace

status register_approval_routes(admin_server& server, approval_service& service,
                                approver_verifier verify_approver) {
  approval_service* svc = &service;
  if (status s = server.route("GET", "/v1/approvals",
                              [svc](const http_request& req) { return list_approvals(req, *svc); });
      !s)
    return s;
  if (status s = server.route("GET", "/v1/approvals/{id}",
                              [svc](const http_request& req) {
                                const std::string* id = req.param("id");
                                std::optional<approval_record> r;
                                if (id != nullptr) r = svc->get(*id);
                                if (!r) return http_response::error(404, "no such approval request");
                                return http_response::json(200, approval_json(*r) + "\n");
                              });
      !s)
    return s;
  auto verify = std::make_shared<approver_verifier>(std::move(verify_approver));
  for (bool approve : {true, false}) {
    const char* pattern = approve ? "/v1/approvals/{id}/approve" : "/v1/approvals/{id}/deny";
    if (status s = server.route("POST", pattern, route_auth::custom,
                                [svc, verify, approve](const http_request& req) {
                                  return decide_route(req, *svc, *verify, approve);
                                });
        !s)
      return s;
  }
  return status::ok();
}

}  // namespace agentgate
