#include "core/text.h"

#include <gtest/gtest.h>

#include <string>

namespace agentgate {
namespace {

std::string json(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

TEST(Text, JsonStringEscapes) {
  EXPECT_EQ(json("plain"), "\"plain\"");
  EXPECT_EQ(json("a\"b\\c\n\r\t"), "\"a\\\"b\\\\c\\n\\r\\t\"");
  EXPECT_EQ(json(std::string_view("\x00\x01\x1f\x7f", 4)), "\"\\u0000\\u0001\\u001f\\u007f\"");
  EXPECT_EQ(json("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
}

TEST(Text, JsonStringInvalidUtf8IsLatin1) {
  EXPECT_EQ(json("\x80"), "\"\\u0080\"");
  EXPECT_EQ(json("\xc0\xaf"), "\"\\u00c0\\u00af\"");            // overlong
  EXPECT_EQ(json("\xed\xa0\x80"), "\"\\u00ed\\u00a0\\u0080\"");  // surrogate
  EXPECT_EQ(json("x\xe2\x82"), "\"x\\u00e2\\u0082\"");            // truncated
  EXPECT_EQ(json("\xf5\x80\x80"), "\"\\u00f5\\u0080\\u0080\"");  // above U+10FFFF
  EXPECT_EQ(json("\xff"), "\"\\u00ff\"");
}

TEST(Text, Utf8SequenceLength) {
  EXPECT_EQ(1u, utf8_sequence_length("a", 0));
  EXPECT_EQ(2u, utf8_sequence_length("\xc3\xa9", 0));
  EXPECT_EQ(3u, utf8_sequence_length("\xe2\x82\xac", 0));
  EXPECT_EQ(4u, utf8_sequence_length("\xf4\x8f\xbf\xbf", 0));
  EXPECT_EQ(0u, utf8_sequence_length("\xf4\x90\x80\x80", 0));
  EXPECT_EQ(0u, utf8_sequence_length("\xe0\x80\x80", 0));
  EXPECT_EQ(0u, utf8_sequence_length("\xf0\x80\x80\x80", 0));
  EXPECT_EQ(0u, utf8_sequence_length("\xe2\x82", 0));
}

TEST(Text, TerminalSafe) {
  EXPECT_EQ(terminal_safe("ok é"), "ok é");
  EXPECT_EQ(terminal_safe("a\nb\tc\rd\x1b[31m\x7f"), "a\\nb\\tc\\rd\\x1b[31m\\x7f");
  EXPECT_EQ(terminal_safe("\xc2\x85"), "\\u0085");        // C1 NEL
  EXPECT_EQ(terminal_safe("\xe2\x80\xae"), "\\u202e");    // right-to-left override
  EXPECT_EQ(terminal_safe("\xe2\x80\xa8"), "\\u2028");    // line separator
  EXPECT_EQ(terminal_safe("\xff\xc3"), "\\xff\\xc3");
}

TEST(Text, WidthAndCut) {
  EXPECT_EQ(4u, display_width("caf\xc3\xa9"));
  EXPECT_EQ(cut_to_width("abcdef", 6), "abcdef");
  EXPECT_EQ(cut_to_width("abcdefg", 6), "abcde\xe2\x80\xa6");
  EXPECT_EQ(cut_to_width("\xc3\xa9\xc3\xa9\xc3\xa9", 2), "\xc3\xa9\xe2\x80\xa6");
  EXPECT_EQ(display_width(cut_to_width(std::string(100, 'x'), 40)), 40u);
}

}  // namespace
}  // namespace agentgate
