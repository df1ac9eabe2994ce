#include "worker/kernel/minibatch_optimizer.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/common/status.h"
#include "worker/data/dataset.h"
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

absl::Status MissingEntry(const std::string& name) {
  return absl::InvalidArgumentError(
      absl::StrCat("optimizer state: '", name, "' is missing or has the wrong size"));
}

// The seed of epoch `epoch`'s shuffle (a function of the job's seed and the epoch only).
uint64_t EpochSeed(uint64_t seed, int64_t epoch) {
  return SplitMix64(SplitMix64(seed ^ 0x73687566666c65ULL) ^ static_cast<uint64_t>(epoch));
}

// The training rows of all ranks, and this rank's among them. Global position k in [0, G) is
// the k-th smallest global row id (Dataset::GlobalRow) held by any rank; this rank holds the
// local rows rows[start[k] .. start[k + 1]) with that id (normally none or one).
struct GlobalRowIndex {
  int64_t global_rows = 0;     // G
  std::vector<int64_t> start;  // G + 1 offsets into rows
  std::vector<int64_t> rows;   // local rows, by global id
};

// Every rank learns which global row ids exist from a MAX allreduce of a membership byte per id
// (once per run: total_rows bytes); the collective's error otherwise.
absl::StatusOr<GlobalRowIndex> IndexGlobalRows(const Dataset& data, Collective* coll) {
  std::vector<std::pair<int64_t, int64_t>> local(data.num_rows);  // (global id, local row)
  int64_t span = std::max<int64_t>(0, data.total_rows);
  for (int64_t i = 0; i < data.num_rows; ++i) {
    local[i] = {std::max<int64_t>(0, data.GlobalRow(i)), i};
    span = std::max(span, local[i].first + 1);
  }
  std::sort(local.begin(), local.end());
  at::Tensor span_t = at::full({1}, span, at::kLong);
  if (coll != nullptr) RETURN_IF_ERROR(coll->AllReduceMax(span_t));
  span = span_t.item<int64_t>();
  GlobalRowIndex index;
  index.start.push_back(0);
  if (span == 0) return index;  // no rows on any rank
  at::Tensor member = at::zeros({span}, at::kByte);
  for (const auto& [id, row] : local) member.data_ptr<uint8_t>()[id] = 1;
  if (coll != nullptr) RETURN_IF_ERROR(coll->AllReduceMax(member));
  const uint8_t* m = member.data_ptr<uint8_t>();
  index.global_rows = std::count(m, m + span, uint8_t{1});
  index.start.clear();
  index.start.reserve(index.global_rows + 1);
  index.rows.reserve(local.size());
  size_t j = 0;
  for (int64_t id = 0; id < span; ++id) {
    if (m[id] == 0) continue;
    index.start.push_back(static_cast<int64_t>(index.rows.size()));
    for (; j < local.size() && local[j].first == id; ++j) index.rows.push_back(local[j].second);
  }
  index.start.push_back(static_cast<int64_t>(index.rows.size()));
  return index;
}

// The shared epoch loop of SGD and Adam: shuffling, minibatches, early stopping, state.
//
// The batches do not depend on the number of ranks: epoch e shuffles the G global training
// rows by a permutation drawn from (seed, e) alone, identical on every rank, and step s takes
// the rows at positions [s B, (s + 1) B) of it (the last step fewer); each rank computes the
// part of the step it holds (possibly no rows: it still joins the step's allreduce with zeros).
// So the state holds counters, not a shuffle order, and restores on any number of ranks.
class MinibatchOptimizer : public Optimizer {
 public:
  MinibatchOptimizer(const TrainOptions& options, LogisticObjective& objective,
                     GlobalRowIndex index);

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
  // This epoch's local rows, step after step, into order_ and step_begin_.
  void ShuffleEpoch();
  absl::StatusOr<double> RunSteps(const EpochHooks& hooks);
  absl::StatusOr<PassValue> Step(int64_t s);
  // A moment or parameter tensor in the model's (feature-major) layout, and back.
  std::vector<double> FeatureMajor(const at::Tensor& t) const;
  absl::Status LoadFeatureMajor(const OptimizerState& state, const std::string& name,
                                const at::Tensor& into);

