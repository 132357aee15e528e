#include "core/log.h"

#include <gtest/gtest.h>

namespace agentgate {
namespace {

TEST(LogBudget, BurstThenOneALineARefillAndSaysHowManyWereHeldBack) {
  log_budget budget(3, 1000);
  uint64_t held = 99;
  uint64_t now = 5000;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(budget.allow(now, held));
    EXPECT_EQ(held, 0u);
  }
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(budget.allow(now + 500, held));
  EXPECT_TRUE(budget.allow(now + 1000, held));
  EXPECT_EQ(held, 1000u);
  EXPECT_FALSE(budget.allow(now + 1001, held));
  EXPECT_EQ(budget.take_suppressed(), 1u);
  EXPECT_EQ(budget.take_suppressed(), 0u);
}

TEST(LogBudget, RefillIsCappedAtTheBurst) {
  log_budget budget(2, 100);
  uint64_t held = 0;
  EXPECT_TRUE(budget.allow(1000, held));
  EXPECT_TRUE(budget.allow(1000, held));
  EXPECT_FALSE(budget.allow(1000, held));
  // An hour later: two lines, not 36,000.
  int allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += budget.allow(1000 + 3'600'000, held) ? 1 : 0;
  EXPECT_EQ(allowed, 2);
}

// A flood of a million lines in one minute writes a bounded number.
TEST(LogBudget, AFloodWritesABoundedNumberOfLines) {
  log_budget budget;
  uint64_t held = 0, written = 0, suppressed = 0;
  for (uint64_t i = 0; i < 1'000'000; ++i)
    if (budget.allow(1000 + i * 60'000 / 1'000'000, held)) {
      ++written;
      suppressed += held;
    }
  suppressed += budget.take_suppressed();
  EXPECT_LE(written, 20u + 61u);
  EXPECT_EQ(written + suppressed, 1'000'000u);
}

}  // namespace
}  // namespace agentgate
