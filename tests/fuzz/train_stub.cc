// The fuzz targets link worker/job.cc (ValidateDataConfig, used by BuildJob) without LibTorch.
// job.cc's RunTrainingJob references logit::Train, which lives in the LibTorch kernel; this stub
// satisfies the linker and aborts if anything ever calls it (no fuzz target trains).
#include <cstdio>
#include <cstdlib>

#include "worker/kernel/trainer.h"

namespace logit {

absl::StatusOr<TrainResult> Train(const TrainOptions&, const TrainInputs&, const EpochCallback&,
                                  Collective*) {
  std::fprintf(stderr, "train_stub: logit::Train called in a fuzz target\n");
  std::abort();
}

}  // namespace logit
