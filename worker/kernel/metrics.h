// Classification metrics computed from predicted probabilities. LibTorch-free.
#ifndef LOGIT_WORKER_KERNEL_METRICS_H_
#define LOGIT_WORKER_KERNEL_METRICS_H_

#include <cstdint>
#include <vector>

#include "nlohmann/json_fwd.hpp"

namespace logit {

struct ClassificationMetrics {
  int64_t rows = 0;
  int64_t classes = 0;
  double log_loss = 0;  // mean cross-entropy (sample-weighted when weights given)
  double accuracy = 0;  // fraction in [0, 1]
  double roc_auc = -1;  // binary only; -1 when undefined (one class present)
  std::vector<double> precision, recall, f1;  // per class
  std::vector<int64_t> support;               // true rows per class
  double macro_f1 = 0;
  double weighted_f1 = 0;
  // confusion[t * classes + p]: rows of true class t predicted as p.
  std::vector<int64_t> confusion;
};

// The additive part of the metrics: sums over rows that shards can add up (allreduce).
struct MetricSums {
  int64_t rows = 0;
  double loss = 0;                 // sum of w_i * -log p_i[y_i]
  double weight = 0;               // sum of w_i
  double correct = 0;              // sum of w_i over correctly classified rows
  std::vector<int64_t> confusion;  // classes x classes row counts, [true * classes + predicted]
};

MetricSums AccumulateMetrics(const std::vector<float>& proba, const std::vector<int64_t>& labels,
                             int64_t classes, const std::vector<float>& weights = {});

// The metrics of (global) sums; roc_auc is passed in (-1 when undefined or not binary).
ClassificationMetrics MetricsFromSums(const MetricSums& sums, int64_t classes, double roc_auc);

// `proba` is row-major rows x classes (each row sums to 1). `weights` may be empty.
ClassificationMetrics ComputeMetrics(const std::vector<float>& proba,
                                     const std::vector<int64_t>& labels, int64_t classes,
                                     const std::vector<float>& weights = {});

// Area under the ROC curve of scores for the positive class (ties count 1/2).
// Returns -1 when only one class is present.
double RocAuc(const std::vector<double>& scores, const std::vector<int64_t>& positive);

void to_json(nlohmann::json& j, const ClassificationMetrics& m);

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_METRICS_H_
