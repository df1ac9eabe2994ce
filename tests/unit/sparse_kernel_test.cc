// The CSR kernel (worker/kernel/sparse_cpu.h) on every instruction set the CPU has against a
// direct float64 evaluation of the closed form, and the diagonally preconditioned L-BFGS on
// sparse rows against the plain one: the same optimum in fewer iterations.
#include "worker/kernel/cpu_isa.h"
#include "worker/kernel/sparse_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <random>
#include <tuple>

#include "gtest/gtest.h"
#include "worker/data/dataset.h"
#include "worker/kernel/lbfgs.h"
#include "worker/kernel/objective.h"

namespace logit {
namespace {

// Rows with Zipf-like column frequencies (a few common columns, many rare ones), positive and
// negative values, labels from a planted model, optional row weights.
Dataset RandomCsr(int64_t n, int64_t d, int64_t classes, bool weights, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  Dataset x;
  x.source = "random.svm";
  x.storage = FeatureStorage::kSparseCsr;
  x.num_rows = x.total_rows = n;
  x.num_features = d;
  x.csr_indptr = {0};
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int32_t> cols;
    const int count = 1 + static_cast<int>(rng() % 12);
    for (int k = 0; k < count; ++k) {
      cols.push_back(static_cast<int32_t>(std::min<double>(d - 1, d * std::pow(u(rng), 3))));
    }
    std::sort(cols.begin(), cols.end());
    cols.erase(std::unique(cols.begin(), cols.end()), cols.end());
    double score = 0;
    for (int32_t j : cols) {
      const float v = static_cast<float>(u(rng) * 4 - 1);
      x.csr_indices.push_back(j);
      x.csr_values.push_back(v);
      score += v * std::sin(j + 1.0);
    }
    x.csr_indptr.push_back(static_cast<int64_t>(x.csr_indices.size()));
    x.labels.push_back(classes == 2 ? (score + u(rng) - 0.5 > 0)
                                    : static_cast<int64_t>(std::abs(score * 7)) % classes);
    if (weights) x.sample_weights.push_back(static_cast<float>(0.5 + u(rng)));
  }
  return x;
}

// The loss and gradient sums of the closed form, straight from the definition.
std::vector<double> Reference(const Dataset& x, int64_t c, const std::vector<double>& w,
                              const std::vector<double>& b) {
  const int64_t d = x.num_features;
  std::vector<double> sums(d * c + c + 2, 0.0), z(c), g(c);
  for (int64_t i = 0; i < x.num_rows; ++i) {
    for (int64_t k = 0; k < c; ++k) z[k] = b[k];
    for (int64_t p = x.csr_indptr[i]; p < x.csr_indptr[i + 1]; ++p) {
      for (int64_t k = 0; k < c; ++k) z[k] += x.CsrValue(p) * w[x.csr_indices[p] * c + k];
    }
    const double sw = x.sample_weights.empty() ? 1.0 : x.sample_weights[i];
    const int64_t y = x.labels[i];
    double loss;
    if (c == 1) {
      const double p1 = 1 / (1 + std::exp(-z[0]));
      loss = y == 1 ? -std::log(p1) : -std::log(1 - p1);
      g[0] = sw * (p1 - y);
    } else {
      double total = 0;
      for (int64_t k = 0; k < c; ++k) total += std::exp(z[k]);
      loss = std::log(total) - z[y];
      for (int64_t k = 0; k < c; ++k) g[k] = sw * (std::exp(z[k]) / total - (k == y));
    }
    sums[d * c + c] += sw * loss;
    sums[d * c + c + 1] += sw;
    for (int64_t k = 0; k < c; ++k) sums[d * c + k] += g[k];
    for (int64_t p = x.csr_indptr[i]; p < x.csr_indptr[i + 1]; ++p) {
      for (int64_t k = 0; k < c; ++k) sums[x.csr_indices[p] * c + k] += x.CsrValue(p) * g[k];
    }
  }
  return sums;
}

// (classes, implicit ones: the values array left empty, as the reader keeps binary features).
class SparseKernelTest : public ::testing::TestWithParam<std::tuple<int64_t, bool>> {
 protected:
  void TearDown() override { cpu::UseKernelIsa("best"); }
};

TEST_P(SparseKernelTest, EveryInstructionSetAndThreadCountMatchesTheClosedForm) {
  const auto [classes, unit_values] = GetParam();
  const int64_t c = classes == 2 ? 1 : classes, d = 300;
  // ~390,000 stored values: enough for the kernel to split them over 2 threads.
  Dataset x = RandomCsr(60000, d, classes, /*weights=*/true, 7);
  if (unit_values) x.csr_values.clear();
  sparse::CsrRows rows{x.csr_indptr.data(), x.csr_indices.data(), x.CsrValuesOrNull(),
                       x.labels.data(), x.sample_weights.data()};
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(0, 0.3);
  std::vector<double> w(d * c), b(c);
  for (double& v : w) v = normal(rng);
  for (double& v : b) v = normal(rng);
  const std::vector<double> want = Reference(x, c, w, b);
  int checked = 0;
  for (const char* isa : {"portable", "avx2", "avx512"}) {
    if (!cpu::UseKernelIsa(isa)) continue;
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(isa) + " on " + std::to_string(threads) + " threads");
      at::set_num_threads(threads);
      sparse::SparseKernel kernel(d, c);
      std::vector<double> got(want.size(), 0.0);
      kernel.Accumulate(rows, nullptr, x.num_rows, w.data(), b.data(), got.data());
      EXPECT_EQ(kernel.threads_used(), threads);
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], 1e-9 * (1 + std::abs(want[i]))) << "entry " << i;
      }
      // Gathered rows (a minibatch): the same sums as those rows' own reference.
      const std::vector<int64_t> picked = {5, 17, 17, 4000, 59999};
      std::vector<double> batch(want.size(), 0.0);
      kernel.Accumulate(rows, picked.data(), 5, w.data(), b.data(), batch.data());
      Dataset only = TakeRows(x, picked);
      const std::vector<double> batch_want = Reference(only, c, w, b);
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(batch[i], batch_want[i], 1e-12 * (1 + std::abs(batch_want[i])));
      }
      // Logits of the same rows: b + sum_p v_p w[j_p].
      std::vector<double> z(5 * c);
      kernel.Logits(rows, picked.data(), 5, w.data(), b.data(), z.data());
      for (int64_t i = 0; i < 5; ++i) {
        for (int64_t k = 0; k < c; ++k) {
          double want_z = b[k];
          for (int64_t p = x.csr_indptr[picked[i]]; p < x.csr_indptr[picked[i] + 1]; ++p) {
            want_z += x.CsrValue(p) * w[x.csr_indices[p] * c + k];
          }
          ASSERT_NEAR(z[i * c + k], want_z, 1e-12 * (1 + std::abs(want_z)));
        }
      }
      ++checked;
    }
  }
  at::set_num_threads(1);
  EXPECT_GE(checked, 2);  // the portable path at least, on 1 and 2 threads
}

