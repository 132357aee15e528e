#pragma once
// Checks run on detector candidates after Hyperscan has found their shape.
// Each is cheap and allocation-free; none is ever run on a whole value, only
// on the few bytes a match points at. See docs/masking.md.

#include <cstdint>
#include <string_view>

namespace agentgate::masking {

// Luhn (ISO/IEC 7812-1) over ASCII digits only. False for an empty string.
bool luhn_valid(std::string_view digits);

// Card numbers: 13 to 19 digits with a first digit of 2-6 (Mastercard 2-series
// and 5, Amex/Diners/JCB 3, Visa 4, Discover/UnionPay/Maestro 6). Issuer
// ranges 0, 1, 7, 8 and 9 (airlines, petroleum, telecom, national) are not
// payment cards a gateway should mask, and refusing them halves false
// positives on long numeric ids. `digits` holds ASCII digits only.
bool plausible_card(std::string_view digits);

// The IBAN length registered for a country (ISO 13616 registry), 0 if the
// country has no IBAN.
unsigned iban_length(char c0, char c1);

// ISO 13616 check: country code, two check digits, BBAN; compact (no spaces),
// upper case letters and digits only, length as registered. mod-97 == 1.
bool iban_valid(std::string_view compact);

// US SSN issuance rules: area 000, 666 and 900-999, group 00 and serial 0000
// are never issued.
bool ssn_valid(unsigned area, unsigned group, unsigned serial);

// Dotted quad, each part 1-3 digits and at most 255.
bool ipv4_valid(std::string_view s);

// Any textual IPv6 address inet_pton accepts (RFC 4291 forms, IPv4 suffix).
bool ipv6_valid(std::string_view s);

}  // namespace agentgate::masking
