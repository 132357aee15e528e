#pragma once
// `agentgate recordings verify --dir DIR` and
// `agentgate replay --dir DIR [--session ID] [--format text|jsonl|asciicast]`
// over io/recording/replay.h. Read-only: neither repairs nor removes anything.
//
// verify exit codes: 0 every segment is whole, or only has a torn tail (what
// a crash leaves; the writer cuts it at its next start, and it is reported as
// "torn tail: N bytes"); 1 damage in the middle of a segment or a bad file
// header; 2 a usage error (no such directory).
// replay exit codes: 0 printed; 1 no such session or a read error; 2 usage.

#include <cstdio>
#include <string>

namespace agentgate {

struct recordings_cli_options {
  std::string dir;
  std::string session;        // replay: empty lists sessions
  std::string format = "text";  // replay: text | jsonl | asciicast
  std::FILE* out = stdout;
  std::FILE* err = stderr;
};

int run_recordings_verify(const recordings_cli_options& options);
int run_replay(const recordings_cli_options& options);

}  // namespace agentgate
