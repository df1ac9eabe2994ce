// SGD (momentum, Nesterov) and Adam over shuffled minibatches, with proximal L1 steps and early
// stopping. Internal to the kernel: use MakeOptimizer (optimizer.h).
#ifndef LOGIT_WORKER_KERNEL_MINIBATCH_OPTIMIZER_H_
#define LOGIT_WORKER_KERNEL_MINIBATCH_OPTIMIZER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "worker/kernel/optimizer.h"

namespace logit {

// options.optimizer must be kSgd or kAdam. With the objective's collective, every rank must call
// it: the ranks learn the global training row ids (an allreduce of one byte per row of the
// file), which fix every epoch's batches whatever the number of ranks; that allreduce's error
// is returned.
absl::StatusOr<std::unique_ptr<Optimizer>> MakeMinibatchOptimizer(const TrainOptions& options,
                                                                  LogisticObjective& objective);

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_MINIBATCH_OPTIMIZER_H_
