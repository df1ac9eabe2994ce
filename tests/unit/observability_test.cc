// Structured logs (worker/common/log.h), the /metrics endpoint (worker/common/metrics_endpoint.h)
// and a worker's metrics (worker/agent_metrics.h), in-process.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_util.h"
#include "worker/agent_metrics.h"
#include "worker/common/log.h"
#include "worker/common/metrics_endpoint.h"

namespace logit {
namespace {

using ::logit::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

// Sends `request` to 127.0.0.1:port and returns everything the server sent back.
std::string HttpExchange(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return "";
  }
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  (void)!write(fd, request.data(), request.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

class LogTest : public ::testing::Test {
 protected:
  void Use(logging::Format format, logging::Level level = logging::Level::kInfo) {
    logging::LogOptions options;
    options.format = format;
    options.level = level;
    options.stream = &out_;
    logging::Configure("logit-test", options);
  }
  void TearDown() override { logging::Configure("logit-test", {}); }  // back to stderr
  std::ostringstream out_;
};

TEST_F(LogTest, TextLineHasTimeLevelComponentMessageAndFields) {
  Use(logging::Format::kText);
  logging::Info(
      "job started",
      {{"job", "job-3"}, {"attempt", 1}, {"reason", "two words"}, {"ok", true}, {"seconds", 0.5}});
  const std::regex line(
      R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO logit-test: job started job=job-3 )"
      R"(attempt=1 reason="two words" ok=true seconds=0\.5\n)");
  EXPECT_TRUE(std::regex_match(out_.str(), line)) << out_.str();
}

TEST_F(LogTest, JsonLineIsOneObjectWithTypedAndEscapedFields) {
  Use(logging::Format::kJson);
  logging::Warn("rank finished", {{"job", "job-\"7\""},
                                  {"rank", 2},
                                  {"error", "line one\nline two"},
                                  {"loss", std::numeric_limits<double>::quiet_NaN()}});
  const std::string text = out_.str();
  ASSERT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  const nlohmann::json j = nlohmann::json::parse(text);
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["component"], "logit-test");
  EXPECT_EQ(j["msg"], "rank finished");
  EXPECT_EQ(j["job"], "job-\"7\"");
  EXPECT_EQ(j["rank"], 2);
  EXPECT_EQ(j["error"], "line one\nline two");
  EXPECT_EQ(j["loss"], "NaN");
  EXPECT_THAT(j["time"].get<std::string>(), ::testing::EndsWith("Z"));
}

TEST_F(LogTest, LinesBelowTheLevelAreDropped) {
  Use(logging::Format::kText, logging::Level::kWarn);
  logging::Debug("debug line");
  logging::Info("info line");
  logging::Error("error line", {logging::Field::Error(absl::NotFoundError("gone"))});
  EXPECT_THAT(out_.str(), Not(HasSubstr("info line")));
  EXPECT_THAT(out_.str(), Not(HasSubstr("debug line")));
  EXPECT_THAT(out_.str(), HasSubstr("ERROR logit-test: error line error=gone"));
  EXPECT_FALSE(logging::Enabled(logging::Level::kInfo));
}

TEST(LogFlagsTest, UnknownFormatOrLevelNamesTheFlag) {
  EXPECT_THAT(logging::ParseFormat("xml").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "--log-format"));
  EXPECT_THAT(logging::ParseLevel("loud").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "--log-level"));
  EXPECT_EQ(*logging::ParseFormat("json"), logging::Format::kJson);
  EXPECT_EQ(*logging::ParseLevel("debug"), logging::Level::kDebug);
}

TEST(MetricsEndpointTest, ServesRegisteredMetricsAndProcessMetricsOnGetMetrics) {
  auto endpoint = MetricsEndpoint::Start("127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  ASSERT_GT((*endpoint)->port(), 0);
  AgentMetrics metrics;
  for (const auto& c : metrics.collectables()) (*endpoint)->Register(c);
  metrics.Epoch("job-1", 0, 1, 0.25, 100, 400);
  const std::string reply = HttpExchange((*endpoint)->port(), "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_THAT(reply, HasSubstr(" 200 OK"));
  EXPECT_THAT(reply, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(reply, HasSubstr("logit_samples_processed_total 100\n"));
  EXPECT_THAT(reply, HasSubstr("logit_rank_epoch{job=\"job-1\",rank=\"0\"} 1\n"));
  EXPECT_THAT(reply, HasSubstr("# TYPE process_cpu_seconds_total counter"));
  EXPECT_THAT(reply, HasSubstr("process_resident_memory_bytes "));
  EXPECT_THAT(reply, HasSubstr("process_open_fds "));
}

TEST(MetricsEndpointTest, OtherPathsAndMethodsAreRefusedAndGarbageDoesNotStopIt) {
  auto endpoint = MetricsEndpoint::Start("127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();
  EXPECT_THAT(HttpExchange(port, "GET /other HTTP/1.0\r\n\r\n"), HasSubstr("404"));
  EXPECT_THAT(HttpExchange(port, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n"),
              HasSubstr("405"));
  static constexpr char kGarbage[] = "\x00\xff garbage \r\n\r\n\r\n";
  HttpExchange(port, std::string(kGarbage, sizeof kGarbage - 1));
  HttpExchange(port, "GET /" + std::string(100000, 'a') + " HTTP/1.0\r\n\r\n");
  EXPECT_THAT(HttpExchange(port, "GET /metrics HTTP/1.0\r\n\r\n"), HasSubstr("200"));
}

TEST(MetricsEndpointTest, BadAddressIsInvalidArgumentAndABusyPortIsUnavailable) {
  EXPECT_THAT(MetricsEndpoint::Start("no-port").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "--metrics-listen"));
  EXPECT_THAT(MetricsEndpoint::Start("127.0.0.1:99999").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "--metrics-listen"));
  auto first = MetricsEndpoint::Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(MetricsEndpoint::Start("127.0.0.1:" + std::to_string((*first)->port())).status(),
              StatusIs(absl::StatusCode::kUnavailable, "cannot listen"));
}

TEST(AgentMetricsTest, RankSeriesVanishAfterTheGraceButCountersStay) {
  AgentMetrics metrics(std::chrono::milliseconds(500));
  auto endpoint = MetricsEndpoint::Start("127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  for (const auto& c : metrics.collectables()) (*endpoint)->Register(c);
  metrics.RankStarted("job-4", 1);
  metrics.Epoch("job-4", 1, 1, 0.1, 50, 1000);
  metrics.Epoch("job-4", 1, 2, 0.1, 50, 1000);
  metrics.Allreduce(0.001, 64);
  metrics.Step(0.0001);
  std::string text = (*endpoint)->Render();
  EXPECT_THAT(text, HasSubstr("logit_worker_busy 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_rank_epoch{job=\"job-4\",rank=\"1\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("logit_samples_processed_total 100\n"));
  EXPECT_THAT(text, HasSubstr("logit_epoch_duration_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("logit_allreduce_bytes_total 64\n"));
  metrics.RankFinished("job-4", 1, "succeeded");
  EXPECT_THAT((*endpoint)->Render(), HasSubstr("job-4"));  // within the grace
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((*endpoint)->Render().find("job-4") != std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  text = (*endpoint)->Render();
  EXPECT_THAT(text, Not(HasSubstr("job-4")));
  EXPECT_THAT(text, HasSubstr("logit_worker_busy 0\n"));
  EXPECT_THAT(text, HasSubstr("logit_worker_ranks_finished_total{outcome=\"succeeded\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_samples_processed_total 100\n"));
}

}  // namespace
}  // namespace logit
