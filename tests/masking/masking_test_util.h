#pragma once
// Helpers shared by the masking engine tests.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/masking.h"
#include "core/policy.h"
#include "masking/data_masker.h"

namespace agentgate::masking::testing {

inline std::span<const std::uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// Settings with every detector set to `style` (off by default), then the
// named ones set as given.
inline masking_settings only(std::vector<std::pair<std::string, mask_style>> on,
                             mask_style others = mask_style::off) {
  masking_settings s;
  s.present = true;
  for (std::string_view d : known_mask_detectors()) s.detectors.push_back({std::string(d), others});
  for (auto& [name, style] : on) s.detectors.push_back({name, style});
  return s;
}

inline std::string write_key_file(const std::string& name, const std::string& key) {
  const auto path = std::filesystem::temp_directory_path() / ("agentgate_mask_" + name + "_" +
                                                              std::to_string(::getpid()));
  std::ofstream(path, std::ios::binary) << key;
  return path.string();
}

inline std::unique_ptr<data_masker> make_masker(const masking_settings& s) {
  auto engine = mask_engine::build(s);
  EXPECT_TRUE(engine.is_ok()) << (engine.is_ok() ? "" : engine.error().message());
  if (!engine.is_ok()) return nullptr;
  auto m = make_shard_masker(engine.value());
  EXPECT_TRUE(m.is_ok()) << (m.is_ok() ? "" : m.error().message());
  if (!m.is_ok()) return nullptr;
  return std::move(m.value());
}

// mask_text's result as a string (the input when unchanged).
inline std::string masked_text(data_masker& m, std::string_view in) {
  std::string out;
  const mask_outcome o = m.mask_text(bytes(in), out);
  EXPECT_NE(o, mask_outcome::null);
  return o == mask_outcome::unchanged ? std::string(in) : out;
}

// mask_value's result; nullopt for NULL.
inline std::optional<std::string> masked_value(data_masker& m, const result_column& col, std::string_view in) {
  const column_plan p = m.plan(col);
  std::string out;
  switch (m.mask_value(p, bytes(in), out)) {
    case mask_outcome::unchanged: return std::string(in);
    case mask_outcome::rewritten: return out;
    case mask_outcome::null: return std::nullopt;
  }
  return std::nullopt;
}

inline result_column text_column(std::string_view name = "notes", std::uint32_t oid = 25) {
  result_column c;
  c.name = name;
  c.type_oid = oid;
  return c;
}

}  // namespace agentgate::masking::testing
