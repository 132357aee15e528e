// Masking cost on a realistic result stream. The bar (the masking issue):
// at least 1 GB/s per core through plan() + mask_value() with the default
// detector set, bytes counted as the value bytes handed to the masker.
//
// The stream: orders with an int8 id, a customer name, a timestamptz, a
// numeric amount, a status and a free-text note; about 1% of the notes carry
// an email, a card number or an SSN. A result is 1000 rows; plan() runs once
// per column per result, mask_value() once per field, as a session does.

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/masking.h"
#include "masking/data_masker.h"

namespace {

using agentgate::column_plan;
using agentgate::data_masker;
using agentgate::mask_outcome;
using agentgate::masking_settings;
using agentgate::result_column;

std::unique_ptr<data_masker> masker(const masking_settings& s) {
  auto e = agentgate::masking::mask_engine::build(s);
  if (!e.is_ok()) {
    std::fprintf(stderr, "build: %s\n", e.error().message().c_str());
    std::abort();
  }
  auto m = agentgate::masking::make_shard_masker(e.value());
  if (!m.is_ok()) {
    std::fprintf(stderr, "masker: %s\n", m.error().message().c_str());
    std::abort();
  }
  return std::move(m.value());
}

constexpr std::size_t rows_per_result = 1000;

struct stream {
  std::vector<result_column> columns;
  std::vector<std::string> fields;  // row-major
  std::size_t bytes = 0;
};

const stream& order_stream() {
  static const stream s = [] {
    stream out;
    out.columns = {{"id", "public.orders", "id", 20, false},         {"customer", "public.orders", "customer", 25, false},
                   {"created_at", "public.orders", "created_at", 1184, false}, {"amount", "public.orders", "amount", 1700, false},
                   {"status", "public.orders", "status", 1043, false},  {"notes", "public.orders", "notes", 25, false}};
    std::mt19937_64 rng(42);  // seeded: the same stream every run
    const char* first[] = {"Alice", "Bob", "Carol", "Dmitri", "Eve", "Fatima", "Gustavo", "Hiroshi", "Ingrid", "Jamal"};
    const char* last[] = {"Johnson", "Smith", "Okafor", "Ivanova", "Nguyen", "García", "Müller", "Tanaka", "Larsen"};
    const char* statuses[] = {"pending", "shipped", "delivered", "cancelled", "refunded"};
    const char* phrases[] = {"Customer asked to leave the parcel at the back door.",
                             "Delivery delayed by weather; rescheduled for Monday 10:30.",
                             "Gift wrap requested, include a handwritten note.",
                             "Replacement for order 2024-01-15/00123 which arrived damaged.",
                             "Paid by bank transfer, reference INV-2024-0042, confirmed by finance.",
                             "Called support twice about the invoice total of 1234.56 EUR.",
                             "Fragile: glassware. Use the reinforced box, size L.",
                             "Address updated after checkout (apartment 4B, building C)."};
    const char* pii[] = {" Contact: jane.doe@example.com for questions.", " Card on file 4111 1111 1111 1111.",
                         " SSN provided for tax form: 123-45-6789."};
    for (std::size_t r = 0; r < rows_per_result * 10; ++r) {
      out.fields.push_back(std::to_string(100000 + r));
      out.fields.push_back(std::string(first[rng() % 10]) + " " + last[rng() % 9]);
      char ts[40];
      std::snprintf(ts, sizeof ts, "2024-%02u-%02u %02u:%02u:%02u.%06u+00", unsigned(1 + rng() % 12),
                    unsigned(1 + rng() % 28), unsigned(rng() % 24), unsigned(rng() % 60), unsigned(rng() % 60),
                    unsigned(rng() % 1000000));
      out.fields.push_back(ts);
      out.fields.push_back(std::to_string(rng() % 100000) + "." + std::to_string(10 + rng() % 90));
      out.fields.push_back(statuses[rng() % 5]);
      std::string note = phrases[rng() % 8];
      const std::size_t extra = rng() % 3;
      for (std::size_t i = 0; i < extra; ++i) note += std::string(" ") + phrases[rng() % 8];
      if (rng() % 100 == 0) note += pii[rng() % 3];
      out.fields.push_back(std::move(note));
    }
    for (const auto& f : out.fields) out.bytes += f.size();
    return out;
  }();
  return s;
}

void run_stream(benchmark::State& state, const masking_settings& settings) {
  auto m = masker(settings);
  const stream& s = order_stream();
  const std::size_t ncols = s.columns.size();
  const std::size_t rows = s.fields.size() / ncols;
  std::vector<column_plan> plans(ncols);
  std::string out;
  std::size_t row = 0;
  std::size_t bytes = 0;
  std::size_t rewritten = 0;
  for (auto _ : state) {
    // One result of rows_per_result rows per iteration.
    for (std::size_t c = 0; c < ncols; ++c) plans[c] = m->plan(s.columns[c]);
    for (std::size_t r = 0; r < rows_per_result; ++r) {
      const std::string* f = &s.fields[row * ncols];
      for (std::size_t c = 0; c < ncols; ++c) {
        out.clear();
        const auto v = std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(f[c].data()), f[c].size());
        rewritten += m->mask_value(plans[c], v, out) != mask_outcome::unchanged;
        bytes += f[c].size();
      }
      if (++row == rows) row = 0;
    }
  }
  benchmark::DoNotOptimize(rewritten);
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["rows/s"] = benchmark::Counter(static_cast<double>(state.iterations() * rows_per_result),
                                                benchmark::Counter::kIsRate);
  state.counters["rewritten"] = static_cast<double>(rewritten) / static_cast<double>(state.iterations());
}

void BM_result_stream_default(benchmark::State& state) { run_stream(state, masking_settings{}); }
BENCHMARK(BM_result_stream_default);

// Every detector on, IPs included, plus a policy pattern (which needs SOM).
void BM_result_stream_all(benchmark::State& state) {
  masking_settings s;
  s.detectors = {{"ipv4", agentgate::mask_style::redact}, {"ipv6", agentgate::mask_style::redact}};
  s.patterns.push_back({"employee_id", "EMP-[0-9]{6}", agentgate::mask_style::redact});
  s.columns.push_back({"(?i)password|secret", "", agentgate::mask_style::redact});
  run_stream(state, s);
}
BENCHMARK(BM_result_stream_all);

// Free text: one 1 MiB blob of notes (COPY rows, error details) per call.
void BM_mask_text_1MiB(benchmark::State& state) {
  auto m = masker(masking_settings{});
  const stream& s = order_stream();
  std::string blob;
  for (std::size_t i = 0; blob.size() < (1u << 20); ++i) {
    blob += s.fields[i % s.fields.size()];
    blob += (i % 6 == 5) ? '\n' : '\t';
  }
  blob.resize(1u << 20);
  std::string out;
  out.reserve(blob.size() * 2);
  for (auto _ : state) {
    out.clear();
    const auto v = std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(blob.data()), blob.size());
    benchmark::DoNotOptimize(m->mask_text(v, out));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * blob.size()));
}
BENCHMARK(BM_mask_text_1MiB);

}  // namespace
