// libFuzzer target: the validation of a training job. The input is a logit.v1.JobSpec in
// protobuf binary, or (when that does not parse) JSON; it goes through PlanJob, the one
// conversion the server (admission), the workers and `logit train --local` run.
// Properties: an accepted plan passes ValidateTrainOptions again; a refusal names its field
// (the ErrorField payload) at the start of its message; and a JobSpec -> bytes -> JobSpec round
// trip gives the same verdict.
#include <cstddef>
#include <cstdint>
#include <string>

#include "google/protobuf/util/json_util.h"
#include "logit/v1/training.pb.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/common/status.h"
#include "worker/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  logit::v1::JobSpec spec;
  if (!spec.ParseFromArray(data, static_cast<int>(size))) {
    spec.Clear();
    const std::string text(reinterpret_cast<const char*>(data), size);
    google::protobuf::util::JsonParseOptions options;
    options.case_insensitive_enum_parsing = true;  // as `logit train -f job.yaml` parses
    const auto parsed = google::protobuf::util::JsonStringToMessage(text, &spec, options);
    logit_fuzz::Report("JsonStringToMessage",
                       absl::Status(static_cast<absl::StatusCode>(parsed.code()),
                                    std::string(parsed.message().data(), parsed.message().size())));
    if (!parsed.ok()) return 0;
  }
  auto plan = logit::PlanJob(spec);
  logit_fuzz::Report("PlanJob", plan.status());
  if (plan.ok()) {
    const absl::Status train_ok = logit::ValidateTrainOptions(plan->train);
    FUZZ_CHECK(train_ok.ok(), "PlanJob accepted options ValidateTrainOptions rejects: %s",
               std::string(train_ok.message()).c_str());
    FUZZ_CHECK(plan->workers >= 1, "PlanJob accepted %d workers", plan->workers);
  } else if (absl::IsInvalidArgument(plan.status())) {
    const auto field = logit::ErrorField(plan.status());
    FUZZ_CHECK(field.has_value(), "PlanJob refused without naming a field: %s",
               std::string(plan.status().message()).c_str());
    FUZZ_CHECK(plan.status().message().substr(0, field->size()) == *field,
               "PlanJob's message does not start with its field '%s': %s", field->c_str(),
               std::string(plan.status().message()).c_str());
  }
  logit::v1::JobSpec again;
  FUZZ_CHECK(again.ParseFromString(spec.SerializeAsString()), "a JobSpec does not reparse");
  auto plan2 = logit::PlanJob(again);
  FUZZ_CHECK(plan.status().code() == plan2.status().code(),
             "JobSpec round trip changes the verdict: '%s' vs '%s'",
             std::string(plan.status().message()).c_str(),
             std::string(plan2.status().message()).c_str());
  return 0;
}
