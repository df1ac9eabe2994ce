// Accuracy targets on Fashion-MNIST from the Debian package dataset-fashion-mnist.
#include "tests/unit/job_test_util.h"

namespace logit {
namespace {

using ::logit::testing::FashionMnistJob;

TEST(FashionMnist, LbfgsWithCOneReaches84PercentTestAccuracy) {
  TrainOptions o;
  o.l2 = 1.0 / 60000;  // C = 1
  o.epochs = 150;
  o.tol = 1e-8;
  auto r = RunTrainingJob(FashionMnistJob(), o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(r->result.test_metrics->accuracy, 0.84);
  EXPECT_EQ(r->test_rows, 10000);
}

TEST(FashionMnist, AdamBatch256TenEpochsReaches83Percent) {
  TrainOptions o;
  o.optimizer = OptimizerKind::kAdam;
  o.batch_size = 256;
  o.epochs = 10;
  auto r = RunTrainingJob(FashionMnistJob(), o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(r->result.test_metrics->accuracy, 0.83);
  EXPECT_EQ(r->result.history.size(), 10u);
}

}  // namespace
}  // namespace logit
