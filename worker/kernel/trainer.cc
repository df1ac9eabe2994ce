#include "worker/kernel/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <link.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <set>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/common/status.h"
#include "worker/kernel/collective.h"
#include "worker/kernel/evaluation.h"
#include "worker/kernel/objective.h"
#include "worker/kernel/optimizer.h"
#include "worker/kernel/problem.h"

namespace logit {

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// One training run's epoch loop: the optimizer's epochs, their records and the agreed stops.
class EpochLoop {
 public:
  EpochLoop(const TrainInputs& inputs, const EpochCallback& on_epoch, Collective* coll,
            TrainingProblem& problem, Optimizer& optimizer, TrainResult& result)
      : inputs_(inputs),
        on_epoch_(on_epoch),
        coll_(coll),
        problem_(problem),
        optimizer_(optimizer),
        result_(result) {}

  // Runs epochs until the optimizer finishes; fills the result's history and totals.
  absl::Status Run();

 private:
  // A stop request (cancel) ends training on every rank at the same step: the ranks agree on
  // it through a MAX allreduce every few steps and every epoch / iteration.
  absl::Status CheckStop() const;
  // Records the epoch (validation loss with SGD/Adam) and returns the value early stopping
  // monitors. A non-finite objective (too large a learning rate) ends the job on every rank.
  absl::StatusOr<double> RecordEpoch(const EpochValue& value, Clock::time_point epoch_start);
  absl::Status CheckFinite(double objective, int64_t epoch) const;
  // Hands rank 0's training state to on_checkpoint after every checkpoint_every-th epoch after
  // which training goes on.
  void MaybeCheckpoint() const;
  absl::Status Finish();

  const TrainInputs& inputs_;
  const EpochCallback& on_epoch_;
  Collective* const coll_;
  TrainingProblem& problem_;
  Optimizer& optimizer_;
  TrainResult& result_;
};

absl::Status EpochLoop::Run() {
  EpochHooks hooks;
  hooks.check_stop = [this] { return CheckStop(); };
  hooks.on_step = inputs_.on_step;
  while (!optimizer_.finished()) {
    const auto epoch_start = Clock::now();
    ASSIGN_OR_RETURN(const std::optional<EpochValue> value, optimizer_.RunEpoch(hooks));
    if (!value) break;
    ASSIGN_OR_RETURN(const double monitored, RecordEpoch(*value, epoch_start));
    RETURN_IF_ERROR(CheckStop());
    RETURN_IF_ERROR(optimizer_.EndEpoch(monitored));
    MaybeCheckpoint();
  }
  return Finish();
}

void EpochLoop::MaybeCheckpoint() const {
  const int64_t every = inputs_.checkpoint_every;
  if (every <= 0 || !inputs_.on_checkpoint || optimizer_.finished()) return;
  if (optimizer_.epochs_run() % every != 0) return;
  if (coll_ != nullptr && coll_->rank() != 0) return;
  TrainingCheckpoint checkpoint;
  checkpoint.state = optimizer_.SaveState();
  checkpoint.history = result_.history;
  checkpoint.epoch = optimizer_.epochs_run();
  inputs_.on_checkpoint(checkpoint);
}

absl::Status EpochLoop::CheckStop() const {
  if (inputs_.stop == nullptr) return absl::OkStatus();
  at::Tensor flag = at::full({1}, inputs_.stop->load() ? 1 : 0, at::kInt);
  if (coll_ != nullptr) RETURN_IF_ERROR(coll_->AllReduceMax(flag));
  if (flag.item<int>() != 0) return absl::CancelledError("training was cancelled");
  return absl::OkStatus();
}

absl::StatusOr<double> EpochLoop::RecordEpoch(const EpochValue& value,
                                              Clock::time_point epoch_start) {
  EpochRecord rec;
  rec.epoch = optimizer_.epochs_run();
  rec.train_loss = value.train_loss;
  rec.objective = value.objective;
  if (optimizer_.validates_every_epoch()) {
    if (problem_.val) {
      ASSIGN_OR_RETURN(const EvalStats vs, problem_.val->Evaluate(optimizer_.parameters()));
      rec.val_loss = vs.loss;
      rec.val_accuracy = vs.accuracy;
    }
    RETURN_IF_ERROR(CheckFinite(value.objective, rec.epoch));
  }
  rec.seconds = Seconds(epoch_start);
  rec.samples = problem_.global_rows;
  rec.local_samples = problem_.train->num_rows();
  result_.history.push_back(rec);
  if (on_epoch_) on_epoch_(rec);
  return problem_.val ? rec.val_loss : value.objective;
}

absl::Status EpochLoop::CheckFinite(double objective, int64_t epoch) const {
  absl::Status finite = std::isfinite(objective)
                            ? absl::OkStatus()
                            : absl::InvalidArgumentError(absl::StrCat(
                                  "diverged: the training objective became ", objective,
                                  " in epoch ", epoch, "; lower --lr or use --standardize"));
  if (coll_ != nullptr) finite = coll_->Agree(finite);
  return finite;
}

absl::Status EpochLoop::Finish() {
  result_.stop_reason = optimizer_.stop_reason();
  result_.epochs_run = optimizer_.epochs_run();
  ASSIGN_OR_RETURN(const EpochValue final_value, optimizer_.FinalValue());
  result_.function_evaluations = optimizer_.function_evaluations();
  result_.train_loss = final_value.train_loss;
  result_.objective = final_value.objective;
  // L-BFGS evaluates validation on the final point only.
  if (!optimizer_.validates_every_epoch() && problem_.val && !result_.history.empty()) {
    ASSIGN_OR_RETURN(const EvalStats vs, problem_.val->Evaluate(optimizer_.parameters()));
    result_.history.back().val_loss = vs.loss;
    result_.history.back().val_accuracy = vs.accuracy;
  }
  return absl::OkStatus();
}

// Continues from `checkpoint`: the optimizer's state and the history so far. InvalidArgument
// naming "checkpoint" when it does not fit the optimizer (another kind, another shape or data).
absl::Status Resume(const TrainingCheckpoint& checkpoint, const TrainOptions& options,
                    Optimizer& optimizer, TrainResult& result) {
  const std::string name = OptimizerName(options.optimizer);
  if (checkpoint.state.optimizer != name) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: saved by optimizer '",
                                                   checkpoint.state.optimizer, "', this job uses '",
                                                   name, "'"));
  }
  const absl::Status restored = optimizer.RestoreState(checkpoint.state);
  if (!restored.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: ", restored.message()));
  }
  if (optimizer.epochs_run() != checkpoint.epoch ||
      static_cast<int64_t>(checkpoint.history.size()) != checkpoint.epoch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint: saved after epoch ", checkpoint.epoch, " but its optimizer state is at epoch ",
        optimizer.epochs_run(), " and its history holds ", checkpoint.history.size(), " epochs"));
  }
  result.history = checkpoint.history;
  return absl::OkStatus();
}

