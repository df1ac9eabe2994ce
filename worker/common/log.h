// Structured logs for logit-server and logit-worker: one line per event, a constant message and
// key=value fields (job, attempt, worker, rank, ...), as text for people or as one JSON object
// per line for `kubectl logs` and log shippers (`--log-format text|json`).
//
//   text: 2026-12-03T16:04:05.123Z INFO logit-server: job started job=job-3 attempt=0 workers=2
//   json: {"time":"2026-12-03T16:04:05.123Z","level":"info","component":"logit-server",
//          "msg":"job started","job":"job-3","attempt":0,"workers":2}
//
// Levels (../shared/STYLE.md): lifecycle at INFO, operator-actionable problems at ERROR
// (WARN for degraded but working), per-request failures at DEBUG. Rates and latencies go to
// Prometheus, not here. Thread-safe (spdlog's synchronised sink); lines go to stderr.
#ifndef LOGIT_WORKER_COMMON_LOG_H_
#define LOGIT_WORKER_COMMON_LOG_H_

#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace logit::logging {

enum class Level { kDebug, kInfo, kWarn, kError };
enum class Format { kText, kJson };

struct LogOptions {
  Format format = Format::kText;
  Level level = Level::kInfo;  // lines below it are dropped
  // Where lines go (tests); null: stderr.
  std::ostream* stream = nullptr;
};

// "text" / "json"; InvalidArgument naming --log-format otherwise.
absl::StatusOr<Format> ParseFormat(absl::string_view name);
// "debug" / "info" / "warn" / "error"; InvalidArgument naming --log-level otherwise.
absl::StatusOr<Level> ParseLevel(absl::string_view name);

// Sets the process's logger: `component` ("logit-server", "logit-worker") starts every line.
// Call once from main before other threads log; until then lines go to stderr as text at INFO.
void Configure(absl::string_view component, const LogOptions& options);

// One key=value field of a line. Strings are quoted in text when they hold spaces or quotes.
class Field {
 public:
  Field(absl::string_view key, absl::string_view value);
  Field(absl::string_view key, const char* value) : Field(key, absl::string_view(value)) {}
  Field(absl::string_view key, const std::string& value) : Field(key, absl::string_view(value)) {}
  Field(absl::string_view key, int value) : Field(key, static_cast<int64_t>(value)) {}
  Field(absl::string_view key, int64_t value);
  Field(absl::string_view key, double value);
  Field(absl::string_view key, bool value);
  // A status's message, under the key "error".
  static Field Error(const absl::Status& status);

  const std::string& key() const { return key_; }
  const std::string& value() const { return value_; }
  bool is_string() const { return is_string_; }

 private:
  std::string key_, value_;
  bool is_string_ = true;
};

// Writes one line. `message` is a constant event name ("job started"); details go in fields.
void Log(Level level, absl::string_view message, std::initializer_list<Field> fields = {});
inline void Debug(absl::string_view message, std::initializer_list<Field> fields = {}) {
  Log(Level::kDebug, message, fields);
}
inline void Info(absl::string_view message, std::initializer_list<Field> fields = {}) {
  Log(Level::kInfo, message, fields);
}
inline void Warn(absl::string_view message, std::initializer_list<Field> fields = {}) {
  Log(Level::kWarn, message, fields);
}
inline void Error(absl::string_view message, std::initializer_list<Field> fields = {}) {
  Log(Level::kError, message, fields);
}

// Whether a line at `level` would be written (to skip building costly fields).
bool Enabled(Level level);

}  // namespace logit::logging

#endif  // LOGIT_WORKER_COMMON_LOG_H_
