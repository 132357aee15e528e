#include "core/identity/https_fetch.h"

#include <curl/curl.h>

#include <memory>
#include <mutex>

namespace agentgate::identity {
namespace {

struct transfer {
  std::string body;
  size_t body_bytes_max = 0;
  bool too_large = false;
  const std::atomic<bool>* cancel = nullptr;
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<transfer*>(user);
  size_t bytes = size * count;
  if (bytes > t->body_bytes_max - t->body.size()) {
    t->too_large = true;
    return 0;  // makes curl fail the transfer with CURLE_WRITE_ERROR
  }
  t->body.append(data, bytes);
  return bytes;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<transfer*>(user);
  return t->cancel != nullptr && t->cancel->load(std::memory_order_relaxed) ? 1 : 0;
}

struct curl_deleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};

status io_error(std::string message) { return status(errc::io, std::move(message)); }

}  // namespace

result<std::string> https_get(const std::string& url, const https_fetch_options& options) {
  // curl_global_init is not thread-safe in every build; once per process.
  static std::once_flag init_once;
  static CURLcode init_result = CURLE_OK;
  std::call_once(init_once, [] { init_result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (init_result != CURLE_OK) return io_error("libcurl failed to initialize");

  std::unique_ptr<CURL, curl_deleter> curl(curl_easy_init());
  if (!curl) return io_error("libcurl failed to initialize");
  transfer t;
  t.body_bytes_max = options.body_bytes_max;
  t.cancel = options.cancel;
  char error_text[CURL_ERROR_SIZE] = {};

  CURL* c = curl.get();
  bool ok = curl_easy_setopt(c, CURLOPT_URL, url.c_str()) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https") == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_MAXREDIRS, static_cast<long>(options.redirects_max)) ==
                CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_SSLVERSION, CURL_SSLVERSION_TLSv1_2) == CURLE_OK &&
            // Signals are the gateway's; curl's timeouts must not use them.
            curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                             static_cast<long>(options.connect_timeout_ms)) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(options.total_timeout_ms)) ==
                CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE,
                             static_cast<curl_off_t>(options.body_bytes_max)) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_WRITEDATA, &t) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_text) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_USERAGENT, "agentgate") == CURLE_OK;
  if (ok && !options.ca_file.empty()) {
    // The configured CA alone: the system's directory of CAs is switched off
    // too, or any public CA could vouch for the issuer's host.
    ok = curl_easy_setopt(c, CURLOPT_CAINFO, options.ca_file.c_str()) == CURLE_OK &&
         curl_easy_setopt(c, CURLOPT_CAPATH, nullptr) == CURLE_OK;
  }
  if (!ok) return io_error("libcurl refused an option");

  CURLcode rc = curl_easy_perform(c);
  if (t.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    return io_error("response larger than " + std::to_string(options.body_bytes_max) + " bytes");
  }
  if (rc == CURLE_ABORTED_BY_CALLBACK) return io_error("cancelled");
  if (rc != CURLE_OK) {
    return io_error(std::string(curl_easy_strerror(rc)) + (error_text[0] ? ": " : "") + error_text);
  }
  long http_status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http_status);
  if (http_status != 200) return io_error("HTTP status " + std::to_string(http_status));
  return std::move(t.body);
}

}  // namespace agentgate::identity