INSTANTIATE_TEST_SUITE_P(BinaryAndSoftmax, SparseKernelTest,
                         ::testing::Combine(::testing::Values(2, 5), ::testing::Bool()));

// Runs L-BFGS from zero to convergence; returns (objective, iterations).
std::pair<double, int> Minimize(LogisticObjective& obj, bool precondition) {
  LbfgsOptions lo;
  lo.tol = 1e-12;
  lo.history = 10;
  if (precondition) lo.preconditioner = *obj.DiagonalPreconditioner();
  LbfgsMinimizer m(obj, lo);
  EXPECT_TRUE(m.Start(at::zeros({obj.num_params()}, at::kDouble)).ok());
  int it = 0;
  while (it < 5000) {
    auto outcome = m.Iterate();
    EXPECT_TRUE(outcome.ok());
    if (!outcome.ok() || *outcome != LbfgsOutcome::kStepped) break;
    ++it;
    if (m.converged()) break;
  }
  return {m.current().f, it};
}

TEST(PreconditionedLbfgs, ReachesTheSameOptimumInFewerIterationsOnSparseRows) {
  // Columns scaled over four orders of magnitude, as counts and rare features make them.
  Dataset x = RandomCsr(3000, 200, 2, /*weights=*/false, 11);
  for (size_t p = 0; p < x.csr_values.size(); ++p) {
    x.csr_values[p] *= static_cast<float>(std::pow(10.0, (x.csr_indices[p] % 5) - 2));
  }
  ObjectiveConfig config;
  config.classes = 2;
  config.l2 = 1.0 / 3000;
  auto obj = LogisticObjective::Create(x, config, {}, {}, {}, nullptr);
  ASSERT_TRUE(obj.ok()) << obj.status();
  ASSERT_TRUE((*obj)->DiagonalPreconditioner()->defined());
  const auto [plain, plain_it] = Minimize(**obj, false);
  const auto [pre, pre_it] = Minimize(**obj, true);
  // The same optimum (plain L-BFGS stalls slightly above it after thousands of iterations).
  EXPECT_LE(pre, plain * (1 + 1e-12));
  EXPECT_NEAR(pre, plain, 1e-7 * plain);
  EXPECT_LT(pre_it * 10, plain_it);
  std::cout << "L-BFGS iterations to convergence: " << plain_it << " plain, " << pre_it
            << " preconditioned\n";
}

}  // namespace
}  // namespace logit
