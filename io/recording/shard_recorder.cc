#include "io/recording/shard_recorder.h"

#include <chrono>

#include "core/clock.h"
#include "io/recording/format.h"

namespace agentgate::recording {
namespace {

// Keeps the scratch buffer from holding on to the largest event ever seen.
constexpr size_t scratch_keep_bytes = 256 * 1024;

}  // namespace

agentgate::result<std::unique_ptr<shard_recorder>> shard_recorder::open(const shard_recorder_options& o, int64_t now_ms,
                                                             std::unique_ptr<file_ops> ops, damage_fn report) {
  if (o.dir.empty()) return status(errc::invalid_argument, "recording.dir is empty");
  if (!ops) ops = make_posix_file_ops();
  if (status s = ops->make_dir(o.dir); !s) return s;
  writer_options w;
  w.dir = o.dir + "/" + shard_dir_name(o.shard);
  w.shard = o.shard;
  w.segment_bytes = o.segment_bytes;
  w.fsync_interval_ms = o.fsync_interval_ms;
  w.fsync_bytes = o.fsync_bytes;
  w.fsync_always = o.fsync_always;
  w.retention = o.retention;
  w.recover_interval_ms = o.recover_interval_ms;
  agentgate::result<std::unique_ptr<segment_writer>> writer = segment_writer::open(w, now_ms, std::move(ops), std::move(report));
  if (!writer) return writer.error();
  std::unique_ptr<shard_recorder> r(new shard_recorder(std::move(*writer), o));
  if (o.writer_thread) r->thread_ = std::thread([p = r.get()] { p->run(); });
  return r;
}

shard_recorder::shard_recorder(std::unique_ptr<segment_writer> writer, const shard_recorder_options& options)
    : writer_(std::move(writer)),
      result_bytes_max_(options.result_bytes_max),
      failure_(options.failure),
      fsync_always_(options.fsync_always),
      verdict_wait_ms_(options.verdict_wait_ms) {
  if (options.writer_thread) {
    requests_ = std::make_unique<spsc_queue<request>>(queue_entries_max + 2);  // + flush and stop
    notices_ = std::make_unique<spsc_queue<notice>>(queue_entries_max + 2);
  }
  published_probe_ = writer_->probe();
}

shard_recorder::~shard_recorder() {
  if (!thread_.joinable()) return;
  request stop;
  stop.what = request::kind::stop;
  // The queue holds queue_entries_max events plus room for this.
  while (!requests_->push(std::move(stop))) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  wake_writer();
  thread_.join();
  // writer_'s destructor writes and syncs what is left, on this thread.
}

// --- writer thread --------------------------------------------------------------

void shard_recorder::run() {
  for (;;) {
    bool stop = false;
    while (std::optional<request> r = requests_->pop()) {
      switch (r->what) {
        case request::kind::event: {
          queued_bytes_.fetch_sub(r->payload.size(), std::memory_order_relaxed);
          queued_.fetch_sub(1, std::memory_order_relaxed);
          const bool ok = writer_->append(r->payload, r->durable);
          // A caller told "not recorded" finds the recorder unavailable.
          if (writer_->available() != available_.load(std::memory_order_relaxed)) publish();
          if (r->ticket != 0) {
            // notices_ has a slot for every ticket the shard queued.
            (void)notices_->push(notice{r->ticket, ok});
            { std::lock_guard<std::mutex> lock(notice_mu_); }
            notice_cv_.notify_all();
          }
          break;
        }
        case request::kind::flush:
          flush_status_ = writer_->flush();
          publish();
          {
            std::lock_guard<std::mutex> lock(notice_mu_);
            flushed_.fetch_add(1, std::memory_order_release);
          }
          notice_cv_.notify_all();
          break;
        case request::kind::stop:
          stop = true;
          break;
      }
      processed_.fetch_add(1, std::memory_order_release);
    }
    writer_->poll(monotonic_ms());
    publish();
    if (stop) return;
    std::unique_lock<std::mutex> lock(wake_mu_);
    // A wake-up that races this wait is at most poll_interval_ms late.
    wake_cv_.wait_for(lock, std::chrono::milliseconds(poll_interval_ms),
                      [&] { return wake_.exchange(false, std::memory_order_acq_rel); });
  }
}

void shard_recorder::publish() {
  available_.store(writer_->available(), std::memory_order_release);
  std::lock_guard<std::mutex> lock(published_mu_);
  published_probe_ = writer_->probe();
  published_reason_.assign(writer_->failure_reason());
}

// --- shard thread ---------------------------------------------------------------

bool shard_recorder::stalled() const {
  return stalled_at_ != UINT64_MAX && processed_.load(std::memory_order_acquire) == stalled_at_;
}

bool shard_recorder::available() const {
  if (!thread_.joinable()) return writer_->available();
  return available_.load(std::memory_order_acquire) && !stalled();
}

std::string_view shard_recorder::failure_reason() const {
  if (!thread_.joinable()) return writer_->failure_reason();
  if (stalled()) {
    reason_ = "recording unavailable: the disk has not completed a write or sync for " +
              std::to_string(verdict_wait_ms_) + " ms";
    return reason_;
  }
  std::lock_guard<std::mutex> lock(published_mu_);
  reason_ = published_reason_;
  if (reason_.empty() && !available_.load(std::memory_order_acquire)) reason_ = "recording unavailable";
  return reason_;
}

recording_probe shard_recorder::probe() const {
  if (!thread_.joinable()) return writer_->probe();
  recording_probe p;
  {
    std::lock_guard<std::mutex> lock(published_mu_);
    p = published_probe_;
  }
  p.events_unrecorded += unqueued_;
  return p;
}

void shard_recorder::wake_writer() {
  // Once per sleep of the writer: the lock orders this with its check of
  // wake_, so the wake-up cannot slip between that check and its wait.
  if (wake_.exchange(true, std::memory_order_acq_rel)) return;
  { std::lock_guard<std::mutex> lock(wake_mu_); }
  wake_cv_.notify_one();
}

bool shard_recorder::enqueue(std::string&& payload, bool durable, uint64_t ticket) {
  const size_t bytes = payload.size();
  auto full = [&] {
    return queued_.load(std::memory_order_relaxed) >= queue_entries_max ||
           queued_bytes_.load(std::memory_order_relaxed) + bytes > queue_bytes_max;
  };
  if (full()) {
    // A burst the writer has not caught up with yet: wait for room a little
    // (bounded). A disk that stays stuck makes this record not appended:
    // refused, counted, and the caller fails closed.
    wake_writer();
    const int64_t until = monotonic_ms() + queue_wait_ms_max;
    while (full() && monotonic_ms() < until) std::this_thread::sleep_for(std::chrono::microseconds(50));
    if (full()) {
      ++unqueued_;
      return false;
    }
  }
  request r;
  r.payload = std::move(payload);
  r.durable = durable;
  r.ticket = ticket;
  queued_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  queued_.fetch_add(1, std::memory_order_relaxed);
  if (!requests_->push(std::move(r))) {  // cannot happen: bounded above
    queued_bytes_.fetch_sub(bytes, std::memory_order_relaxed);
    queued_.fetch_sub(1, std::memory_order_relaxed);
    ++unqueued_;
    return false;
  }
  // The writer comes by every poll_interval_ms anyway; it is woken for a
  // caller about to wait for its verdict and when the queue fills up.
  if (ticket != 0 || queued_.load(std::memory_order_relaxed) >= queue_entries_max / 16 ||
      queued_bytes_.load(std::memory_order_relaxed) >= queue_bytes_max / 16)
    wake_writer();
  return true;
}

// The verdict for `ticket`, waiting for the writer thread (fsync_always).
bool shard_recorder::wait_for(uint64_t ticket) {
  // Checked under the lock the writer takes between pushing a verdict and
  // notifying: a verdict cannot slip between the check and the wait.
  const int64_t until = monotonic_ms() + verdict_wait_ms_;
  std::unique_lock<std::mutex> lock(notice_mu_);
  for (;;) {
    while (std::optional<notice> n = notices_->pop()) {
      if (n->ticket == ticket) return n->recorded;
      early_.push_back(*n);
    }
    if (monotonic_ms() >= until) {
      // The disk hangs: this command is refused, and so is every one after
      // it until the writer moves again (its late verdict is dropped).
      stalled_at_ = processed_.load(std::memory_order_acquire);
      return false;
    }
    notice_cv_.wait_for(lock, std::chrono::milliseconds(poll_interval_ms));
  }
}

template <typename E>
bool shard_recorder::record(const E& e, bool durable) {
  scratch_.clear();
  encode(e, scratch_);
  bool ok;
  if (!thread_.joinable()) {
    ok = writer_->append(scratch_, durable);
  } else if (!available()) {
    ++unqueued_;
    ok = false;
  } else if (fsync_always_ && durable) {
    const uint64_t ticket = next_ticket_++;
    ok = enqueue(std::string(scratch_), true, ticket) && wait_for(ticket);
  } else {
    ok = enqueue(std::string(scratch_), durable, 0);
  }
  if (scratch_.capacity() > scratch_keep_bytes) std::string().swap(scratch_);
  return ok;
}

uint64_t shard_recorder::submit_command(const rec_command& e, record_waiter* waiter) {
  scratch_.clear();
  encode(e, scratch_);
  const uint64_t ticket = next_ticket_++;
  if (!thread_.joinable()) {
    early_.push_back(notice{ticket, writer_->append(scratch_, true)});
  } else if (!available()) {
    ++unqueued_;
    return 0;
  } else if (!enqueue(std::string(scratch_), true, ticket)) {
    return 0;  // the queue is full (counted)
  }
  if (scratch_.capacity() > scratch_keep_bytes) std::string().swap(scratch_);
  waiters_[ticket] = waiter;
  return ticket;
}

void shard_recorder::forget(uint64_t ticket) { waiters_.erase(ticket); }

void shard_recorder::deliver(const notice& n) {
  const auto it = waiters_.find(n.ticket);
  if (it == waiters_.end()) return;
  record_waiter* w = it->second;
  waiters_.erase(it);
  if (w != nullptr) w->on_recorded(n.ticket, n.recorded);
}

void shard_recorder::poll(int64_t now_ms) {
  if (!thread_.joinable()) writer_->poll(now_ms);
  while (!early_.empty()) {
    const notice n = early_.front();
    early_.pop_front();
    deliver(n);
  }
  if (!thread_.joinable()) return;
  while (std::optional<notice> n = notices_->pop()) deliver(*n);
}

status shard_recorder::flush() {
  if (!thread_.joinable()) return writer_->flush();
  request r;
  r.what = request::kind::flush;
  while (!requests_->push(std::move(r))) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const uint64_t want = ++flush_requests_;
  wake_writer();
  std::unique_lock<std::mutex> lock(notice_mu_);
  notice_cv_.wait(lock, [&] { return flushed_.load(std::memory_order_acquire) >= want; });
  return flush_status_;
}

bool shard_recorder::session_start(const rec_session_start& e) { return record(e, false); }
bool shard_recorder::command(const rec_command& e) { return record(e, true); }
bool shard_recorder::decision(const rec_decision& e) { return record(e, true); }
bool shard_recorder::session_end(const rec_session_end& e) { return record(e, true); }

bool shard_recorder::result(const rec_result& e) {
  if (e.rows.size() <= result_bytes_max_) return record(e, true);
  // The caller should have bounded the rows; keep whole rows within the bound.
  rec_result cut = e;
  const auto [bytes, rows] = whole_rows_prefix(e.rows, result_bytes_max_);
  cut.rows = e.rows.substr(0, bytes);
  cut.rows_truncated = true;
  if (cut.rows_total < rows) cut.rows_total = rows;
  return record(cut, true);
}

}  // namespace agentgate::recording
