// Accuracy targets on Fashion-MNIST from the Debian package dataset-fashion-mnist.
#include "tests/unit/test_util.h"
#include "worker/job.h"

namespace logit {
namespace {

DataConfig Fashion() {
  const std::string d = logit::testing::FashionDir();
  DataConfig dc;
  dc.train.path = d + "/train-images-idx3-ubyte.gz";
  dc.train.labels_path = d + "/train-labels-idx1-ubyte.gz";
  dc.test_path = d + "/t10k-images-idx3-ubyte.gz";
  dc.test_labels = d + "/t10k-labels-idx1-ubyte.gz";
  return dc;
}

TEST(FashionMnist, LbfgsWithCOneReaches84PercentTestAccuracy) {
  TrainOptions o;
  o.l2 = 1.0 / 60000;  // C = 1
  o.epochs = 150;
  o.tol = 1e-8;
  auto r = RunTrainingJob(Fashion(), o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(r->result.test_metrics->accuracy, 0.84);
  EXPECT_EQ(r->test_rows, 10000);
}

TEST(FashionMnist, AdamBatch256TenEpochsReaches83Percent) {
  TrainOptions o;
  o.optimizer = OptimizerKind::kAdam;
  o.batch_size = 256;
  o.epochs = 10;
  auto r = RunTrainingJob(Fashion(), o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(r->result.test_metrics->accuracy, 0.83);
  EXPECT_EQ(r->result.history.size(), 10u);
}

}  // namespace
}  // namespace logit
