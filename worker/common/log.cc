#include "worker/common/log.h"

#include <spdlog/logger.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace logit::logging {

namespace {

struct State {
  std::string component = "logit";
  Format format = Format::kText;
  std::shared_ptr<spdlog::logger> logger;
};

// Replaced whole by Configure; readers take a shared_ptr copy under the mutex.
std::mutex g_mu;
std::shared_ptr<const State> g_state;
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};

spdlog::level::level_enum ToSpd(Level level) {
  switch (level) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

// Level names: upper case in text lines, lower case in JSON (indexed by Level).
constexpr const char* kUpperNames[] = {"DEBUG", "INFO", "WARN", "ERROR"};
constexpr const char* kLowerNames[] = {"debug", "info", "warn", "error"};

std::shared_ptr<const State> MakeState(absl::string_view component, const LogOptions& options) {
  auto state = std::make_shared<State>();
  state->component = std::string(component);
  state->format = options.format;
  spdlog::sink_ptr sink;
  if (options.stream != nullptr) {
    sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*options.stream, /*force_flush=*/true);
  } else {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  }
  state->logger = std::make_shared<spdlog::logger>(state->component, sink);
  // The time is spdlog's (UTC); the level and the fields are formatted here, per format.
  state->logger->set_formatter(std::make_unique<spdlog::pattern_formatter>(
      options.format == Format::kJson ? R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ",%v})"
                                      : "%Y-%m-%dT%H:%M:%S.%eZ %v",
      spdlog::pattern_time_type::utc));
  state->logger->set_level(spdlog::level::trace);
  state->logger->flush_on(spdlog::level::trace);  // a crash loses no line
  return state;
}

std::shared_ptr<const State> CurrentState() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_state) g_state = MakeState("logit", LogOptions{});
  return g_state;
}

bool NeedsQuotes(const std::string& s) {
  if (s.empty()) return true;
  for (char c : s) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20) {
      return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<Format> ParseFormat(absl::string_view name) {
  if (name == "text") return Format::kText;
  if (name == "json") return Format::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("--log-format: '", name, "' is not a log format (text, json)"));
}

absl::StatusOr<Level> ParseLevel(absl::string_view name) {
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn") return Level::kWarn;
  if (name == "error") return Level::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("--log-level: '", name, "' is not a log level (debug, info, warn, error)"));
}

void Configure(absl::string_view component, const LogOptions& options) {
  auto state = MakeState(component, options);
  std::lock_guard<std::mutex> lock(g_mu);
  g_state = std::move(state);
  g_level = static_cast<int>(options.level);
}

Field::Field(absl::string_view key, absl::string_view value) : key_(key), value_(value) {}

Field::Field(absl::string_view key, int64_t value)
    : key_(key), value_(std::to_string(value)), is_string_(false) {}

Field::Field(absl::string_view key, double value) : key_(key), is_string_(false) {
  if (std::isfinite(value)) {
    value_ = nlohmann::json(value).dump();  // shortest round-trip form
  } else {
    value_ = std::isnan(value) ? "NaN" : (value > 0 ? "+Inf" : "-Inf");
    is_string_ = true;  // JSON has no non-finite numbers
  }
}

Field::Field(absl::string_view key, bool value)
    : key_(key), value_(value ? "true" : "false"), is_string_(false) {}

Field Field::Error(const absl::Status& status) { return Field("error", status.message()); }

bool Enabled(Level level) { return static_cast<int>(level) >= g_level.load(); }

void Log(Level level, absl::string_view message, std::initializer_list<Field> fields) {
  if (!Enabled(level)) return;
  const std::shared_ptr<const State> state = CurrentState();
  std::string line;
  if (state->format == Format::kJson) {
    nlohmann::json head = {{"level", kLowerNames[static_cast<int>(level)]},
                           {"component", state->component},
                           {"msg", std::string(message)}};
    line = head.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line.pop_back();  // the closing brace: the fields follow
    for (const Field& f : fields) {
      absl::StrAppend(
          &line, ",",
          nlohmann::json(f.key()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
          ":",
          f.is_string() ? nlohmann::json(f.value()).dump(-1, ' ', false,
                                                         nlohmann::json::error_handler_t::replace)
                        : f.value());
    }
    line = line.substr(1);  // the pattern supplies the braces and the time
  } else {
    line = absl::StrCat(kUpperNames[static_cast<int>(level)], " ", state->component, ": ", message);
    for (const Field& f : fields) {
      absl::StrAppend(&line, " ", f.key(), "=",
                      f.is_string() && NeedsQuotes(f.value())
                          ? nlohmann::json(f.value()).dump(-1, ' ', false,
                                                           nlohmann::json::error_handler_t::replace)
                          : f.value());
    }
  }
  state->logger->log(ToSpd(level), "{}", line);
}

}  // namespace logit::logging
