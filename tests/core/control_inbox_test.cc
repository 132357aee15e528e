#include "core/control_inbox.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace agentgate {
namespace {

class no_shard final : public shard_services {
 public:
  int shard_id() const override { return 0; }
  int shard_count() const override { return 1; }
  bool post(int, std::unique_ptr<shard_task>) override { return false; }
  bool post_from_control(std::unique_ptr<shard_task>) override { return false; }
  void start_outbound(std::unique_ptr<session_handler>) override {}
};

// Appends its label to a log when it runs.
class note_task final : public shard_task {
 public:
  note_task(std::vector<std::string>& log, std::string label, control_delivery delivery = control_delivery::reliable,
            const void* slot = nullptr)
      : log_(log), label_(std::move(label)), delivery_(delivery), slot_(slot) {}
  void run(shard_services&) override { log_.push_back(label_); }
  control_delivery delivery() const override { return delivery_; }
  const void* slot() const override { return slot_; }

 private:
  std::vector<std::string>& log_;
  std::string label_;
  control_delivery delivery_;
  const void* slot_;
};

constexpr size_t ring = 4;

void fill_ring(control_inbox& inbox, std::vector<std::string>& log) {
  for (size_t i = 0; i < ring; ++i)
    ASSERT_TRUE(inbox.post(std::make_unique<note_task>(log, "ring" + std::to_string(i))));
}

TEST(ControlInbox, ReliableTasksOverflowAndRunInOrder) {
  control_inbox inbox(ring);
  no_shard shard;
  std::vector<std::string> log;
  fill_ring(inbox, log);
  // The shard is stalled: the ring is full. A verdict must still arrive.
  for (int i = 0; i < 1000; ++i)
    ASSERT_TRUE(inbox.post(std::make_unique<note_task>(log, "verdict" + std::to_string(i))));
  EXPECT_EQ(inbox.probe().overflowed, 1000u);
  while (inbox.drain(shard, 1000) > 0) {
  }
  ASSERT_EQ(log.size(), ring + 1000);
  for (size_t i = 0; i < ring; ++i) EXPECT_EQ(log[i], "ring" + std::to_string(i));
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(log[ring + i], "verdict" + std::to_string(i));
}

TEST(ControlInbox, LatestWinsReplacesTheWaitingSwapOfItsSlot) {
  control_inbox inbox(ring);
  no_shard shard;
  std::vector<std::string> log;
  int policy_slot = 0, keys_slot = 0;
  fill_ring(inbox, log);
  ASSERT_TRUE(inbox.post(std::make_unique<note_task>(log, "policy1", control_delivery::latest_wins, &policy_slot)));
  ASSERT_TRUE(inbox.post(std::make_unique<note_task>(log, "keys1", control_delivery::latest_wins, &keys_slot)));
  ASSERT_TRUE(inbox.post(std::make_unique<note_task>(log, "verdict")));
  ASSERT_TRUE(inbox.post(std::make_unique<note_task>(log, "policy2", control_delivery::latest_wins, &policy_slot)));
  EXPECT_EQ(inbox.probe().superseded, 1u);
  while (inbox.drain(shard, 100) > 0) {
  }
  const std::vector<std::string> want = {"ring0", "ring1", "ring2", "ring3", "keys1", "verdict", "policy2"};
  EXPECT_EQ(log, want);
}

TEST(ControlInbox, BestEffortIsRefusedWhileBehind) {
  control_inbox inbox(ring);
  no_shard shard;
  std::vector<std::string> log;
  fill_ring(inbox, log);
  EXPECT_FALSE(inbox.post(std::make_unique<note_task>(log, "metrics", control_delivery::best_effort)));
  EXPECT_EQ(inbox.probe().refused, 1u);
  inbox.drain(shard, 100);
  EXPECT_TRUE(inbox.post(std::make_unique<note_task>(log, "metrics", control_delivery::best_effort)));
}

// Once anything waits in the overflow, a later task never overtakes it
// through a ring slot that has come free meanwhile.
TEST(ControlInbox, NothingOvertakesTheOverflow) {
  control_inbox inbox(ring);
  no_shard shard;
  std::vector<std::string> log;
  int slot = 0;
  fill_ring(inbox, log);
  ASSERT_TRUE(inbox.post(std::make_unique<note_task>(log, "policy2", control_delivery::latest_wins, &slot)));
  inbox.drain(shard, 2);  // two ring slots free; the overflow waits for the ring to empty
  ASSERT_TRUE(inbox.post(std::make_unique<note_task>(log, "policy3", control_delivery::latest_wins, &slot)));
  while (inbox.drain(shard, 100) > 0) {
  }
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back(), "policy3");
  EXPECT_EQ(log.size(), ring + 1);  // policy2 was replaced while it waited
}

// One producer thread, the consumer on this one: every task arrives once,
// in order, whatever the interleaving.
TEST(ControlInbox, ConcurrentPostsArriveInOrder) {
  control_inbox inbox(8);
  no_shard shard;
  std::vector<std::string> log;
  constexpr int count = 20000;
  std::atomic<bool> done{false};
  std::thread producer([&] {
    for (int i = 0; i < count; ++i) EXPECT_TRUE(inbox.post(std::make_unique<note_task>(log, std::to_string(i))));
    done.store(true);
  });
  while (!done.load() || inbox.drain(shard, 3) > 0) inbox.drain(shard, 3);
  producer.join();
  while (inbox.drain(shard, 3) > 0) {
  }
  ASSERT_EQ(log.size(), static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) ASSERT_EQ(log[i], std::to_string(i));
}

}  // namespace
}  // namespace agentgate
