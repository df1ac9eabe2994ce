// Prediction with a trained model: class probabilities of rows. LibTorch-free (plain loops the
// compiler vectorises), so the server's Predict / ModelInfer and `logit predict` run without
// loading the training kernel.
#ifndef LOGIT_WORKER_MODEL_PREDICT_H_
#define LOGIT_WORKER_MODEL_PREDICT_H_

#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/dataset.h"
#include "worker/model/model.h"

namespace logit {

// Class probabilities, row-major rows x K, for every row of `data`: sigmoid of x.W + b for
// binary models, softmax otherwise, computed in float32. InvalidArgument when the feature count
// differs from the model's (sparse rows may have fewer) or the model's arrays disagree with its
// shape.
absl::StatusOr<std::vector<float>> PredictProba(const LinearModel& model, const Dataset& data);

}  // namespace logit

#endif  // LOGIT_WORKER_MODEL_PREDICT_H_
