// Evaluation of a trained model: class probabilities and classification metrics of the training,
// validation and test rows over all ranks. LibTorch-free; internal to the kernel
// (PredictProba, in trainer.h, is the public part).
#ifndef LOGIT_WORKER_KERNEL_EVALUATION_H_
#define LOGIT_WORKER_KERNEL_EVALUATION_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/kernel/metrics.h"
#include "worker/kernel/model.h"
#include "worker/kernel/trainer.h"

namespace logit {

class Collective;

// Metrics of `proba` (rows x K) against `labels` over all ranks (`collective` may be null): the
// additive sums through one allreduce; for the binary ROC AUC the scores of every rank are
// gathered, since the AUC needs the global ranking.
absl::StatusOr<ClassificationMetrics> GlobalMetrics(const std::vector<float>& proba,
                                                    const std::vector<int64_t>& labels,
                                                    int64_t classes, Collective* collective);

// The metrics of `model` on `data` over all ranks; nullopt when no rank holds such a split
// (`data` null on every rank) or it has no rows. Every rank must call it, with or without rows.
absl::StatusOr<std::optional<ClassificationMetrics>> SplitMetrics(const LinearModel& model,
                                                                  const Dataset* data,
                                                                  int64_t classes,
                                                                  Collective* collective);

// Fills result->train_metrics, val_metrics and test_metrics from result->model.
absl::Status EvaluateSplits(const TrainInputs& inputs, int64_t classes, Collective* collective,
                            TrainResult* result);

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_EVALUATION_H_
