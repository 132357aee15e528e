#include <gtest/gtest.h>

#include "protocols/postgres/session.h"

namespace agentgate::pg {
namespace {

TEST(prompt_attribution, set_statements_of_the_gateway_are_recognised) {
  std::string key, value;
  ASSERT_TRUE(parse_prompt_set("SET agentgate.prompt_id = 'p-42'", key, value));
  EXPECT_EQ(key, "prompt_id");
  EXPECT_EQ(value, "p-42");
  ASSERT_TRUE(parse_prompt_set("  set session AGENTGATE.prompt_text TO 'it''s a prompt';", key, value));
  EXPECT_EQ(key, "prompt_text");
  EXPECT_EQ(value, "it's a prompt");
  ASSERT_TRUE(parse_prompt_set("set agentgate.traceparent=00-abc-def-01", key, value));
  EXPECT_EQ(value, "00-abc-def-01");
  ASSERT_TRUE(parse_prompt_set("RESET agentgate.prompt_id", key, value));
  EXPECT_EQ(value, "");
}

TEST(prompt_attribution, other_statements_are_not_taken) {
  std::string key, value;
  EXPECT_FALSE(parse_prompt_set("SET search_path = public", key, value));
  EXPECT_FALSE(parse_prompt_set("SET agentgate.other = 'x'", key, value));
  EXPECT_FALSE(parse_prompt_set("SET agentgate.prompt_id = 'x'; DROP TABLE t", key, value));
  EXPECT_FALSE(parse_prompt_set("SET agentgate.prompt_id = 'unterminated", key, value));
  EXPECT_FALSE(parse_prompt_set("SELECT 'SET agentgate.prompt_id = 1'", key, value));
  EXPECT_FALSE(parse_prompt_set("SET agentgate.prompt_id = x y", key, value));
}

TEST(prompt_attribution, trailing_sqlcommenter_comment) {
  prompt_context p;
  ASSERT_TRUE(prompt_from_comment(
      "SELECT 1 /*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',prompt_id='abc%20d'*/;",
      p));
  EXPECT_EQ(p.traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  EXPECT_EQ(p.prompt_id, "abc d");
  prompt_context none;
  EXPECT_FALSE(prompt_from_comment("SELECT 1 /* just a note */", none));
  EXPECT_FALSE(prompt_from_comment("SELECT '/*prompt_id=''x''*/' AS s", none));
  EXPECT_TRUE(none.empty());
}

TEST(prompt_attribution, startup_options) {
  const prompt_context p =
      prompt_from_options("-c statement_timeout=5s -c agentgate.prompt_id=run-7 --agentgate.prompt_text=fix\\ the\\ bug");
  EXPECT_EQ(p.prompt_id, "run-7");
  EXPECT_EQ(p.prompt_text, "fix the bug");
  EXPECT_TRUE(prompt_from_options("-c work_mem=4MB").empty());
}

}  // namespace
}  // namespace agentgate::pg
