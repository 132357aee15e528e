#include "protocols/postgres/client_encoding.h"

#include <gtest/gtest.h>

namespace agentgate::pg {
namespace {

TEST(ClientEncoding, NamesResolveAsPostgresDoes) {
  EXPECT_EQ(resolve_client_encoding("").name, "UTF8");
  EXPECT_EQ(resolve_client_encoding("utf-8").name, "UTF8");
  EXPECT_EQ(resolve_client_encoding("Unicode").name, "UTF8");
  // SQL_ASCII is read, and sent upstream, as UTF8.
  EXPECT_EQ(resolve_client_encoding("SQL_ASCII").how, client_encoding::kind::utf8);
  EXPECT_EQ(resolve_client_encoding("SQL_ASCII").name, "UTF8");
  EXPECT_EQ(resolve_client_encoding("iso-8859-1").name, "LATIN1");
  EXPECT_EQ(resolve_client_encoding("ISO_8859_9").name, "LATIN5");
  EXPECT_EQ(resolve_client_encoding("koi8").name, "KOI8R");
  EXPECT_EQ(resolve_client_encoding("windows-1251").name, "WIN1251");
  EXPECT_EQ(resolve_client_encoding("LATIN1").how, client_encoding::kind::single_byte);
  for (const char* refused : {"SJIS", "Shift-JIS", "mskanji", "WIN932", "BIG5", "win950", "GBK", "windows936",
                              "UHC", "GB18030", "JOHAB", "SHIFT_JIS_2004", "EUC_JP", "MULE_INTERNAL"})
    EXPECT_EQ(resolve_client_encoding(refused).how, client_encoding::kind::refused) << refused;
  EXPECT_EQ(resolve_client_encoding("auto").how, client_encoding::kind::unknown);
  EXPECT_EQ(resolve_client_encoding("klingon").how, client_encoding::kind::unknown);
}

TEST(ClientEncoding, EveryPostgresClientEncodingIsDecided) {
  size_t readable = 0;
  for (std::string_view name : postgres_client_encodings()) {
    const client_encoding e = resolve_client_encoding(name);
    ASSERT_NE(e.how, client_encoding::kind::unknown) << name;
    if (e.how == client_encoding::kind::single_byte) {
      ++readable;
      ASSERT_NE(e.to_unicode, nullptr) << name;
      // ASCII is ASCII; no high byte may become ASCII (a quote or a backslash).
      for (unsigned b = 0; b < 256; ++b) {
        const uint32_t cp = (*e.to_unicode)[b];
        if (b < 0x80) EXPECT_EQ(cp, b) << name;
        else EXPECT_TRUE(cp == no_code_point || cp >= 0x80) << name << " byte " << b;
      }
    }
  }
  EXPECT_EQ(readable, 27u);
}

TEST(ClientEncoding, TranscribesSingleByteText) {
  const client_encoding latin1 = resolve_client_encoding("LATIN1");
  std::string out;
  uint8_t bad = 0;
  ASSERT_TRUE(transcribe_to_utf8(latin1, "caf\xe9", out, bad));
  EXPECT_EQ(out, "caf\xc3\xa9");
  const client_encoding koi8 = resolve_client_encoding("KOI8R");
  ASSERT_TRUE(transcribe_to_utf8(koi8, "\xc1", out, bad));  // KOI8-R 0xC1 is U+0430
  EXPECT_EQ(out, "\xd0\xb0");
  const client_encoding win1252 = resolve_client_encoding("WIN1252");
  ASSERT_TRUE(transcribe_to_utf8(win1252, "\x80", out, bad));  // the euro sign
  EXPECT_EQ(out, "\xe2\x82\xac");
  EXPECT_FALSE(transcribe_to_utf8(win1252, "ok\x81", out, bad));
  EXPECT_EQ(bad, 0x81);
}

TEST(ClientEncoding, AsciiCheck) {
  EXPECT_TRUE(is_ascii("SELECT 1"));
  EXPECT_FALSE(is_ascii("SELECT '\x95'"));
}

}  // namespace
}  // namespace agentgate::pg
