// Every optimizer's saved state continues training bit for bit: N epochs in one go equal k
// epochs, SaveState, RestoreState into a fresh optimizer (over a fresh objective) and N - k more.
#include <cstdint>
#include <memory>

#include "tests/unit/job_test_util.h"
#include "tests/unit/test_util.h"
#include "worker/data/readers.h"
#include "worker/kernel/objective.h"
#include "worker/kernel/optimizer.h"
#include "worker/kernel/problem.h"

namespace logit {
namespace {

using ::logit::testing::ReadCsv;
using ::logit::testing::StatusIs;
using ::logit::testing::TestData;

// A problem and an optimizer over it, as Train makes them.
struct Trainee {
  TrainingProblem problem;
  std::unique_ptr<Optimizer> optimizer;
};

std::unique_ptr<Trainee> Make(const TrainOptions& o, const Dataset& data) {
  auto t = std::make_unique<Trainee>();
  auto problem = PrepareProblem(o, {&data}, nullptr);
  EXPECT_TRUE(problem.ok()) << problem.status();
  if (!problem.ok()) return nullptr;
  t->problem = std::move(*problem);
  auto optimizer = MakeOptimizer(o, *t->problem.train);
  EXPECT_TRUE(optimizer.ok()) << optimizer.status();
  if (!optimizer.ok()) return nullptr;
  t->optimizer = std::move(*optimizer);
  return t;
}

// Runs epochs until `epochs` have run or the optimizer finishes (no validation data: early
// stopping monitors the objective).
void RunUntil(Optimizer& opt, int64_t epochs) {
  while (!opt.finished() && opt.epochs_run() < epochs) {
    auto v = opt.RunEpoch({});
    ASSERT_TRUE(v.ok()) << v.status();
    if (!v->has_value()) break;
    ASSERT_TRUE(opt.EndEpoch((*v)->objective).ok());
  }
}

// Trains `epochs` straight, and for every split point k in `splits` k + restore + the rest;
// the final states (parameters, moments, pairs, counters) must be identical.
void ExpectResumeIsExact(const TrainOptions& o, const Dataset& data, int64_t epochs,
                         const std::vector<int64_t>& splits) {
  auto straight = Make(o, data);
  ASSERT_NE(straight, nullptr);
  RunUntil(*straight->optimizer, epochs);
  const OptimizerState want = straight->optimizer->SaveState();
  ASSERT_FALSE(want.reals.empty());
  for (int64_t k : splits) {
    SCOPED_TRACE(::testing::Message() << "resumed after " << k << " epochs");
    OptimizerState saved;
    {
      auto first = Make(o, data);
      ASSERT_NE(first, nullptr);
      RunUntil(*first->optimizer, k);
      saved = first->optimizer->SaveState();
    }
    auto second = Make(o, data);
    ASSERT_NE(second, nullptr);
    ASSERT_TRUE(second->optimizer->RestoreState(saved).ok());
    EXPECT_TRUE(second->optimizer->SaveState() == saved) << "restore then save changed the state";
    RunUntil(*second->optimizer, epochs);
    EXPECT_TRUE(second->optimizer->SaveState() == want);
    EXPECT_EQ(second->optimizer->epochs_run(), straight->optimizer->epochs_run());
    EXPECT_EQ(second->optimizer->function_evaluations(),
              straight->optimizer->function_evaluations());
    EXPECT_EQ(second->optimizer->finished(), straight->optimizer->finished());
    EXPECT_EQ(second->optimizer->stop_reason(), straight->optimizer->stop_reason());
    auto a = straight->optimizer->FinalValue(), b = second->optimizer->FinalValue();
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->objective, b->objective);
    const LinearModel ma = straight->problem.train->ToModel(straight->optimizer->parameters());
    const LinearModel mb = second->problem.train->ToModel(second->optimizer->parameters());
    EXPECT_EQ(ma.weights, mb.weights);
    EXPECT_EQ(ma.bias, mb.bias);
  }
}

TEST(OptimizerState, SgdWithNesterovMomentumAndL1ResumesBitForBit) {
  const Dataset iris = ReadCsv("iris.csv");
  TrainOptions o;
  o.optimizer = OptimizerKind::kSgd;
  o.momentum = 0.9;
  o.nesterov = true;
  o.lr = 0.01;
  o.l1 = 0.001;
  o.standardize = true;
  o.batch_size = 16;
  o.epochs = 6;
  o.seed = 3;
  ExpectResumeIsExact(o, iris, 6, {1, 4});
  o.precision = Precision::kFloat64;  // the ATen update instead of the fused one
  ExpectResumeIsExact(o, iris, 6, {2});
}

TEST(OptimizerState, AdamResumesBitForBitIncludingEarlyStopping) {
  const Dataset cancer = ReadCsv("breast_cancer.csv");
  TrainOptions o;
  o.optimizer = OptimizerKind::kAdam;
  o.lr = 0.05;
  o.l1 = 0.001;
  o.batch_size = 32;
  o.epochs = 30;
  o.standardize = true;
  o.early_stopping_patience = 2;
  o.tol = 0.05;
  ExpectResumeIsExact(o, cancer, 30, {1, 3});
  o.precision = Precision::kFloat64;
  o.early_stopping_patience = 0;
  o.epochs = 5;
  ExpectResumeIsExact(o, cancer, 5, {2});
}

TEST(OptimizerState, LbfgsAndOwlqnResumeBitForBit) {
  const Dataset iris = ReadCsv("iris.csv");
  TrainOptions o;
  o.standardize = true;
  o.l2 = 0.01;
  o.lbfgs_history = 3;  // the history fills and wraps before the split
  o.epochs = 12;
  ExpectResumeIsExact(o, iris, 12, {1, 5, 9});
  o.l1 = 0.01;  // OWL-QN
  ExpectResumeIsExact(o, iris, 12, {4});
}

TEST(OptimizerState, MixedPrecisionLbfgsResumesBitForBitAcrossThePolish) {
  const Dataset cancer = ReadCsv("breast_cancer.csv");
  TrainOptions o;
  o.standardize = true;
  o.l2 = 1.0 / cancer.num_rows;
  o.tol = 1e-10;
  o.precision = Precision::kMixed;
  o.epochs = 200;
  // Here the float32-products phase ends after iteration 28 and the polish runs at least 10
  // iterations: splits in the first phase, at the switch and inside the polish.
  ExpectResumeIsExact(o, cancer, 200, {3, 28, 29, 32});
}

TEST(OptimizerState, LbfgsCountersOutOfRangeAreRejected) {
  const Dataset iris = ReadCsv("iris.csv");
  TrainOptions o;
  o.epochs = 5;
  auto a = Make(o, iris);
  ASSERT_NE(a, nullptr);
  RunUntil(*a->optimizer, 3);
  OptimizerState state = a->optimizer->SaveState();
  ASSERT_EQ(state.integers["lbfgs"].size(), 6u);
  auto b = Make(o, iris);
  ASSERT_NE(b, nullptr);
  // The polish's start past the iterations run, or negative (it would overflow a difference).
  for (int64_t bad : {int64_t{-1}, state.integers["lbfgs"][0] + 1, INT64_MIN}) {
    OptimizerState corrupt = state;
    corrupt.integers["lbfgs"][5] = bad;
    EXPECT_THAT(b->optimizer->RestoreState(corrupt),
                StatusIs(absl::StatusCode::kInvalidArgument, "counters out of range"));
  }
  // A state written before the polish's start was saved (5 counters) still loads.
  OptimizerState old = state;
  old.integers["lbfgs"].pop_back();
  EXPECT_TRUE(b->optimizer->RestoreState(old).ok());
}

TEST(OptimizerState, StateOfAnotherOptimizerIsRejected) {
  const Dataset iris = ReadCsv("iris.csv");
  TrainOptions o;
  o.optimizer = OptimizerKind::kAdam;
  o.epochs = 1;
  auto adam = Make(o, iris);
  ASSERT_NE(adam, nullptr);
  RunUntil(*adam->optimizer, 1);
  o.optimizer = OptimizerKind::kSgd;
  auto sgd = Make(o, iris);
  ASSERT_NE(sgd, nullptr);
  EXPECT_THAT(sgd->optimizer->RestoreState(adam->optimizer->SaveState()),
              StatusIs(absl::StatusCode::kInvalidArgument, "saved by 'adam'"));
}

}  // namespace
}  // namespace logit
