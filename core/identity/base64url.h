#pragma once
// base64url without padding (RFC 7515 §2, RFC 4648 §5), as JOSE writes it.
// The decoder is strict on purpose: padding, whitespace, the standard
// alphabet's '+' and '/', an impossible length, or set bits past the last
// byte are all refused, so one token has exactly one spelling and a cache or
// a log never sees two spellings of the same signature.

#include <string>
#include <string_view>

namespace agentgate::identity {

// Appends the encoding of bytes to out.
void base64url_encode(std::string_view bytes, std::string& out);
std::string base64url_encode(std::string_view bytes);

// Replaces out with the decoded bytes. False (out unspecified) on any
// deviation from the canonical unpadded encoding.
[[nodiscard]] bool base64url_decode(std::string_view text, std::string& out);

}  // namespace agentgate::identity
