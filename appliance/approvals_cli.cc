#include "appliance/approvals_cli.h"

#include <functional>

#include <curl/curl.h>
#include <simdjson.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <sstream>
#include <string_view>
#include <vector>

#include "appliance/admin_server.h"
#include "core/status.h"
#include "core/text.h"

namespace agentgate {
namespace {

constexpr char default_admin_url[] = "http://127.0.0.1:8081";
constexpr size_t response_bytes_max = 64u << 20;  // a full list of long commands fits
constexpr size_t token_bytes_max = 64 * 1024;
constexpr size_t id_bytes_max = 128;              // as the API's Id parameter
constexpr size_t table_command_chars_max = 60;
constexpr size_t table_cell_chars_max = 32;

constexpr int exit_ok = 0;
constexpr int exit_refused = 1;
constexpr int exit_usage = 2;

struct http_reply {
  long status = 0;
  std::string body;
};

struct body_sink {
  std::string body;
  bool too_large = false;
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<body_sink*>(user);
  const size_t bytes = size * count;
  if (bytes > response_bytes_max - sink->body.size()) {
    sink->too_large = true;
    return 0;
  }
  sink->body.append(data, bytes);
  return bytes;
}

struct curl_deleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct slist_deleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

result<http_reply> http_call(const std::string& method, const std::string& url, const std::string& token,
                             const std::string& body, uint32_t timeout_ms) {
  static const bool init_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  if (!init_ok) return status(errc::io, "libcurl failed to initialize");
  std::unique_ptr<CURL, curl_deleter> curl(curl_easy_init());
  if (!curl) return status(errc::io, "libcurl failed to initialize");
  const std::string auth = "Authorization: Bearer " + token;
  curl_slist* list = curl_slist_append(nullptr, auth.c_str());
  if (list != nullptr && !body.empty()) list = curl_slist_append(list, "Content-Type: application/json");
  std::unique_ptr<curl_slist, slist_deleter> headers(list);
  if (!headers) return status(errc::io, "libcurl failed to initialize");
  body_sink sink;
  CURL* c = curl.get();
  bool ok = curl_easy_setopt(c, CURLOPT_URL, url.c_str()) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
            // A redirect would carry the bearer somewhere the operator did not name.
            curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms)) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get()) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_USERAGENT, "agentgate-cli") == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink) == CURLE_OK;
  if (ok && method == "POST") {
    ok = curl_easy_setopt(c, CURLOPT_POST, 1L) == CURLE_OK &&
         curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str()) == CURLE_OK &&
         curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size())) == CURLE_OK;
  }
  if (!ok) return status(errc::io, "libcurl refused an option");
  const CURLcode rc = curl_easy_perform(c);
  if (sink.too_large) return status(errc::limit, "response larger than " + std::to_string(response_bytes_max) + " bytes");
  if (rc != CURLE_OK) return status(errc::io, curl_easy_strerror(rc));
  http_reply reply;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  reply.body = std::move(sink.body);
  return reply;
}

std::string_view trim(std::string_view s) {
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  return s;
}

result<std::string> read_token_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return status(errc::invalid_argument, "cannot read --token-file " + path);
  std::string text(token_bytes_max + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > token_bytes_max) return status(errc::invalid_argument, "--token-file " + path + " is too large");
  std::string token(trim(text));
  if (token.empty()) return status(errc::invalid_argument, "--token-file " + path + " is empty");
  return token;
}

std::string field(simdjson::dom::element e, std::string_view key) {
  std::string_view v;
  if (e[key].get_string().get(v) == simdjson::SUCCESS) return std::string(v);
  return {};
}

std::string who(simdjson::dom::element e, std::string_view key) {
  simdjson::dom::element person;
  if (e[key].get(person) != simdjson::SUCCESS || !person.is_object()) return {};
  std::string email = field(person, "email");
  return email.empty() ? field(person, "subject") : email;
}

int64_t parse_time(const std::string& rfc3339) {
  tm parts{};
  const char* end = strptime(rfc3339.c_str(), "%Y-%m-%dT%H:%M:%SZ", &parts);
  if (end == nullptr || *end != '\0') return 0;
  return static_cast<int64_t>(timegm(&parts));
}

std::string duration_text(int64_t s) {
  if (s <= 0) return "now";
  char buf[32];
  if (s < 60) snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  else if (s < 3600) snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  return buf;
}

void print_table(std::FILE* out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], display_width(row[i]));
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - display_width(row[i]) + 2, ' ');
    }
    fprintf(out, "%s\n", line.c_str());
  }
}

struct context {
  const approvals_cli_options& o;
  std::string url;
  std::string token;
};

