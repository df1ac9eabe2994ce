// One training job as a worker (or `logit train --local`) runs it: read the shard(s), split,
// train, summarise. LibTorch-free interface; one code path for local and distributed runs.
#ifndef LOGIT_WORKER_JOB_H_
#define LOGIT_WORKER_JOB_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/readers.h"
#include "worker/job_spec.h"
#include "worker/kernel/trainer.h"

namespace logit {

struct JobOutcome {
  TrainResult result;  // result.model.class_names: the class names of string labels
  int64_t train_rows = 0, val_rows = 0, test_rows = 0;
  int64_t classes = 0;
  // What the user should know about the result, e.g. a declared class without training rows.
  std::vector<std::string> warnings;
};

// What a job's caller observes and controls while it trains; every member is optional.
struct JobHooks {
  EpochCallback on_epoch;  // after every epoch (L-BFGS iteration)
  StepCallback on_step;    // after every SGD/Adam step; keep it cheap
  // Once set, training ends soon after with Cancelled, on every rank.
  const std::atomic<bool>* stop = nullptr;
  // Continue this saved run (TrainInputs::resume): on any number of ranks, the same mathematics.
  const TrainingCheckpoint* resume = nullptr;
  // Every checkpoint_every epochs (0 = never) rank 0 hands the training state to on_checkpoint,
  // which should return soon (TrainInputs::checkpoint_every).
  int64_t checkpoint_every = 0;
  std::function<void(const TrainingCheckpoint&)> on_checkpoint;
};

// Reads the data (shard `rank` of `world` from config.train), splits it and trains. `data` and
// `options` come from PlanJob (worker/job_spec.h), which validated them. With a `collective`
// every rank of the job calls it.
absl::StatusOr<JobOutcome> RunTrainingJob(const DataConfig& data, const TrainOptions& options,
                                          Collective* collective = nullptr,
                                          const JobHooks& hooks = {});

}  // namespace logit

#endif  // LOGIT_WORKER_JOB_H_
