// L-BFGS / OWL-QN behind the Optimizer interface, with --precision mixed's float64 polish, and
// MakeOptimizer.
#include <ATen/ATen.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "worker/common/status.h"
#include "worker/kernel/lbfgs.h"
#include "worker/kernel/minibatch_optimizer.h"
#include "worker/kernel/objective.h"
#include "worker/kernel/optimizer.h"

namespace logit {

namespace {

// An iteration counts as an epoch. With --precision mixed on dense CPU rows, full passes
// multiply in float32 (fast) until L-BFGS stalls, then a float64 polish continues from there
// (fresh history) to the tolerance, within the same iteration budget.
class LbfgsOptimizer : public Optimizer {
 public:
  LbfgsOptimizer(const TrainOptions& options, LogisticObjective& objective,
                 const LbfgsOptions& lbfgs)
      : options_(options),
        obj_(objective),
        lbfgs_(lbfgs),
        epochs_(EffectiveEpochs(options)),
        polishes_(PolishesInFloat64(options) && objective.mixed_products()),
        start_(at::zeros({objective.num_params()}, objective.options())),
        minimizer_(std::make_unique<LbfgsMinimizer>(objective, lbfgs)) {}

  absl::StatusOr<std::optional<EpochValue>> RunEpoch(const EpochHooks& hooks) override;
  absl::Status EndEpoch(double monitored) override;
  bool finished() const override { return stop_.has_value(); }
  StopReason stop_reason() const override { return stop_.value_or(StopReason::kMaxEpochs); }
  int64_t epochs_run() const override { return iterations_; }
  int64_t function_evaluations() const override {
    return earlier_evaluations_ + minimizer_->evaluations();
  }
  bool validates_every_epoch() const override { return false; }
  const at::Tensor& parameters() const override {
    return started_ ? minimizer_->current().x : start_;
  }
  absl::StatusOr<EpochValue> FinalValue() override;
  OptimizerState SaveState() const override;
  absl::Status RestoreState(const OptimizerState& state) override;

 private:
  bool CanPolish() const { return polishes_ && !polishing_ && iterations_ < epochs_; }
  absl::Status StartPolish();

