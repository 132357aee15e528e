#pragma once
// Which client encodings the gateway lets a session use, and how the gateway
// reads SQL text in them exactly as the server will (security finding #1 of
// issue 10: with client_encoding=SJIS the bytes 0x95 0x5C are one character
// to the server and "?\" to a UTF-8 reader, so a quote the gateway saw as
// escaped closes the string upstream).
//
// The rule: the server must read every command with the same characters the
// classifier read. So a session runs in exactly one of these encodings, fixed
// at login and forced on the upstream in the startup packet:
//
//   UTF8        what the client asked for, or SQL_ASCII, or nothing at all
//               (the server would otherwise pick the database's encoding).
//   single-byte LATIN1..10, ISO_8859_5..8, WIN1250..1258, WIN866, WIN874,
//               KOI8R, KOI8U: every byte is one character and bytes below
//               0x80 are ASCII, so statement boundaries, quotes and escapes
//               sit where a byte reader sees them. The classifier is given a
//               UTF-8 transcription so that names compare as the server's do.
//
// Every other encoding (SJIS, BIG5, GBK, UHC, GB18030, JOHAB and
// SHIFT_JIS_2004 put ASCII bytes inside multibyte characters; the EUC family
// and MULE_INTERNAL are not transcribed here) is refused at login with a
// clear error. Names are resolved as PostgreSQL's pg_char_to_encoding() does:
// case and every non-alphanumeric character ignored.
//
// The session then watches the upstream's ParameterStatus: if client_encoding
// or standard_conforming_strings ever leaves the value fixed here, by
// whatever route, the session ends (see session.cc).

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace agentgate::pg {

struct client_encoding {
  enum class kind : uint8_t {
    utf8,         // read as is
    single_byte,  // read through to_unicode
    refused,      // a real PostgreSQL encoding the gateway does not read
    unknown,      // not an encoding name PostgreSQL knows
  };
  kind how = kind::unknown;
  std::string name;  // PostgreSQL's canonical name ("UTF8", "LATIN1", ...); empty when unknown
  // single_byte only: the code point of each byte, 0xffffffff where the
  // encoding defines none (the server refuses such a byte; so does the gateway).
  const std::array<uint32_t, 256>* to_unicode = nullptr;
};

inline constexpr uint32_t no_code_point = 0xffffffffu;

// The encoding a startup packet's client_encoding value names. An empty
// value (not sent) is UTF8.
client_encoding resolve_client_encoding(std::string_view requested);

// PostgreSQL's name normalisation: lowercase, alphanumerics only.
std::string clean_encoding_name(std::string_view name);

// Every canonical client encoding name PostgreSQL 15 accepts (for tests and docs).
std::span<const std::string_view> postgres_client_encodings();

// `text` in the session's encoding as UTF-8, into `out` (cleared first).
// False when a byte has no character in the encoding: `bad_byte` is set to
// it. For utf8 sessions `out` is a plain copy: callers avoid the call.
bool transcribe_to_utf8(const client_encoding& enc, std::string_view text, std::string& out, uint8_t& bad_byte);

// True when every byte is below 0x80: such text reads the same in every
// encoding PostgreSQL accepts from a client.
bool is_ascii(std::string_view text);

}  // namespace agentgate::pg