int usage(const approvals_cli_options& o, const std::string& message) {
  fprintf(o.err, "agentgate approvals: %s\n", message.c_str());
  return exit_usage;
}

// The server's {"error": "..."}, or a short excerpt of whatever it sent.
int refused(const context& cx, const http_reply& reply) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  std::string message;
  if (parser.parse(reply.body).get(root) == simdjson::SUCCESS) message = field(root, "error");
  if (message.empty()) message = cut_to_width(terminal_safe(trim(reply.body)), 200);
  fprintf(cx.o.err, "agentgate approvals: HTTP %ld: %s\n", reply.status, terminal_safe(message).c_str());
  return exit_refused;
}

result<http_reply> call(const context& cx, const std::string& method, const std::string& path,
                        const std::string& body) {
  result<http_reply> reply = http_call(method, cx.url + path, cx.token, body, cx.o.timeout_ms);
  if (!reply)
    fprintf(cx.o.err, "agentgate approvals: %s: %s\n", cx.url.c_str(), reply.error().message().c_str());
  return reply;
}

std::string escaped_id(const std::string& id) {
  std::string out;
  char* e = curl_easy_escape(nullptr, id.c_str(), static_cast<int>(id.size()));
  if (e != nullptr) {
    out = e;
    curl_free(e);
  }
  return out;
}

int run_list(const context& cx) {
  result<http_reply> reply =
      call(cx, "GET", cx.o.all ? "/v1/approvals?state=all&limit=1000" : "/v1/approvals?limit=1000", "");
  if (!reply) return exit_refused;
  if (reply->status != 200) return refused(cx, *reply);
  if (cx.o.json) {
    fprintf(cx.o.out, "%s", reply->body.c_str());
    return exit_ok;
  }
  simdjson::dom::parser parser;
  simdjson::dom::array items;
  if (parser.parse(reply->body)["approvals"].get_array().get(items) != simdjson::SUCCESS) {
    fprintf(cx.o.err, "agentgate approvals: the server's answer is not an approval list\n");
    return exit_refused;
  }
  if (items.size() == 0) {
    fprintf(cx.o.out, cx.o.all ? "no approval requests\n" : "no pending approval requests\n");
    return exit_ok;
  }
  const int64_t now = static_cast<int64_t>(time(nullptr));
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ID", "STATE", "EXPIRES", "REQUESTER", "TARGET", "RULE", "APPROVERS", "DECIDED BY", "COMMAND"});
  for (simdjson::dom::element a : items) {
    const std::string state = field(a, "state");
    std::string expires = "-";
    if (state == "pending") expires = "in " + duration_text(parse_time(field(a, "expires_at")) - now);
    std::string approvers;
    simdjson::dom::array groups;
    if (a["approvers"].get_array().get(groups) == simdjson::SUCCESS) {
      for (simdjson::dom::element g : groups) {
        std::string_view name;
        if (g.get_string().get(name) != simdjson::SUCCESS) continue;
        if (!approvers.empty()) approvers += ",";
        approvers += name;
      }
    }
    std::string decided_by = who(a, "decided_by");
    rows.push_back({terminal_safe(field(a, "id")), terminal_safe(state), expires,
                    cut_to_width(terminal_safe(who(a, "requester")), table_cell_chars_max),
                    cut_to_width(terminal_safe(field(a, "target")), table_cell_chars_max),
                    cut_to_width(terminal_safe(field(a, "rule")), table_cell_chars_max),
                    cut_to_width(terminal_safe(approvers), table_cell_chars_max),
                    decided_by.empty() ? "-" : cut_to_width(terminal_safe(decided_by), table_cell_chars_max),
                    cut_to_width(terminal_safe(field(a, "command")), table_command_chars_max)});
  }
  print_table(cx.o.out, rows);
  return exit_ok;
}

void print_approval(std::FILE* out, simdjson::dom::element a) {
  auto line = [out](const char* name, const std::string& value) {
    if (!value.empty()) fprintf(out, "%-11s %s\n", name, terminal_safe(value).c_str());
  };
  line("id:", field(a, "id"));
  line("state:", field(a, "state"));
  line("requester:", who(a, "requester"));
  line("target:", field(a, "target"));
  line("rule:", field(a, "rule"));
  line("message:", field(a, "rule_message"));
  line("requested:", field(a, "requested_at"));
  line("expires:", field(a, "expires_at"));
  line("session:", field(a, "session"));
  line("client:", field(a, "client"));
  line("prompt:", field(a, "prompt_id"));
  line("decided by:", who(a, "decided_by"));
  line("decided:", field(a, "decided_at"));
  line("verdict:", field(a, "verdict"));
  // The command last and whole, lines kept: it is what the approver judges.
  fprintf(out, "command:\n");
  std::string command = field(a, "command");
  size_t start = 0;
  while (start <= command.size()) {
    size_t end = command.find('\n', start);
    if (end == std::string::npos) end = command.size();
    fprintf(out, "  %s\n", terminal_safe(std::string_view(command).substr(start, end - start)).c_str());
    start = end + 1;
  }
}

