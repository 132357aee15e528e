#pragma once
// The masking seam: a protocol session asks its shard's data_masker what to
// do with each result column and hands it each value (and each free-text
// field: error details, notices, notification payloads, COPY rows) before a
// byte reaches the client. Implemented in masking/ (Hyperscan detectors,
// validators, rewrite styles); one per shard per policy version, used only by
// that shard's thread. A policy swap installs a new one between results.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/policy.h"

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
};

}  // namespace agentgate
