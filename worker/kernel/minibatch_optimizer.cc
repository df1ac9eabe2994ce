#include "worker/kernel/minibatch_optimizer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/common/status.h"
#include "worker/kernel/collective.h"
#include "worker/kernel/fused_cpu.h"
#include "worker/kernel/objective.h"

namespace logit {

namespace {

// A stop request is agreed on every kStopCheckSteps steps (and by the trainer every epoch).
constexpr int64_t kStopCheckSteps = 32;

std::vector<double> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// A global batch of batch_size rows takes ceil(B / W) rows from each of the W ranks.
int64_t LocalBatch(const TrainOptions& options, const LogisticObjective& objective) {
  const int world = objective.collective() ? objective.collective()->world_size() : 1;
  return std::max<int64_t>(1, (options.batch_size + world - 1) / world);
}

absl::Status MissingEntry(const std::string& name) {
  return absl::InvalidArgumentError(
      absl::StrCat("optimizer state: '", name, "' is missing or has the wrong size"));
}

// The engine's state as integers (bit-cast from its unsigned words).
std::vector<int64_t> SaveRng(const std::mt19937_64& rng) {
  std::ostringstream os;
  os << rng;
  std::istringstream is(os.str());
  std::vector<int64_t> words;
  for (uint64_t w; is >> w;) words.push_back(static_cast<int64_t>(w));
  return words;
}

absl::Status RestoreRng(const std::vector<int64_t>& words, std::mt19937_64& rng) {
  std::ostringstream os;
  for (int64_t w : words) os << static_cast<uint64_t>(w) << ' ';
  std::istringstream is(os.str());
  is >> rng;
  if (is.fail()) return MissingEntry("rng");
  return absl::OkStatus();
}

// The shared epoch loop of SGD and Adam: shuffling, minibatches, early stopping, state.
class MinibatchOptimizer : public Optimizer {
 public:
  MinibatchOptimizer(const TrainOptions& options, LogisticObjective& objective, int64_t steps);

  absl::StatusOr<std::optional<EpochValue>> RunEpoch(const EpochHooks& hooks) override;
  absl::Status EndEpoch(double monitored) override;
  bool finished() const override { return early_stopped_ || epoch_ >= epochs_; }
  StopReason stop_reason() const override {
    return early_stopped_ ? StopReason::kEarlyStopping : StopReason::kMaxEpochs;
  }
  int64_t epochs_run() const override { return epoch_; }
  int64_t function_evaluations() const override { return step_count_; }
  bool validates_every_epoch() const override { return true; }
  const at::Tensor& parameters() const override { return theta_; }
  absl::StatusOr<EpochValue> FinalValue() override;
  OptimizerState SaveState() const override;
  absl::Status RestoreState(const OptimizerState& state) override;

 protected:
  // One update of params_ from grad_ (step_count_ counts this step).
  virtual void Update() = 0;
  // The moment buffers the update keeps, by name (same layout as params_).
  virtual std::vector<std::pair<std::string, const at::Tensor*>> Moments() const = 0;

  const TrainOptions options_;
  LogisticObjective& obj_;
  const double lr_;
  const int64_t nw_;
  // On the CPU in float32 the update is one fused loop instead of ~8 tensor ops.
  bool fused_ = false;
  at::Tensor params_, grad_;
  int64_t step_count_ = 0;

 private:
  absl::StatusOr<double> RunSteps(const EpochHooks& hooks);
  absl::StatusOr<std::optional<PassValue>> Step(int64_t s);
  // A moment or parameter tensor in the model's (feature-major) layout, and back.
  std::vector<double> FeatureMajor(const at::Tensor& t) const;
  absl::Status LoadFeatureMajor(const OptimizerState& state, const std::string& name,
                                const at::Tensor& into);

