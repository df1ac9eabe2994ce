// Closed-form gradients against central finite differences, in float64.
#include "worker/kernel/objective.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace logit {
namespace {

Dataset RandomDense(int64_t n, int64_t d, int64_t classes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  Dataset data;
  data.source = "random";
  data.num_rows = n;
  data.num_features = d;
  data.total_rows = n;
  data.storage = FeatureStorage::kDenseFloat32;
  for (int64_t i = 0; i < n * d; ++i) data.dense_f32.push_back(normal(rng));
  for (int64_t i = 0; i < n; ++i) data.labels.push_back(static_cast<int64_t>(rng() % classes));
  return data;
}

Dataset ToSparse(const Dataset& dense) {
  Dataset s = dense;
  s.storage = FeatureStorage::kSparseCsr;
  s.dense_f32.clear();
  s.csr_indptr = {0};
  for (int64_t i = 0; i < dense.num_rows; ++i) {
    for (int64_t j = 0; j < dense.num_features; ++j) {
      const float v = dense.dense_f32[i * dense.num_features + j];
      if (j % 3 == 1) continue;  // leave real zeros
      s.csr_indices.push_back(j);
      s.csr_values.push_back(v);
    }
    s.csr_indptr.push_back(static_cast<int64_t>(s.csr_indices.size()));
  }
  return s;
}

struct Case {
  const char* name;
  int64_t classes;
  double l2;
  bool bias;
  bool class_weights;
  bool sample_weights;
  bool standardize;
  bool sparse;
};

class GradientCheck : public ::testing::TestWithParam<Case> {};

TEST_P(GradientCheck, MatchesCentralFiniteDifferences) {
  const Case c = GetParam();
  Dataset data = RandomDense(37, 5, c.classes, 11);
  if (c.sparse) data = ToSparse(data);
  at::Tensor sw;
  if (c.class_weights || c.sample_weights) {
    sw = at::ones({data.num_rows}, at::kDouble);
    for (int64_t i = 0; i < data.num_rows; ++i) {
      double w = 1;
      if (c.sample_weights) w *= 0.25 + (i % 7) * 0.3;
      if (c.class_weights) w *= 1.0 + data.labels[i];
      sw[i] = w;
    }
  }
  at::Tensor mu, sigma;
  if (c.standardize) {
    mu = at::linspace(-0.5, 0.5, 5, at::kDouble);
    sigma = at::linspace(0.5, 2.0, 5, at::kDouble);
  }
  ObjectiveConfig cfg;
  cfg.classes = c.classes;
  cfg.fit_bias = c.bias;
  cfg.l2 = c.l2;
  cfg.dtype = at::kDouble;
  cfg.block_rows = 16;  // several blocks, one partial
  auto obj = LogisticObjective::Create(data, cfg, sw, mu, sigma, nullptr);
  ASSERT_TRUE(obj.ok()) << obj.status();
  at::Tensor theta =
      at::randn({(*obj)->num_params()}, at::TensorOptions().dtype(at::kDouble)) * 0.5;
  if (!c.bias)
    theta.narrow(0, (*obj)->num_weights(), theta.numel() - (*obj)->num_weights()).zero_();
  at::Tensor grad = at::zeros_like(theta);
  ASSERT_TRUE((*obj)->ValueAndGradient(theta, grad).ok());
  at::Tensor scratch = at::zeros_like(theta);
  const double h = 1e-6;
  double max_err = 0;
  for (int64_t k = 0; k < theta.numel(); ++k) {
    if (!c.bias && k >= (*obj)->num_weights()) {
      EXPECT_EQ(grad[k].item<double>(), 0.0);
      continue;
    }
    at::Tensor tp = theta.clone(), tm = theta.clone();
    tp[k] += h;
    tm[k] -= h;
    const auto fp = (*obj)->ValueAndGradient(tp, scratch);
    const auto fm = (*obj)->ValueAndGradient(tm, scratch);
    ASSERT_TRUE(fp.ok() && fm.ok()) << fp.status() << " " << fm.status();
    const double fd = (fp->objective - fm->objective) / (2 * h);
    max_err = std::max(max_err, std::abs(fd - grad[k].item<double>()));
  }
  EXPECT_LT(max_err, 1e-7) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    Objective, GradientCheck,
    ::testing::Values(Case{"binary", 2, 0, true, false, false, false, false},
                      Case{"multinomial", 4, 0, true, false, false, false, false},
                      Case{"binary_l2", 2, 0.3, true, false, false, false, false},
                      Case{"multinomial_l2", 3, 0.1, true, false, false, false, false},
                      Case{"class_weights", 3, 0.1, true, true, false, false, false},
                      Case{"sample_weights", 2, 0.05, true, false, true, false, false},
                      Case{"no_bias", 3, 0.1, false, false, false, false, false},
                      Case{"standardized", 3, 0.1, true, false, true, true, false},
                      Case{"sparse", 3, 0.1, true, true, false, false, true},
                      Case{"sparse_standardized_binary", 2, 0.1, true, false, false, true, true}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Objective, MatchesClosedFormAtZero) {
  // At theta = 0 every class has probability 1/K, so the loss is log K (binary: log 2).
  Dataset data = RandomDense(20, 3, 5, 3);
  ObjectiveConfig cfg;
  cfg.classes = 5;
  auto obj =
      LogisticObjective::Create(data, cfg, at::Tensor(), at::Tensor(), at::Tensor(), nullptr);
  ASSERT_TRUE(obj.ok());
  at::Tensor theta = at::zeros({(*obj)->num_params()}, at::kDouble);
  at::Tensor grad = at::zeros_like(theta);
  const auto v = (*obj)->ValueAndGradient(theta, grad);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_NEAR(v->loss, std::log(5.0), 1e-12);
  cfg.classes = 2;
  Dataset bin = RandomDense(20, 3, 2, 3);
  auto obj2 =
      LogisticObjective::Create(bin, cfg, at::Tensor(), at::Tensor(), at::Tensor(), nullptr);
  ASSERT_TRUE(obj2.ok()) << obj2.status();
  at::Tensor t2 = at::zeros({(*obj2)->num_params()}, at::kDouble);
  at::Tensor g2 = at::zeros_like(t2);
  const auto v2 = (*obj2)->ValueAndGradient(t2, g2);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_NEAR(v2->loss, std::log(2.0), 1e-12);
}

TEST(Objective, MinibatchOfAllRowsEqualsFullPass) {
  Dataset data = RandomDense(50, 4, 3, 5);
  ObjectiveConfig cfg;
  cfg.classes = 3;
  cfg.l2 = 0.2;
  cfg.block_rows = 7;
  auto obj =
      LogisticObjective::Create(data, cfg, at::Tensor(), at::Tensor(), at::Tensor(), nullptr);
  ASSERT_TRUE(obj.ok());
  at::Tensor theta = at::randn({(*obj)->num_params()}, at::kDouble);
  at::Tensor g1 = at::zeros_like(theta), g2 = at::zeros_like(theta);
  std::vector<int64_t> rows(50);
  for (int i = 0; i < 50; ++i) rows[i] = 49 - i;
  const auto v1 = (*obj)->ValueAndGradient(theta, g1);
  const auto v2 = (*obj)->BatchValueAndGradient(theta, rows, 0, rows.size(), g2);
  ASSERT_TRUE(v1.ok() && v2.ok()) << v1.status() << " " << v2.status();
  const double f1 = v1->objective, f2 = v2->objective;
  EXPECT_NEAR(f1, f2, 1e-12);
  EXPECT_LT((g1 - g2).abs().max().item<double>(), 1e-12);
}

// The fused float32 CPU minibatch path against the float64 tensor path on the same rows:
// binary and softmax (K = 10 pads to 16 columns; K = 3 to 8), uint8 and float32 storage,
// weights, standardisation, no bias, l2, and batch sizes that leave partial row groups.
struct FusedCase {
  const char* name;
  int64_t classes;
  bool u8;
  bool weights;
  bool standardize;
  bool bias;
  double l2;
  size_t batch;
};

class FusedMinibatch : public ::testing::TestWithParam<FusedCase> {};

TEST_P(FusedMinibatch, MatchesTheFloat64TensorPath) {
  const FusedCase c = GetParam();
  Dataset data = RandomDense(61, 19, c.classes, 21);
  if (c.u8) {
    data.storage = FeatureStorage::kDenseUint8;
    for (float v : data.dense_f32) {
      data.dense_u8.push_back(static_cast<uint8_t>(std::clamp(128.0f + 40.0f * v, 0.0f, 255.0f)));
    }
    data.dense_f32.clear();
    data.u8_scale = 1.0 / 255;
  }
  at::Tensor sw, mu, sigma;
  if (c.weights) sw = at::rand({data.num_rows}, at::kDouble) * 2;
  if (c.standardize) {
    mu = at::linspace(-0.3, 0.6, 19, at::kDouble);
    sigma = at::linspace(0.4, 1.7, 19, at::kDouble);
  }
  ObjectiveConfig cfg;
  cfg.classes = c.classes;
  cfg.fit_bias = c.bias;
  cfg.l2 = c.l2;
  cfg.dtype = at::kDouble;
  auto ref = LogisticObjective::Create(data, cfg, sw, mu, sigma, nullptr);
  cfg.dtype = at::kFloat;
  auto fused = LogisticObjective::Create(data, cfg, sw, mu, sigma, nullptr);
  ASSERT_TRUE(ref.ok() && fused.ok());
  at::Tensor theta = at::randn({(*ref)->num_params()}, at::kDouble) * 0.3;
  at::Tensor theta32 = theta.to(at::kFloat);
  at::Tensor g64 = at::zeros_like(theta), g32 = at::zeros_like(theta32);
  std::vector<int64_t> rows(data.num_rows);
  for (int64_t i = 0; i < data.num_rows; ++i) rows[i] = (i * 17) % data.num_rows;
  for (size_t begin = 0; begin < rows.size(); begin += c.batch) {
    const size_t end = std::min(rows.size(), begin + c.batch);
    auto v64 = (*ref)->BatchValueAndGradient(theta, rows, begin, end, g64);
    auto v32 = (*fused)->BatchValueAndGradient(theta32, rows, begin, end, g32);
    ASSERT_TRUE(v64.ok() && v32.ok());
    EXPECT_NEAR(v32->loss, v64->loss, 2e-5 * (1 + v64->loss));
    EXPECT_NEAR(v32->objective, v64->objective, 2e-5 * (1 + v64->objective));
    EXPECT_LT((g32.to(at::kDouble) - g64).abs().max().item<double>(), 2e-5);
    // The class-major entry point (what SGD/Adam use) is the same step in the other layout.
    at::Tensor g_cm = at::zeros_like(theta32), g_back = at::zeros_like(theta32);
    auto v_cm = (*fused)->BatchValueAndGradientClassMajor((*fused)->ToClassMajor(theta32), rows,
                                                          begin, end, g_cm);
    ASSERT_TRUE(v_cm.ok());
    (*fused)->FromClassMajor(g_cm, g_back);
    EXPECT_TRUE(at::equal(g_back, g32));
    EXPECT_EQ(v_cm->loss, v32->loss);
  }
  // Full passes: float32 runs the fused kernel with float64 sums, and so does float64 with
  // mixed_products; both within float32 rounding of the float64 tensor path.
  at::Tensor f64 = at::zeros_like(theta), f32 = at::zeros_like(theta32),
             fmix = at::zeros_like(theta);
  cfg.dtype = at::kDouble;
  cfg.mixed_products = true;
  auto mixed = LogisticObjective::Create(data, cfg, sw, mu, sigma, nullptr);
  ASSERT_TRUE(mixed.ok());
  auto full64 = (*ref)->ValueAndGradient(theta, f64);
  auto full32 = (*fused)->ValueAndGradient(theta32, f32);
  auto full_mixed = (*mixed)->ValueAndGradient(theta, fmix);
  ASSERT_TRUE(full64.ok() && full32.ok() && full_mixed.ok());
  EXPECT_NEAR(full32->objective, full64->objective, 2e-6 * (1 + full64->objective));
  EXPECT_NEAR(full_mixed->objective, full64->objective, 2e-6 * (1 + full64->objective));
  EXPECT_LT((f32.to(at::kDouble) - f64).abs().max().item<double>(), 2e-6);
  EXPECT_LT((fmix - f64).abs().max().item<double>(), 2e-6);
}

TEST(Objective, HugeModelsSkipTheFusedKernelsAndStillTrain) {
  // Per-thread K x d sums would not fit: above 4M parameters the ATen path runs.
  const Dataset data = RandomDense(3, (int64_t{1} << 22) + 1, 2, 5);
  ObjectiveConfig cfg;
  cfg.classes = 2;
  cfg.dtype = at::kFloat;
  auto obj =
      LogisticObjective::Create(data, cfg, at::Tensor(), at::Tensor(), at::Tensor(), nullptr);
  ASSERT_TRUE(obj.ok());
  EXPECT_FALSE((*obj)->ClassMajorMinibatch());
  at::Tensor theta = at::zeros({(*obj)->num_params()}, at::kFloat);
  at::Tensor grad = at::zeros_like(theta);
  auto v = (*obj)->BatchValueAndGradient(theta, {0, 1, 2}, 0, 3, grad);
  ASSERT_TRUE(v.ok());
  EXPECT_NEAR(v->loss, std::log(2.0), 1e-6);  // zero weights: p = 1/2 for every row
}

TEST(Objective, ClassMajorLayoutRoundTrips) {
  const Dataset data = RandomDense(8, 5, 3, 4);
  ObjectiveConfig cfg;
  cfg.classes = 3;
  cfg.dtype = at::kFloat;
  auto obj =
      LogisticObjective::Create(data, cfg, at::Tensor(), at::Tensor(), at::Tensor(), nullptr);
  ASSERT_TRUE(obj.ok());
  at::Tensor theta = at::arange((*obj)->num_params(), at::kFloat);
  at::Tensor cm = (*obj)->ToClassMajor(theta);
  // W is 5 x 3 feature-major: W[j][k] = 3 j + k; class-major puts class k's 5 weights together.
  EXPECT_EQ(cm[1].item<float>(), 3.0f);    // W[1][0]
  EXPECT_EQ(cm[5].item<float>(), 1.0f);    // W[0][1]
  EXPECT_EQ(cm[15].item<float>(), 15.0f);  // the bias stays last
  at::Tensor back = at::zeros_like(theta);
  (*obj)->FromClassMajor(cm, back);
  EXPECT_TRUE(at::equal(back, theta));
}

INSTANTIATE_TEST_SUITE_P(
    Objective, FusedMinibatch,
    ::testing::Values(FusedCase{"softmax10_f32", 10, false, false, false, true, 0, 16},
                      FusedCase{"softmax3_u8_weights", 3, true, true, false, true, 0.1, 7},
                      FusedCase{"softmax10_u8_standardized", 10, true, false, true, true, 0, 61},
                      FusedCase{"softmax4_no_bias_l2", 4, false, false, false, false, 0.3, 5},
                      FusedCase{"binary_f32", 2, false, false, false, true, 0, 16},
                      FusedCase{"binary_u8_weights_standardized", 2, true, true, true, true, 0.05,
                                9}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace logit
