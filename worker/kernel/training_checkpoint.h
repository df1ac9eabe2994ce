// The whole state of a training run between two epochs, as plain values: what rank 0 saves so
// that a retried attempt, on any number of ranks, continues where the run stopped. LibTorch-free
// (the server, the checkpoint files and the CLI include it without the kernel).
#ifndef LOGIT_WORKER_KERNEL_TRAINING_CHECKPOINT_H_
#define LOGIT_WORKER_KERNEL_TRAINING_CHECKPOINT_H_

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace logit {

// An optimizer's state as named arrays: everything needed to continue training exactly where it
// stopped (parameters, step counters, moments, L-BFGS pairs, epoch, early-stopping record).
// Parameters and moments are stored feature-major (the model's layout) whatever layout the
// optimizer computes in; float32 values are stored exactly as float64. Nothing in it depends on
// the number of ranks.
struct OptimizerState {
  std::string optimizer;  // OptimizerName() of the optimizer that saved it
  std::map<std::string, std::vector<double>> reals;
  std::map<std::string, std::vector<int64_t>> integers;

  bool operator==(const OptimizerState& other) const {
    return optimizer == other.optimizer && reals == other.reals && integers == other.integers;
  }
};

// One row of the per-epoch history (an L-BFGS iteration counts as an epoch).
struct EpochRecord {
  int64_t epoch = 0;      // 1-based
  double train_loss = 0;  // mean weighted cross-entropy on the training rows
  double objective = 0;   // train_loss + l1 |W|_1 + (l2/2) |W|^2 (training space)
  double val_loss = std::numeric_limits<double>::quiet_NaN();      // NaN without validation
  double val_accuracy = std::numeric_limits<double>::quiet_NaN();  // NaN without validation
  double seconds = 0;                                              // wall time of the epoch
  int64_t samples = 0;  // training rows processed in the epoch, over all ranks
  int64_t local_samples = 0;  // of which this rank's (metrics only; not saved in checkpoints)
};

// Training saved after epoch `epoch` (1-based; an L-BFGS iteration counts as an epoch).
struct TrainingCheckpoint {
  OptimizerState state;
  std::vector<EpochRecord> history;  // epochs 1..epoch, one record each
  int64_t epoch = 0;
};

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_TRAINING_CHECKPOINT_H_
