// `logit train -f job.yaml|job.json`: a JobSpec from a file (protobuf's JSON mapping; YAML is
// read with yaml-cpp and mapped the same way). Flags given on the command line override it.
#ifndef LOGIT_CLIENT_JOB_FILE_H_
#define LOGIT_CLIENT_JOB_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "logit/v1/training.pb.h"

namespace logit {

// InvalidArgument naming the file and the offending field or line.
absl::StatusOr<v1::JobSpec> LoadJobFile(const std::string& path);

}  // namespace logit

#endif  // LOGIT_CLIENT_JOB_FILE_H_
