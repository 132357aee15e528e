#pragma once
// Masks what a PostgreSQL server sends back before the client sees it:
// DataRow values (by column, as RowDescription describes them), COPY TO
// STDOUT rows (text and CSV), ErrorResponse / NoticeResponse fields and
// NotificationResponse payloads. Owned by one session; single-threaded.
//
// DataRows of the extended protocol carry no description of their own, so
// the filter follows the client's messages (Parse, Bind, Describe, Execute,
// Close, Sync, Query) in the order they were forwarded and pairs each server
// response with the message it answers: a portal's rows are masked with the
// RowDescription its statement or portal was described with, in the result
// formats its Bind asked for. Rows whose columns it cannot know are masked
// as text when they are text; binary rows of unknown columns are refused
// (fail closed).

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/masking.h"
#include "protocols/postgres/codec.h"

namespace agentgate::pg {

// One column of a RowDescription.
struct row_column {
  std::string name;
  uint32_t table_oid = 0;
  int16_t attnum = 0;
  uint32_t type_oid = 0;
  int16_t format = 0;  // 0 text, 1 binary
};

// Table and column names for result columns, read from the upstream's
// catalog for the tables that column rules name (RowDescription carries only
// a table OID and an attribute number). One per target per shard, shared by
// its sessions; re-read when older than fresh_s or when the rules change.
struct table_catalog {
  struct entry {
    std::string table;   // "schema.table"
    std::string column;  // attname
  };
  static constexpr size_t entries_max = 200000;
  static constexpr int64_t fresh_s = 60;

  std::unordered_map<uint64_t, entry> columns;  // key: table OID << 16 | attnum
  std::string tables_key;                       // the rule tables it was read for
  int64_t read_at_s = 0;

  const entry* find(uint32_t table_oid, int16_t attnum) const {
    if (table_oid == 0 || attnum <= 0) return nullptr;
    const auto it = columns.find((uint64_t{table_oid} << 16) | static_cast<uint16_t>(attnum));
    return it == columns.end() ? nullptr : &it->second;
  }
  bool fresh(std::string_view key, int64_t now_s) const {
    return read_at_s != 0 && tables_key == key && now_s - read_at_s < fresh_s;
  }
  // Adds one row of catalog_query()'s result (text format); false if malformed.
  bool add_row(bytes data_row_body);
};

// The query that reads the catalog for these tables; empty if none.
std::string catalog_query(std::span<const std::string> tables);
std::string catalog_key(std::span<const std::string> tables);

// Parses a RowDescription body; false if malformed.
bool parse_row_description(bytes body, std::vector<row_column>& out);

// Prepared statements and portals whose descriptions a session remembers,
// by count and by the bytes their column lists hold.
inline constexpr size_t described_entries_max = 4096;
inline constexpr size_t described_bytes_max = 4u << 20;
// Client messages whose responses are outstanding.
inline constexpr size_t outstanding_messages_max = 1u << 18;

class result_filter {
 public:
  enum class action : uint8_t {
    pass,       // send the frame as it is
    rewritten,  // send `out` instead (a whole frame)
    fail,       // cannot be masked: end the session with failure()
    drop,       // the answer to the gateway's own Describe: not for the client
  };

  // The masker for results that start from now on (a policy swap takes
  // effect at the next result); null or inactive: nothing is masked.
  void set_masker(std::shared_ptr<data_masker> masker) { next_masker_ = std::move(masker); }
  bool active() const { return next_masker_ != nullptr && next_masker_->active(); }
  const std::shared_ptr<data_masker>& masker() const { return next_masker_; }
  // Where result columns' tables and column names are looked up; may be null.
  void set_catalog(const table_catalog* catalog) { catalog_ = catalog; }

  // A client message, as forwarded upstream (after the guardrails). Messages
  // the gateway dropped are never seen here. `seq` numbers the command a
  // Query, Parse, Bind or FunctionCall starts (for recordings; a Bind given 0
  // takes its statement's); Execute inherits its portal's. False when more messages await responses than
  // outstanding_messages_max: the session must end (on_backend fails too).
  [[nodiscard]] bool on_frontend(char type, bytes body, uint64_t seq = 0);

  // After on_frontend of an Execute: the gateway must send this Describe
  // (a whole frame) upstream just before the Execute, because no
  // description of the portal can be trusted to match what the server will
  // run (see "epochs" below); empty otherwise. Its answer comes back as
  // action::drop.
  const std::string& describe_to_inject() const { return inject_; }

  // A whole server frame (header included).
  action on_backend(const frame_header& header, bytes frame, std::string& out);

  // A piece of a DataRow or CopyData too big to collect whole (frame_sink::
  // on_frame_piece: the first piece starts with the header). Each value is
  // masked in place as it streams through the data_masker's value_stream,
  // so the lengths already sent stay right. rewritten: send `out`, which may
  // be shorter or longer than the piece (a bounded window of a value is held
  // back), and over the whole frame is exactly its length. pass: the result
  // is not masked; send the pieces as they are. fail: failure().
  action on_backend_piece(const frame_header& header, bytes piece, bool first, bool last, std::string& out);
  // Between the first and the last piece of a frame on_backend_piece masks.
  bool streaming() const { return piece_.active; }

  // The columns of the result in progress (names), for recordings.
  const std::vector<row_column>& columns() const { return columns_; }
  // Set by on_backend when the frame just seen ended a command's result
  // (CommandComplete, EmptyQueryResponse, PortalSuspended, ErrorResponse):
  // the command's seq; 0 otherwise.
  uint64_t ended_seq() const { return ended_seq_; }
  // The columns of the result that ended last.
  const std::vector<row_column>& last_columns() const { return last_columns_; }
  const std::string& failure() const { return failure_; }