// Prints a reply holding one approval: raw with --json, else through print.
int print_approval_reply(const context& cx, const result<http_reply>& reply,
                         const std::function<void(simdjson::dom::element)>& print) {
  if (!reply) return exit_refused;
  if (reply->status != 200) return refused(cx, *reply);
  if (cx.o.json) {
    fprintf(cx.o.out, "%s", reply->body.c_str());
    return exit_ok;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element a;
  if (parser.parse(reply->body).get(a) != simdjson::SUCCESS || !a.is_object()) {
    fprintf(cx.o.err, "agentgate approvals: the server's answer is not an approval\n");
    return exit_refused;
  }
  print(a);
  return exit_ok;
}

int run_show(const context& cx) {
  return print_approval_reply(cx, call(cx, "GET", "/v1/approvals/" + escaped_id(cx.o.id), ""),
                              [&](simdjson::dom::element a) { print_approval(cx.o.out, a); });
}

int run_decide(const context& cx, bool approve) {
  std::string body;
  if (!cx.o.reason.empty()) body = "{\"reason\": " + json_quote(cx.o.reason) + "}";
  result<http_reply> reply =
      call(cx, "POST", "/v1/approvals/" + escaped_id(cx.o.id) + (approve ? "/approve" : "/deny"), body);
  return print_approval_reply(cx, reply, [&](simdjson::dom::element a) {
  fprintf(cx.o.out, "%s %s: %s wanted to run %s on %s (rule %s)\n", terminal_safe(field(a, "state")).c_str(),
          terminal_safe(field(a, "id")).c_str(), terminal_safe(who(a, "requester")).c_str(),
          cut_to_width(terminal_safe(field(a, "command")), table_command_chars_max).c_str(),
          terminal_safe(field(a, "target")).c_str(), terminal_safe(field(a, "rule")).c_str());
  });
}

}  // namespace

int run_approvals_cli(const approvals_cli_options& o) {
  const std::string& a = o.action;
  const bool decides = a == "approve" || a == "deny";
  if (a != "list" && a != "show" && !decides)
    return usage(o, "unknown action " + json_quote(a) + ": expected list, show, approve or deny");
  if (a == "list" && !o.id.empty()) return usage(o, "list takes no ID");
  if (a != "list" && o.id.empty()) return usage(o, a + " needs an approval ID");
  if (o.id.size() > id_bytes_max) return usage(o, "approval ID longer than " + std::to_string(id_bytes_max));
  if (!decides && !o.reason.empty()) return usage(o, "--reason is for approve and deny");
  if (a != "list" && o.all) return usage(o, "--all is for list");
  if (!o.token.empty() && !o.token_file.empty()) return usage(o, "give --token or --token-file, not both");

  context cx{o, o.admin_url, {}};
  if (cx.url.empty()) {
    const char* env = getenv("AGENTGATE_ADMIN_URL");
    cx.url = env != nullptr && *env != '\0' ? env : default_admin_url;
  }
  while (!cx.url.empty() && cx.url.back() == '/') cx.url.pop_back();
  if (!cx.url.starts_with("http://") && !cx.url.starts_with("https://"))
    return usage(o, "admin URL must start with http:// or https://, got " + json_quote(cx.url));

  const char* token_env = decides ? "AGENTGATE_TOKEN" : "AGENTGATE_ADMIN_TOKEN";
  if (!o.token.empty()) {
    cx.token = std::string(trim(o.token));
  } else if (!o.token_file.empty()) {
    result<std::string> t = read_token_file(o.token_file);
    if (!t) return usage(o, t.error().message());
    cx.token = std::move(*t);
  } else if (const char* env = getenv(token_env); env != nullptr) {
    cx.token = std::string(trim(env));
  }
  if (cx.token.empty())
    return usage(o, std::string(decides ? "no approver JWT" : "no admin token") +
                        ": give --token or --token-file, or set " + token_env);
  for (char c : cx.token)
    if (static_cast<unsigned char>(c) < 0x21 || c == 0x7f)
      return usage(o, "the token contains spaces or control characters");

  if (a == "list") return run_list(cx);
  if (a == "show") return run_show(cx);
  return run_decide(cx, a == "approve");
}

}  // namespace agentgate
