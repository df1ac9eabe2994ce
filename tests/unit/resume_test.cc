// Training resumed from a checkpoint -- through its file, on the same or another number of
// in-process ranks -- computes what the uninterrupted run computes: the same weights, objective,
// history and stop reason (bit for bit on the same number of ranks), and checkpoints come from
// rank 0 every k epochs while training goes on.
#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/unit/job_test_util.h"
#include "tests/unit/test_util.h"
#include "worker/checkpoint.h"
#include "worker/job.h"
#include "worker/kernel/inprocess_collective.h"

namespace logit {
namespace {

using ::logit::testing::MaxAbsDiff;
using ::logit::testing::StatusIs;
using ::logit::testing::TempDir;
using ::logit::testing::TestData;

// What one run produced: rank 0's outcome and the checkpoints it handed over.
struct Run {
  JobOutcome outcome;
  std::vector<TrainingCheckpoint> checkpoints;
};

// Trains `data` on `world` in-process ranks (0: no collective), from `resume` when given, with
// a checkpoint every `every` epochs. Every rank must succeed with the same model, and only rank 0
// may hand over checkpoints; rank 0's run is returned (or the first failure).
absl::StatusOr<Run> TrainJob(const DataConfig& data, const TrainOptions& options, int world,
                             const TrainingCheckpoint* resume = nullptr, int64_t every = 0) {
  const int ranks = std::max(world, 1);
  std::vector<std::unique_ptr<Collective>> group;
  if (world > 0) group = MakeInProcessGroup(world);
  std::vector<std::vector<TrainingCheckpoint>> saved(ranks);
  std::vector<absl::StatusOr<JobOutcome>> out(ranks, absl::UnknownError("rank did not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      JobHooks hooks;
      hooks.resume = resume;
      hooks.checkpoint_every = every;
      hooks.on_checkpoint = [&, r](const TrainingCheckpoint& c) { saved[r].push_back(c); };
      out[r] = RunTrainingJob(data, options, world > 0 ? group[r].get() : nullptr, hooks);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < ranks; ++r) {
    if (!out[r].ok()) return out[r].status();
    EXPECT_EQ(MaxAbsDiff(out[r]->result.model, out[0]->result.model), 0.0) << "rank " << r;
    if (r > 0) {
      EXPECT_TRUE(saved[r].empty()) << "rank " << r << " handed over checkpoints";
    }
  }
  return Run{std::move(*out[0]), std::move(saved[0])};
}

// The checkpoint after a trip through its file.
TrainingCheckpoint ThroughFile(const TrainingCheckpoint& c) {
  TempDir dir;
  const std::string path = dir.Path("job.ckpt");
  const absl::Status written = WriteCheckpointFile(c, path);
  EXPECT_TRUE(written.ok()) << written;
  auto read = ReadCheckpointFile(path);
  EXPECT_TRUE(read.ok()) << read.status();
  return read.ok() ? *read : TrainingCheckpoint();
}

bool Near(double a, double b, double rel) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::abs(a - b) <= rel * std::max(std::abs(a), std::abs(b));
}

// `got` did what `want` did: weights within `weight_tol`, objective and every epoch's values
// within `rel` (0: identical), the same epochs and stop reason.
void ExpectSameRun(const TrainResult& got, const TrainResult& want, double weight_tol, double rel) {
  EXPECT_LE(MaxAbsDiff(got.model, want.model), weight_tol);
  EXPECT_TRUE(Near(got.objective, want.objective, rel))
      << got.objective << " vs " << want.objective;
  EXPECT_EQ(got.stop_reason, want.stop_reason);
  EXPECT_EQ(got.epochs_run, want.epochs_run);
  ASSERT_EQ(got.history.size(), want.history.size());
  for (size_t i = 0; i < got.history.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("epoch ", i + 1));
    const EpochRecord &g = got.history[i], &w = want.history[i];
    EXPECT_EQ(g.epoch, w.epoch);
    EXPECT_EQ(g.samples, w.samples);
    EXPECT_TRUE(Near(g.train_loss, w.train_loss, rel)) << g.train_loss << " vs " << w.train_loss;
    EXPECT_TRUE(Near(g.objective, w.objective, rel)) << g.objective << " vs " << w.objective;
    EXPECT_TRUE(Near(g.val_loss, w.val_loss, rel)) << g.val_loss << " vs " << w.val_loss;
  }
  if (rel == 0) {
    EXPECT_EQ(got.model.weights, want.model.weights);
    EXPECT_EQ(got.function_evaluations, want.function_evaluations);
  }
}

// Trains uninterrupted with a checkpoint every `every` epochs, then resumes (through the file)
// from the checkpoints after the epochs in `from` on the same ranks: identical runs.
void ExpectResumeIsExact(const DataConfig& data, const TrainOptions& o, int64_t every,
                         const std::vector<int64_t>& from) {
  auto straight = TrainJob(data, o, 0, nullptr, every);
  ASSERT_TRUE(straight.ok()) << straight.status();
  for (int64_t epoch : from) {
    SCOPED_TRACE(absl::StrCat("resumed after epoch ", epoch));
    auto c = std::find_if(straight->checkpoints.begin(), straight->checkpoints.end(),
                          [&](const TrainingCheckpoint& c) { return c.epoch == epoch; });
    ASSERT_NE(c, straight->checkpoints.end());
    const TrainingCheckpoint file = ThroughFile(*c);
    auto resumed = TrainJob(data, o, 0, &file, every);
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    ExpectSameRun(resumed->outcome.result, straight->outcome.result, 0, 0);
    // Checkpoints after the resume are those of the uninterrupted run.
    for (const TrainingCheckpoint& later : resumed->checkpoints) {
      ASSERT_GE(later.epoch / every, 1);
      EXPECT_TRUE(later.state == straight->checkpoints[later.epoch / every - 1].state);
    }
  }
}

DataConfig Csv(const std::string& name) {
  DataConfig dc;
  dc.train.path = TestData(name);
  return dc;
}

TEST(Resume, LbfgsAndOwlqnFromAFileEqualTheUninterruptedRun) {
  TrainOptions o;
  o.standardize = true;
  o.l2 = 0.01;
  o.tol = 1e-10;
  o.lbfgs_history = 3;  // the pairs wrap before the checkpoints
  o.epochs = 40;
  ExpectResumeIsExact(Csv("iris.csv"), o, 3, {3, 9});
  o.l1 = 0.01;  // OWL-QN
  ExpectResumeIsExact(Csv("iris.csv"), o, 4, {4, 8});
}

TEST(Resume, MixedPrecisionLbfgsResumesInBothPhases) {
  // The float32-products phase ends after iteration 28 here; the float64 polish follows.
  TrainOptions o;
  o.standardize = true;
  o.l2 = 1.0 / 569;
  o.tol = 1e-10;
  o.precision = Precision::kMixed;
  ExpectResumeIsExact(Csv("breast_cancer.csv"), o, 1, {3, 28, 29, 32});
}

TEST(Resume, SgdWithNesterovMomentumFromAFileEqualsTheUninterruptedRun) {
  TrainOptions o;
  o.optimizer = OptimizerKind::kSgd;
  o.momentum = 0.9;
  o.nesterov = true;
  o.lr = 0.01;
  o.l1 = 0.001;
  o.standardize = true;
  o.batch_size = 16;
  o.epochs = 8;
  o.seed = 5;
  ExpectResumeIsExact(Csv("iris.csv"), o, 3, {3, 6});
}

TEST(Resume, AdamEarlyStoppingKeepsCountingPatienceAcrossAResume) {
  DataConfig dc = Csv("breast_cancer.csv");
  dc.val_split = 0.25;
  TrainOptions o;
  o.optimizer = OptimizerKind::kAdam;
  o.lr = 0.05;
  o.batch_size = 32;
  o.standardize = true;
  o.epochs = 200;
  o.early_stopping_patience = 3;
  o.tol = 1e-3;
  auto straight = TrainJob(dc, o, 0, nullptr, 1);
  ASSERT_TRUE(straight.ok()) << straight.status();
  ASSERT_EQ(straight->outcome.result.stop_reason, StopReason::kEarlyStopping);
  // Resume where some epochs without improvement have been counted already.
  std::vector<int64_t> counting;
  for (const TrainingCheckpoint& c : straight->checkpoints) {
    const std::vector<int64_t>& counters = c.state.integers.at("counters");
    if (counters[2] > 0) counting.push_back(c.epoch);  // epochs since the best
  }
  ASSERT_FALSE(counting.empty());
  ExpectResumeIsExact(dc, o, 1, {counting.front(), counting.back()});
}

TEST(Resume, CheckpointsComeFromRankZeroEveryKEpochsWhileTrainingGoesOn) {
  for (OptimizerKind k : {OptimizerKind::kSgd, OptimizerKind::kLbfgs}) {
    SCOPED_TRACE(OptimizerName(k));
    TrainOptions o;
    o.optimizer = k;
    o.batch_size = 16;
    o.epochs = k == OptimizerKind::kSgd ? 7 : 6;
    o.standardize = true;
    o.tol = 1e-12;
    auto run = TrainJob(Csv("iris.csv"), o, 2, nullptr, 2);
    ASSERT_TRUE(run.ok()) << run.status();
    ASSERT_EQ(run->outcome.result.epochs_run, *o.epochs);
    // Not after the last epoch: nothing is left to resume.
    const std::vector<int64_t> want =
        k == OptimizerKind::kSgd ? std::vector<int64_t>{2, 4, 6} : std::vector<int64_t>{2, 4};
    std::vector<int64_t> got;
    for (const TrainingCheckpoint& c : run->checkpoints) {
      got.push_back(c.epoch);
      ASSERT_EQ(static_cast<int64_t>(c.history.size()), c.epoch);
      EXPECT_EQ(c.history.back().objective, run->outcome.result.history[c.epoch - 1].objective);
      EXPECT_EQ(c.state.optimizer, OptimizerName(k));
    }
    EXPECT_EQ(got, want);
  }
}

// Saved on 2 ranks, resumed on 1 and 3 (and without a collective): the data are re-sharded, the
// global batches stay the same.
void ExpectResumeOnOtherWorldSizes(const DataConfig& data, const TrainOptions& o, int64_t every,
                                   double weight_tol, double rel) {
  auto straight = TrainJob(data, o, 2, nullptr, every);
  ASSERT_TRUE(straight.ok()) << straight.status();
  ASSERT_GE(straight->checkpoints.size(), 2u);
  const TrainingCheckpoint file = ThroughFile(straight->checkpoints[1]);
  for (int world : {0, 1, 3}) {
    SCOPED_TRACE(absl::StrCat(world, " ranks, from epoch ", file.epoch));
    auto resumed = TrainJob(data, o, world, &file);
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    ExpectSameRun(resumed->outcome.result, straight->outcome.result, weight_tol, rel);
    for (int64_t e = 0; e < file.epoch; ++e) {  // the saved history, as it was
      EXPECT_EQ(resumed->outcome.result.history[e].seconds, file.history[e].seconds);
    }
  }
}

TEST(Resume, LbfgsOnAnotherNumberOfRanksReachesTheSameWeights) {
  TrainOptions o;
  o.standardize = true;
  o.l2 = 0.01;
  o.tol = 1e-10;
  o.precision = Precision::kFloat64;
  ExpectResumeOnOtherWorldSizes(Csv("iris.csv"), o, 5, 1e-6, 1e-9);
  o.l1 = 0.005;
  ExpectResumeOnOtherWorldSizes(Csv("iris.csv"), o, 5, 1e-6, 1e-9);
}

TEST(Resume, SgdAndAdamOnAnotherNumberOfRanksReachTheSameObjective) {
  DataConfig dc = Csv("breast_cancer.csv");
  dc.val_split = 0.2;
  for (OptimizerKind k : {OptimizerKind::kSgd, OptimizerKind::kAdam}) {
    SCOPED_TRACE(OptimizerName(k));
    TrainOptions o;
    o.optimizer = k;
    o.momentum = 0.9;
    o.lr = 0.01;
    o.batch_size = 32;
    o.epochs = 9;
    o.standardize = true;
    o.l2 = 0.001;
    o.seed = 11;
    ExpectResumeOnOtherWorldSizes(dc, o, 3, 1e-4, 1e-4);
  }
}

TEST(Resume, CheckpointOfAnotherOptimizerShapeOrBatchIsRefused) {
  TrainOptions adam;
  adam.optimizer = OptimizerKind::kAdam;
  adam.batch_size = 16;
  adam.epochs = 3;
  auto saved = TrainJob(Csv("iris.csv"), adam, 0, nullptr, 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  ASSERT_FALSE(saved->checkpoints.empty());
  const TrainingCheckpoint& c = saved->checkpoints[0];

  TrainOptions sgd = adam;
  sgd.optimizer = OptimizerKind::kSgd;
  EXPECT_THAT(TrainJob(Csv("iris.csv"), sgd, 0, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "checkpoint: saved by optimizer 'adam', this job uses 'sgd'"));
  // Another model shape (30 features, binary) on 2 ranks: every rank refuses it.
  EXPECT_THAT(
      TrainJob(Csv("breast_cancer.csv"), adam, 2, &c),
      StatusIs(absl::StatusCode::kInvalidArgument, "checkpoint: optimizer state: 'params'"));
  TrainOptions other_batch = adam;
  other_batch.batch_size = 32;
  EXPECT_THAT(TrainJob(Csv("iris.csv"), other_batch, 0, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "checkpoint: optimizer state: saved for "
                       "150 training rows in batches of 16"));
  TrainingCheckpoint inconsistent = c;
  inconsistent.history.clear();
  EXPECT_THAT(TrainJob(Csv("iris.csv"), adam, 0, &inconsistent),
              StatusIs(absl::StatusCode::kInvalidArgument, "checkpoint: saved after epoch 1"));

  TrainOptions lbfgs;
  lbfgs.epochs = 3;
  auto lbfgs_saved = TrainJob(Csv("iris.csv"), lbfgs, 0, nullptr, 1);
  ASSERT_TRUE(lbfgs_saved.ok()) << lbfgs_saved.status();
  ASSERT_FALSE(lbfgs_saved->checkpoints.empty());
  EXPECT_THAT(TrainJob(Csv("breast_cancer.csv"), lbfgs, 0, &lbfgs_saved->checkpoints[0]),
              StatusIs(absl::StatusCode::kInvalidArgument, "checkpoint: optimizer state"));
}

}  // namespace
}  // namespace logit
