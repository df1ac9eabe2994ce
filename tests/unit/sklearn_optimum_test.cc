// L-BFGS / OWL-QN reach scikit-learn's optimum on shipped data (tests/data/references.json,
// made by tests/data/make_references.py with Debian's python3-sklearn).
#include <cmath>
#include <fstream>

#include "nlohmann/json.hpp"
#include "tests/unit/test_util.h"
#include "worker/data/readers.h"
#include "worker/job.h"

namespace logit {
namespace {

using ::logit::testing::TestData;

std::vector<nlohmann::json> References() {
  std::ifstream f(TestData("references.json"));
  nlohmann::json j = nlohmann::json::parse(f);
  return j["references"].get<std::vector<nlohmann::json>>();
}

class SklearnOptimum : public ::testing::TestWithParam<int> {};

TEST_P(SklearnOptimum, LbfgsReachesObjectiveAndWeights) {
  const nlohmann::json ref = References().at(GetParam());
  SCOPED_TRACE(ref["dataset"].get<std::string>() + " C=" + std::to_string(ref["C"].get<double>()) +
               (ref["l1"].get<double>() > 0 ? " l1" : " l2"));
  DataConfig dc;
  dc.train.path = TestData(ref["dataset"]);
  TrainOptions o;
  o.optimizer = OptimizerKind::kLbfgs;
  o.l1 = ref["l1"];
  o.l2 = ref["l2"];
  o.standardize = ref["standardize"];
  o.tol = 1e-15;
  o.epochs = 20000;
  auto out = RunTrainingJob(dc, o);
  ASSERT_TRUE(out.ok()) << out.status();
  const double expected = ref["objective"];
  const bool l1 = o.l1 > 0;
  const double rel = (out->result.objective - expected) / expected;
  // Never meaningfully worse than scikit-learn's optimum.
  EXPECT_LT(rel, l1 ? 1e-5 : 1e-6) << "objective " << out->result.objective << " vs " << expected
                                   << " stop=" << StopReasonName(out->result.stop_reason);
  EXPECT_GT(rel, -1e-5);
  // Compare in the space the problem was solved in (standardised features when standardize is
  // on, as scikit-learn's coef_ after StandardScaler): W_s = W * sigma, b_s = b + mu . W.
  const auto W = ref["W_train_space"].get<std::vector<std::vector<double>>>();
  const auto b = ref["b_train_space"].get<std::vector<double>>();
  LinearModel m = out->result.model;
  if (o.standardize) {
    ReadOptions ro;
    ro.path = dc.train.path;
    auto data = ReadDataset(ro);
    ASSERT_TRUE(data.ok());
    const int64_t d = data->num_features, n = data->num_rows, c = m.OutputColumns();
    for (int64_t j = 0; j < d; ++j) {
      double s1 = 0, s2 = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double v = data->dense_f32[i * d + j];
        s1 += v;
        s2 += v * v;
      }
      const double mu = s1 / n, sigma = std::sqrt(std::max(0.0, s2 / n - mu * mu));
      for (int64_t k = 0; k < c; ++k) {
        m.bias[k] += static_cast<float>(mu * m.weights[j * c + k]);
        m.weights[j * c + k] = static_cast<float>(m.weights[j * c + k] * sigma);
      }
    }
  }
  const int64_t cols = m.OutputColumns();
  ASSERT_EQ(static_cast<int64_t>(W.size()), m.num_features);
  ASSERT_FALSE(W.empty());
  ASSERT_EQ(static_cast<int64_t>(W[0].size()), cols);
  double max_w = 0, max_b = 0;
  int64_t zeros = 0, zero_mismatch = 0;
  for (int64_t j = 0; j < m.num_features; ++j) {
    for (int64_t k = 0; k < cols; ++k) {
      const double ours = m.weights[j * cols + k];
      max_w = std::max(max_w, std::abs(ours - W[j][k]));
      zeros += ours == 0;
      zero_mismatch += (ours == 0) != (W[j][k] == 0);
    }
  }
  // The softmax intercept is defined up to a constant: compare centred intercepts.
  double mb = 0, rb = 0;
  for (int64_t k = 0; k < cols; ++k) {
    mb += m.bias[k] / cols;
    rb += b[k] / cols;
  }
  if (cols == 1) mb = rb = 0;
  for (int64_t k = 0; k < cols; ++k)
    max_b = std::max(max_b, std::abs((m.bias[k] - mb) - (b[k] - rb)));
  if (l1) {
    EXPECT_EQ(zero_mismatch, 0) << "zeros ours=" << zeros << " sklearn=" << ref["zeros"];
    EXPECT_GT(zeros, 0);
  } else {
    EXPECT_LT(max_w, 1e-3);
    EXPECT_LT(max_b, 1e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(References, SklearnOptimum, ::testing::Range(0, 8));

}  // namespace
}  // namespace logit
