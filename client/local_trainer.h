// The training kernel as `logit train --local` loads it: a module (liblogit_local.so) opened on
// demand, so that `logit --help` and every remote command start without loading LibTorch.
// The interface is LibTorch-free; only the module links the kernel.
#ifndef LOGIT_CLIENT_LOCAL_TRAINER_H_
#define LOGIT_CLIENT_LOCAL_TRAINER_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/job.h"

namespace logit {

// What the module provides (both never null).
struct LocalTrainer {
  // The BLAS library and threading the kernel uses, for the log.
  std::string (*describe_backend)();
  // RunTrainingJob (worker/job.h) in this process, without a collective.
  absl::StatusOr<JobOutcome> (*run)(const DataConfig& data, const TrainOptions& options,
                                    const EpochCallback& on_epoch);
};

// Opens the module once: $LOGIT_LOCAL_TRAINER, else liblogit_local.so next to the executable
// or in ../lib/logit/, else where the build put it. FailedPrecondition naming the paths tried
// when none loads.
absl::StatusOr<const LocalTrainer*> LoadLocalTrainer();

}  // namespace logit

// The module's one exported symbol.
extern "C" const logit::LocalTrainer* logit_local_trainer();

#endif  // LOGIT_CLIENT_LOCAL_TRAINER_H_
