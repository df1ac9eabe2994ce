// How the CLI prints API objects for scripts: one schema everywhere, protobuf's JSON mapping of
// the API messages (field names as in the .proto, every field present, 64-bit integers as JSON
// numbers, nested messages as objects), as one JSON line or a YAML document.
#ifndef LOGIT_CLIENT_OUTPUT_H_
#define LOGIT_CLIENT_OUTPUT_H_

#include <iosfwd>
#include <string>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "logit/v1/training.pb.h"
#include "nlohmann/json.hpp"

namespace logit {

// -o: table (for people), json (one object per line), yaml (one document each).
enum class OutputFormat { kTable, kJson, kYaml };

// "table" / "json" / "yaml"; InvalidArgument naming -o otherwise.
absl::StatusOr<OutputFormat> ParseOutputFormat(const std::string& name);

// A message in protobuf's JSON mapping with proto field names and every field, but 64-bit
// integers as numbers (jq compares them as numbers) rather than strings.
nlohmann::json MessageJson(const google::protobuf::Message& message);

// A job as `train`, `status`, `jobs`, `watch` and `cancel` print it: the Job message, plus
// `job_id`, `epochs_run`, `train_loss`, `objective`, `val_accuracy`, `test_accuracy`,
// `wall_seconds` and `stop_reason` lifted from its result (null when not known), so that
// scripts need not dig.
nlohmann::json JobJson(const v1::Job& job);

// Prints `value` as one JSON line (kJson) or one YAML document starting with "---" (kYaml).
// REQUIRES: format is not kTable.
void PrintStructured(const nlohmann::json& value, OutputFormat format, std::ostream& out);

}  // namespace logit

#endif  // LOGIT_CLIENT_OUTPUT_H_
