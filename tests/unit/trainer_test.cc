#include "worker/kernel/trainer.h"

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_join.h"
#include "tests/unit/job_test_util.h"
#include "tests/unit/test_util.h"
#include "worker/data/readers.h"
#include "worker/job.h"
#include "worker/model/predict.h"

namespace logit {
namespace {

using ::logit::testing::ReadCsv;
using ::logit::testing::StatusIs;
using ::logit::testing::TempDir;
using ::logit::testing::TestData;

TEST(Train, SameSeedGivesIdenticalWeights) {
  const Dataset iris = ReadCsv("iris.csv");
  TrainOptions o;
  o.optimizer = OptimizerKind::kAdam;
  o.epochs = 3;
  o.batch_size = 16;
  o.seed = 42;
  auto a = Train(o, {&iris});
  auto b = Train(o, {&iris});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->model.weights, b->model.weights);
  o.seed = 43;
  auto c = Train(o, {&iris});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE(a->model.weights, c->model.weights);
}

TEST(Train, ScikitLearnsCIsAnL2OfOneOverCTimesTheTrainingRows) {
  const Dataset cancer = ReadCsv("breast_cancer.csv");
  TrainOptions by_c;
  by_c.standardize = true;
  by_c.C = 0.5;
  TrainOptions by_l2 = by_c;
  by_l2.C = 0;
  by_l2.l2 = 1.0 / (0.5 * static_cast<double>(cancer.num_rows));
  auto a = Train(by_c, {&cancer});
  auto b = Train(by_l2, {&cancer});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->model.weights, b->model.weights);  // the same problem, bit for bit
  EXPECT_DOUBLE_EQ(a->l2, by_l2.l2);              // and reported as the penalty trained with
}

TEST(Train, StandardizedModelPredictsOnRawFeatures) {
  const Dataset cancer = ReadCsv("breast_cancer.csv");
  TrainOptions o;
  o.standardize = true;
  o.l2 = 1.0 / cancer.num_rows;
  auto r = Train(o, {&cancer});
  ASSERT_TRUE(r.ok()) << r.status();
  // Raw-feature predictions from the folded model reproduce the training loss.
  auto proba = PredictProba(r->model, cancer);
  ASSERT_TRUE(proba.ok());
  const ClassificationMetrics m = ComputeMetrics(*proba, cancer.labels, 2);
  EXPECT_NEAR(m.log_loss, r->train_loss, 1e-4);
  EXPECT_GT(m.accuracy, 0.97);
  EXPECT_GT(m.roc_auc, 0.99);
}

TEST(Train, SparseAndDenseInputsGiveTheSameModel) {
  const Dataset iris = ReadCsv("iris.csv");
  Dataset sparse = iris;
  sparse.storage = FeatureStorage::kSparseCsr;
  sparse.dense_f32.clear();
  sparse.csr_indptr = {0};
  for (int64_t i = 0; i < iris.num_rows; ++i) {
    for (int64_t j = 0; j < 4; ++j) {
      sparse.csr_indices.push_back(j);
      sparse.csr_values.push_back(iris.dense_f32[i * 4 + j]);
    }
    sparse.csr_indptr.push_back(sparse.csr_indices.size());
  }
  TrainOptions o;
  o.l2 = 0.01;
  o.standardize = true;
  o.tol = 1e-12;
  auto a = Train(o, {&iris});
  auto b = Train(o, {&sparse});
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  EXPECT_NEAR(a->objective, b->objective, 1e-9);
  for (size_t i = 0; i < a->model.weights.size(); ++i) {
    EXPECT_NEAR(a->model.weights[i], b->model.weights[i], 1e-4);
  }
}

TEST(Train, BalancedClassWeightsUpweightTheRareClass) {
  Dataset cancer = ReadCsv("breast_cancer.csv");
  TrainOptions o;
  o.standardize = true;
  o.l2 = 0.01;
  auto plain = Train(o, {&cancer});
  o.class_weight = "balanced";
  auto balanced = Train(o, {&cancer});
  ASSERT_TRUE(plain.ok() && balanced.ok());
  ASSERT_TRUE(plain->train_metrics.has_value() && balanced->train_metrics.has_value());
  // Class 0 (malignant) is the minority: its recall must not drop with balanced weights.
  EXPECT_GE(balanced->train_metrics->recall[0], plain->train_metrics->recall[0]);
  EXPECT_NE(plain->objective, balanced->objective);
}

TEST(Train, L1WithAdamAndSgdGivesExactZeros) {
  const Dataset cancer = ReadCsv("breast_cancer.csv");
  for (OptimizerKind k : {OptimizerKind::kAdam, OptimizerKind::kSgd}) {
    TrainOptions o;
    o.optimizer = k;
    o.standardize = true;
    o.l1 = 0.05;
    o.epochs = 30;
    o.batch_size = 32;
    o.lr = k == OptimizerKind::kAdam ? 0.01 : 0.1;
    auto r = Train(o, {&cancer});
    ASSERT_TRUE(r.ok()) << r.status();
    int zeros = 0;
    for (float w : r->model.weights) zeros += w == 0.0f;
    EXPECT_GT(zeros, 5) << OptimizerName(k);
    ASSERT_TRUE(r->train_metrics.has_value());
    EXPECT_GT(r->train_metrics->accuracy, 0.9);
  }
}