  const int64_t epochs_;
  // The fused CPU path keeps the parameters (and the moments) class-major during an epoch;
  // theta_ gets them back at every epoch's end. The update is elementwise either way.
  const bool class_major_;
  const GlobalRowIndex index_;
  const int64_t steps_;  // ceil(G / batch_size), at least 1
  at::Tensor theta_;     // feature-major; the same tensor as params_ unless class_major_
  // The epoch's permutation of the global positions, and this rank's rows of step s in it:
  // order_[step_begin_[s] .. step_begin_[s + 1]). Rebuilt every epoch, no allocation.
  std::vector<int64_t> perm_, order_, step_begin_;
  int64_t epoch_ = 0;
  double best_ = std::numeric_limits<double>::infinity();
  int64_t since_best_ = 0;
  bool early_stopped_ = false;
};

MinibatchOptimizer::MinibatchOptimizer(const TrainOptions& options, LogisticObjective& objective,
                                       GlobalRowIndex index)
    : options_(options),
      obj_(objective),
      lr_(EffectiveLearningRate(options)),
      nw_(objective.num_weights()),
      epochs_(EffectiveEpochs(options)),
      class_major_(objective.ClassMajorMinibatch()),
      index_(std::move(index)),
      steps_(
          std::max<int64_t>(1, (index_.global_rows + options.batch_size - 1) / options.batch_size)),
      perm_(index_.global_rows) {
  theta_ = at::zeros({obj_.num_params()}, obj_.options());
  params_ = class_major_ ? obj_.ToClassMajor(theta_) : theta_;
  grad_ = at::zeros_like(params_);
  fused_ = params_.device().is_cpu() && params_.scalar_type() == at::kFloat;
  order_.reserve(index_.rows.size());
  step_begin_.reserve(steps_ + 1);
}

void MinibatchOptimizer::ShuffleEpoch() {
  std::iota(perm_.begin(), perm_.end(), 0);
  std::mt19937_64 rng(EpochSeed(options_.seed, epoch_));
  std::shuffle(perm_.begin(), perm_.end(), rng);
  order_.clear();
  step_begin_.assign(1, 0);
  const int64_t g = index_.global_rows, b = options_.batch_size;
  const int64_t* start = index_.start.data();
  for (int64_t s = 0; s < steps_; ++s) {
    for (int64_t j = s * b; j < std::min(g, (s + 1) * b); ++j) {
      const int64_t k = perm_[j];
      for (int64_t r = start[k]; r < start[k + 1]; ++r) order_.push_back(index_.rows[r]);
    }
    step_begin_.push_back(static_cast<int64_t>(order_.size()));
  }
}

absl::StatusOr<std::optional<EpochValue>> MinibatchOptimizer::RunEpoch(const EpochHooks& hooks) {
  ++epoch_;
  ShuffleEpoch();
  ASSIGN_OR_RETURN(const double loss_sum, RunSteps(hooks));
  if (class_major_) obj_.FromClassMajor(params_, theta_);
  EpochValue value;
  value.train_loss = loss_sum / static_cast<double>(steps_);
  value.objective = value.train_loss + obj_.Penalty(theta_, options_.l1);
  return std::optional<EpochValue>(value);
}

absl::StatusOr<double> MinibatchOptimizer::RunSteps(const EpochHooks& hooks) {
  double loss_sum = 0;
  int64_t taken = 0;
  absl::Status skipped;
  for (int64_t s = 0; s < steps_; ++s) {
    if (s % kStopCheckSteps == kStopCheckSteps - 1 && hooks.check_stop) {
      RETURN_IF_ERROR(hooks.check_stop());
    }
    auto v = Step(s);
    // A global batch with no weight (zero sample weights) is skipped, on every rank alike.
    if (absl::IsInvalidArgument(v.status())) {
      skipped = v.status();
      continue;
    }
    if (!v.ok()) return v.status();
    loss_sum += v->loss;
    ++taken;
    ++step_count_;
    if (hooks.on_step) hooks.on_step(epoch_, s + 1, steps_, options_.batch_size);
    if (s + 1 < steps_) {  // the next batch's rows load while this step updates
      obj_.PrefetchBatch(order_, step_begin_[s + 1], step_begin_[s + 2]);
    }
    Update();
  }
  if (taken == 0) return skipped;  // no row with positive weight at all
  return loss_sum;
}

