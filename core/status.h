#pragma once
// Result types for the data plane, which never throws: a status carries an
// error code and a human-readable message; result<T> carries a value or one.

#include <string>
#include <utility>
#include <variant>

namespace agentgate {

enum class errc {
  ok = 0,
  invalid_argument,  // bad input from a user (config, CLI)
  protocol,          // a peer broke its wire protocol
  io,                // a system call failed
  auth,              // authentication failed or was refused
  unsupported,       // something the gateway does not (yet) do
  limit,             // a configured bound was exceeded
  timeout,
  not_found,         // no such object (a session, a file)
};

class [[nodiscard]] status {
 public:
  status() = default;
  status(errc code, std::string message) : code_(code), message_(std::move(message)) {}

  static status ok() { return {}; }

  bool is_ok() const { return code_ == errc::ok; }
  explicit operator bool() const { return is_ok(); }
  errc code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  errc code_ = errc::ok;
  std::string message_;
};

template <typename T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  result(status error) : v_(std::move(error)) {}     // NOLINT: implicit by design

  bool is_ok() const { return v_.index() == 0; }
  explicit operator bool() const { return is_ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const status& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, status> v_;
};

}  // namespace agentgate
