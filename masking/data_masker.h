#pragma once
// The masking engine behind core/masking.h's data_masker seam.
//
// Ownership: mask_engine is built once per policy version on the control
// plane (Hyperscan compile, hash key read) and is immutable, so any number
// of shards share it. Each shard gets its own data_masker from
// make_shard_masker(): it owns cloned Hyperscan scratch, its candidate
// buffers and its counters, and is used only by that shard's thread. It keeps
// the engine alive through a shared_ptr; a policy swap replaces the masker.
//
// Semantics (detectors, defaults, styles per type, limits) are in
// docs/masking.md.

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/masking.h"
#include "core/policy.h"
#include "core/status.h"
#include "masking/detectors.h"

namespace agentgate::masking {

// A hash key shorter than this is refused: HMAC over 9-digit SSNs with a
// guessable key is reversed by hashing every candidate.
inline constexpr std::size_t hash_key_bytes_min = 16;
inline constexpr std::size_t hash_key_bytes_max = 4096;

// Streamed values (data_masker::stream_value / stream_text; docs/masking.md,
// "Streamed values"). The input is scanned in slices with the block-mode
// database over (held bytes + slice); bytes are released once no match can
// still reach them.
// Output trails input by at least this much: every detector's token and the
// context it looks at (an email is at most 64 + 1 + 253 bytes) fit in it.
inline constexpr std::size_t stream_lag_bytes = 4096;
// A token an extractor saw run into the end of the held bytes (a JWT, a PEM
// block, a policy pattern's match) is held whole up to this; a longer one is
// released masked, and a PEM block then masks on to its END line.
inline constexpr std::size_t stream_token_bytes_max = 64 * 1024;
// Released bytes kept before the held ones as left context for the next
// scan (an AWS secret's context word, "0." before a number).
inline constexpr std::size_t stream_context_bytes = 128;
// Input scanned per step.
inline constexpr std::size_t stream_slice_bytes = 64 * 1024;
// What a stream holds between calls, at most (value_stream::held_bytes());
// a step holds at most one slice more.
inline constexpr std::size_t stream_held_bytes_max = stream_context_bytes + stream_token_bytes_max;
// Numeric values in a streamed row are collected whole (numeric's text form
// is at most ~147 KB); a bigger one is malformed and fails closed.
inline constexpr std::size_t stream_number_bytes_max = 256 * 1024;

class mask_engine {
 public:
  // Compiles the enabled detectors and the policy's patterns into one
  // Hyperscan block-mode database, and the column rules' name regexes into a
  // second one (column names only, scanned once per result column). Reads
  // hash_key_file when it is set. A regex that does not compile is an
  // errc::invalid_argument naming the pattern or column rule.
  static result<std::shared_ptr<const mask_engine>> build(const masking_settings& settings);

  ~mask_engine();
  mask_engine(const mask_engine&) = delete;
  mask_engine& operator=(const mask_engine&) = delete;

  // False only when every detector is off and there are no column rules and
  // no patterns.
  bool active() const { return active_; }

  // The effective style of a detector after defaults (off when disabled).
  mask_style style(detector d) const { return styles_[static_cast<std::size_t>(d)]; }
  const masking_settings& settings() const { return settings_; }

  // Counter names, in the order core/masking.h documents: the 16 detectors,
  // "column:<i>" per column rule, "pattern:<name>" per pattern.
  const std::vector<std::string>& hit_names() const { return hit_names_; }

 private:
  friend class shard_masker;
  struct hs_state;
  struct expression_info {
    bool som = false;  // a policy pattern: Hyperscan reports its start
    shape what = shape::card;
    std::uint16_t label = 0;
  };

  mask_engine();

  masking_settings settings_;
  bool active_ = false;
  bool text_scan_ = false;  // some detector or pattern can match text
  digit_detectors digits_;  // the detectors found from runs of digits
  std::vector<mask_style> styles_;  // per label (detectors, column rules, patterns)
  std::vector<std::string> hit_names_;
  std::vector<expression_info> expressions_;  // by Hyperscan id
  std::vector<std::string> column_tables_;    // per column rule, lower case
  std::vector<std::string> rule_tables_;      // the non-empty ones, sorted, unique
  std::string hash_key_;
  std::unique_ptr<hs_state> content_;  // null when nothing scans text
  std::unique_ptr<hs_state> names_;    // null when there are no column rules
};

// A shard's masker over `engine`, with its own Hyperscan scratch.
result<std::unique_ptr<agentgate::data_masker>> make_shard_masker(std::shared_ptr<const mask_engine> engine);

}  // namespace agentgate::masking
