#include "appliance/admin_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace agentgate {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr char token[] = "t0ken-for-tests-0123456789abcdef";

struct response {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// A blocking test client over a real socket. Reads are bounded by a receive
// timeout so a broken server fails the test instead of hanging it.
class client {
 public:
  explicit client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    timeval tv{5, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~client() {
    if (fd_ >= 0) ::close(fd_);
  }
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // One response; false on EOF, timeout or garbage. 1xx responses are
  // returned like any other.
  bool read(response& out) {
    out = response{};
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return false;
    std::string head = buf_.substr(0, end);
    buf_.erase(0, end + 4);
    if (head.compare(0, 9, "HTTP/1.1 ") != 0) return false;
    out.status = std::stoi(head.substr(9, 3));
    size_t pos = head.find("\r\n");
    while (pos != std::string::npos) {
      size_t next = head.find("\r\n", pos + 2);
      std::string line =
          head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
      size_t colon = line.find(':');
      if (colon == std::string::npos) return false;
      std::string name = line.substr(0, colon);
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      size_t v = line.find_first_not_of(' ', colon + 1);
      out.headers[name] = v == std::string::npos ? "" : line.substr(v);
      pos = next;
    }
    size_t length =
        out.headers.count("content-length") ? std::stoul(out.header("content-length")) : 0;
    if (head_only_) length = 0;
    while (buf_.size() < length)
      if (!fill()) return false;
    out.body = buf_.substr(0, length);
    buf_.erase(0, length);
    return true;
  }

  response request(std::string_view raw) {
    response r;
    EXPECT_TRUE(send(raw));
    EXPECT_TRUE(read(r));
    return r;
  }

  // True when the server closed the connection (EOF or reset) with nothing
  // more to read.
  bool closed_by_peer() {
    if (!buf_.empty()) return false;
    char c;
    ssize_t n = ::recv(fd_, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

  void head_only(bool on) { head_only_ = on; }

 private:
  bool fill() {
    char chunk[16384];
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  bool head_only_ = false;
  std::string buf_;
};

std::string get(std::string_view path, std::string_view extra_headers = "") {
  return "GET " + std::string(path) + " HTTP/1.1\r\nHost: test\r\n" + std::string(extra_headers) +
         "\r\n";
}

std::string authed_get(std::string_view path) {
  return get(path, "Authorization: Bearer " + std::string(token) + "\r\n");
}

std::string put(std::string_view path, std::string_view body) {
  return "PUT " + std::string(path) + " HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer " +
         std::string(token) +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + std::string(body);
}

class AdminServerTest : public ::testing::Test {
 protected:
  void start(admin_server_options o = {}) {
    o.listen = "127.0.0.1:0";
    o.admin_token = token;
    server_ = std::make_unique<admin_server>(o);
    ASSERT_TRUE(server_->route("GET", "/healthz", route_auth::none, [](const http_request&) {
      return http_response::json(200, "{\"status\": \"ok\"}");
    }));
    ASSERT_TRUE(server_->route("GET", "/v1/policy", [](const http_request&) {
      return http_response::json(200, "{\"version\": 1}");
    }));
    ASSERT_TRUE(server_->route("PUT", "/v1/policy", [](const http_request& req) {
      return http_response::json(200, "{\"bytes\": " + std::to_string(req.body.size()) + "}");
    }));
    ASSERT_TRUE(server_->route("GET", "/v1/sessions", [](const http_request& req) {
      std::string out;
      for (const auto& [k, v] : req.query_params) out += k + "=" + v + ";";
      return http_response::text(200, out);
    }));
    ASSERT_TRUE(server_->route("GET", "/v1/sessions/{id}/events", [](const http_request& req) {
      return http_response::text(200, "events of " + *req.param("id"));
    }));
    ASSERT_TRUE(server_->route(
        "POST", "/v1/approvals/{id}/approve", route_auth::custom, [](const http_request& req) {
          if (req.bearer_token != "approver-jwt")
            return http_response::unauthorized("not an approver");
          return http_response::json(200, "{\"approved\": " + json_quote(*req.param("id")) +
                                              ", \"body\": " + json_quote(req.body) + "}");
        }));
    ASSERT_TRUE(server_->route("GET", "/v1/approvals/pending", [](const http_request&) {
      return http_response::text(200, "literal route");
    }));
    ASSERT_TRUE(server_->route("GET", "/v1/approvals/{id}", [](const http_request& req) {
      return http_response::text(200, "approval " + *req.param("id"));
    }));
    ASSERT_TRUE(server_->route("GET", "/slow", route_auth::none, [](const http_request&) {
      std::this_thread::sleep_for(1ms);  // handlers run one at a time
      return http_response::text(200, "slow");
    }));
    ASSERT_TRUE(
        server_->route("GET", "/echo-headers", route_auth::none, [](const http_request& req) {
          const std::string* ua = req.header("USER-agent");
          http_response r = http_response::text(200, ua ? *ua : "-");
          r.headers.push_back({"X-Good", "yes"});
          r.headers.push_back({"X-Bad", "a\r\nSet-Cookie: evil=1"});
          r.headers.push_back({"Content-Length", "0"});
          return r;
        }));
    ASSERT_TRUE(server_->route("GET", "/openapi.yaml", route_auth::none,
                               serve_document("application/yaml", openapi_document())));
    status s = server_->start();
    ASSERT_TRUE(s) << s.message();
    ASSERT_NE(server_->port(), 0);
  }

  uint16_t port() const { return server_->port(); }

  std::unique_ptr<admin_server> server_;
};

TEST_F(AdminServerTest, HealthzNeedsNoToken) {
  start();
  client c(port());
  ASSERT_TRUE(c.connected());
  response r = c.request(get("/healthz"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.body, "{\"status\": \"ok\"}");
  EXPECT_EQ(server_->address(), "127.0.0.1:" + std::to_string(port()));
}

TEST_F(AdminServerTest, AdminRoutesNeedTheToken) {
  start();
  client c(port());
  response r = c.request(get("/v1/policy"));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.header("www-authenticate").rfind("Bearer", 0), 0u) << r.header("www-authenticate");
  EXPECT_EQ(r.body, "{\"error\": \"a bearer token is required\"}\n");

  for (std::string wrong :
       {std::string("wrong"), std::string(token) + "x", std::string(token).substr(0, 10),
        std::string(token, sizeof token - 2) + "g"}) {
    r = c.request(get("/v1/policy", "Authorization: Bearer " + wrong + "\r\n"));
    EXPECT_EQ(r.status, 401) << wrong;
    EXPECT_NE(r.header("www-authenticate").find("invalid_token"), std::string::npos);
    EXPECT_NE(r.body.find("\"error\""), std::string::npos);
  }
  // Another scheme is no bearer at all.
  r = c.request(get("/v1/policy", "Authorization: Basic dXNlcjpwYXNz\r\n"));
  EXPECT_EQ(r.status, 401);

  r = c.request(authed_get("/v1/policy"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"version\": 1}");
  // Scheme names are case-insensitive.
  r = c.request(get("/v1/policy", "authorization: bEaReR   " + std::string(token) + "  \r\n"));
  EXPECT_EQ(r.status, 200);
  EXPECT_GE(server_->stats().unauthorized, 5u);
}

TEST_F(AdminServerTest, RepeatedAuthorizationIsRefused) {
  start();
  client c(port());
  std::string auth = "Authorization: Bearer " + std::string(token) + "\r\n";
  response r = c.request(get("/v1/policy", auth + auth));
  EXPECT_EQ(r.status, 400);
}

TEST_F(AdminServerTest, CustomAuthLeavesTheBearerToTheHandler) {
  start();
  client c(port());
  std::string req = "POST /v1/approvals/a-1/approve HTTP/1.1\r\nHost: x\r\n";
  response r = c.request(req + "Content-Length: 0\r\n\r\n");
  EXPECT_EQ(r.status, 401);  // no bearer at all: refused before the handler
  EXPECT_FALSE(r.header("www-authenticate").empty());
  r = c.request(req + "Authorization: Bearer someone-else\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body, "{\"error\": \"not an approver\"}\n");
  std::string body = "{\"reason\": \"ok\"}";
  r = c.request(req + "Authorization: Bearer approver-jwt\r\nContent-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"approved\": \"a-1\", \"body\": \"{\\\"reason\\\": \\\"ok\\\"}\"}");
}

TEST_F(AdminServerTest, UnknownPathIs404AndWrongMethodIs405) {
  start();
  client c(port());
  response r = c.request(authed_get("/v1/nope"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.body, "{\"error\": \"no such path: /v1/nope\"}\n");

  r = c.request("DELETE /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                std::string(token) + "\r\n\r\n");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.header("allow"), "GET, HEAD, PUT");
  EXPECT_NE(r.body.find("\"error\""), std::string::npos);

  // A trailing slash is another path; the connection survives all of it.
  r = c.request(authed_get("/v1/policy/"));
  EXPECT_EQ(r.status, 404);
  r = c.request(authed_get("/v1/policy"));
  EXPECT_EQ(r.status, 200);
}

TEST_F(AdminServerTest, PathParameters) {
  start();
  client c(port());
  response r = c.request(authed_get("/v1/sessions/s-42/events"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "events of s-42");
  r = c.request(authed_get("/v1/sessions/a%2Fb%20c/events"));
  EXPECT_EQ(r.body, "events of a/b c");
  r = c.request(authed_get("/v1/sessions//events"));
  EXPECT_EQ(r.status, 404);  // an empty segment is no id
  r = c.request(authed_get("/v1/sessions/%zz/events"));
  EXPECT_EQ(r.status, 400);
  r = c.request(authed_get("/v1/sessions/a%0Ab/events"));
  EXPECT_EQ(r.status, 400);  // decoded control characters are refused
  // The literal route wins over the parameter one, whatever the order.
  r = c.request(authed_get("/v1/approvals/pending"));
  EXPECT_EQ(r.body, "literal route");
  r = c.request(authed_get("/v1/approvals/ap-7"));
  EXPECT_EQ(r.body, "approval ap-7");
}

TEST_F(AdminServerTest, QueryStrings) {
  start();
  client c(port());
  response r = c.request(authed_get("/v1/sessions?limit=10&target=pg%20main&flag&q=a+b&&x="));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "limit=10;target=pg main;flag=;q=a b;x=;");
  r = c.request(authed_get("/v1/sessions?bad=%G1"));
  EXPECT_EQ(r.status, 400);
  // Absolute-form request targets route by their path.
  r = c.request(authed_get("http://gw.example:8081/v1/sessions?a=1"));
  EXPECT_EQ(r.body, "a=1;");
}

TEST_F(AdminServerTest, HeadersAreCaseInsensitiveAndResponseHeadersSanitized) {
  start();
  client c(port());
  response r = c.request(get("/echo-headers", "user-AGENT: curl/8\r\n"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "curl/8");
  EXPECT_EQ(r.header("x-good"), "yes");
  EXPECT_EQ(r.header("x-bad"), "");
  EXPECT_EQ(r.header("set-cookie"), "");
  EXPECT_EQ(r.header("content-length"), "6");
}

TEST_F(AdminServerTest, BodyUpToTheLimitIsAcceptedAndOverItIs413) {
  admin_server_options o;
  o.body_bytes_max = 4096;
  start(o);
  {
    client c(port());
    response r = c.request(put("/v1/policy", std::string(4096, 'a')));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "{\"bytes\": 4096}");
  }
  {
    // Only the headers go out: the 413 comes without the body being read.
    client c(port());
    std::string headers = "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                          std::string(token) + "\r\nContent-Length: 4097\r\n\r\n";
    response r = c.request(headers);
    EXPECT_EQ(r.status, 413);
    EXPECT_EQ(r.header("connection"), "close");
    EXPECT_EQ(r.body, "{\"error\": \"request body exceeds 4096 bytes\"}\n");
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    // A huge declared length, part of the body already sent.
    client c(port());
    std::string headers = "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                          std::string(token) + "\r\nContent-Length: 10000000000\r\n\r\n";
    response r = c.request(headers + std::string(1000, 'b'));
    EXPECT_EQ(r.status, 413);
  }
  {
    // Chunked: no length up front, refused once the chunks pass the limit.
    client c(port());
    std::string req = "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                      std::string(token) + "\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 5; ++i) req += "400\r\n" + std::string(1024, 'c') + "\r\n";
    response r = c.request(req);
    EXPECT_EQ(r.status, 413);
  }
  {
    // A chunked body within the limit.
    client c(port());
    std::string req = "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                      std::string(token) + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
                      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    response r = c.request(req);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "{\"bytes\": 11}");
  }
}

TEST_F(AdminServerTest, UnauthorizedBodyIsNotRead) {
  admin_server_options o;
  o.body_bytes_max = 1 << 20;
  start(o);
  client c(port());
  response r = c.request(
      "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
      "Content-Length: 1000000\r\n\r\n");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.header("connection"), "close");
}

TEST_F(AdminServerTest, ExpectContinue) {
  start();
  client c(port());
  ASSERT_TRUE(c.send("PUT /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                     std::string(token) + "\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"));
  response r;
  ASSERT_TRUE(c.read(r));
  EXPECT_EQ(r.status, 100);
  ASSERT_TRUE(c.send("{}"));
  ASSERT_TRUE(c.read(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"bytes\": 2}");
}

TEST_F(AdminServerTest, HeaderLimits) {
  admin_server_options o;
  o.header_bytes_max = 1024;
  o.headers_max = 8;
  start(o);
  {
    client c(port());
    response r = c.request(get("/healthz", "X-Big: " + std::string(2000, 'h') + "\r\n"));
    EXPECT_EQ(r.status, 431);
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    client c(port());
    std::string many;
    for (int i = 0; i < 9; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
    response r = c.request(get("/healthz", many));
    EXPECT_EQ(r.status, 431);
  }
  {
    client c(port());
    response r = c.request(get("/healthz?" + std::string(2000, 'q')));
    EXPECT_EQ(r.status, 414);
  }
}

TEST_F(AdminServerTest, MalformedRequestIs400AndCloses) {
  start();
  for (std::string bad :
       {std::string("GARBAGE\r\n\r\n"), std::string("GET /healthz HTTP/1.1 extra\r\n\r\n"),
        std::string("GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n"),
        std::string("GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")}) {
    client c(port());
    response r = c.request(bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_EQ(r.header("content-type"), "application/json");
    EXPECT_EQ(r.body.rfind("{\"error\": \"malformed request", 0), 0u) << r.body;
    EXPECT_TRUE(c.closed_by_peer());
  }
  client c(port());
  response r = c.request("GET /healthz HTTP/2.0\r\n\r\n");
  EXPECT_EQ(r.status, 505);
  EXPECT_GE(server_->stats().bad_requests, 5u);
}

TEST_F(AdminServerTest, KeepAliveServesTwoRequestsOnOneConnection) {
  start();
  client c(port());
  response r = c.request(get("/healthz"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("connection"), "");
  r = c.request(authed_get("/v1/policy"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(server_->stats().connections_accepted, 1u);
}

TEST_F(AdminServerTest, ConnectionCloseAndHttp10) {
  start();
  {
    client c(port());
    response r = c.request(get("/healthz", "Connection: close\r\n"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.header("connection"), "close");
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    client c(port());
    response r = c.request("GET /healthz HTTP/1.0\r\n\r\n");
    EXPECT_EQ(r.status, 200);
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    client c(port());
    response r = c.request("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    EXPECT_EQ(r.header("connection"), "keep-alive");
    r = c.request("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    EXPECT_EQ(r.status, 200);
  }
}

TEST_F(AdminServerTest, RequestsPerConnectionAreBounded) {
  admin_server_options o;
  o.requests_per_connection_max = 3;
  start(o);
  client c(port());
  EXPECT_EQ(c.request(get("/healthz")).header("connection"), "");
  EXPECT_EQ(c.request(get("/healthz")).header("connection"), "");
  EXPECT_EQ(c.request(get("/healthz")).header("connection"), "close");
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(AdminServerTest, PipelinedRequestsAreAnsweredInOrder) {
  start();
  client c(port());
  std::string batch =
      get("/v1/sessions/one/events", "Authorization: Bearer " + std::string(token) + "\r\n") +
      put("/v1/policy", "12345") + get("/healthz") + get("/nope") +
      get("/v1/sessions/two/events", "Authorization: Bearer " + std::string(token) + "\r\n");
  ASSERT_TRUE(c.send(batch));
  response r;
  ASSERT_TRUE(c.read(r));
  EXPECT_EQ(r.body, "events of one");
  ASSERT_TRUE(c.read(r));
  EXPECT_EQ(r.body, "{\"bytes\": 5}");
  ASSERT_TRUE(c.read(r));
  EXPECT_EQ(r.body, "{\"status\": \"ok\"}");
  ASSERT_TRUE(c.read(r));
  EXPECT_EQ(r.status, 404);
  ASSERT_TRUE(c.read(r));
  EXPECT_EQ(r.body, "events of two");
}

TEST_F(AdminServerTest, ManyPipelinedRequestsWithALazyReader) {
  admin_server_options o;
  o.requests_per_connection_max = 5000;
  start(o);
  client c(port());
  constexpr int n = 2000;
  std::string batch;
  for (int i = 0; i < n; ++i) batch += get("/healthz");
  std::thread writer([&] { EXPECT_TRUE(c.send(batch)); });
  std::this_thread::sleep_for(100ms);  // let the server's output back up
  int ok = 0;
  response r;
  for (int i = 0; i < n && c.read(r); ++i) ok += r.status == 200;
  writer.join();
  EXPECT_EQ(ok, n);
}

TEST_F(AdminServerTest, RequestSplitByteByByte) {
  start();
  client c(port());
  std::string body = "{\"rules\": []}";
  std::string req = put("/v1/policy", body) + authed_get("/v1/sessions/b-y-t-e/events");
  for (char ch : req) {
    ASSERT_TRUE(c.send(std::string_view(&ch, 1)));
    std::this_thread::sleep_for(100us);
  }
  response r;
  ASSERT_TRUE(c.read(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"bytes\": " + std::to_string(body.size()) + "}");
  ASSERT_TRUE(c.read(r));
  EXPECT_EQ(r.body, "events of b-y-t-e");
}

TEST_F(AdminServerTest, SlowClientIsClosedAfterTheTimeout) {
  admin_server_options o;
  o.request_timeout_ms = 300;
  start(o);
  client slow(port());
  client idle(port());
  ASSERT_TRUE(slow.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow"));
  auto t0 = steady::now();
  response r;
  ASSERT_TRUE(slow.read(r));
  EXPECT_EQ(r.status, 408);
  EXPECT_TRUE(slow.closed_by_peer());
  auto waited = steady::now() - t0;
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 3s);
  // An idle keep-alive connection goes too, silently.
  EXPECT_TRUE(idle.closed_by_peer());
  EXPECT_EQ(server_->stats().timeouts, 1u);

  // Dribbling bytes does not extend the deadline.
  client dribble(port());
  t0 = steady::now();
  ASSERT_TRUE(dribble.send("GET /healthz HTTP/1.1\r\n"));
  bool closed = false;
  for (int i = 0; i < 40 && !closed; ++i) {
    closed = !dribble.send("X-A: b\r\n");
    std::this_thread::sleep_for(50ms);
    pollfd p{dribble.fd(), POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) closed = true;
  }
  EXPECT_TRUE(closed);
  EXPECT_GE(steady::now() - t0, 250ms);
  EXPECT_LT(steady::now() - t0, 1500ms);
  response late;
  EXPECT_TRUE(dribble.read(late));
  EXPECT_EQ(late.status, 408);
  EXPECT_EQ(server_->stats().timeouts, 2u);
}

TEST_F(AdminServerTest, ManyConcurrentConnections) {
  start();
  constexpr int n = 200;
  std::vector<std::unique_ptr<client>> clients;
  for (int i = 0; i < n; ++i) {
    clients.push_back(std::make_unique<client>(port()));
    ASSERT_TRUE(clients.back()->connected());
  }
  // Every connection holds half a request while the others are served.
  for (auto& c : clients) ASSERT_TRUE(c->send("GET /v1/sessions/"));
  for (int i = 0; i < n; ++i)
    ASSERT_TRUE(clients[i]->send(std::to_string(i) + "/events HTTP/1.1\r\nAuthorization: Bearer " +
                                 std::string(token) + "\r\n\r\n"));
  for (int i = 0; i < n; ++i) {
    response r;
    ASSERT_TRUE(clients[i]->read(r)) << i;
    EXPECT_EQ(r.body, "events of " + std::to_string(i));
  }
  // And from threads at once.
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        client c(port());
        response r;
        if (c.send(get("/slow", "Connection: close\r\n")) && c.read(r) && r.status == 200) ++ok;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 16 * 20);
}

TEST_F(AdminServerTest, ConnectionsOverTheLimitAreRefused) {
  admin_server_options o;
  o.connections_max = 4;
  start(o);
  std::vector<std::unique_ptr<client>> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(std::make_unique<client>(port()));
    EXPECT_EQ(held.back()->request(get("/healthz")).status, 200);
  }
  client extra(port());
  response r;
  if (extra.read(r)) {
    EXPECT_EQ(r.status, 503);
  }
  EXPECT_TRUE(extra.closed_by_peer());
  EXPECT_EQ(server_->stats().connections_refused, 1u);
  held.pop_back();  // a slot frees up
  for (int i = 0; i < 100; ++i) {
    client again(port());
    if (again.send(get("/healthz")) && again.read(r) && r.status == 200) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(r.status, 200);
}

TEST_F(AdminServerTest, StopWithClientsConnected) {
  start();
  std::vector<std::unique_ptr<client>> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(std::make_unique<client>(port()));
    if (i % 2 == 0) {
      EXPECT_EQ(clients.back()->request(get("/healthz")).status, 200);
    } else {
      // Half a body: the request is in progress when the server stops.
      EXPECT_TRUE(clients.back()->send("PUT /v1/policy HTTP/1.1\r\nAuthorization: Bearer " +
                                       std::string(token) + "\r\nContent-Length: 100\r\n\r\n{"));
    }
  }
  auto t0 = steady::now();
  server_->stop();
  EXPECT_LT(steady::now() - t0, 500ms);
  EXPECT_FALSE(server_->running());
  for (size_t i = 0; i < clients.size(); ++i) EXPECT_TRUE(clients[i]->closed_by_peer()) << i;
  client late(port());
  EXPECT_FALSE(late.connected());
  server_->stop();  // idempotent
}

TEST_F(AdminServerTest, HeadIsServedByGetRoutesWithoutABody) {
  start();
  client c(port());
  c.head_only(true);
  response r = c.request("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-length"), "16");
  c.head_only(false);
  r = c.request(get("/healthz"));  // nothing of a body was left in between
  EXPECT_EQ(r.body, "{\"status\": \"ok\"}");
}

TEST_F(AdminServerTest, ServesTheOpenApiDocument) {
  start();
  client c(port());
  response r = c.request(get("/openapi.yaml"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "application/yaml");
  EXPECT_EQ(r.body, openapi_document());
  EXPECT_EQ(r.body.rfind("openapi: 3.0", 0), 0u);
  for (const char* path :
       {"/healthz:", "/metrics:", "/v1/policy:", "/v1/policy/versions:", "/v1/sessions:",
        "/v1/sessions/{id}/events:", "/v1/approvals:", "/v1/approvals/{id}/approve:",
        "/v1/approvals/{id}/deny:", "/openapi.yaml:", "adminToken:", "approverJwt:"})
    EXPECT_NE(r.body.find(path), std::string::npos) << path;
}

TEST(AdminServer, AddressInUse) {
  admin_server_options o;
  o.listen = "127.0.0.1:0";
  admin_server first(o);
  ASSERT_TRUE(first.start());
  o.listen = "127.0.0.1:" + std::to_string(first.port());
  admin_server second(o);
  status s = second.start();
  EXPECT_FALSE(s);
  EXPECT_EQ(s.message(), "admin.listen: address in use");
  EXPECT_EQ(s.code(), errc::io);
  first.stop();
}

TEST(AdminServer, BadListenAddresses) {
  for (const char* bad :
       {"", "8081", "example.com:80", "127.0.0.1:99999", "127.0.0.1:", "[::1:80"}) {
    admin_server_options o;
    o.listen = bad;
    admin_server s(o);
    status st = s.start();
    EXPECT_FALSE(st) << bad;
    EXPECT_EQ(st.message().rfind("admin.listen:", 0), 0u) << st.message();
  }
}

TEST(AdminServer, Ipv6Loopback) {
  admin_server_options o;
  o.listen = "[::1]:0";
  admin_server s(o);
  ASSERT_TRUE(s.route("GET", "/healthz", route_auth::none,
                      [](const http_request& r) { return http_response::text(200, r.peer); }));
  status st = s.start();
  if (!st) GTEST_SKIP() << "no IPv6 loopback here: " << st.message();
  EXPECT_EQ(s.address(), "[::1]:" + std::to_string(s.port()));
}

TEST(AdminServer, EmptyTokenIsRefusedWhenARouteNeedsIt) {
  admin_server s(admin_server_options{});
  ASSERT_TRUE(s.route("GET", "/v1/policy", [](const http_request&) { return http_response{}; }));
  status st = s.start();
  EXPECT_FALSE(st);
  EXPECT_EQ(st.message(), "admin.token_file: the admin token is empty");
}

TEST(AdminServer, RouteRegistrationErrors) {
  admin_server s(admin_server_options{});
  auto h = [](const http_request&) { return http_response{}; };
  EXPECT_TRUE(s.route("GET", "/v1/approvals/{id}", route_auth::none, h));
  EXPECT_FALSE(s.route("GET", "/v1/approvals/{other}", route_auth::none, h));  // same shape
  EXPECT_TRUE(s.route("POST", "/v1/approvals/{id}", route_auth::none, h));
  EXPECT_FALSE(s.route("get", "/x", route_auth::none, h));
  EXPECT_FALSE(s.route("HEAD", "/x", route_auth::none, h));
  EXPECT_FALSE(s.route("GET", "x", route_auth::none, h));
  EXPECT_FALSE(s.route("GET", "/a/{}", route_auth::none, h));
  EXPECT_FALSE(s.route("GET", "/a/{B}", route_auth::none, h));
  EXPECT_FALSE(s.route("GET", "/a?b", route_auth::none, h));
  EXPECT_FALSE(s.route("GET", "/a", route_auth::none, http_handler()));
  ASSERT_TRUE(s.start());
  EXPECT_FALSE(s.route("GET", "/late", route_auth::none, h));
}

TEST(AdminServer, JsonQuote) {
  EXPECT_EQ(json_quote("plain"), "\"plain\"");
  EXPECT_EQ(json_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(json_quote("\n\r\t\b\f"), "\"\\n\\r\\t\\b\\f\"");
  EXPECT_EQ(json_quote(std::string_view("\x01\x00\x1f\x7f", 4)),
            "\"\\u0001\\u0000\\u001f\\u007f\"");
  EXPECT_EQ(json_quote("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  // Invalid UTF-8: stray continuation, overlong, surrogate, truncated.
  EXPECT_EQ(json_quote("\x80"), "\"\\ufffd\"");
  EXPECT_EQ(json_quote("\xc0\xaf"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(json_quote("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");
  EXPECT_EQ(json_quote("x\xe2\x82"), "\"x\\ufffd\\ufffd\"");
  EXPECT_EQ(http_response::error(418, "a \"b\"").body, "{\"error\": \"a \\\"b\\\"\"}\n");
}

}  // namespace
}  // namespace agentgate
