// Helpers for tests that train: the Fashion-MNIST job, dense -> CSR rows, model distance.
#ifndef LOGIT_TESTS_UNIT_JOB_TEST_UTIL_H_
#define LOGIT_TESTS_UNIT_JOB_TEST_UTIL_H_

#include <algorithm>
#include <cmath>

#include "gtest/gtest.h"
#include "tests/unit/test_util.h"
#include "worker/job.h"
#include "worker/model/model.h"

namespace logit::testing {

// A CSV under tests/data, whole (last column: the label); an empty Dataset after a failure.
inline Dataset ReadCsv(const std::string& name) {
  ReadOptions o;
  o.path = TestData(name);
  auto d = ReadDataset(o);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : Dataset();
}

// Fashion-MNIST's training and test files (FashionDir()).
inline DataConfig FashionMnistJob() {
  const std::string d = FashionDir();
  DataConfig dc;
  dc.train.path = d + "/train-images-idx3-ubyte.gz";
  dc.train.labels_path = d + "/train-labels-idx1-ubyte.gz";
  dc.test_path = d + "/t10k-images-idx3-ubyte.gz";
  dc.test_labels = d + "/t10k-labels-idx1-ubyte.gz";
  return dc;
}

// The same rows as CSR, without the exact zeros.
inline Dataset DenseToCsr(const Dataset& dense) {
  Dataset s = dense;
  s.storage = FeatureStorage::kSparseCsr;
  s.dense_f32.clear();
  s.csr_indptr = {0};
  for (int64_t i = 0; i < dense.num_rows; ++i) {
    for (int64_t j = 0; j < dense.num_features; ++j) {
      const float v = dense.dense_f32[i * dense.num_features + j];
      if (v == 0) continue;
      s.csr_indices.push_back(j);
      s.csr_values.push_back(v);
    }
    s.csr_indptr.push_back(static_cast<int64_t>(s.csr_indices.size()));
  }
  return s;
}

// Largest absolute difference over weights and biases.
inline double MaxAbsDiff(const LinearModel& a, const LinearModel& b) {
  EXPECT_EQ(a.weights.size(), b.weights.size());
  EXPECT_EQ(a.bias.size(), b.bias.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.weights.size(), b.weights.size()); ++i) {
    m = std::max(m, std::abs(static_cast<double>(a.weights[i]) - b.weights[i]));
  }
  for (size_t i = 0; i < std::min(a.bias.size(), b.bias.size()); ++i) {
    m = std::max(m, std::abs(static_cast<double>(a.bias[i]) - b.bias[i]));
  }
  return m;
}

}  // namespace logit::testing

#endif  // LOGIT_TESTS_UNIT_JOB_TEST_UTIL_H_
