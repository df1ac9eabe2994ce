// Preparation of a training run: the facts every rank agrees on (classes, features, rows), the
// row weights, the standardisation and the objectives. Internal to the kernel (includes ATen).
#ifndef LOGIT_WORKER_KERNEL_PROBLEM_H_
#define LOGIT_WORKER_KERNEL_PROBLEM_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/kernel/collective.h"
#include "worker/kernel/objective.h"
#include "worker/kernel/trainer.h"

namespace logit {

struct TrainingProblem {
  at::Device device = at::kCPU;
  int64_t classes = 0;                       // K, global
  int64_t num_features = 0;                  // d, global
  int64_t global_rows = 0;                   // training rows over all ranks
  double l2 = 0;  // the L2 penalty trained with: options.l2, or 1/(C n) for options.C
  std::unique_ptr<LogisticObjective> train;  // the training objective (l2 included)
  std::unique_ptr<LogisticObjective> val;    // validation loss; null without validation data
};

// "cpu", "auto", "cuda" or "cuda:N" as a device; InvalidArgument naming the device otherwise.
absl::StatusOr<at::Device> ResolveDevice(const std::string& name);

// Builds the problem from validated options. With a collective, every rank must call it: checks
// that may fail on one shard only are agreed on, so that every rank returns the same error
// ("rank R: ..."). InvalidArgument names the file and row or the option; ResourceExhausted when
// the model is too large. May throw LibTorch's exceptions.
absl::StatusOr<TrainingProblem> PrepareProblem(const TrainOptions& options,
                                               const TrainInputs& inputs, Collective* collective);

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_PROBLEM_H_
