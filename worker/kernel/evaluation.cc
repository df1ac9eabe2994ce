#include "worker/kernel/evaluation.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "worker/common/status.h"
#include "worker/kernel/collective.h"
#include "worker/kernel/objective.h"
#include "worker/model/predict.h"

namespace logit {

namespace {

std::vector<float> ProbabilitiesFromLogits(const at::Tensor& z, bool binary) {
  at::Tensor p;
  if (binary) {
    at::Tensor s = at::sigmoid(z.view({-1}));
    p = at::stack({1 - s, s}, 1);
  } else {
    p = at::softmax(z, 1);
  }
  p = p.to(at::kCPU, at::kFloat).contiguous();
  return std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
}

// Logits of rows [r, r + m) of `data` under W (d x c) and b.
at::Tensor BlockLogits(const Dataset& data, int64_t r, int64_t m, const at::Tensor& w,
                       const at::Tensor& b) {
  const int64_t d = w.size(0);
  switch (data.storage) {
    case FeatureStorage::kDenseFloat32:
      return at::addmm(
          b, at::from_blob(const_cast<float*>(data.F32Rows()) + r * d, {m, d}, at::kFloat),
          w);
    case FeatureStorage::kDenseUint8:
      return at::addmm(
          b,
          at::from_blob(const_cast<uint8_t*>(data.U8Rows()) + r * d, {m, d}, at::kByte)
              .to(at::kFloat)
              .mul_(data.u8_scale),
          w);
    case FeatureStorage::kSparseCsr:
      break;  // not reached: KernelProba predicts sparse rows without ATen
  }
  return at::Tensor();
}

// Class probabilities of `data` under `model` with the kernel's arithmetic (ATen), rows x K.
absl::StatusOr<std::vector<float>> KernelProba(const LinearModel& model, const Dataset& data) {
  const int64_t d = model.num_features, c = model.OutputColumns();
  if (data.num_features != d &&
      !(data.storage == FeatureStorage::kSparseCsr && data.num_features <= d)) {
    return absl::InvalidArgumentError(absl::StrCat(data.source, ": has ", data.num_features,
                                                   " features but the model expects ", d));
  }
  if (static_cast<int64_t>(model.weights.size()) != d * c ||
      static_cast<int64_t>(model.bias.size()) != c) {
    return absl::InvalidArgumentError("model: weights and bias do not match its shape");
  }
  // Sparse rows: the LibTorch-free predictor walks the stored values (no COO copy, no densifying).
  if (data.storage == FeatureStorage::kSparseCsr) return PredictProba(model, data);
  const at::Tensor w = at::from_blob(const_cast<float*>(model.weights.data()), {d, c}, at::kFloat);
  const at::Tensor b = at::from_blob(const_cast<float*>(model.bias.data()), {c}, at::kFloat);
  std::vector<float> out;
  out.reserve(data.num_rows * model.num_classes);
  const int64_t block = 8192;
  try {
    for (int64_t r = 0; r < data.num_rows; r += block) {
      const int64_t m = std::min(block, data.num_rows - r);
      const at::Tensor z = BlockLogits(data, r, m, w, b);
      const std::vector<float> p = ProbabilitiesFromLogits(z, model.IsBinary());
      out.insert(out.end(), p.begin(), p.end());
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("predict: ", e.what()));
  }
  return out;
}

// Metrics over all ranks: additive sums through one allreduce; for the binary ROC AUC the
// scores of every rank are gathered (each rank writes its slice of a zero tensor, which a sum
// allreduce fills in), since the AUC needs the global ranking.
absl::StatusOr<ClassificationMetrics> GlobalMetrics(const std::vector<float>& proba,
                                                    const std::vector<int64_t>& labels,
                                                    int64_t classes, Collective* coll) {
  if (coll == nullptr || coll->world_size() == 1) {
    if (labels.empty()) return ClassificationMetrics();
    return ComputeMetrics(proba, labels, classes);
  }
  MetricSums sums = AccumulateMetrics(proba, labels, classes);
  const int64_t kk = classes * classes;
  at::Tensor packed = at::empty({4 + kk}, at::kDouble);
  double* p = packed.data_ptr<double>();
  p[0] = static_cast<double>(sums.rows);
  p[1] = sums.loss;
  p[2] = sums.weight;
  p[3] = sums.correct;
  for (int64_t i = 0; i < kk; ++i) p[4 + i] = static_cast<double>(sums.confusion[i]);
  RETURN_IF_ERROR(coll->AllReduceSum(packed));
  sums.rows = static_cast<int64_t>(p[0]);
  sums.loss = p[1];
  sums.weight = p[2];
  sums.correct = p[3];
  for (int64_t i = 0; i < kk; ++i) sums.confusion[i] = static_cast<int64_t>(p[4 + i]);
  double auc = -1;
  if (classes == 2) {
    const int world = coll->world_size();
    at::Tensor counts = at::zeros({world}, at::kLong);
    counts[coll->rank()] = static_cast<int64_t>(labels.size());
    RETURN_IF_ERROR(coll->AllReduceSum(counts));
    const int64_t total = counts.sum().item<int64_t>();
    const int64_t offset = counts.narrow(0, 0, coll->rank()).sum().item<int64_t>();
    at::Tensor gathered = at::zeros({2, total}, at::kDouble);
    double* score = gathered.data_ptr<double>();
    double* positive = score + total;
    for (size_t i = 0; i < labels.size(); ++i) {
      score[offset + i] = proba[2 * i + 1];
      positive[offset + i] = labels[i] == 1;
    }
    RETURN_IF_ERROR(coll->AllReduceSum(gathered));
    std::vector<double> all_scores(score, score + total);
    std::vector<int64_t> all_positive(total);
    for (int64_t i = 0; i < total; ++i) all_positive[i] = positive[i] > 0.5;
    auc = RocAuc(all_scores, all_positive);
  }
  return MetricsFromSums(sums, classes, auc);
}

// The metrics of `model` on `data` over all ranks; nullopt when no rank holds such a split or it
// has no rows.
absl::StatusOr<std::optional<ClassificationMetrics>> SplitMetrics(const LinearModel& model,
                                                                  const Dataset* data,
                                                                  int64_t classes,
                                                                  Collective* coll) {
  // Every rank takes part (a rank may hold no rows of a split); the sums are global.
  at::Tensor any = at::full({1}, data != nullptr ? 1 : 0, at::kLong);
  if (coll != nullptr) RETURN_IF_ERROR(coll->AllReduceMax(any));
  if (any.item<int64_t>() == 0) return std::optional<ClassificationMetrics>();
  static const Dataset kEmpty;
  const Dataset& rows = data != nullptr ? *data : kEmpty;
  std::vector<float> proba;
  if (rows.num_rows > 0) {
    ASSIGN_OR_RETURN(proba, KernelProba(model, rows));
  }
  ASSIGN_OR_RETURN(const ClassificationMetrics global,
                   GlobalMetrics(proba, rows.labels, classes, coll));
  if (global.rows == 0) return std::optional<ClassificationMetrics>();
  return std::optional<ClassificationMetrics>(global);
}

}  // namespace

absl::Status EvaluateSplits(const TrainInputs& inputs, int64_t classes, Collective* coll,
                            TrainResult* result) {
  ASSIGN_OR_RETURN(result->train_metrics, SplitMetrics(result->model, inputs.train, classes, coll));
  ASSIGN_OR_RETURN(result->val_metrics, SplitMetrics(result->model, inputs.val, classes, coll));
  ASSIGN_OR_RETURN(result->test_metrics, SplitMetrics(result->model, inputs.test, classes, coll));
  return absl::OkStatus();
}

}  // namespace logit