TEST(Train, SgdWithNesterovMomentumConverges) {
  const Dataset iris = ReadCsv("iris.csv");
  TrainOptions o;
  o.optimizer = OptimizerKind::kSgd;
  o.momentum = 0.9;
  o.nesterov = true;
  o.lr = 0.01;
  o.standardize = true;
  o.epochs = 50;
  o.batch_size = 10;
  auto r = Train(o, {&iris});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->train_metrics.has_value());
  EXPECT_GT(r->train_metrics->accuracy, 0.93);
  ASSERT_FALSE(r->history.empty());
  EXPECT_LT(r->history.back().train_loss, r->history.front().train_loss);
}

TEST(Train, EarlyStoppingStopsWhenValidationStalls) {
  DataConfig dc;
  dc.train.path = TestData("iris.csv");
  dc.val_split = 0.3;
  TrainOptions o;
  o.optimizer = OptimizerKind::kAdam;
  o.lr = 0.5;
  o.epochs = 500;
  o.batch_size = 8;
  o.early_stopping_patience = 3;
  o.tol = 1e-3;
  auto r = RunTrainingJob(dc, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->result.stop_reason, StopReason::kEarlyStopping);
  EXPECT_LT(r->result.epochs_run, 500);
  ASSERT_FALSE(r->result.history.empty());
  EXPECT_FALSE(std::isnan(r->result.history.back().val_loss));
  EXPECT_GT(r->val_rows, 0);
}

TEST(Train, LabelBeyondClassesNamesFileAndRow) {
  Dataset iris = ReadCsv("iris.csv");
  TrainOptions o;
  o.classes = 2;
  EXPECT_THAT(Train(o, {&iris}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "iris.csv: row 101: label 2 is out of range for classes=2"));
}

TEST(Train, MixedPrecisionLbfgsPolishesToTheFloat64Optimum) {
  // mixed: float32 products and float64 sums until L-BFGS stalls, then float64 from there.
  for (const char* name : {"iris.csv", "breast_cancer.csv", "digits.csv"}) {
    SCOPED_TRACE(name);
    const Dataset data = ReadCsv(name);
    TrainOptions o;
    o.l2 = 1.0 / data.num_rows;
    o.standardize = true;
    o.tol = 1e-10;
    auto exact = Train(o, {&data});  // auto: float64 throughout
    o.precision = Precision::kMixed;
    auto mixed = Train(o, {&data});
    ASSERT_TRUE(exact.ok() && mixed.ok()) << mixed.status();
    ASSERT_TRUE(exact->train_metrics.has_value() && mixed->train_metrics.has_value());
    EXPECT_NEAR(mixed->objective, exact->objective, 1e-8 * exact->objective);
    EXPECT_NEAR(mixed->train_metrics->accuracy, exact->train_metrics->accuracy, 0.01);
    // The polish continues the epoch numbering.
    ASSERT_EQ(static_cast<int64_t>(mixed->history.size()), mixed->epochs_run);
    ASSERT_FALSE(mixed->history.empty());
    EXPECT_EQ(mixed->history.back().epoch, mixed->epochs_run);
  }
}

TEST(Train, InvalidOptionIsRejectedBeforeTraining) {
  Dataset iris = ReadCsv("iris.csv");
  TrainOptions o;
  o.batch_size = 0;
  EXPECT_THAT(Train(o, {&iris}), StatusIs(absl::StatusCode::kInvalidArgument, "batch_size"));
  o = {};
  o.device = "cuda:0";
  if (!DescribeComputeBackend().empty() &&
      DescribeComputeBackend().find("cuda=no") != std::string::npos) {
    EXPECT_THAT(Train(o, {&iris}), StatusIs(absl::StatusCode::kInvalidArgument, "device"));
  }
}

TEST(Train, MismatchedValidationFeaturesAreRejected) {
  TempDir dir;
  DataConfig dc;
  dc.train.path = TestData("iris.csv");
  dc.val_path = dir.Write("val.csv", "1,2,0\n3,4,1\n");
  auto r = RunTrainingJob(dc, TrainOptions{});
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument,
                          "val.csv: has 2 feature columns, expected features=4"));
}

// The files mapped into this process whose path names a BLAS or LAPACK (/proc/self/maps).
std::set<std::string> MappedBlasLibraries() {
  std::set<std::string> libs;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    std::istringstream fields(line);
    std::string range, perms, offset, dev, inode, path;
    fields >> range >> perms >> offset >> dev >> inode >> path;
    if (path.find("blas") != std::string::npos || path.find("lapack") != std::string::npos) {
      libs.insert(path);
    }
  }
  return libs;
}

TEST(DescribeComputeBackend, NamesTheBlasLibrary) {
  const std::string text = DescribeComputeBackend();
  ASSERT_EQ(text.rfind("blas=", 0), 0u) << text;
  const std::string blas = text.substr(5, text.find(' ') - 5);
  const std::set<std::string> mapped = MappedBlasLibraries();
  // Linked through LibTorch, the system BLAS is loaded: the text names exactly those files.
  EXPECT_EQ(blas, mapped.empty() ? "builtin" : absl::StrJoin(mapped, ",")) << text;
  EXPECT_NE(text.find(" torch_threads="), std::string::npos) << text;
  EXPECT_TRUE(text.find(" cuda=yes") != std::string::npos ||
              text.find(" cuda=no") != std::string::npos)
      << text;
}

}  // namespace
}  // namespace logit