absl::StatusOr<TrainResult> TrainPrepared(const TrainOptions& options, const TrainInputs& inputs,
                                          const EpochCallback& on_epoch, Collective* coll) {
  ASSIGN_OR_RETURN(TrainingProblem problem, PrepareProblem(options, inputs, coll));
  TrainResult result;
  result.device = problem.device.str();
  result.l2 = problem.l2;
  ASSIGN_OR_RETURN(std::unique_ptr<Optimizer> optimizer, MakeOptimizer(options, *problem.train));
  if (inputs.resume != nullptr) {
    absl::Status resumed = Resume(*inputs.resume, options, *optimizer, result);
    if (coll != nullptr) resumed = coll->Agree(resumed);
    RETURN_IF_ERROR(resumed);
  }
  RETURN_IF_ERROR(EpochLoop(inputs, on_epoch, coll, problem, *optimizer, result).Run());
  result.model = problem.train->ToModel(optimizer->parameters());
  RETURN_IF_ERROR(EvaluateSplits(inputs, problem.classes, coll, &result));
  return result;
}

}  // namespace

const char* StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kMaxEpochs:
      return "max_epochs";
    case StopReason::kObjectiveTol:
      return "objective_tol";
    case StopReason::kGradientTol:
      return "gradient_tol";
    case StopReason::kLineSearch:
      return "line_search";
    case StopReason::kEarlyStopping:
      return "early_stopping";
  }
  return "unknown";
}

std::string DescribeComputeBackend() {
  std::set<std::string> libs;
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* arg) {
        const std::string name = info->dlpi_name ? info->dlpi_name : "";
        if (name.find("blas") != std::string::npos || name.find("lapack") != std::string::npos) {
          char resolved[PATH_MAX];
          const char* real = realpath(name.c_str(), resolved);
          static_cast<std::set<std::string>*>(arg)->insert(real ? real : name);
        }
        return 0;
      },
      &libs);
  // A CPU BLAS that is none of the fast ones is the reference BLAS (Debian's default
  // libblas.so.3). No BLAS library at all: LibTorch carries its own (pip builds link MKL in).
  bool slow = false;
  for (const std::string& lib : libs) {
    const bool fast =
        lib.find("openblas") != std::string::npos || lib.find("mkl") != std::string::npos ||
        lib.find("blis") != std::string::npos || lib.find("cublas") != std::string::npos;
    slow = slow || !fast;
  }
  std::string blas = libs.empty() ? "builtin" : absl::StrJoin(libs, ",");
  std::string warn;
  if (slow) warn = " WARNING=reference-BLAS-is-~25x-slower;install-libopenblas0-openmp";
  return absl::StrCat("blas=", blas, " torch_threads=", at::get_num_threads(),
                      " cuda=", at::hasCUDA() ? "yes" : "no", warn);
}

absl::StatusOr<TrainResult> Train(const TrainOptions& options, const TrainInputs& inputs,
                                  const EpochCallback& on_epoch, Collective* coll) {
  const auto start = Clock::now();
  RETURN_IF_ERROR(ValidateTrainOptions(options));
  if (inputs.train == nullptr) return absl::InvalidArgumentError("data: no training data");
  at::set_num_threads(options.threads > 0
                          ? options.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  try {
    ASSIGN_OR_RETURN(TrainResult result, TrainPrepared(options, inputs, on_epoch, coll));
    result.wall_seconds = Seconds(start);
    return result;
  } catch (const std::exception& e) {
    // LibTorch reports failures (out of memory, device errors) as exceptions; they stop here.
    return absl::InternalError(absl::StrCat("kernel: ", e.what()));
  }
}

}  // namespace logit
