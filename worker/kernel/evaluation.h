// Evaluation of a trained model: classification metrics of the training, validation and test
// rows over all ranks. LibTorch-free; internal to the kernel (serving predictions are
// worker/model/predict.h's, without LibTorch).
#ifndef LOGIT_WORKER_KERNEL_EVALUATION_H_
#define LOGIT_WORKER_KERNEL_EVALUATION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "worker/kernel/trainer.h"

namespace logit {

class Collective;

// Fills result->train_metrics, val_metrics and test_metrics from result->model, over all ranks
// (`collective` may be null); every rank must call it, with or without rows of a split. A split
// that no rank holds, or with no rows, gets no metrics.
absl::Status EvaluateSplits(const TrainInputs& inputs, int64_t classes, Collective* collective,
                            TrainResult* result);

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_EVALUATION_H_
