#include "worker/kernel/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "nlohmann/json.hpp"

namespace logit {

double RocAuc(const std::vector<double>& scores, const std::vector<int64_t>& positive) {
  const size_t n = scores.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Mann-Whitney U with mid-ranks for ties.
  double rank_sum = 0;
  int64_t pos = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && scores[order[j]] == scores[order[i]]) ++j;
    const double mid_rank = 0.5 * (static_cast<double>(i + 1) + static_cast<double>(j));
    for (size_t k = i; k < j; ++k) {
      if (positive[order[k]]) {
        rank_sum += mid_rank;
        ++pos;
      }
    }
    i = j;
  }
  const int64_t neg = static_cast<int64_t>(n) - pos;
  if (pos == 0 || neg == 0) return -1;
  return (rank_sum - static_cast<double>(pos) * (pos + 1) / 2.0) /
         (static_cast<double>(pos) * static_cast<double>(neg));
}

MetricSums AccumulateMetrics(const std::vector<float>& proba, const std::vector<int64_t>& labels,
                             int64_t classes, const std::vector<float>& weights) {
  MetricSums s;
  const int64_t n = static_cast<int64_t>(labels.size());
  s.rows = n;
  s.confusion.assign(classes * classes, 0);
  for (int64_t i = 0; i < n; ++i) {
    const float* p = proba.data() + i * classes;
    const int64_t pred = std::max_element(p, p + classes) - p;
    const double w = weights.empty() ? 1.0 : weights[i];
    const double py = std::max<double>(p[labels[i]], 1e-15);
    s.loss -= w * std::log(py);
    s.correct += w * (pred == labels[i]);
    s.weight += w;
    ++s.confusion[labels[i] * classes + pred];
  }
  return s;
}

ClassificationMetrics MetricsFromSums(const MetricSums& s, int64_t classes, double roc_auc) {
  ClassificationMetrics m;
  const int64_t n = s.rows;
  m.rows = n;
  m.classes = classes;
  m.confusion = s.confusion;
  m.log_loss = s.weight > 0 ? s.loss / s.weight : 0;
  m.accuracy = s.weight > 0 ? s.correct / s.weight : 0;
  m.roc_auc = classes == 2 ? roc_auc : -1;
  m.precision.assign(classes, 0);
  m.recall.assign(classes, 0);
  m.f1.assign(classes, 0);
  m.support.assign(classes, 0);
  for (int64_t k = 0; k < classes; ++k) {
    int64_t tp = m.confusion[k * classes + k], predicted = 0, actual = 0;
    for (int64_t j = 0; j < classes; ++j) {
      predicted += m.confusion[j * classes + k];
      actual += m.confusion[k * classes + j];
    }
    m.support[k] = actual;
    m.precision[k] = predicted ? static_cast<double>(tp) / predicted : 0;
    m.recall[k] = actual ? static_cast<double>(tp) / actual : 0;
    const double sum = m.precision[k] + m.recall[k];
    m.f1[k] = sum > 0 ? 2 * m.precision[k] * m.recall[k] / sum : 0;
    m.macro_f1 += m.f1[k] / classes;
    m.weighted_f1 += n ? m.f1[k] * actual / n : 0;
  }
  return m;
}

ClassificationMetrics ComputeMetrics(const std::vector<float>& proba,
                                     const std::vector<int64_t>& labels, int64_t classes,
                                     const std::vector<float>& weights) {
  double auc = -1;
  if (classes == 2) {
    const size_t n = labels.size();
    std::vector<double> scores(n);
    std::vector<int64_t> pos(n);
    for (size_t i = 0; i < n; ++i) {
      scores[i] = proba[i * 2 + 1];
      pos[i] = labels[i] == 1;
    }
    auc = RocAuc(scores, pos);
  }
  return MetricsFromSums(AccumulateMetrics(proba, labels, classes, weights), classes, auc);
}

void to_json(nlohmann::json& j, const ClassificationMetrics& m) {
  j = nlohmann::json{{"rows", m.rows},
                     {"log_loss", m.log_loss},
                     {"accuracy", m.accuracy},
                     {"macro_f1", m.macro_f1},
                     {"weighted_f1", m.weighted_f1},
                     {"precision", m.precision},
                     {"recall", m.recall},
                     {"f1", m.f1},
                     {"support", m.support},
                     {"confusion_matrix", m.confusion}};
  if (m.roc_auc >= 0) j["roc_auc"] = m.roc_auc;
}

}  // namespace logit
