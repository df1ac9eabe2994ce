// Full-batch L-BFGS with a strong-Wolfe line search, and OWL-QN (orthant-wise L-BFGS) when an
// L1 penalty is present, so that L1 produces exact zeros. One iteration at a time, with its whole
// state saveable. Internal to the kernel.
#ifndef LOGIT_WORKER_KERNEL_LBFGS_H_
#define LOGIT_WORKER_KERNEL_LBFGS_H_

#include <ATen/ATen.h>

#include <deque>
#include <string>

#include "absl/status/statusor.h"
#include "worker/kernel/objective.h"
#include "worker/kernel/optimizer.h"

namespace logit {

struct LbfgsOptions {
  double tol = 1e-6;          // objective relative decrease and gradient max-norm thresholds
  int64_t history = 20;       // (s, y) pairs kept
  double l1 = 0;              // OWL-QN when > 0 (applies to W only, never the bias)
  double initial_step = 1.0;  // first trial step of each line search (scaled on iteration 1)
  // Optional positive diagonal (one entry per parameter, mean 1): the initial inverse Hessian
  // is gamma * diag(preconditioner) instead of gamma * I (and steepest descent is scaled by it
  // before any pair is known), as for L-BFGS on variables rescaled by its square root. The
  // optimum does not change; the iterations to reach it do. Undefined: the identity.
  at::Tensor preconditioner;
};

// A point the minimizer visited.
struct LbfgsPoint {
  at::Tensor x;  // the parameters
  at::Tensor g;  // smooth gradient at x
  double f = 0;  // objective (smooth + l1) at x
  PassValue value;
};

// What one iteration did.
enum class LbfgsOutcome {
  kStepped,      // moved to a point with a lower objective
  kGradientTol,  // no step: the pseudo-gradient max-norm is <= tol
  kLineSearch,   // no step: not even steepest descent decreased the objective
};

class LbfgsMinimizer {
 public:
  // `objective` must outlive the minimizer.
  LbfgsMinimizer(LogisticObjective& objective, const LbfgsOptions& options);

  // Evaluates the starting point (a copy of `theta`) and clears the history.
  absl::Status Start(const at::Tensor& theta);
  // One iteration from the current point. REQUIRES: Start or Restore.
  absl::StatusOr<LbfgsOutcome> Iterate();
  // After kStepped: whether the relative objective decrease of that step was <= tol.
  bool converged() const { return converged_; }

  const LbfgsPoint& current() const { return cur_; }
  int64_t evaluations() const { return evals_; }  // full passes since construction

  // The current point, the (s, y) pairs and the counters, as entries named `prefix`... of `state`.
  void Save(const std::string& prefix, OptimizerState& state) const;
  absl::Status Restore(const std::string& prefix, const OptimizerState& state);

 private:
  struct Trial;
  absl::StatusOr<Trial> Eval(const at::Tensor& x);
  double L1(const at::Tensor& x) const;
  at::Tensor PseudoGradient(const at::Tensor& x, const at::Tensor& g) const;
  at::Tensor Direction(const at::Tensor& pg) const;
  // The search direction from pseudo-gradient pg (projected for OWL-QN; steepest descent when
  // the quasi-Newton one does not descend) and the first trial step.
  at::Tensor SearchDirection(const at::Tensor& pg, double* step);
  void Remember(const at::Tensor& s, const at::Tensor& y);
  void Reset();
  static double Cubic(const Trial& a, const Trial& b, double lo, double hi);
  absl::StatusOr<Trial> Probe(const Trial& at, const at::Tensor& d, double t);
  absl::StatusOr<Trial> StrongWolfe(const Trial& x0, const at::Tensor& d, double t);
  absl::StatusOr<Trial> Backtrack(const Trial& x0, const at::Tensor& pg, const at::Tensor& d,
                                  double t);
  Trial CurrentTrial() const;
  // A vector of num_params values to write into: a pooled one nothing else refers to (no
  // tensor, no view of its storage), else a new one kept in the pool. The trial points,
  // gradients, directions and history pairs of an iteration reuse the same few buffers instead
  // of allocating ~13 a step: with 2^20 features those were 8 MB each, and freeing them among
  // the long-lived ones fragmented the heap (120 MB of peak RSS on the 2M-row click set).
  at::Tensor Take() const;

  LogisticObjective& obj_;
  const LbfgsOptions opt_;
  int64_t nw_ = 0;
  int64_t evals_ = 0;
  LbfgsPoint cur_;
  bool converged_ = false;
  std::deque<at::Tensor> s_, y_;
  std::deque<double> rho_;
  double gamma_ = 1.0;
  mutable std::vector<at::Tensor> pool_;
};

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_LBFGS_H_
