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
#include <string_view>
#include <unordered_map>
#include <utility>
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

// Table and column names for result columns (RowDescription carries only a
// table OID and an attribute number), read from the upstream's catalog for
// EVERY table, view, materialized view, foreign table and composite type,
// with their row types: column rules follow a result column to its source
// column whatever the result calls it, and whole-row values are recognised
// by their type. One per target per shard, shared by its sessions; re-read
// when older than fresh_s. A read that fails or looks wrong (no rows, or
// without pg_catalog's own tables) never replaces the one in use.
//
// Size: entries_max attributes. Measured (200,000 columns of 20-byte names
// in 10,000 tables): 13.4 MiB per target per shard, 100 ms of add_row and
// 12 ms for protected_by() on the shard thread. A fresh PostgreSQL 15
// database holds 2,005 columns in 208 relations (pg_catalog and
// information_schema); 1,000 more tables of 21 columns make 23,005, read
// in 40 ms. A bigger catalog is read up to entries_max (lowest OIDs first)
// and marked truncated: then a column of a table it lacks cannot be
// resolved and its rows are refused, and whole rows are forced, while the
// policy has column rules (fail closed).
struct table_catalog {
  struct relation {
    std::string name;                  // "schema.table"
    std::string schema;                // nspname
    std::vector<std::string> columns;  // attname by attnum - 1; empty: dropped
    uint32_t row_type = 0;             // the composite type of a whole row
    uint32_t array_type = 0;           // its array type
  };
  static constexpr size_t entries_max = 200000;
  static constexpr int64_t fresh_s = 60;
  // After a session met a table the catalog lacks (created since the read),
  // the next login re-reads once the catalog is this old.
  static constexpr int64_t reread_s = 5;

  std::unordered_map<uint32_t, relation> relations;      // by pg_class OID
  std::unordered_map<uint32_t, uint32_t> row_types;      // row or row-array type OID -> relation OID
  std::unordered_multimap<std::string, uint32_t> by_name;  // relname -> relation OIDs
  size_t entries = 0;
  bool truncated = false;  // more than entries_max attributes: some tables are missing
  int64_t read_at_s = 0;
  mutable bool missed_table = false;  // a result named a table OID it lacks

  // What the masker in use makes of the catalog (protected(), below):
  // computed once per masker and catalog read, on first need.
  struct protection {
    std::shared_ptr<data_masker> masker;
    std::unordered_map<uint32_t, column_plan> relations;  // relation OID -> the plan of a forced column
    std::vector<std::string> names;                       // attnames some rule forces, unique
    bool any = false;
  };
  mutable protection protection_;

  struct column_ref {
    std::string_view table;
    std::string_view column;
  };
  bool find(uint32_t table_oid, int16_t attnum, column_ref& out) const {
    if (table_oid == 0 || attnum <= 0) return false;
    const auto it = relations.find(table_oid);
    if (it == relations.end() || static_cast<size_t>(attnum) > it->second.columns.size()) return false;
    const std::string& c = it->second.columns[static_cast<size_t>(attnum) - 1];
    if (c.empty()) return false;
    out = {it->second.name, c};
    return true;
  }
  // The relation whose whole row (or array of rows) a value of this type is.
  const relation* relation_of_type(uint32_t type_oid, uint32_t* oid = nullptr) const {
    const auto it = row_types.find(type_oid);
    if (it == row_types.end()) return nullptr;
    const auto r = relations.find(it->second);
    if (r == relations.end()) return nullptr;
    if (oid != nullptr) *oid = it->second;
    return &r->second;
  }
  bool fresh(int64_t now_s) const {
    return read_at_s != 0 && now_s - read_at_s < (missed_table ? reread_s : fresh_s);
  }
  // Adds one row of catalog_query()'s result (text format); false if malformed.
  bool add_row(bytes data_row_body);
  // Empty when a finished read may replace the catalog in use; else why not.
  std::string implausible() const;
  // The masker's column rules applied to every catalogued column.
  const protection& protected_by(const std::shared_ptr<data_masker>& masker) const;
};