  const TrainOptions options_;
  LogisticObjective& obj_;
  const LbfgsOptions lbfgs_;
  const int64_t epochs_;
  const bool polishes_;
  const at::Tensor start_;  // zeros: the starting point
  std::unique_ptr<LbfgsMinimizer> minimizer_;
  bool started_ = false;
  bool polishing_ = false;
  int64_t iterations_ = 0;           // over both phases
  int64_t polish_start_ = 0;         // iterations_ when the float64 polish began
  int64_t earlier_evaluations_ = 0;  // of the mixed phase, once polishing
  std::optional<StopReason> stop_;
};

absl::StatusOr<std::optional<EpochValue>> LbfgsOptimizer::RunEpoch(const EpochHooks&) {
  if (!started_) {
    RETURN_IF_ERROR(minimizer_->Start(start_));
    started_ = true;
  }
  while (true) {
    if (iterations_ >= epochs_) {
      stop_ = StopReason::kMaxEpochs;
      return std::optional<EpochValue>();
    }
    ASSIGN_OR_RETURN(const LbfgsOutcome outcome, minimizer_->Iterate());
    if (outcome == LbfgsOutcome::kStepped) {
      ++iterations_;
      EpochValue value;
      value.train_loss = minimizer_->current().value.loss;
      value.objective = minimizer_->current().f;
      return std::optional<EpochValue>(value);
    }
    if (CanPolish()) {
      RETURN_IF_ERROR(StartPolish());
      continue;
    }
    stop_ =
        outcome == LbfgsOutcome::kGradientTol ? StopReason::kGradientTol : StopReason::kLineSearch;
    return std::optional<EpochValue>();
  }
}

absl::Status LbfgsOptimizer::EndEpoch(double) {
  // The polish starts with an empty history, and its first steps (steepest descent, then a few
  // pairs) can decrease the objective by less than the tolerance far from the optimum (digits:
  // stopped 1.4e-8 above it); it stops on the tolerance only once it has some history again.
  constexpr int64_t kMinPolishIterations = 10;
  const bool polish_young = polishing_ && iterations_ - polish_start_ < kMinPolishIterations;
  if (!minimizer_->converged() || (polish_young && iterations_ < epochs_)) {
    if (iterations_ >= epochs_) stop_ = StopReason::kMaxEpochs;
    return absl::OkStatus();
  }
  if (CanPolish()) return StartPolish();
  stop_ = StopReason::kObjectiveTol;
  return absl::OkStatus();
}

absl::Status LbfgsOptimizer::StartPolish() {
  obj_.set_mixed_products(false);
  earlier_evaluations_ += minimizer_->evaluations();
  const at::Tensor from = minimizer_->current().x;
  minimizer_ = std::make_unique<LbfgsMinimizer>(obj_, lbfgs_);
  polishing_ = true;
  polish_start_ = iterations_;
  return minimizer_->Start(from);
}

absl::StatusOr<EpochValue> LbfgsOptimizer::FinalValue() {
  if (!started_) {
    RETURN_IF_ERROR(minimizer_->Start(start_));
    started_ = true;
  }
  EpochValue value;
  value.train_loss = minimizer_->current().value.loss;
  value.objective = minimizer_->current().f;
  return value;
}

OptimizerState LbfgsOptimizer::SaveState() const {
  OptimizerState state;
  state.optimizer = OptimizerName(options_.optimizer);
  if (started_) minimizer_->Save("", state);
  state.integers["lbfgs"] = {iterations_, earlier_evaluations_, started_ ? 1 : 0,
                             polishing_ ? 1 : 0, stop_ ? static_cast<int64_t>(*stop_) : -1,
                             polish_start_};
  return state;
}

absl::Status LbfgsOptimizer::RestoreState(const OptimizerState& state) {
  auto counters = state.integers.find("lbfgs");
  if (state.optimizer != OptimizerName(options_.optimizer) || counters == state.integers.end() ||
      (counters->second.size() != 5 && counters->second.size() != 6)) {
    return absl::InvalidArgumentError("optimizer state: not an L-BFGS state");
  }
  const std::vector<int64_t>& c = counters->second;
  if (c[0] < 0 || c[1] < 0 || c[4] < -1 ||
      c[4] > static_cast<int64_t>(StopReason::kEarlyStopping) ||
      (c.size() > 5 && (c[5] < 0 || c[5] > c[0]))) {
    return absl::InvalidArgumentError("optimizer state: L-BFGS counters out of range");
  }
  started_ = c[2] != 0;
  polishing_ = c[3] != 0;
  obj_.set_mixed_products(polishing_ ? false : UsesMixedProducts(options_));
  minimizer_ = std::make_unique<LbfgsMinimizer>(obj_, lbfgs_);
  if (started_) RETURN_IF_ERROR(minimizer_->Restore("", state));
  iterations_ = c[0];
  earlier_evaluations_ = c[1];
  // States written before the polish's start was saved: a resumed polish counts as mature.
  polish_start_ = c.size() > 5 ? c[5] : c[0] - 1000;
  stop_.reset();
  if (c[4] >= 0) stop_ = static_cast<StopReason>(c[4]);
  return absl::OkStatus();
}

// The L-BFGS settings; ResourceExhausted when the asked-for history does not fit in ~1.6 GB.
absl::StatusOr<LbfgsOptions> LbfgsSettings(const TrainOptions& options,
                                           const LogisticObjective& objective) {
  LbfgsOptions lo;
  lo.tol = options.tol;
  // Two float64 vectors of num_params per pair; keep the history under ~1.6 GB.
  const int64_t fit = static_cast<int64_t>(1.6e9 / (16.0 * objective.num_params()));
  if (options.lbfgs_history > std::max<int64_t>(10, fit)) {
    // The same on every rank (num_params is global): all stop together.
    return absl::ResourceExhaustedError(absl::StrCat(
        "lbfgs_history: ", options.lbfgs_history, " pairs of 2 x ", objective.num_params(),
        " float64 values exceed the 1.6 GB history budget (at most ", std::max<int64_t>(10, fit),
        " pairs for this model)"));
  }
  // Automatic: up to 100 pairs within 64 MB (Fashion-MNIST's 7,850 parameters keep 100), at
  // least scikit-learn's 10 (a 2^18-feature sparse model keeps 15: 126 MB less than 100 pairs,
  // and with the diagonal preconditioner no slower to the optimum).
  const int64_t small = static_cast<int64_t>(64e6 / (16.0 * objective.num_params()));
  lo.history = options.lbfgs_history > 0 ? options.lbfgs_history
                                         : std::max<int64_t>(10, std::min<int64_t>(100, small));
  lo.l1 = options.l1;
  lo.initial_step = EffectiveLearningRate(options);
  ASSIGN_OR_RETURN(lo.preconditioner, objective.DiagonalPreconditioner());
  return lo;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(const TrainOptions& options,
                                                         LogisticObjective& objective) {
  if (options.optimizer != OptimizerKind::kLbfgs) {
    return MakeMinibatchOptimizer(options, objective);
  }
  ASSIGN_OR_RETURN(const LbfgsOptions lbfgs, LbfgsSettings(options, objective));
  return std::unique_ptr<Optimizer>(new LbfgsOptimizer(options, objective, lbfgs));
}

}  // namespace logit