// The gradient of minibatch s into grad_; InvalidArgument when its global weight is zero.
absl::StatusOr<PassValue> MinibatchOptimizer::Step(int64_t s) {
  const size_t b = step_begin_[s], e = step_begin_[s + 1];
  return class_major_ ? obj_.BatchValueAndGradientClassMajor(params_, order_, b, e, grad_)
                      : obj_.BatchValueAndGradient(params_, order_, b, e, grad_);
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
  state.integers["batches"] = {index_.global_rows, options_.batch_size};
  return state;
}

absl::Status MinibatchOptimizer::RestoreState(const OptimizerState& state) {
  if (state.optimizer != OptimizerName(options_.optimizer)) {
    return absl::InvalidArgumentError(absl::StrCat("optimizer state: saved by '", state.optimizer,
                                                   "', not '", OptimizerName(options_.optimizer),
                                                   "'"));
  }
  auto counters = state.integers.find("counters");
  auto batches = state.integers.find("batches");
  auto best = state.reals.find("best");
  if (counters == state.integers.end() || counters->second.size() != 4 ||
      *std::min_element(counters->second.begin(), counters->second.end()) < 0) {
    return MissingEntry("counters");
  }
  if (best == state.reals.end() || best->second.size() != 1) return MissingEntry("best");
  RETURN_IF_ERROR(LoadFeatureMajor(state, "params", params_));
  if (class_major_) obj_.FromClassMajor(params_, theta_);
  for (const auto& [name, moment] : Moments()) {
    RETURN_IF_ERROR(LoadFeatureMajor(state, name, *moment));
  }
  if (batches == state.integers.end() || batches->second.size() != 2) {
    return MissingEntry("batches");
  }
  // Other rows or another batch size would make other batches: not the run that was saved.
  if (batches->second[0] != index_.global_rows || batches->second[1] != options_.batch_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer state: saved for ", batches->second[0],
                     " training rows in batches of ", batches->second[1], ", this run has ",
                     index_.global_rows, " in batches of ", options_.batch_size));
  }
  best_ = best->second[0];
  epoch_ = counters->second[0];
  step_count_ = counters->second[1];
  since_best_ = counters->second[2];
  early_stopped_ = counters->second[3] != 0;
  return absl::OkStatus();
}

class SgdOptimizer : public MinibatchOptimizer {
 public:
  SgdOptimizer(const TrainOptions& options, LogisticObjective& objective, GlobalRowIndex index)
      : MinibatchOptimizer(options, objective, std::move(index)),
        velocity_(at::zeros_like(params_)) {}

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
  AdamOptimizer(const TrainOptions& options, LogisticObjective& objective, GlobalRowIndex index)
      : MinibatchOptimizer(options, objective, std::move(index)),
        m1_(at::zeros_like(params_)),
        m2_(at::zeros_like(params_)) {}

 protected:
  void Update() override;
  std::vector<std::pair<std::string, const at::Tensor*>> Moments() const override {
    return {{"m1", &m1_}, {"m2", &m2_}};
  }

 private:
  at::Tensor m1_, m2_;
  at::Tensor denom_;  // the non-fused update's scratch (GPU, float64), made on first use
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
  if (!denom_.defined()) denom_ = at::empty_like(params_);
  at::sqrt_out(denom_, m2_).div_(std::sqrt(bc2)).add_(o.adam_eps);
  params_.addcdiv_(m1_, denom_, -lr_ / bc1);
  if (o.l1 > 0) {  // proximal step with Adam's per-coordinate step size
    at::Tensor w = params_.narrow(0, 0, nw_);
    at::Tensor thresh = (lr_ * o.l1) / denom_.narrow(0, 0, nw_);
    w.copy_(w.sign() * (w.abs() - thresh).clamp_min(0));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Optimizer>> MakeMinibatchOptimizer(const TrainOptions& options,
                                                                  LogisticObjective& objective) {
  ASSIGN_OR_RETURN(GlobalRowIndex index, IndexGlobalRows(objective.data(), objective.collective()));
  if (options.optimizer == OptimizerKind::kAdam) {
    return std::unique_ptr<Optimizer>(new AdamOptimizer(options, objective, std::move(index)));
  }
  return std::unique_ptr<Optimizer>(new SgdOptimizer(options, objective, std::move(index)));
}

}  // namespace logit
