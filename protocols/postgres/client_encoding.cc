#include "protocols/postgres/client_encoding.h"

#include <iconv.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <mutex>

namespace agentgate::pg {
namespace {

enum class family : uint8_t { utf8, sql_ascii, single_byte, refused };

struct known_encoding {
  std::string_view canonical;
  family fam;
  const char* iconv_name;  // single_byte only
};

// PostgreSQL 15's client encodings (pg_enc2name_tbl, PG_VALID_FE_ENCODING).
constexpr known_encoding encodings[] = {
    {"SQL_ASCII", family::sql_ascii, nullptr},
    {"EUC_JP", family::refused, nullptr},
    {"EUC_CN", family::refused, nullptr},
    {"EUC_KR", family::refused, nullptr},
    {"EUC_TW", family::refused, nullptr},
    {"EUC_JIS_2004", family::refused, nullptr},
    {"UTF8", family::utf8, nullptr},
    {"MULE_INTERNAL", family::refused, nullptr},
    {"LATIN1", family::single_byte, "ISO-8859-1"},
    {"LATIN2", family::single_byte, "ISO-8859-2"},
    {"LATIN3", family::single_byte, "ISO-8859-3"},
    {"LATIN4", family::single_byte, "ISO-8859-4"},
    {"LATIN5", family::single_byte, "ISO-8859-9"},
    {"LATIN6", family::single_byte, "ISO-8859-10"},
    {"LATIN7", family::single_byte, "ISO-8859-13"},
    {"LATIN8", family::single_byte, "ISO-8859-14"},
    {"LATIN9", family::single_byte, "ISO-8859-15"},
    {"LATIN10", family::single_byte, "ISO-8859-16"},
    {"WIN1256", family::single_byte, "CP1256"},
    {"WIN1258", family::single_byte, "CP1258"},
    {"WIN866", family::single_byte, "CP866"},
    {"WIN874", family::single_byte, "CP874"},
    {"KOI8R", family::single_byte, "KOI8-R"},
    {"WIN1251", family::single_byte, "CP1251"},
    {"WIN1252", family::single_byte, "CP1252"},
    {"ISO_8859_5", family::single_byte, "ISO-8859-5"},
    {"ISO_8859_6", family::single_byte, "ISO-8859-6"},
    {"ISO_8859_7", family::single_byte, "ISO-8859-7"},
    {"ISO_8859_8", family::single_byte, "ISO-8859-8"},
    {"WIN1250", family::single_byte, "CP1250"},
    {"WIN1253", family::single_byte, "CP1253"},
    {"WIN1254", family::single_byte, "CP1254"},
    {"WIN1255", family::single_byte, "CP1255"},
    {"WIN1257", family::single_byte, "CP1257"},
    {"KOI8U", family::single_byte, "KOI8-U"},
    {"SJIS", family::refused, nullptr},
    {"BIG5", family::refused, nullptr},
    {"GBK", family::refused, nullptr},
    {"UHC", family::refused, nullptr},
    {"GB18030", family::refused, nullptr},
    {"JOHAB", family::refused, nullptr},
    {"SHIFT_JIS_2004", family::refused, nullptr},
};

// pg_encname_tbl: every spelling PostgreSQL accepts, cleaned.
struct alias {
  std::string_view name;
  std::string_view canonical;
};
constexpr alias aliases[] = {
    {"abc", "WIN1258"},        {"alt", "WIN866"},          {"big5", "BIG5"},
    {"euccn", "EUC_CN"},       {"eucjis2004", "EUC_JIS_2004"}, {"eucjp", "EUC_JP"},
    {"euckr", "EUC_KR"},       {"euctw", "EUC_TW"},        {"gb18030", "GB18030"},
    {"gbk", "GBK"},            {"iso88591", "LATIN1"},     {"iso885910", "LATIN6"},
    {"iso885913", "LATIN7"},   {"iso885914", "LATIN8"},    {"iso885915", "LATIN9"},
    {"iso885916", "LATIN10"},  {"iso88592", "LATIN2"},     {"iso88593", "LATIN3"},
    {"iso88594", "LATIN4"},    {"iso88595", "ISO_8859_5"}, {"iso88596", "ISO_8859_6"},
    {"iso88597", "ISO_8859_7"}, {"iso88598", "ISO_8859_8"}, {"iso88599", "LATIN5"},
    {"johab", "JOHAB"},        {"koi8", "KOI8R"},          {"koi8r", "KOI8R"},
    {"koi8u", "KOI8U"},        {"latin1", "LATIN1"},       {"latin10", "LATIN10"},
    {"latin2", "LATIN2"},      {"latin3", "LATIN3"},       {"latin4", "LATIN4"},
    {"latin5", "LATIN5"},      {"latin6", "LATIN6"},       {"latin7", "LATIN7"},
    {"latin8", "LATIN8"},      {"latin9", "LATIN9"},       {"mskanji", "SJIS"},
    {"muleinternal", "MULE_INTERNAL"}, {"shiftjis", "SJIS"}, {"shiftjis2004", "SHIFT_JIS_2004"},
    {"sjis", "SJIS"},          {"sqlascii", "SQL_ASCII"},  {"tcvn", "WIN1258"},
    {"tcvn5712", "WIN1258"},   {"uhc", "UHC"},             {"unicode", "UTF8"},
    {"utf8", "UTF8"},          {"vscii", "WIN1258"},       {"win", "WIN1251"},
    {"win1250", "WIN1250"},    {"win1251", "WIN1251"},     {"win1252", "WIN1252"},
    {"win1253", "WIN1253"},    {"win1254", "WIN1254"},     {"win1255", "WIN1255"},
    {"win1256", "WIN1256"},    {"win1257", "WIN1257"},     {"win1258", "WIN1258"},
    {"win866", "WIN866"},      {"win874", "WIN874"},       {"win932", "SJIS"},
    {"win936", "GBK"},         {"win949", "UHC"},          {"win950", "BIG5"},
    {"windows1250", "WIN1250"}, {"windows1251", "WIN1251"}, {"windows1252", "WIN1252"},
    {"windows1253", "WIN1253"}, {"windows1254", "WIN1254"}, {"windows1255", "WIN1255"},
    {"windows1256", "WIN1256"}, {"windows1257", "WIN1257"}, {"windows1258", "WIN1258"},
    {"windows866", "WIN866"},  {"windows874", "WIN874"},   {"windows932", "SJIS"},
    {"windows936", "GBK"},     {"windows949", "UHC"},      {"windows950", "BIG5"},
};

using table = std::array<uint32_t, 256>;

// One byte through iconv with a fresh state. A byte that maps to nothing, or
// (defensively) a high byte that would map to ASCII, has no character here.
uint32_t code_point_of(const char* iconv_name, uint8_t byte) {
  if (byte < 0x80) return byte;
  iconv_t cd = iconv_open("UTF-32BE", iconv_name);
  if (cd == reinterpret_cast<iconv_t>(-1)) return no_code_point;
  char in[1] = {static_cast<char>(byte)};
  unsigned char out[16] = {};
  char* inp = in;
  char* outp = reinterpret_cast<char*>(out);
  size_t in_left = 1, out_left = sizeof out;
  size_t r = iconv(cd, &inp, &in_left, &outp, &out_left);
  // Stateful decoders (CP1258 waits for a combining mark) release on flush.
  if (r != static_cast<size_t>(-1)) r = iconv(cd, nullptr, nullptr, &outp, &out_left);
  iconv_close(cd);
  if (r == static_cast<size_t>(-1) || in_left != 0 || sizeof out - out_left != 4) return no_code_point;
  const uint32_t cp = (uint32_t{out[0]} << 24) | (uint32_t{out[1]} << 16) | (uint32_t{out[2]} << 8) | out[3];
  return cp < 0x80 ? no_code_point : cp;
}

const table* table_for(const known_encoding& e) {
  // Built once per encoding, on first use, from glibc's tables (PostgreSQL's
  // own are generated from the same Unicode mapping files).
  static std::mutex mu;
  static std::unique_ptr<table> tables[std::size(encodings)];
  const size_t i = static_cast<size_t>(&e - encodings);
  std::lock_guard lock(mu);
  if (tables[i] == nullptr) {
    auto t = std::make_unique<table>();
    for (unsigned b = 0; b < 256; ++b) (*t)[b] = code_point_of(e.iconv_name, static_cast<uint8_t>(b));
    tables[i] = std::move(t);
  }
  return tables[i].get();
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

}  // namespace

std::string clean_encoding_name(std::string_view name) {
  std::string out;
  for (char c : name)
    if (std::isalnum(static_cast<unsigned char>(c))) out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return out;
}

std::span<const std::string_view> postgres_client_encodings() {
  static const auto names = [] {
    std::array<std::string_view, std::size(encodings)> n{};
    for (size_t i = 0; i < std::size(encodings); ++i) n[i] = encodings[i].canonical;
    return n;
  }();
  return names;
}

client_encoding resolve_client_encoding(std::string_view requested) {
  client_encoding out;
  if (requested.empty()) {
    out.how = client_encoding::kind::utf8;
    out.name = "UTF8";
    return out;
  }
  const std::string clean = clean_encoding_name(requested);
  const alias* a = std::find_if(std::begin(aliases), std::end(aliases),
                                [&](const alias& x) { return x.name == clean; });
  if (a == std::end(aliases)) return out;
  const known_encoding* e = std::find_if(std::begin(encodings), std::end(encodings),
                                         [&](const known_encoding& x) { return x.canonical == a->canonical; });
  if (e == std::end(encodings)) return out;
  switch (e->fam) {
    case family::utf8:
    case family::sql_ascii:
      // SQL_ASCII from a client means "no conversion": the server then only
      // checks the bytes against the database's encoding. Reading them as
      // UTF-8, upstream too, is the one reading both sides can share.
      out.how = client_encoding::kind::utf8;
      out.name = "UTF8";
      return out;
    case family::single_byte:
      out.how = client_encoding::kind::single_byte;
      out.name = std::string(e->canonical);
      out.to_unicode = table_for(*e);
      return out;
    case family::refused:
      out.how = client_encoding::kind::refused;
      out.name = std::string(e->canonical);
      return out;
  }
  return out;
}

bool transcribe_to_utf8(const client_encoding& enc, std::string_view text, std::string& out, uint8_t& bad_byte) {
  out.clear();
  if (enc.how != client_encoding::kind::single_byte || enc.to_unicode == nullptr) {
    out.assign(text);
    return true;
  }
  out.reserve(text.size() + text.size() / 2);
  for (char c : text) {
    const uint8_t b = static_cast<uint8_t>(c);
    const uint32_t cp = (*enc.to_unicode)[b];
    if (cp == no_code_point) {
      bad_byte = b;
      return false;
    }
    append_utf8(out, cp);
  }
  return true;
}

bool is_ascii(std::string_view text) {
  for (char c : text)
    if (static_cast<uint8_t>(c) >= 0x80) return false;
  return true;
}

}  // namespace agentgate::pg
