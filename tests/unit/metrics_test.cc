#include "worker/kernel/metrics.h"

#include <cmath>

#include "gtest/gtest.h"

namespace logit {
namespace {

TEST(RocAuc, MatchesHandComputedValueWithTies) {
  // Positives at 0.9, 0.4; negatives at 0.4, 0.1: pairs (0.9>0.4, 0.9>0.1, 0.4=0.4 -> 1/2, 0.4>0.1)
  EXPECT_DOUBLE_EQ(RocAuc({0.9, 0.4, 0.4, 0.1}, {1, 1, 0, 0}), 3.5 / 4);
  EXPECT_DOUBLE_EQ(RocAuc({0.1, 0.2}, {0, 1}), 1.0);
  EXPECT_EQ(RocAuc({0.1, 0.2}, {1, 1}), -1);
}

TEST(ComputeMetrics, ConfusionPrecisionRecallF1) {
  // Three rows: true 0 predicted 0, true 1 predicted 0, true 1 predicted 1.
  std::vector<float> p = {0.9f, 0.1f, 0.6f, 0.4f, 0.2f, 0.8f};
  const ClassificationMetrics m = ComputeMetrics(p, {0, 1, 1}, 2);
  EXPECT_EQ(m.confusion, (std::vector<int64_t>{1, 0, 1, 1}));
  EXPECT_DOUBLE_EQ(m.accuracy, 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.precision[0], 0.5);
  EXPECT_DOUBLE_EQ(m.recall[0], 1.0);
  EXPECT_DOUBLE_EQ(m.precision[1], 1.0);
  EXPECT_DOUBLE_EQ(m.recall[1], 0.5);
  EXPECT_NEAR(m.f1[0], 2.0 / 3, 1e-12);
  EXPECT_NEAR(m.macro_f1, 2.0 / 3, 1e-12);
  EXPECT_NEAR(m.weighted_f1, (2.0 / 3) * (1.0 / 3) + (2.0 / 3) * (2.0 / 3), 1e-12);
  EXPECT_NEAR(m.log_loss, -(std::log(0.9) + std::log(0.4) + std::log(0.8)) / 3, 1e-6);
  EXPECT_DOUBLE_EQ(m.roc_auc, 1.0);
}

}  // namespace
}  // namespace logit
