// Full-batch L-BFGS with a strong-Wolfe line search, and OWL-QN (orthant-wise L-BFGS) when an
// L1 penalty is present, so that L1 produces exact zeros. Internal to the kernel.
#ifndef LOGIT_WORKER_KERNEL_LBFGS_H_
#define LOGIT_WORKER_KERNEL_LBFGS_H_

#include <ATen/ATen.h>

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "worker/kernel/objective.h"

namespace logit {

struct LbfgsOptions {
  int64_t max_iterations = 1000;
  double tol = 1e-6;          // objective relative decrease and gradient max-norm thresholds
  int64_t history = 20;       // (s, y) pairs kept
  double l1 = 0;              // OWL-QN when > 0 (applies to W only, never the bias)
  double initial_step = 1.0;  // first trial step of each line search (scaled on iteration 1)
};

struct LbfgsReport {
  std::string stop_reason;  // max_epochs | objective_tol | gradient_tol | line_search
  int64_t iterations = 0;
  int64_t evaluations = 0;  // full passes over the data
  double objective = 0;     // including the L1 term
  PassValue last;           // loss and smooth objective at the returned point
};

// Called after every iteration with the iteration number (1-based), the smooth pass value and
// the full objective; a non-OK status stops the optimizer and is returned.
using LbfgsIterationCallback =
    std::function<absl::Status(int64_t iteration, const PassValue& value, double objective)>;

// Minimises the objective (+ l1 |W|_1) from `theta` in place.
absl::StatusOr<LbfgsReport> MinimizeLbfgs(LogisticObjective& objective, at::Tensor& theta,
                                          const LbfgsOptions& options,
                                          const LbfgsIterationCallback& on_iteration);

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_LBFGS_H_
