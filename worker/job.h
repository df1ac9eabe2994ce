// One training job as a worker (or `logit train --local`) runs it: read the shard(s), split,
// train, summarise. LibTorch-free interface; one code path for local and distributed runs.
#ifndef LOGIT_WORKER_JOB_H_
#define LOGIT_WORKER_JOB_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/data/readers.h"
#include "worker/job_spec.h"
#include "worker/kernel/trainer.h"

namespace logit {

struct JobOutcome {
  TrainResult result;
  int64_t train_rows = 0, val_rows = 0, test_rows = 0;
  int64_t classes = 0;
};

// Reads the data (shard `rank` of `world` from config.train), splits it and trains. `data` and
// `options` come from PlanJob (worker/job_spec.h), which validated them. `stop` (optional)
// cancels the training (Cancelled).
absl::StatusOr<JobOutcome> RunTrainingJob(const DataConfig& data, const TrainOptions& options,
                                          const EpochCallback& on_epoch = {},
                                          Collective* collective = nullptr,
                                          const std::atomic<bool>* stop = nullptr,
                                          const StepCallback& on_step = {});

}  // namespace logit

#endif  // LOGIT_WORKER_JOB_H_
