#include "worker/kernel/train_options.h"

#include "tests/unit/test_util.h"

namespace logit {
namespace {

using ::logit::testing::StatusIs;
constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

TEST(ValidateTrainOptions, DefaultsAreValid) { EXPECT_TRUE(ValidateTrainOptions({}).ok()); }

TEST(ValidateTrainOptions, EachBadValueIsRejectedByName) {
  TrainOptions o;
  o.lr = 0;
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "lr: must be > 0"));
  o = {};
  o.lr = -1;
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "lr:"));
  o = {};
  o.batch_size = 0;
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "batch_size: must be >= 1"));
  o = {};
  o.l1 = -0.1;
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "l1: must be >= 0"));
  o = {};
  o.l2 = -1;
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "l2: must be >= 0"));
  o = {};
  o.classes = 1;
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "classes: must be 2 to"));
  o = {};
  o.epochs = 0;
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "epochs: must be >= 1"));
  o = {};
  o.tol = 0;
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "tol: must be > 0"));
  o = {};
  o.momentum = 1.0;
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "momentum"));
  o = {};
  o.class_weight = "0=abc";
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "class_weight"));
  o = {};
  o.device = "tpu";
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "device"));
  o = {};
  o.early_stopping_patience = -1;
  EXPECT_THAT(ValidateTrainOptions(o), StatusIs(kInvalid, "early_stopping_patience"));
}

TEST(ParseClassWeight, BalancedAndExplicit) {
  auto b = ParseClassWeight("balanced");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->balanced);
  auto e = ParseClassWeight("0=1.5, 2=3");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->explicit_weights.at(0), 1.5);
  EXPECT_EQ(e->explicit_weights.at(2), 3);
}

TEST(ParseOptimizer, UnknownNameIsRejected) {
  EXPECT_THAT(ParseOptimizer("rmsprop"),
              StatusIs(kInvalid, "optimizer: unknown optimizer 'rmsprop'"));
  auto lbfgs = ParseOptimizer("LBFGS");
  ASSERT_TRUE(lbfgs.ok()) << lbfgs.status();
  EXPECT_EQ(*lbfgs, OptimizerKind::kLbfgs);
}

}  // namespace
}  // namespace logit
