// libFuzzer target: the server-side validation of a training job. The input is a
// logit.v1.JobSpec in protobuf binary, or (when that does not parse) JSON; it goes through
// JobFlagsFromSpec and BuildJob, the checks Coordinator::ResolveSpec and the worker agent run
// (data config, train options, class weights, workers, checkpoint period).
// Properties: an accepted job passes ValidateDataConfig and ValidateTrainOptions again, and a
// JobSpec -> flags -> JobSpec -> flags round trip gives the same verdict.
// Linked without LibTorch: logit::Train (referenced by job.cc) is a stub that aborts
// (train_stub.cc); nothing here trains.
#include <cstddef>
#include <cstdint>
#include <string>

#include "google/protobuf/util/json_util.h"
#include "logit/v1/training.pb.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/job.h"
#include "worker/job_cli.h"
#include "worker/spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  logit::v1::JobSpec spec;
  if (!spec.ParseFromArray(data, static_cast<int>(size))) {
    spec.Clear();
    const std::string text(reinterpret_cast<const char*>(data), size);
    const auto parsed = google::protobuf::util::JsonStringToMessage(text, &spec);
    logit_fuzz::Report("JsonStringToMessage",
                       absl::Status(static_cast<absl::StatusCode>(parsed.code()),
                                    std::string(parsed.message().data(), parsed.message().size())));
    if (!parsed.ok()) return 0;
  }
  const logit::JobFlags flags = logit::JobFlagsFromSpec(spec);
  auto job = logit::BuildJob(flags);
  logit_fuzz::Report("BuildJob", job.status());
  if (job.ok()) {
    const absl::Status data_ok = logit::ValidateDataConfig(job->first);
    FUZZ_CHECK(data_ok.ok(), "BuildJob accepted a data config ValidateDataConfig rejects: %s",
               std::string(data_ok.message()).c_str());
    const absl::Status train_ok = logit::ValidateTrainOptions(job->second);
    FUZZ_CHECK(train_ok.ok(), "BuildJob accepted options ValidateTrainOptions rejects: %s",
               std::string(train_ok.message()).c_str());
    // Also exercised (no property): the message mapping of the CLI.
    (void)logit::FlagMessage(absl::InvalidArgumentError("batch_size: x"));
  } else {
    (void)logit::FlagMessage(job.status());
  }
  const logit::JobFlags again = logit::JobFlagsFromSpec(logit::SpecFromJobFlags(flags));
  auto job2 = logit::BuildJob(again);
  FUZZ_CHECK(job.status().code() == job2.status().code(),
             "JobSpec round trip changes the verdict: '%s' vs '%s'",
             std::string(job.status().message()).c_str(),
             std::string(job2.status().message()).c_str());
  return 0;
}
