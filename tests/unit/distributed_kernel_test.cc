// The distributed code paths of the kernel with N ranks as threads of this process (the
// in-process collective): ranks agree bit for bit, match one process, and stop together on a
// bad shard, a cancel or a divergence. The kernel-level mirror of
// tests/integration/distributed_test.cc, in milliseconds.
#include <ATen/ATen.h>

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/unit/job_test_util.h"
#include "tests/unit/test_util.h"
#include "worker/job.h"
#include "worker/kernel/inprocess_collective.h"

namespace logit {
namespace {

using ::logit::testing::MaxAbsDiff;
using ::logit::testing::StatusIs;
using ::logit::testing::TempDir;
using ::logit::testing::TestData;

// Runs `job(rank, collective)` on `world` threads, one rank each; returns every rank's outcome.
template <typename T, typename Job>
std::vector<absl::StatusOr<T>> RunRanks(
    int world, Job job, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  std::vector<std::unique_ptr<Collective>> group = MakeInProcessGroup(world, timeout);
  std::vector<absl::StatusOr<T>> out(world, absl::UnknownError("rank did not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] { out[r] = job(r, group[r].get()); });
  }
  for (std::thread& t : threads) t.join();
  return out;
}

// `options` on `data` (sharded by rank) with 1, 2 and 3 ranks: every rank's model is the same
// bits, and matches the single-process model, objective, rows and accuracy.
void ExpectRanksMatchSingleProcess(const DataConfig& data, const TrainOptions& options) {
  auto ref = RunTrainingJob(data, options);
  ASSERT_TRUE(ref.ok()) << ref.status();
  for (int world : {1, 2, 3}) {
    SCOPED_TRACE(absl::StrCat(world, " ranks"));
    auto runs = RunRanks<JobOutcome>(
        world, [&](int, Collective* c) { return RunTrainingJob(data, options, c); });
    for (int r = 0; r < world; ++r) {
      SCOPED_TRACE(absl::StrCat("rank ", r));
      ASSERT_TRUE(runs[r].ok()) << runs[r].status();
      EXPECT_EQ(MaxAbsDiff(runs[r]->result.model, runs[0]->result.model), 0.0);
      EXPECT_EQ(runs[r]->result.objective, runs[0]->result.objective);
      EXPECT_LE(MaxAbsDiff(runs[r]->result.model, ref->result.model), 1e-5);
      EXPECT_NEAR(runs[r]->result.objective, ref->result.objective,
                  1e-9 * std::abs(ref->result.objective));
      // Metrics and row counts are global, not per shard.
      EXPECT_EQ(runs[r]->train_rows, ref->train_rows);
      ASSERT_TRUE(runs[r]->result.train_metrics.has_value());
      EXPECT_DOUBLE_EQ(runs[r]->result.train_metrics->accuracy,
                       ref->result.train_metrics->accuracy);
    }
  }
}

DataConfig Csv(const std::string& path) {
  DataConfig dc;
  dc.train.path = path;
  return dc;
}

TEST(InProcessCollective, SumsInRankOrderAndTakesTheMax) {
  auto runs = RunRanks<std::vector<double>>(
      3, [](int r, Collective* c) -> absl::StatusOr<std::vector<double>> {
        at::Tensor sum = at::full({2}, r + 1.0, at::kDouble);
        at::Tensor max = at::full({1}, static_cast<int64_t>(10 * (r % 2)), at::kLong);
        absl::Status st = c->AllReduceSum(sum);
        if (st.ok()) st = c->AllReduceMax(max);
        if (!st.ok()) return st;
        return std::vector<double>{sum[0].item<double>(), sum[1].item<double>(),
                                   static_cast<double>(max.item<int64_t>())};
      });
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(runs[r].ok()) << runs[r].status();
    EXPECT_EQ(*runs[r], (std::vector<double>{6, 6, 10}));
  }
}

TEST(InProcessCollective, AgreeReturnsTheLowestFailingRankOnEveryRank) {
  auto runs = RunRanks<bool>(3, [](int r, Collective* c) -> absl::StatusOr<bool> {
    absl::Status first = c->Agree(absl::OkStatus());
    if (!first.ok()) return first;
    return c->Agree(r == 0 ? absl::OkStatus() : absl::NotFoundError(absl::StrCat("file ", r)));
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_THAT(runs[r], StatusIs(absl::StatusCode::kNotFound, "rank 1: file 1"));
  }
}

TEST(InProcessCollective, MissingRankIsNamedAfterTheTimeout) {
  auto runs = RunRanks<bool>(
      2,
      [](int r, Collective* c) -> absl::StatusOr<bool> {
        if (r == 1) return true;  // never joins
        at::Tensor t = at::ones({1});
        absl::Status st = c->AllReduceSum(t);
        if (!st.ok()) return st;
        return false;
      },
      std::chrono::milliseconds(100));
  EXPECT_THAT(runs[0], StatusIs(absl::StatusCode::kDeadlineExceeded, "rank(s) 1 did not arrive"));
}

TEST(DistributedKernel, LbfgsMultinomialRanksMatchSingleProcess) {
  TrainOptions o;
  o.standardize = true;
  o.l2 = 0.01;
  o.tol = 1e-10;
  o.precision = Precision::kFloat64;
  ExpectRanksMatchSingleProcess(Csv(TestData("iris.csv")), o);
}

TEST(DistributedKernel, LbfgsStandardizedBalancedBinaryRanksMatchSingleProcess) {
  TrainOptions o;
  o.standardize = true;
  o.class_weight = "balanced";
  o.l2 = 0.01;
  o.tol = 1e-10;
  o.precision = Precision::kFloat64;
  DataConfig dc = Csv(TestData("breast_cancer.csv"));
  dc.test_split = 0.2;
  ExpectRanksMatchSingleProcess(dc, o);
}

TEST(DistributedKernel, UnevenAndEmptyShardsGiveIdenticalRanks) {
  // 5 rows on 3 ranks (1, 2, 2 rows) and 2 rows on 3 ranks (one rank holds none).
  TempDir dir;
  const std::string five = dir.Write("five.csv", "x,y\n0.1,0\n0.9,1\n0.2,0\n0.8,1\n0.4,1\n");
  const std::string two = dir.Write("two.csv", "x,y\n0.1,0\n0.9,1\n");
  for (const std::string& data : {five, two}) {
    for (OptimizerKind k : {OptimizerKind::kLbfgs, OptimizerKind::kSgd, OptimizerKind::kAdam}) {
      SCOPED_TRACE(absl::StrCat(data, " ", OptimizerName(k)));
      TrainOptions o;
      o.optimizer = k;
      o.batch_size = 2;
      o.epochs = 5;
      o.l2 = 0.1;
      auto runs = RunRanks<JobOutcome>(
          3, [&](int, Collective* c) { return RunTrainingJob(Csv(data), o, c); });
      for (int r = 0; r < 3; ++r)
        ASSERT_TRUE(runs[r].ok()) << "rank " << r << ": " << runs[r].status();
      EXPECT_EQ(MaxAbsDiff(runs[0]->result.model, runs[1]->result.model), 0.0);
      EXPECT_EQ(MaxAbsDiff(runs[0]->result.model, runs[2]->result.model), 0.0);
    }
  }
}

TEST(DistributedKernel, SgdAndAdamComputeTheSameBatchesOnOneTwoAndThreeRanks) {
  // An epoch's batches are a function of the seed, the epoch and the global rows only: any
  // number of ranks runs the same steps, up to the order of the sums (float32: ~1e-7).
  const DataConfig dc = Csv(TestData("breast_cancer.csv"));
  for (OptimizerKind k : {OptimizerKind::kSgd, OptimizerKind::kAdam}) {
    for (Precision p : {Precision::kAuto, Precision::kFloat64}) {
      SCOPED_TRACE(absl::StrCat(OptimizerName(k), p == Precision::kAuto ? " float32" : " float64"));
      const double rel = p == Precision::kAuto ? 1e-5 : 1e-12;
      TrainOptions o;
      o.optimizer = k;
      o.precision = p;
      o.lr = k == OptimizerKind::kAdam ? 0.05 : 0.02;
      o.momentum = 0.9;
      o.epochs = 5;
      o.batch_size = 32;
      o.standardize = true;
      auto ref = RunTrainingJob(dc, o);
      ASSERT_TRUE(ref.ok()) << ref.status();
      for (int world : {1, 2, 3}) {
        SCOPED_TRACE(absl::StrCat(world, " ranks"));
        auto runs = RunRanks<JobOutcome>(
            world, [&](int, Collective* c) { return RunTrainingJob(dc, o, c); });
        for (int r = 0; r < world; ++r) {
          ASSERT_TRUE(runs[r].ok()) << runs[r].status();
          EXPECT_EQ(MaxAbsDiff(runs[r]->result.model, runs[0]->result.model), 0.0);
        }
        const TrainResult& got = runs[0]->result;
        EXPECT_EQ(got.function_evaluations, ref->result.function_evaluations);
        EXPECT_NEAR(got.objective, ref->result.objective, rel * ref->result.objective);
        ASSERT_EQ(got.history.size(), ref->result.history.size());
        for (size_t e = 0; e < got.history.size(); ++e) {
          EXPECT_NEAR(got.history[e].train_loss, ref->result.history[e].train_loss,
                      rel * ref->result.history[e].train_loss)
              << "epoch " << e + 1;
        }
      }
    }
  }
}

TEST(DistributedKernel, BadLineInOneShardStopsEveryRankWithItsReason) {
  // Line 5 is bad and lands in rank 1's shard; every rank fails with rank 1's reason.
  TempDir dir;
  const std::string csv =
      dir.Write("bad.csv", "x,y\n0.1,0\n0.9,1\n0.2,0\n0.8,oops\n0.4,1\n0.3,0\n");
  auto runs = RunRanks<JobOutcome>(
      2, [&](int, Collective* c) { return RunTrainingJob(Csv(csv), TrainOptions{}, c); });
  for (int r = 0; r < 2; ++r) {
    SCOPED_TRACE(absl::StrCat("rank ", r));
    ASSERT_FALSE(runs[r].ok());
    EXPECT_NE(runs[r].status().message().find("rank 1: "), absl::string_view::npos)
        << runs[r].status();
    EXPECT_NE(runs[r].status().message().find("bad.csv:5"), absl::string_view::npos)
        << runs[r].status();
    EXPECT_EQ(runs[r].status().code(), runs[0].status().code());
  }
}

TEST(DistributedKernel, StopRequestOnOneRankCancelsEveryRank) {
  TrainOptions o;
  o.optimizer = OptimizerKind::kSgd;
  o.epochs = 1000;
  o.batch_size = 4;
  std::atomic<bool> stop0{false}, stop1{false};
  auto runs = RunRanks<JobOutcome>(2, [&](int r, Collective* c) {
    // Rank 0 is cancelled after its second epoch; rank 1 never is.
    EpochCallback on_epoch = [&, r](const EpochRecord& e) {
      if (r == 0 && e.epoch == 2) stop0 = true;
    };
    JobHooks hooks;
    hooks.on_epoch = on_epoch;
    hooks.stop = r == 0 ? &stop0 : &stop1;
    return RunTrainingJob(Csv(TestData("iris.csv")), o, c, hooks);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_THAT(runs[r], StatusIs(absl::StatusCode::kCancelled, "training was cancelled"));
  }
}

TEST(DistributedKernel, DivergenceStopsEveryRank) {
  TrainOptions o;
  o.optimizer = OptimizerKind::kSgd;
  o.lr = 1e38;
  o.epochs = 5;
  auto runs = RunRanks<JobOutcome>(
      2, [&](int, Collective* c) { return RunTrainingJob(Csv(TestData("iris.csv")), o, c); });
  for (int r = 0; r < 2; ++r) {
    EXPECT_THAT(runs[r], StatusIs(absl::StatusCode::kInvalidArgument, "diverged"));
  }
}

}  // namespace
}  // namespace logit
