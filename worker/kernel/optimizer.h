// The optimizers of the kernel behind one interface: L-BFGS / OWL-QN (float64, float32, or
// mixed = float32 products then a float64 polish), SGD (momentum, Nesterov) and Adam. Each hides
// whether it runs the fused CPU loops or ATen ops, and can save its whole state to a plain,
// serialisable OptimizerState (training_checkpoint.h) and continue from one: bit for bit on the
// same number of ranks, the same mathematics on any other. LibTorch-free: ATen types are only
// forward-declared here.
#ifndef LOGIT_WORKER_KERNEL_OPTIMIZER_H_
#define LOGIT_WORKER_KERNEL_OPTIMIZER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/kernel/train_options.h"
#include "worker/kernel/trainer.h"
#include "worker/kernel/training_checkpoint.h"

namespace at {
class Tensor;
}  // namespace at

namespace logit {

class LogisticObjective;

// The training loss and objective after an epoch (an L-BFGS iteration counts as an epoch), or
// at the end of training; training space, global over all ranks.
struct EpochValue {
  double train_loss = 0;
  double objective = 0;  // train_loss + l1 |W|_1 + (l2/2) |W|^2
};

// What a minibatch optimizer calls while it runs an epoch.
struct EpochHooks {
  // Agrees on a stop request every few steps; a non-OK status ends the epoch with it.
  std::function<absl::Status()> check_stop;
  StepCallback on_step;  // optional: after every step
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Runs the next epoch. Returns nullopt when the optimizer stopped without taking one (L-BFGS at
  // a point that meets the gradient tolerance or admits no decrease; see stop_reason()), or the
  // objective's / collective's error.
  virtual absl::StatusOr<std::optional<EpochValue>> RunEpoch(const EpochHooks& hooks) = 0;
  // Ends the epoch RunEpoch returned, with the value early stopping monitors (the validation
  // loss, or the training objective without validation data); may finish the optimizer.
  virtual absl::Status EndEpoch(double monitored) = 0;
  virtual bool finished() const = 0;
  // Meaningful once finished().
  virtual StopReason stop_reason() const = 0;
  virtual int64_t epochs_run() const = 0;
  // Full-data passes (L-BFGS) or minibatch steps (SGD/Adam) so far.
  virtual int64_t function_evaluations() const = 0;
  // SGD/Adam evaluate validation and check divergence after every epoch; L-BFGS only at the end.
  virtual bool validates_every_epoch() const = 0;

  // The current parameters, theta = [W (d x C, row-major), b (C)], as of the last epoch's end.
  virtual const at::Tensor& parameters() const = 0;
  // Loss and objective at the current parameters (may take a pass over the data).
  virtual absl::StatusOr<EpochValue> FinalValue() = 0;

  // The whole state between epochs. RestoreState takes a state saved by an optimizer made with
  // the same options and objective shape; InvalidArgument naming the entry otherwise.
  virtual OptimizerState SaveState() const = 0;
  virtual absl::Status RestoreState(const OptimizerState& state) = 0;
};

// The optimizer `options` ask for, over `objective` (which must outlive it), starting from zero
// parameters. ResourceExhausted when the L-BFGS history would not fit its memory budget;
// otherwise the collective's error (SGD/Adam agree on the steps per epoch).
absl::StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(const TrainOptions& options,
                                                         LogisticObjective& objective);

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_OPTIMIZER_H_
