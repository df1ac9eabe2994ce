// Training options of the logistic-regression kernel (the JobSpec's training fields).
// LibTorch-free so that the CLI, the server and tests include it cheaply.
#ifndef LOGIT_WORKER_KERNEL_TRAIN_OPTIONS_H_
#define LOGIT_WORKER_KERNEL_TRAIN_OPTIONS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace logit {

enum class OptimizerKind { kSgd, kAdam, kLbfgs };
absl::StatusOr<OptimizerKind> ParseOptimizer(const std::string& name);
const char* OptimizerName(OptimizerKind k);

// Floating-point type of the kernel's arithmetic. kMixed: float64 parameters, optimizer state
// and sums, float32 products in full passes over dense rows on the CPU (the fused kernel).
enum class Precision { kAuto, kFloat32, kFloat64, kMixed };
absl::StatusOr<Precision> ParsePrecision(const std::string& name);

struct TrainOptions {
  // Number of classes K (2 = binary sigmoid model, > 2 = softmax). 0 = max label + 1.
  int64_t classes = 0;
  // Fit an (unregularised) intercept.
  bool fit_bias = true;
  OptimizerKind optimizer = OptimizerKind::kLbfgs;
  // Step size, > 0. Unset = the optimizer's default: sgd 0.1, adam 1e-3, lbfgs 1 (first step).
  std::optional<double> lr;
  // SGD momentum in [0, 1); with nesterov, Nesterov momentum.
  double momentum = 0.0;
  bool nesterov = false;
  // Adam moments.
  double beta1 = 0.9;
  double beta2 = 0.999;
  double adam_eps = 1e-8;
  // Rows per minibatch step (SGD/Adam), summed over all workers. >= 1.
  int64_t batch_size = 256;
  // Passes over the data (SGD/Adam); the iteration cap for L-BFGS. >= 1. Unset = 10 / 1000.
  std::optional<int64_t> epochs;
  // Stopping tolerance (see SPEC.md: relative objective decrease / gradient max-norm for
  // L-BFGS; relative improvement for early stopping). > 0.
  double tol = 1e-6;
  // Penalties: l1 * |W|_1 + (l2 / 2) * |W|^2; the bias is never penalised. >= 0.
  double l1 = 0.0;
  double l2 = 0.0;
  // scikit-learn's C (> 0; 0 = unset): the L2 penalty is then 1 / (C n), n the training rows
  // over all ranks after the split, and `l2` is ignored.
  double C = 0.0;
  // "" (none), "balanced" (n / (K * n_k)), or explicit "k=v,k=v" (unlisted classes: 1).
  std::string class_weight;
  // Centre and scale features for training; the returned model works on raw features.
  bool standardize = false;
  // SGD/Adam: stop after this many epochs without improvement > tol. 0 = never.
  int64_t early_stopping_patience = 0;
  // Seed for shuffling and splits; the same seed gives the same weights.
  uint64_t seed = 0;
  // L-BFGS history length (pairs kept). 0 = auto: 100 pairs while they fit in ~1.6 GB
  // (Fashion-MNIST needs ~3x fewer iterations than with 20), down to 10 for huge models.
  int64_t lbfgs_history = 0;
  // Kernel arithmetic: auto = float64 for L-BFGS (reaches 1e-6 gaps), float32 for SGD/Adam.
  // mixed (L-BFGS): float32 products on dense CPU rows until L-BFGS stalls, then float64.
  Precision precision = Precision::kAuto;
  // Intra-op threads; 0 = all cores.
  int threads = 0;
  // "cpu", "cuda", "cuda:N" or "auto".
  std::string device = "cpu";
};

// InvalidArgument naming the offending option (by its CLI/JobSpec name) when out of range.
absl::Status ValidateTrainOptions(const TrainOptions& options);

// Parses --class-weight; `classes` bounds explicit class ids when > 0.
struct ClassWeightSpec {
  bool balanced = false;
  std::map<int64_t, double> explicit_weights;
};
absl::StatusOr<ClassWeightSpec> ParseClassWeight(const std::string& text);

// Effective defaults.
double EffectiveLearningRate(const TrainOptions& o);
int64_t EffectiveEpochs(const TrainOptions& o);
bool UsesFloat64(const TrainOptions& o);
bool UsesMixedProducts(const TrainOptions& o);
// mixed precision with L-BFGS: the mixed phase is followed by a float64 phase.
bool PolishesInFloat64(const TrainOptions& o);

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_TRAIN_OPTIONS_H_
