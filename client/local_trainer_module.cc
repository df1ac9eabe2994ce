// liblogit_local.so: the training kernel for `logit train --local` (see local_trainer.h).
#include "client/local_trainer.h"

namespace logit {
namespace {

absl::StatusOr<JobOutcome> RunLocal(const DataConfig& data, const TrainOptions& options,
                                    const EpochCallback& on_epoch) {
  JobHooks hooks;
  hooks.on_epoch = on_epoch;
  return RunTrainingJob(data, options, nullptr, hooks);
}

std::string Describe() { return DescribeComputeBackend(); }

}  // namespace
}  // namespace logit

extern "C" __attribute__((visibility("default"))) const logit::LocalTrainer* logit_local_trainer() {
  static const logit::LocalTrainer trainer{&logit::Describe, &logit::RunLocal};
  return &trainer;
}
