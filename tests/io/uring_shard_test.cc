#include "io/uring_shard.h"

#include <gtest/gtest.h>

#include <atomic>

#include "tests/io/shard_test_util.h"

namespace agentgate {
namespace {

using testing::eventually;
using testing::gate;
using testing::running_shards;
using testing::stall_task;

class count_task final : public shard_task {
 public:
  count_task(std::atomic<int>& n, control_delivery d = control_delivery::reliable, const void* slot = nullptr)
      : n_(n), delivery_(d), slot_(slot) {}
  void run(shard_services&) override { n_.fetch_add(1); }
  control_delivery delivery() const override { return delivery_; }
  const void* slot() const override { return slot_; }

 private:
  std::atomic<int>& n_;
  control_delivery delivery_;
  const void* slot_;
};

// A shard stalled by one long command must still get every approval verdict
// posted meanwhile, far past its 1,024-slot ring.
TEST(UringShardControl, StalledShardLosesNoReliableTask) {
  running_shards shards(1);
  gate stalled;
  ASSERT_TRUE(shards[0].post_from_control(std::make_unique<stall_task>(stalled)));
  ASSERT_TRUE(stalled.wait_entered(std::chrono::seconds(10)));
  std::atomic<int> ran{0};
  constexpr int verdicts = 3000;
  for (int i = 0; i < verdicts; ++i) EXPECT_TRUE(shards[0].post_from_control(std::make_unique<count_task>(ran)));
  // Questions with their own timeout are refused rather than queued.
  std::atomic<int> asked{0};
  EXPECT_FALSE(shards[0].post_from_control(std::make_unique<count_task>(asked, control_delivery::best_effort)));
  stalled.open();
  EXPECT_TRUE(eventually([&] { return ran.load() == verdicts; })) << ran.load();
  EXPECT_GT(shards[0].control_probe().overflowed, 0u);
  EXPECT_EQ(asked.load(), 0);
}

// Swaps of a whole state wait as one: the newest replaces the waiting one.
TEST(UringShardControl, StalledShardGetsTheLatestSwap) {
  running_shards shards(1);
  gate stalled;
  ASSERT_TRUE(shards[0].post_from_control(std::make_unique<stall_task>(stalled)));
  ASSERT_TRUE(stalled.wait_entered(std::chrono::seconds(10)));
  std::atomic<int> filler{0};
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE(shards[0].post_from_control(std::make_unique<count_task>(filler)));
  int slot = 0;
  std::atomic<int> old_swaps{0}, new_swap{0};
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(shards[0].post_from_control(
        std::make_unique<count_task>(old_swaps, control_delivery::latest_wins, &slot)));
  ASSERT_TRUE(
      shards[0].post_from_control(std::make_unique<count_task>(new_swap, control_delivery::latest_wins, &slot)));
  stalled.open();
  EXPECT_TRUE(eventually([&] { return new_swap.load() == 1; }));
  EXPECT_EQ(filler.load(), 2000);
  EXPECT_EQ(old_swaps.load(), 0);
  EXPECT_EQ(shards[0].control_probe().superseded, 50u);
}

}  // namespace
}  // namespace agentgate