  const int64_t epochs_;
  // The fused CPU path keeps the parameters (and the moments) class-major during an epoch;
  // theta_ gets them back at every epoch's end. The update is elementwise either way.
  const bool class_major_;
  const int64_t local_batch_, steps_;
  at::Tensor theta_;  // feature-major; the same tensor as params_ unless class_major_
  std::vector<int64_t> order_;
  std::mt19937_64 rng_;
  int64_t epoch_ = 0;
  double best_ = std::numeric_limits<double>::infinity();
  int64_t since_best_ = 0;
  bool early_stopped_ = false;
};

MinibatchOptimizer::MinibatchOptimizer(const TrainOptions& options, LogisticObjective& objective,
                                       int64_t steps)
    : options_(options),
      obj_(objective),
      lr_(EffectiveLearningRate(options)),
      nw_(objective.num_weights()),
      epochs_(EffectiveEpochs(options)),
      class_major_(objective.ClassMajorMinibatch()),
      local_batch_(LocalBatch(options, objective)),
      steps_(steps),
      order_(objective.num_rows()),
      rng_(options.seed) {
  theta_ = at::zeros({obj_.num_params()}, obj_.options());
  params_ = class_major_ ? obj_.ToClassMajor(theta_) : theta_;
  grad_ = at::zeros_like(params_);
  fused_ = params_.device().is_cpu() && params_.scalar_type() == at::kFloat;
  std::iota(order_.begin(), order_.end(), 0);
}

absl::StatusOr<std::optional<EpochValue>> MinibatchOptimizer::RunEpoch(const EpochHooks& hooks) {
  ++epoch_;
  std::shuffle(order_.begin(), order_.end(), rng_);
  ASSIGN_OR_RETURN(const double loss_sum, RunSteps(hooks));
  if (class_major_) obj_.FromClassMajor(params_, theta_);
  EpochValue value;
  value.train_loss = loss_sum / static_cast<double>(steps_);
  value.objective = value.train_loss + obj_.Penalty(theta_, options_.l1);
  return std::optional<EpochValue>(value);
}

absl::StatusOr<double> MinibatchOptimizer::RunSteps(const EpochHooks& hooks) {
  double loss_sum = 0;
  for (int64_t s = 0; s < steps_; ++s) {
    if (s % kStopCheckSteps == kStopCheckSteps - 1 && hooks.check_stop) {
      RETURN_IF_ERROR(hooks.check_stop());
    }
    ASSIGN_OR_RETURN(const std::optional<PassValue> v, Step(s));
    if (!v) continue;
    loss_sum += v->loss;
    ++step_count_;
    if (hooks.on_step) hooks.on_step(epoch_, s + 1, steps_, options_.batch_size);
    if (s + 1 < steps_) {  // the next batch's rows load while this step updates
      const size_t nb = std::min<size_t>(order_.size(), (s + 1) * local_batch_);
      obj_.PrefetchBatch(order_, nb, std::min<size_t>(order_.size(), nb + local_batch_));
    }
    Update();
  }
  return loss_sum;
}

// The gradient of minibatch s into grad_; nullopt for a skipped batch.
absl::StatusOr<std::optional<PassValue>> MinibatchOptimizer::Step(int64_t s) {
  const size_t b = std::min<size_t>(order_.size(), s * local_batch_);
  const size_t e = std::min<size_t>(order_.size(), b + local_batch_);
  auto v = class_major_ ? obj_.BatchValueAndGradientClassMajor(params_, order_, b, e, grad_)
                        : obj_.BatchValueAndGradient(params_, order_, b, e, grad_);
  if (v.ok()) return std::optional<PassValue>(*v);
  // A global batch with no weight (possible with uneven shards) is skipped.
  if (obj_.collective() != nullptr && absl::IsInvalidArgument(v.status())) {
    return std::optional<PassValue>();
  }
  return v.status();
}

absl::Status MinibatchOptimizer::EndEpoch(double monitored) {
  if (monitored < best_ - options_.tol * std::abs(best_) || !std::isfinite(best_)) {
    best_ = monitored;
    since_best_ = 0;
  } else if (options_.early_stopping_patience > 0 &&
             ++since_best_ >= options_.early_stopping_patience) {
    early_stopped_ = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<EpochValue> MinibatchOptimizer::FinalValue() {
  ASSIGN_OR_RETURN(const EvalStats stats, obj_.Evaluate(theta_));  // loss only, no gradient
  EpochValue value;
  value.train_loss = stats.loss;
  value.objective = stats.loss + obj_.Penalty(theta_, options_.l1);
  return value;
}

std::vector<double> MinibatchOptimizer::FeatureMajor(const at::Tensor& t) const {
  if (!class_major_) return ToVector(t);
  at::Tensor out = at::empty_like(theta_);
  obj_.FromClassMajor(t, out);
  return ToVector(out);
}

absl::Status MinibatchOptimizer::LoadFeatureMajor(const OptimizerState& state,
                                                  const std::string& name, const at::Tensor& into) {
  auto it = state.reals.find(name);
  if (it == state.reals.end() || static_cast<int64_t>(it->second.size()) != into.numel()) {
    return MissingEntry(name);
  }
  const at::Tensor fm =
      at::from_blob(const_cast<double*>(it->second.data()), {into.numel()}, at::kDouble)
          .to(into.options());
  into.copy_(class_major_ ? obj_.ToClassMajor(fm) : fm);
  return absl::OkStatus();
}

OptimizerState MinibatchOptimizer::SaveState() const {
  OptimizerState state;
  state.optimizer = OptimizerName(options_.optimizer);
  state.reals["params"] = ToVector(theta_);
  for (const auto& [name, moment] : Moments()) {
    state.reals[name] = FeatureMajor(*moment);
  }
  state.reals["best"] = {best_};
  state.integers["counters"] = {epoch_, step_count_, since_best_, early_stopped_ ? 1 : 0};
  state.integers["order"] = order_;
  state.integers["rng"] = SaveRng(rng_);
  return state;
}

absl::Status MinibatchOptimizer::RestoreState(const OptimizerState& state) {
  if (state.optimizer != OptimizerName(options_.optimizer)) {
    return absl::InvalidArgumentError(absl::StrCat("optimizer state: saved by '", state.optimizer,
                                                   "', not '", OptimizerName(options_.optimizer),
                                                   "'"));
  }
  auto counters = state.integers.find("counters");
  auto order = state.integers.find("order");
  auto rng = state.integers.find("rng");
  auto best = state.reals.find("best");
  if (counters == state.integers.end() || counters->second.size() != 4) {
    return MissingEntry("counters");
  }
  if (order == state.integers.end() || order->second.size() != order_.size()) {
    return MissingEntry("order");
  }
  if (rng == state.integers.end()) return MissingEntry("rng");
  if (best == state.reals.end() || best->second.size() != 1) return MissingEntry("best");
  RETURN_IF_ERROR(LoadFeatureMajor(state, "params", params_));
  if (class_major_) obj_.FromClassMajor(params_, theta_);
  for (const auto& [name, moment] : Moments()) {
    RETURN_IF_ERROR(LoadFeatureMajor(state, name, *moment));
  }
  RETURN_IF_ERROR(RestoreRng(rng->second, rng_));
  order_ = order->second;
  best_ = best->second[0];
  epoch_ = counters->second[0];
  step_count_ = counters->second[1];
  since_best_ = counters->second[2];
  early_stopped_ = counters->second[3] != 0;
  return absl::OkStatus();
}

class SgdOptimizer : public MinibatchOptimizer {
 public:
  SgdOptimizer(const TrainOptions& options, LogisticObjective& objective, int64_t steps)
      : MinibatchOptimizer(options, objective, steps), velocity_(at::zeros_like(params_)) {}

 protected:
  void Update() override;
  std::vector<std::pair<std::string, const at::Tensor*>> Moments() const override {
    return {{"velocity", &velocity_}};
  }

 private:
  at::Tensor velocity_;
};

void SgdOptimizer::Update() {
  const TrainOptions& o = options_;
  if (fused_) {
    fused::SgdStep(params_.data_ptr<float>(), grad_.data_ptr<float>(), velocity_.data_ptr<float>(),
                   params_.numel(), nw_, lr_, o.momentum, o.nesterov, o.l1);
    return;
  }
  if (o.momentum > 0) {
    velocity_.mul_(o.momentum).add_(grad_);
    if (o.nesterov) {
      params_.add_(grad_, -lr_).add_(velocity_, -lr_ * o.momentum);
    } else {
      params_.add_(velocity_, -lr_);
    }
  } else {
    params_.add_(grad_, -lr_);
  }
  at::Tensor w = params_.narrow(0, 0, nw_);
  if (o.l1 > 0) w.copy_(w.sign() * (w.abs() - lr_ * o.l1).clamp_min(0));
}

class AdamOptimizer : public MinibatchOptimizer {
 public:
  AdamOptimizer(const TrainOptions& options, LogisticObjective& objective, int64_t steps)
      : MinibatchOptimizer(options, objective, steps),
        m1_(at::zeros_like(params_)),
        m2_(at::zeros_like(params_)),
        denom_(at::empty_like(params_)) {}

 protected:
  void Update() override;
  std::vector<std::pair<std::string, const at::Tensor*>> Moments() const override {
    return {{"m1", &m1_}, {"m2", &m2_}};
  }

 private:
  at::Tensor m1_, m2_, denom_;
};

void AdamOptimizer::Update() {
  const TrainOptions& o = options_;
  if (fused_) {
    fused::AdamStep(params_.data_ptr<float>(), grad_.data_ptr<float>(), m1_.data_ptr<float>(),
                    m2_.data_ptr<float>(), params_.numel(), nw_, lr_, o.beta1, o.beta2, o.adam_eps,
                    step_count_, o.l1);
    return;
  }
  m1_.mul_(o.beta1).add_(grad_, 1 - o.beta1);
  m2_.mul_(o.beta2).addcmul_(grad_, grad_, 1 - o.beta2);
  const double bc1 = 1 - std::pow(o.beta1, static_cast<double>(step_count_));
  const double bc2 = 1 - std::pow(o.beta2, static_cast<double>(step_count_));
  at::sqrt_out(denom_, m2_).div_(std::sqrt(bc2)).add_(o.adam_eps);
  params_.addcdiv_(m1_, denom_, -lr_ / bc1);
  if (o.l1 > 0) {  // proximal step with Adam's per-coordinate step size
    at::Tensor w = params_.narrow(0, 0, nw_);
    at::Tensor thresh = (lr_ * o.l1) / denom_.narrow(0, 0, nw_);
    w.copy_(w.sign() * (w.abs() - thresh).clamp_min(0));
  }
}

// Every rank runs the same number of steps per epoch: the largest shard sets it.
absl::StatusOr<int64_t> StepsPerEpoch(const TrainOptions& options, LogisticObjective& objective) {
  Collective* coll = objective.collective();
  const int64_t local_batch = LocalBatch(options, objective);
  at::Tensor steps =
      at::full({1}, (objective.num_rows() + local_batch - 1) / local_batch, at::kLong);
  if (coll != nullptr) RETURN_IF_ERROR(coll->AllReduceMax(steps));
  return std::max<int64_t>(1, steps.item<int64_t>());
}

}  // namespace

absl::StatusOr<std::unique_ptr<Optimizer>> MakeMinibatchOptimizer(const TrainOptions& options,
                                                                  LogisticObjective& objective) {
  ASSIGN_OR_RETURN(const int64_t steps, StepsPerEpoch(options, objective));
  if (options.optimizer == OptimizerKind::kAdam) {
    return std::unique_ptr<Optimizer>(new AdamOptimizer(options, objective, steps));
  }
  return std::unique_ptr<Optimizer>(new SgdOptimizer(options, objective, steps));
}

}  // namespace logit
