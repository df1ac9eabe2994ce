// One training job as a worker (or `logit train --local`) runs it: read the shard(s), split,
// train, summarise. LibTorch-free interface; one code path for local and distributed runs.
#ifndef LOGIT_WORKER_JOB_H_
#define LOGIT_WORKER_JOB_H_

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/data/readers.h"
#include "worker/kernel/trainer.h"

namespace logit {

struct DataConfig {
  // The training file: path, label file, format, label column, classes, features, pixel scale.
  ReadOptions train;
  // Optional explicit validation / test files (same format as the training file unless named).
  std::string val_path, val_labels;
  std::string test_path, test_labels;
  // Fractions of the training file held out by seed when no explicit file is given.
  // Each in [0, 1), sum < 1.
  double val_split = 0;
  double test_split = 0;
};

// InvalidArgument naming the field when the data configuration is inconsistent.
absl::Status ValidateDataConfig(const DataConfig& config);

struct JobOutcome {
  TrainResult result;
  int64_t train_rows = 0, val_rows = 0, test_rows = 0;
  int64_t classes = 0;
};

// Reads the data (shard `rank` of `world` from config.train), splits it and trains.
// `stop` (optional) cancels the training (Cancelled).
absl::StatusOr<JobOutcome> RunTrainingJob(const DataConfig& data, const TrainOptions& options,
                                          const EpochCallback& on_epoch = {},
                                          Collective* collective = nullptr,
                                          const std::atomic<bool>* stop = nullptr,
                                          const StepCallback& on_step = {});

// The training summary: options, history, final metrics (also stored with exported models).
nlohmann::json SummaryJson(const JobOutcome& outcome, const TrainOptions& options);

}  // namespace logit

#endif  // LOGIT_WORKER_JOB_H_
