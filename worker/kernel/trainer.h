// Trains a logistic-regression model on in-memory shards. LibTorch-free interface; the
// implementation lives in the kernel library.
#ifndef LOGIT_WORKER_KERNEL_TRAINER_H_
#define LOGIT_WORKER_KERNEL_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/dataset.h"
#include "worker/kernel/metrics.h"
#include "worker/kernel/train_options.h"
#include "worker/kernel/training_checkpoint.h"
#include "worker/model/model.h"

namespace logit {

class Collective;

// Why training stopped.
enum class StopReason {
  kMaxEpochs,      // ran every epoch (SGD/Adam) or iteration (L-BFGS) allowed
  kObjectiveTol,   // L-BFGS: the relative objective decrease fell to tol
  kGradientTol,    // L-BFGS: the (pseudo-)gradient max-norm fell to tol
  kLineSearch,     // L-BFGS: no step along steepest descent decreased the objective
  kEarlyStopping,  // SGD/Adam: early_stopping_patience epochs without improvement
};

// The reason as the summaries and the CLI print it: "max_epochs", "objective_tol",
// "gradient_tol", "line_search", "early_stopping".
const char* StopReasonName(StopReason reason);

struct TrainResult {
  LinearModel model;  // on raw features (standardisation folded in)
  std::vector<EpochRecord> history;
  StopReason stop_reason = StopReason::kMaxEpochs;
  int64_t epochs_run = 0;
  int64_t function_evaluations = 0;  // full-data passes (L-BFGS) or minibatch steps
  double objective = 0;              // final objective (training space, double precision)
  double train_loss = 0;
  std::optional<ClassificationMetrics> train_metrics, val_metrics, test_metrics;
  double wall_seconds = 0;
  std::string device;  // where the arithmetic ran, e.g. "cpu"
  double l2 = 0;       // the L2 penalty trained with (from TrainOptions::C when that is set)
};

struct TrainInputs {
  const Dataset* train = nullptr;  // required
  const Dataset* val = nullptr;    // optional: early stopping and val metrics
  const Dataset* test = nullptr;   // optional: test metrics
  // Optional stop request (a cancelled job): training returns Cancelled soon after it is set,
  // on every rank together.
  const std::atomic<bool>* stop = nullptr;
  // Optional: called after every SGD/Adam step with (epoch, step, steps per epoch, rows per
  // step over all ranks); keep it cheap (the agent throttles what it reports).
  std::function<void(int64_t, int64_t, int64_t, int64_t)> on_step = {};  // a StepCallback
  // Optional: continue the run this checkpoint saved (made with the same options and data, on
  // any number of ranks): the optimizer's state and the history so far are restored, so the
  // result's history and epochs_run count from the run's start. Every rank passes the same one.
  const TrainingCheckpoint* resume = nullptr;
  // Every checkpoint_every epochs (L-BFGS iterations), when training goes on after that epoch,
  // on_checkpoint receives the training state: on rank 0 only (or without a collective), before
  // its next epoch; the other ranks wait for it in their next collective, so hand slow work (an
  // upload) to another thread. 0 = never.
  int64_t checkpoint_every = 0;
  std::function<void(const TrainingCheckpoint&)> on_checkpoint = {};
};

using EpochCallback = std::function<void(const EpochRecord&)>;
using StepCallback =
    std::function<void(int64_t epoch, int64_t step, int64_t steps, int64_t rows_per_step)>;

// Trains with `options`. With a `collective` (one per rank), every shard contributes to global
// sums through it; without one, the inputs are the whole dataset. Returns InvalidArgument for bad
// options or data (naming the option or file), or for a resume checkpoint that does not fit
// these options and data (naming "checkpoint"), or the collective's error.
absl::StatusOr<TrainResult> Train(const TrainOptions& options, const TrainInputs& inputs,
                                  const EpochCallback& on_epoch = {},
                                  Collective* collective = nullptr);

// Describes the BLAS library the process loaded and LibTorch's threading, for logs.
std::string DescribeComputeBackend();

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_TRAINER_H_