// The query that reads the whole catalog. Every operator and type is
// qualified with pg_catalog: it runs in the client's upstream session,
// whose search_path is the client's to choose (and may put a schema with
// its own `=` first).
std::string catalog_query();

// The source of a COPY ... TO STDOUT statement, as far as the gateway reads
// it: a table (maybe schema-qualified) and an optional column list, in text
// or CSV with default delimiters. Anything else (COPY (query) TO, options it
// does not know, several statements) leaves known false.
struct copy_source {
  bool known = false;
  std::string schema;                // empty: found through search_path
  std::string table;
  std::vector<std::string> columns;  // empty: every column
  bool csv = false;
  bool header = false;
  bool plain_options = true;         // only FORMAT/HEADER/CSV: fields can be split
};
copy_source parse_copy_source(std::string_view sql);

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

  // COPY FROM STDIN: between the server's CopyInResponse and the client's
  // CopyDone or CopyFail the server ignores Sync (and Flush). True while the
  // filter knows the server is in that state: a Sync sent now gets no answer.
  bool copy_in() const { return copy_in_; }
  // Syncs already sent that the last CopyInResponse made the server ignore
  // (the session drops the answers it expected for them); resets the count.
  size_t take_ignored_syncs() { return std::exchange(ignored_syncs_, 0); }
  // The Parse just given to on_frontend was released by an approval.
  void mark_last_parse_approved() {
    if (!outstanding_.empty() && outstanding_.back().what == kind::parse) outstanding_.back().approved = true;
  }
  // Set by on_backend when the frame was a ParseComplete: which Parse it
  // answered (name, approved); cleared by the next frame.
  struct parse_completion {
    bool done = false;
    bool approved = false;
    std::string name;
  };
  const parse_completion& last_parse_completion() const { return parse_done_; }
  // A statement a protocol Parse made (as far as the filter remembers).
  bool knows_statement(const std::string& name) const { return statements_.count(name.substr(0, 63)) != 0; }

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

  // The SQL of command `seq` (a Query's string or a Parse's statement),
  // given as the command goes upstream: COPY TO STDOUT names its columns
  // only there. Only COPY statements are kept (the last copy_commands_max).
  void note_command_text(uint64_t seq, std::string_view sql);

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
  enum class kind : uint8_t {
    parse, bind, describe_statement, describe_portal, execute, close, sync, query, function,
    copy_end,  // the client's CopyDone or CopyFail: no answer; marks where COPY-in mode ends
  };
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
    std::string name;                 // parse: the statement's
    bool approved = false;            // parse: released by an approval
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
  action start_copy(uint64_t seq, bytes body);
  void plan_whole_values(const std::vector<row_column>& columns);
  bool json_holds_protected(bytes value) const;
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
  // Per column of the result in progress: a json/jsonb expression checked
  // value by value for keys a column rule protects (row_to_json(u)).
  std::vector<uint8_t> json_guard_;
  column_plan json_forced_;
  std::string refusal_;  // set by start_result: its rows cannot be masked
  // COPY TO STDOUT: the statements seen, and the fields of the copy in progress.
  static constexpr size_t copy_commands_max = 64;
  std::deque<std::pair<uint64_t, copy_source>> copy_commands_;
  std::vector<column_plan> copy_plans_;  // empty: the row is scanned as text
  bool copy_csv_ = false;
  bool copy_header_pending_ = false;
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
  bool copy_in_ = false;
  size_t ignored_syncs_ = 0;
  parse_completion parse_done_;
  action mismatch(char type);
  std::string inject_;            // see describe_to_inject()
  size_t described_bytes_ = 0;    // added since last counted; see account()
  void account(const std::vector<row_column>& columns);
  void forget_all_descriptions();
};

}  // namespace agentgate::pg
