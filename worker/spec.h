// Conversions between the API's JobSpec (proto) and the training flags (JobFlags), so that the
// CLI, the coordinator's validation and the workers share one meaning of every field.
#ifndef LOGIT_WORKER_SPEC_H_
#define LOGIT_WORKER_SPEC_H_

#include "logit/v1/training.pb.h"
#include "worker/job_cli.h"

namespace logit {

JobFlags JobFlagsFromSpec(const v1::JobSpec& spec);
v1::JobSpec SpecFromJobFlags(const JobFlags& flags);

}  // namespace logit

#endif  // LOGIT_WORKER_SPEC_H_