  // SQL can prepare and deallocate statements too (PREPARE, DEALLOCATE,
  // DISCARD ALL, or dynamic SQL in DO and CALL), behind the filter's back:
  // after such a command no remembered statement description is trusted
  // (their rows are masked as text until described again, binary refused).
  void forget_statement_descriptions();
  // The same, once the server has answered the last message given to
  // on_frontend (its batch's ReadyForQuery): descriptions answering earlier,
  // pipelined messages arrive before that and must be forgotten too.
  void forget_after_last();

  // Bytes the remembered descriptions hold at most (an upper bound).
  size_t described_bytes() const { return described_bytes_; }

  // Values rewritten so far, for metrics.
  uint64_t values_rewritten() const { return values_rewritten_; }

 private:
  enum class kind : uint8_t { parse, bind, describe_statement, describe_portal, execute, close, sync, query, function };
  // One server-side statement or portal as one Parse or Bind made it: a name
  // can be given to another later (the unnamed ones with every Parse or
  // Bind), so what a Describe answers and what an Execute runs are the
  // objects the name meant when those messages went upstream.
  //
  // Epochs. Any message that can run code (Query, Parse, Bind, Execute,
  // FunctionCall) can also close, open, prepare or deallocate statements and
  // portals by name on the server (a PL/pgSQL cursor, a function that runs
  // PREPARE), behind the gateway's back. So the filter numbers the stretches
  // between such messages (epoch_) and trusts a description only within its
  // own: a portal's, if the Describe went up in the Execute's epoch; a
  // statement's, if it went up in the epoch of the Bind that made the portal
  // and nothing ran between that Bind and the Execute. Any other Execute gets
  // a Describe of its portal injected just before it.
  struct statement {
    std::vector<row_column> columns;
    bool described = false;
    uint64_t seq = 0;
    uint64_t describe_epoch = no_epoch;  // when its last Describe went upstream
  };
  struct portal {
    std::shared_ptr<statement> stmt;  // null: a statement the filter never saw prepared
    uint64_t seq = 0;
    std::vector<int16_t> formats;  // Bind's result format codes (0, 1 or n of them)
    std::vector<row_column> described;  // from a Describe of the portal
    bool has_description = false;
    uint64_t bind_epoch = no_epoch;
    uint64_t describe_epoch = no_epoch;  // when its last Describe went upstream
  };
  struct outstanding {
    kind what = kind::sync;
    uint64_t seq = 0;
    std::shared_ptr<statement> stmt;  // describe_statement
    std::shared_ptr<portal> port;     // describe_portal, execute
    bool binary = false;              // function: a binary result
    bool forgets = false;             // see forget_after_last()
    bool injected = false;            // describe_portal: the gateway's own
    uint64_t epoch = 0;               // execute: the epoch it went upstream in
  };
  static constexpr uint64_t no_epoch = ~uint64_t{0};

  void start_result(const std::vector<row_column>& columns);
  bool start_execute_result(const portal* p, uint64_t epoch);
  void end_result();
  void pop_until_sync();
  void pop_outstanding();
  action begin_row();
  bool begin_copy_row();
  action stream_row_bytes(bytes in, std::string& out);
  action end_streamed_value(std::string& out);
  action mask_row(bytes frame, std::string& out);
  action mask_fields(const frame_header& header, bytes frame, std::string& out);
  action mask_notification(bytes frame, std::string& out);
  action mask_parameter_status(bytes frame, std::string& out);
  action mask_function_result(bytes frame, bool binary, std::string& out);
  action mask_copy_row(bytes frame, std::string& out);
  action refuse(std::string why);
  template <typename Map, typename Value>
  void remember(Map& map, const std::string& key, Value&& value);

  std::shared_ptr<data_masker> next_masker_;
  const table_catalog* catalog_ = nullptr;
  std::shared_ptr<data_masker> masker_;  // the result in progress's
  bool in_result_ = false;
  bool text_only_ = false;   // columns unknown: text values masked as text
  bool copy_out_ = false;    // between CopyOutResponse and CopyDone
  std::vector<row_column> columns_;
  std::vector<row_column> last_columns_;
  std::vector<column_plan> plans_;
  std::deque<outstanding> outstanding_;
  std::unordered_map<std::string, std::shared_ptr<statement>> statements_;
  std::unordered_map<std::string, std::shared_ptr<portal>> portals_;
  bool overflowed_ = false;  // more client messages awaited responses than outstanding_messages_max
  std::string value_out_;  // scratch for one rewritten value

  // A streamed DataRow or CopyData in progress (on_backend_piece).
  struct piece_state {
    enum class at : uint8_t { count, length, value, done };
    bool active = false;
    bool copy = false;          // CopyData: the body is one text stream
    at where = at::count;
    uint8_t number[4] = {};     // a field count or length, maybe split across pieces
    size_t number_have = 0;
    uint16_t fields = 0;
    uint16_t field = 0;
    uint32_t value_left = 0;
    uint64_t body_left = 0;     // body bytes not yet received
    uint64_t out_bytes = 0;     // sent for this frame so far
    uint64_t frame_bytes = 0;
    column_plan unknown;        // every column's, when text_only_
    std::unique_ptr<value_stream> stream;  // the value in progress's; null: passed as is
  };
  piece_state piece_;
  std::string failure_;
  uint64_t values_rewritten_ = 0;
  uint64_t ended_seq_ = 0;
  bool forget_at_ready_ = false;
  uint64_t epoch_ = 0;
  std::string inject_;            // see describe_to_inject()
  size_t described_bytes_ = 0;    // added since last counted; see account()
  void account(const std::vector<row_column>& columns);
  void forget_all_descriptions();
};

}  // namespace agentgate::pg
