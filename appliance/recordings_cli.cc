#include "appliance/recordings_cli.h"

#include <sys/stat.h>

#include <cinttypes>
#include <ctime>

#include "core/text.h"
#include "io/recording/replay.h"

namespace agentgate {
namespace {

namespace rec = agentgate::recording;

constexpr int exit_ok = 0;
constexpr int exit_damaged = 1;
constexpr int exit_usage = 2;

bool is_dir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string when(int64_t unix_us) {
  const time_t secs = static_cast<time_t>(unix_us / 1000000);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &t);
  return buf;
}

}  // namespace

int run_recordings_verify(const recordings_cli_options& o) {
  if (!is_dir(o.dir)) {
    fprintf(o.err, "agentgate recordings verify: %s is not a directory\n", o.dir.c_str());
    return exit_usage;
  }
  result<std::vector<rec::segment_status>> segments = rec::verify_dir(o.dir);
  if (!segments) {
    fprintf(o.err, "agentgate recordings verify: %s\n", segments.error().message().c_str());
    return exit_usage;
  }
  uint64_t records = 0, bytes = 0, torn = 0, corrupt = 0, bad_segments = 0;
  for (const rec::segment_status& s : *segments) {
    records += s.records;
    bytes += s.bytes;
    torn += s.torn_bytes;
    corrupt += s.corrupt_bytes;
    const bool bad = s.corrupt_bytes > 0 || !s.problem.empty();
    bad_segments += bad ? 1 : 0;
    const char* verdict = bad ? "DAMAGED" : s.torn_bytes > 0 ? "torn tail" : "ok";
    fprintf(o.out, "%s  %s  %" PRIu64 " records  %" PRIu64 " bytes\n", s.path.c_str(), verdict, s.records, s.bytes);
    if (!s.problem.empty()) fprintf(o.out, "  %s\n", s.problem.c_str());
    for (const rec::damage& d : s.damages) {
      if (d.torn_tail)
        fprintf(o.out, "  torn tail: %" PRIu64 " bytes at offset %" PRIu64 " (%s)\n", d.bytes, d.offset, d.reason.c_str());
      else
        fprintf(o.out, "  corruption at offset %" PRIu64 ": %" PRIu64 " bytes lost (%s)\n", d.offset, d.bytes,
                d.reason.c_str());
    }
  }
  fprintf(o.out, "%zu segments, %" PRIu64 " records, %" PRIu64 " bytes; %" PRIu64 " damaged segments, %" PRIu64
                 " bytes lost to corruption, %" PRIu64 " bytes of torn tails\n",
          segments->size(), records, bytes, bad_segments, corrupt, torn);
  return bad_segments > 0 ? exit_damaged : exit_ok;
}

int run_replay(const recordings_cli_options& o) {
  if (!is_dir(o.dir)) {
    fprintf(o.err, "agentgate replay: %s is not a directory\n", o.dir.c_str());
    return exit_usage;
  }
  if (o.session.empty()) {
    result<std::vector<rec::session_summary>> sessions = rec::list_sessions(o.dir);
    if (!sessions) {
      fprintf(o.err, "agentgate replay: %s\n", sessions.error().message().c_str());
      return exit_damaged;
    }
    if (o.format == "jsonl") {
      for (const rec::session_summary& s : *sessions) fprintf(o.out, "%s\n", rec::session_summary_json(s).c_str());
      return exit_ok;
    }
    fprintf(o.out, "%-32s  %-20s  %-30s  %-16s  %8s  %8s  %s\n", "SESSION", "START", "WHO", "TARGET", "SECONDS",
            "COMMANDS", "BYTES IN/OUT");
    for (const rec::session_summary& s : *sessions) {
      std::string who = s.subject + (s.email.empty() ? "" : " <" + s.email + ">");
      fprintf(o.out, "%-32s  %-20s  %-30s  %-16s  %8.1f  %8" PRIu64 "  %" PRIu64 "/%" PRIu64 "%s\n",
              s.id.hex().c_str(), when(s.start_unix_us).c_str(), terminal_safe(who).c_str(),
              terminal_safe(s.target).c_str(), static_cast<double>(s.last_unix_us - s.start_unix_us) / 1e6,
              s.commands, s.bytes_from_client, s.bytes_to_client, s.ended ? "" : "  (open)");
    }
    return exit_ok;
  }
  session_id id;
  if (!session_id::parse(o.session, id)) {
    fprintf(o.err, "agentgate replay: --session wants 32 hex digits\n");
    return exit_usage;
  }
  rec::transcript_format format = rec::transcript_format::text;
  if (o.format == "jsonl") format = rec::transcript_format::jsonl;
  else if (o.format == "asciicast") format = rec::transcript_format::asciicast;
  else if (o.format != "text") {
    fprintf(o.err, "agentgate replay: --format is text, jsonl or asciicast\n");
    return exit_usage;
  }
  result<std::string> out = rec::session_transcript(o.dir, id, format);
  if (!out) {
    fprintf(o.err, "agentgate replay: %s\n", out.error().message().c_str());
    return exit_damaged;
  }
  fwrite(out->data(), 1, out->size(), o.out);
  return exit_ok;
}

}  // namespace agentgate
