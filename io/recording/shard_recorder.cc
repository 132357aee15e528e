#include "io/recording/shard_recorder.h"

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
  return std::unique_ptr<shard_recorder>(new shard_recorder(std::move(*writer), o));
}

shard_recorder::shard_recorder(std::unique_ptr<segment_writer> writer, const shard_recorder_options& options)
    : writer_(std::move(writer)), result_bytes_max_(options.result_bytes_max), failure_(options.failure) {}

template <typename E>
bool shard_recorder::record(const E& e, bool durable) {
  scratch_.clear();
  encode(e, scratch_);
  const bool ok = writer_->append(scratch_, durable);
  if (scratch_.capacity() > scratch_keep_bytes) std::string().swap(scratch_);
  return ok;
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
