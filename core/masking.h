#pragma once
// The masking seam: a protocol session asks its shard's data_masker what to
// do with each result column and hands it each value (and each free-text
// field: error details, notices, notification payloads, COPY rows) before a
// byte reaches the client. Implemented in masking/ (Hyperscan detectors,
// validators, rewrite styles); one per shard per policy version, used only by
// that shard's thread. A policy swap installs a new one between results.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/policy.h"
#include "core/status.h"

namespace agentgate {

// One result column as the protocol layer knows it.
struct result_column {
  std::string_view name;    // as the result names it (maybe an alias)
  std::string_view table;   // "schema.table" when resolved through the catalog; else empty
  std::string_view column;  // the table's own column name (attname) when resolved; else empty
  uint32_t type_oid = 0;    // PostgreSQL type OID; 0 when unknown (treated as text)
  bool binary = false;      // values in the type's binary format
};

// What happens to every value of one column; computed once per result.
struct column_plan {
  enum class mode : uint8_t {
    pass,     // nothing to look for (booleans, floats, dates, uuids, ...): no scan at all
    numeric,  // integers and numerics: only the cheap numeric checks (length + Luhn)
    text,     // the content detectors and the policy's patterns
    forced,   // a column rule: masked whatever the content
  };
  mode how = mode::text;
  mask_style style = mask_style::redact;  // forced only
  uint16_t rule = 0;                      // forced only: index into masking_settings::columns
  uint32_t type_oid = 0;
  bool binary = false;
};

enum class mask_outcome : uint8_t {
  unchanged,  // pass the value on as it is; `out` untouched
  rewritten,  // the new value was appended to `out` (valid for the column's type and format)
  null,       // send SQL NULL instead
};

// One value masked as it streams through, for a DataRow or COPY row too big
// to hold whole (limits.masked_row_bytes_max): the frame's length and the
// field's were sent before the value, so the output is exactly as long as the
// input. A match is rewritten in place ('*' fill, docs/masking.md "Streamed
// values"). Only a bounded window is held back. Used by its masker's thread
// only, and not after the masker is gone.
class value_stream {
 public:
  virtual ~value_stream() = default;

  // Appends to `out` the masked bytes that are final (maybe none, maybe more
  // than `in`: held bytes are released). An error means the value cannot be
  // masked in place (a match in a binary value): the caller fails closed.
  virtual status feed(std::span<const uint8_t> in, std::string& out) = 0;
  // The value ended: appends the rest. Over feed() and finish(), `out` grew
  // by exactly the bytes fed.
  virtual status finish(std::string& out) = 0;

  // Bytes taken in and not yet released to `out`, with the few already
  // released that are kept as context for the next scan.
  virtual size_t held_bytes() const = 0;
  // Some byte was rewritten (a value counted as masked).
  virtual bool rewritten() const = 0;
};

class data_masker {
 public:
  virtual ~data_masker() = default;

  // False when the policy masks nothing: sessions skip all masking work.
  virtual bool active() const = 0;

  virtual column_plan plan(const result_column& column) = 0;

  // One non-null value of a column planned above.
  virtual mask_outcome mask_value(const column_plan& plan, std::span<const uint8_t> value,
                                  std::string& out) = 0;

  // Free text with no column (error and notice fields, notification
  // payloads, one COPY text/CSV row). Never null: a null style redacts here.
  // The rewrite keeps COPY's and CSV's framing characters out of what it
  // inserts (no tab, newline, backslash, quote or comma).
  virtual mask_outcome mask_text(std::span<const uint8_t> text, std::string& out) = 0;

  // Streamed counterparts of mask_value and mask_text, for values too big to
  // hold whole: same detectors and counters, length-preserving rewrites. An
  // error when no masked form of this plan can keep the value's length (a
  // column rule on a date, a binary numeric): the caller fails closed.
  // Making a stream has no other effect (matches count as they are
  // released), so a caller may make one to learn whether a plan streams.
  virtual result<std::unique_ptr<value_stream>> stream_value(const column_plan& plan) {
    (void)plan;
    return status{errc::unsupported, "this masker cannot mask streamed values"};
  }
  virtual result<std::unique_ptr<value_stream>> stream_text() {
    return status{errc::unsupported, "this masker cannot mask streamed values"};
  }

  // Matches so far, one counter per name: the detectors, then "column:<i>"
  // for each column rule, then "pattern:<name>" for each policy pattern.
  // Monotonic; a session diffs them around a command.
  virtual std::span<const std::string> hit_names() const = 0;
  virtual std::span<const uint64_t> hits() const = 0;

  // Bytes of values handed to mask_value/mask_text, for metrics.
  virtual uint64_t bytes_scanned() const = 0;

  // The tables column rules name ("public.users" or "users", lower case),
  // so the protocol can resolve result columns to them through the catalog.
  virtual std::span<const std::string> rule_tables() const { return {}; }

  // Whether the policy has column rules: rows whose columns the protocol
  // could not name cannot be checked against them, so they are refused.
  virtual bool has_column_rules() const { return false; }
};

}  // namespace agentgate
