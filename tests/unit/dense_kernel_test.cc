// The fused dense CPU kernels (worker/kernel/fused_cpu.h) on every instruction set the CPU has
// (portable, AVX2, AVX-512; cpu_isa.h), on 1 and 2 threads, against a closed form computed here
// in long double: loss, weight and gradient sums of binary and softmax models over float32 and
// uint8 rows with row weights, feature counts that leave vector tails, and the Adam / SGD steps
// and FinishGradient against their portable results.
#include <ATen/Parallel.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/kernel/cpu_isa.h"
#include "worker/kernel/fused_cpu.h"

namespace logit {
namespace {

// Rows of random features in both storages (uint8 scaled by 1/255, float32 the same values),
// labels, row weights.
struct DenseData {
  int64_t n, d, classes;
  std::vector<uint8_t> u8;
  std::vector<float> f32;
  std::vector<int64_t> labels;
  std::vector<float> weights;
};

DenseData RandomDense(int64_t n, int64_t d, int64_t classes, uint32_t seed) {
  std::mt19937 rng(seed);
  DenseData x{n, d, classes, {}, {}, {}, {}};
  x.u8.resize(n * d);
  x.f32.resize(n * d);
  for (int64_t i = 0; i < n * d; ++i) {
    x.u8[i] = static_cast<uint8_t>(rng() % 256);
    x.f32[i] = static_cast<float>(x.u8[i] * (1.0 / 255));
  }
  for (int64_t i = 0; i < n; ++i) {
    x.labels.push_back(static_cast<int64_t>(rng() % classes));
    x.weights.push_back(0.5f + static_cast<float>(rng() % 100) / 100);
  }
  return x;
}

// The sums in the kernel's layout (gradient wrt W^T class-major, b, then loss and weight) by the
// definitions, over rows[0..m), with W^T (c x d) and b.
// uint8 rows are the kernel's x * float(1/255); float32 rows as stored.
std::vector<double> Reference(const DenseData& x, bool use_u8, const std::vector<int64_t>& rows,
                              int64_t c, const std::vector<double>& wt,
                              const std::vector<double>& b) {
  const int64_t d = x.d, nw = d * c;
  const long double scale = 1.0f / 255;
  std::vector<long double> sums(nw + c + 2, 0.0L);
  std::vector<long double> z(c), g(c), xr(d);
  for (int64_t r : rows) {
    for (int64_t j = 0; j < d; ++j) {
      xr[j] = use_u8 ? x.u8[r * d + j] * scale : static_cast<long double>(x.f32[r * d + j]);
    }
    for (int64_t k = 0; k < c; ++k) {
      z[k] = b[k];
      for (int64_t j = 0; j < d; ++j) z[k] += xr[j] * wt[k * d + j];
    }
    const long double sw = x.weights[r];
    const int64_t y = x.labels[r];
    if (c == 1) {
      const long double p = 1 / (1 + std::exp(-z[0]));
      sums[nw + c] += sw * (y == 1 ? -std::log(p) : -std::log(1 - p));
      g[0] = sw * (p - (y == 1 ? 1 : 0));
    } else {
      long double zmax = z[0], total = 0;
      for (int64_t k = 1; k < c; ++k) zmax = std::max(zmax, z[k]);
      for (int64_t k = 0; k < c; ++k) total += std::exp(z[k] - zmax);
      sums[nw + c] += sw * (std::log(total) + zmax - z[y]);
      for (int64_t k = 0; k < c; ++k) g[k] = sw * (std::exp(z[k] - zmax) / total - (k == y));
    }
    sums[nw + c + 1] += sw;
    for (int64_t k = 0; k < c; ++k) {
      sums[nw + k] += g[k];
      for (int64_t j = 0; j < d; ++j) sums[k * d + j] += g[k] * xr[j];
    }
  }
  return std::vector<double>(sums.begin(), sums.end());
}

// The instruction sets this CPU can run, portable first.
std::vector<const char*> Isas() {
  std::vector<const char*> out;
  for (const char* isa : {"portable", "avx2", "avx512"}) {
    if (cpu::UseKernelIsa(isa)) out.push_back(isa);
  }
  cpu::UseKernelIsa("best");
  return out;
}

struct Case {
  int64_t classes, d;
};

class DenseKernelTest : public ::testing::TestWithParam<Case> {
 protected:
  void TearDown() override {
    cpu::UseKernelIsa("best");
    at::set_num_threads(1);
  }
};

// One pass of `Kernel` over `rows` with W^T, b; returns the float64 sums.
template <typename T>
std::vector<double> RunPass(const DenseData& x, bool use_u8, const std::vector<int64_t>& rows,
                            int64_t c, const std::vector<double>& wt, const std::vector<double>& b,
                            bool double_sums) {
  fused::DenseRows data;
  if (use_u8) {
    data.u8 = x.u8.data();
    data.scale = 1.0f / 255;
  } else {
    data.f32 = x.f32.data();
  }
  data.d = x.d;
  data.labels = x.labels.data();
  data.weights = x.weights.data();
  const std::vector<T> wt_t(wt.begin(), wt.end()), b_t(b.begin(), b.end());
  fused::FusedKernel<T> kernel(x.d, c, double_sums);
  kernel.SetParams(wt_t.data(), b_t.data(), nullptr, nullptr);
  kernel.Accumulate(data, rows.data(), static_cast<int64_t>(rows.size()));
  std::vector<double> out(x.d * c + c + 2);
  kernel.FlushDouble(out.data());
  return out;
}

TEST_P(DenseKernelTest, EveryInstructionSetAndThreadCountMatchesTheClosedForm) {
  const Case cs = GetParam();
  const int64_t c = cs.classes == 2 ? 1 : cs.classes, d = cs.d;
  const DenseData x = RandomDense(300, d, cs.classes, 11);
  std::mt19937 rng(5);
  std::normal_distribution<double> normal(0, 0.05);
  std::vector<double> wt(d * c), b(c);
  for (double& v : wt) v = normal(rng);
  for (double& v : b) v = normal(rng);
  // All rows, and a gathered minibatch with a repeat.
  std::vector<int64_t> all(x.n);
  for (int64_t i = 0; i < x.n; ++i) all[i] = i;
  const std::vector<int64_t> picked = {3, 250, 250, 17, 0, 299, 42};
  int checked = 0;
  for (const char* isa : Isas()) {
    ASSERT_TRUE(cpu::UseKernelIsa(isa));
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      for (const std::vector<int64_t>* rows : {static_cast<const std::vector<int64_t>*>(&all), &picked}) {
        for (bool use_u8 : {false, true}) {
          const std::vector<double> want = Reference(x, use_u8, *rows, c, wt, b);
          SCOPED_TRACE(std::string(isa) + ", " + std::to_string(threads) + " threads, " +
                       std::to_string(rows->size()) + " rows, " + (use_u8 ? "uint8" : "float32"));
          // float64 throughout: to rounding; float32 products with float64 sums and plain
          // float32: to float32's precision.
          const std::vector<double> f64 = RunPass<double>(x, use_u8, *rows, c, wt, b, false);
          const std::vector<double> mixed = RunPass<float>(x, use_u8, *rows, c, wt, b, true);
          const std::vector<double> f32 = RunPass<float>(x, use_u8, *rows, c, wt, b, false);
          for (size_t i = 0; i < want.size(); ++i) {
            const double scale = 1 + std::abs(want[i]);
            ASSERT_NEAR(f64[i], want[i], 1e-10 * scale) << "float64, entry " << i;
            ASSERT_NEAR(mixed[i], want[i], 2e-5 * scale) << "mixed, entry " << i;
            ASSERT_NEAR(f32[i], want[i], 1e-4 * scale) << "float32, entry " << i;
          }
        }
      }
    }
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

// Binary; softmax with 3 (one tile), 7 (4 + 3) and 10 (5 + 5) classes; feature counts that are
// multiples of every vector width and ones that leave a single vector (49 floats with 16
// lanes, 77 doubles with 8) and scalar tails, fewer features than a vector holds (5), and more
// than one 4 KB block of the logits (2,100).
INSTANTIATE_TEST_SUITE_P(
    Shapes, DenseKernelTest,
    ::testing::Values(Case{2, 64}, Case{2, 77}, Case{3, 49}, Case{3, 5}, Case{7, 64},
                      Case{10, 77}, Case{10, 784 / 8}, Case{10, 2100}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return "classes" + std::to_string(info.param.classes) + "_d" + std::to_string(info.param.d);
    });

TEST(DenseKernelStepsTest, AdamSgdAndFinishGradientAgreeWithThePortablePathOnEveryIsa) {
  const int64_t d = 37, c = 3, n = d * c + c;
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0, 1);
  std::vector<float> theta0(n), grad(n + 2), mu(d), sigma(d);
  for (float& v : theta0) v = normal(rng);
  for (float& v : grad) v = normal(rng);
  for (int64_t j = 0; j < d; ++j) {
    mu[j] = normal(rng);
    sigma[j] = 0.5f + std::abs(normal(rng));
  }
  // Results of a few steps on the current ISA.
  auto run = [&]() {
    std::vector<float> out;
    std::vector<float> theta = theta0, m1(n, 0), m2(n, 0), vel(n, 0), g(n);
    const double sq = fused::FinishGradient(grad.data(), 0.25f, mu.data(), sigma.data(), true,
                                            0.1f, theta.data(), d, c, g.data());
    out.push_back(static_cast<float>(sq));
    out.insert(out.end(), g.begin(), g.end());
    for (int step = 1; step <= 3; ++step) {
      fused::AdamStep(theta.data(), g.data(), m1.data(), m2.data(), n, d * c, 0.01, 0.9, 0.999,
                      1e-8, step, 0.05);
    }
    out.insert(out.end(), theta.begin(), theta.end());
    for (int step = 1; step <= 3; ++step) {
      fused::SgdStep(theta.data(), g.data(), vel.data(), n, d * c, 0.1, 0.9, true, 0.01);
    }
    out.insert(out.end(), theta.begin(), theta.end());
    return out;
  };
  ASSERT_TRUE(cpu::UseKernelIsa("portable"));
  const std::vector<float> want = run();
  // The closed form of FinishGradient's first entry: (sum * w - mu * b_sum * w) / sigma + l2 t.
  const float g0 = (grad[0] * 0.25f - mu[0] * grad[d * c] * 0.25f) / sigma[0] + 0.1f * theta0[0];
  EXPECT_NEAR(want[1], g0, 1e-5f * (1 + std::abs(g0)));
  for (const char* isa : Isas()) {
    SCOPED_TRACE(isa);
    ASSERT_TRUE(cpu::UseKernelIsa(isa));
    const std::vector<float> got = run();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-5f * (1 + std::abs(want[i]))) << "entry " << i;
    }
  }
  cpu::UseKernelIsa("best");
}

}  // namespace
}  // namespace logit
