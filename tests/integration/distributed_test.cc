// Data-parallel training across real `logit-worker run` processes on 127.0.0.1, with a c10d
// TCPStore hosted by the test (as the coordinator hosts it) or by rank 0.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tests/integration/subprocess.h"
#include "tests/unit/job_test_util.h"
#include "tests/unit/test_util.h"
#include "worker/data/npy.h"
#include "worker/data/readers.h"
#include "worker/dist/process_group.h"
#include "worker/job.h"
#include "worker/job_cli.h"
#include "worker/job_spec.h"
#include "worker/model/model_io.h"

namespace logit {
namespace {

using ::logit::testing::FashionDir;
using ::logit::testing::MaxAbsDiff;
using ::logit::testing::Subprocess;
using ::logit::testing::TempDir;
using ::logit::testing::TestData;
using Args = std::vector<std::string>;

std::string WorkerBinary() {
  const char* w = std::getenv("LOGIT_WORKER");
  return w ? w : "logit-worker";
}

struct RankRun {
  int code = -1;
  std::string out, err;
  nlohmann::json summary;  // the last JSON line of stdout
};

nlohmann::json LastJsonLine(const std::string& out) {
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  if (lines.empty()) return nlohmann::json();
  return nlohmann::json::parse(lines.back(), nullptr, /*allow_exceptions=*/false);
}

Args RankArgs(int rank, int world, int port, const std::string& prefix, const Args& job,
              const std::string& timeout_s = "20") {
  Args a = {WorkerBinary(),
            "run",
            "--rank",
            std::to_string(rank),
            "--world-size",
            std::to_string(world),
            "--store",
            absl::StrCat("127.0.0.1:", port),
            "--store-prefix",
            prefix,
            "--timeout",
            timeout_s,
            "-o",
            "json"};
  a.insert(a.end(), job.begin(), job.end());
  return a;
}

// Starts `world` ranks against the store on `port`; output goes to PREFIX-rankR.out/.err.
std::vector<std::unique_ptr<Subprocess>> StartRanks(const TempDir& dir, int world, int port,
                                                    const std::string& prefix, const Args& job,
                                                    const Args& rank0_extra = {},
                                                    const std::string& timeout_s = "20") {
  std::vector<std::unique_ptr<Subprocess>> procs;
  for (int r = 0; r < world; ++r) {
    Args a = RankArgs(r, world, port, prefix, job, timeout_s);
    if (r == 0) a.insert(a.end(), rank0_extra.begin(), rank0_extra.end());
    const std::string base = dir.Path(absl::StrCat(prefix, "-rank", r));
    procs.push_back(std::make_unique<Subprocess>(a, base + ".out", base + ".err"));
  }
  return procs;
}

// Waits until `rank` has joined its process group, then long enough to be inside the epochs.
void WaitUntilTraining(const Subprocess& rank) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (rank.err().find("joined") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));
}

// A Fashion-MNIST SGD job that runs far longer than any test waits.
Args LongFashionJob() {
  return {"--data",       FashionDir() + "/train-images-idx3-ubyte.gz",
          "--labels",     FashionDir() + "/train-labels-idx1-ubyte.gz",
          "--optimizer",  "sgd",
          "--batch-size", "64",
          "--epochs",     "1000"};
}

// Starts `world` ranks and waits for all of them.
std::vector<RankRun> RunRanks(const TempDir& dir, int world, int port, const std::string& prefix,
                              const Args& job, const Args& rank0_extra = {}) {
  std::vector<std::unique_ptr<Subprocess>> procs =
      StartRanks(dir, world, port, prefix, job, rank0_extra);
  std::vector<RankRun> runs(world);
  for (int r = 0; r < world; ++r) {
    EXPECT_TRUE(procs[r]->Wait(std::chrono::seconds(240))) << "rank " << r << " hangs";
    runs[r].code = procs[r]->exit_code();
    runs[r].out = procs[r]->out();
    runs[r].err = procs[r]->err();
    runs[r].summary = LastJsonLine(runs[r].out);
  }
  return runs;
}

// The single-process reference: the same flags through the same conversion, in this process.
JobOutcome TrainInProcess(const Args& job) {
  CLI::App app;
  v1::JobSpec spec;
  AddJobFlags(&app, &spec);
  Args reversed(job.rbegin(), job.rend());
  app.parse(reversed);
  auto plan = PlanJob(spec);
  EXPECT_TRUE(plan.ok()) << plan.status();
  if (!plan.ok()) return JobOutcome();
  auto outcome = RunTrainingJob(plan->data, plan->train);
  EXPECT_TRUE(outcome.ok()) << outcome.status();
  return outcome.ok() ? *outcome : JobOutcome();
}

class Distributed : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = StoreServer::Start("127.0.0.1", 0);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  int port() const { return store_->port(); }
  // A fresh key prefix per job attempt, as the coordinator hands out.
  std::string Prefix() { return absl::StrCat("job-", ++jobs_); }

  // Trains `job` with 1, 2 and 3 ranks; every rank's model must equal the in-process one.
  void ExpectRanksMatchSingleProcess(const Args& job) {
    const JobOutcome ref = TrainInProcess(job);
    for (int world : {1, 2, 3}) {
      SCOPED_TRACE(absl::StrCat(world, " ranks"));
      const std::string prefix = Prefix();
      Args with_model = job;
      with_model.push_back("--save-model");
      with_model.push_back(dir_.Path(prefix + "-model-%r.npz"));
      std::vector<RankRun> runs = RunRanks(dir_, world, port(), prefix, with_model);
      for (int r = 0; r < world; ++r) {
        SCOPED_TRACE(absl::StrCat("rank ", r));
        ASSERT_EQ(runs[r].code, 0) << runs[r].err;
        auto model = LoadModel(dir_.Path(absl::StrCat(prefix, "-model-", r, ".npz")));
        ASSERT_TRUE(model.ok()) << model.status();
        EXPECT_LE(MaxAbsDiff(*model, ref.result.model), 1e-5);
        const double objective = runs[r].summary["objective"].get<double>();
        EXPECT_NEAR(objective, ref.result.objective, 1e-9 * std::abs(ref.result.objective));
        // Metrics and row counts are global, not per shard.
        EXPECT_EQ(runs[r].summary["rows"]["train"].get<int64_t>(), ref.train_rows);
        EXPECT_DOUBLE_EQ(runs[r].summary["train_accuracy"].get<double>(),
                         ref.result.train_metrics->accuracy);
        EXPECT_EQ(runs[r].summary["world_size"].get<int>(), world);
      }
    }
  }

  TempDir dir_;
  std::unique_ptr<StoreServer> store_;
  int jobs_ = 0;
};

TEST_F(Distributed, LbfgsMultinomialRanksMatchSingleProcess) {
  ExpectRanksMatchSingleProcess({"--data", TestData("iris.csv"), "--label-column", "target", "--l2",
                                 "0.01", "--tol", "1e-10"});
}

TEST_F(Distributed, LbfgsStandardizedBalancedBinaryRanksMatchSingleProcess) {
  // Class counts (balanced weights) and feature means/stds must be global statistics.
  ExpectRanksMatchSingleProcess({"--data", TestData("breast_cancer.csv"), "--label-column",
                                 "target", "--standardize", "--class-weight", "balanced", "--l2",
                                 "0.001", "--tol", "1e-10"});
}

TEST_F(Distributed, LbfgsSparseLibsvmRanksMatchSingleProcess) {
  // digits as LibSVM: sparse rows, some shards without the highest feature index.
  ReadOptions ro;
  ro.path = TestData("digits.csv");
  ro.label_column = "target";
  auto digits = ReadDataset(ro);
  ASSERT_TRUE(digits.ok()) << digits.status();
  std::ofstream f(dir_.Path("digits.svm"));
  for (int64_t i = 0; i < digits->num_rows; ++i) {
    f << digits->labels[i];
    for (int64_t j = 0; j < digits->num_features; ++j) {
      const float v = digits->dense_f32[i * digits->num_features + j];
      if (v != 0) f << " " << j + 1 << ":" << v;
    }
    f << "\n";
  }
  f.close();
  ExpectRanksMatchSingleProcess({"--data", dir_.Path("digits.svm"), "--features", "64",
                                 "--standardize", "--l2", "0.01", "--tol", "1e-10", "--precision",
                                 "float64"});
}

TEST_F(Distributed, UnevenAndEmptyShardsFinishWithoutDeadlock) {
  // 5 rows on 3 ranks (1, 2, 2 rows) and 2 rows on 3 ranks (one rank holds none).
  const std::string five = dir_.Write("five.csv", "x,y\n0.1,0\n0.9,1\n0.2,0\n0.8,1\n0.4,1\n");
  const std::string two = dir_.Write("two.csv", "x,y\n0.1,0\n0.9,1\n");
  for (const std::string& data : {five, two}) {
    for (const char* optimizer : {"lbfgs", "sgd", "adam"}) {
      SCOPED_TRACE(absl::StrCat(data, " ", optimizer));
      const std::string prefix = Prefix();
      Args job = {"--data",       data,  "--optimizer",  optimizer,
                  "--batch-size", "2",   "--epochs",     "5",
                  "--l2",         "0.1", "--save-model", dir_.Path(prefix + "-%r.npz")};
      std::vector<RankRun> runs = RunRanks(dir_, 3, port(), prefix, job);
      std::vector<LinearModel> models;
      for (int r = 0; r < 3; ++r) {
        ASSERT_EQ(runs[r].code, 0) << "rank " << r << ": " << runs[r].err;
        auto m = LoadModel(dir_.Path(absl::StrCat(prefix, "-", r, ".npz")));
        ASSERT_TRUE(m.ok()) << m.status();
        models.push_back(*m);
      }
      EXPECT_EQ(MaxAbsDiff(models[0], models[1]), 0.0);
      EXPECT_EQ(MaxAbsDiff(models[0], models[2]), 0.0);
    }
  }
}

TEST_F(Distributed, AdamTwoRanksReachOneRankAccuracyOnFashionMnist) {
  // Batch 1024 keeps the epoch-to-epoch noise of the test accuracy near 0.1 points (seeds 0-2
  // give 82.03%, 82.11%, 82.29% with one rank), so that 0.5 points measures a real difference.
  const Args job = {"--data",        FashionDir() + "/train-images-idx3-ubyte.gz",
                    "--labels",      FashionDir() + "/train-labels-idx1-ubyte.gz",
                    "--test-data",   FashionDir() + "/t10k-images-idx3-ubyte.gz",
                    "--test-labels", FashionDir() + "/t10k-labels-idx1-ubyte.gz",
                    "--optimizer",   "adam",
                    "--lr",          "0.001",
                    "--batch-size",  "1024",
                    "--epochs",      "8"};
  double accuracy[3] = {0, 0, 0};
  for (int world : {1, 2}) {
    std::vector<RankRun> runs = RunRanks(dir_, world, port(), Prefix(), job);
    for (int r = 0; r < world; ++r) ASSERT_EQ(runs[r].code, 0) << runs[r].err;
    accuracy[world] = runs[0].summary["test_accuracy"].get<double>();
    EXPECT_EQ(runs[0].summary["rows"]["test"].get<int64_t>(), 10000);
    if (world == 2) {
      EXPECT_EQ(runs[1].summary["test_accuracy"], runs[0].summary["test_accuracy"]);
    }
  }
  EXPECT_GT(accuracy[1], 0.80);
  EXPECT_NEAR(accuracy[2], accuracy[1], 0.005)
      << "1 rank " << accuracy[1] << ", 2 ranks " << accuracy[2];
}

TEST_F(Distributed, BadLineInOneShardStopsEveryRankWithItsReason) {
  // Line 5 is bad and lands in rank 1's shard; every rank fails with rank 1's reason.
  const std::string csv =
      dir_.Write("bad.csv", "x,y\n0.1,0\n0.9,1\n0.2,0\n0.8,oops\n0.4,1\n0.3,0\n");
  std::vector<RankRun> runs = RunRanks(dir_, 2, port(), Prefix(), {"--data", csv});
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(runs[r].code, 1);
    EXPECT_NE(runs[r].err.find("rank 1: "), std::string::npos) << runs[r].err;
    EXPECT_NE(runs[r].err.find("bad.csv:5"), std::string::npos) << runs[r].err;
  }
}

TEST_F(Distributed, KilledRankStopsTheOthersWithAnErrorNamingIt) {
  auto procs = StartRanks(dir_, 3, port(), Prefix(), LongFashionJob());
  WaitUntilTraining(*procs[1]);
  ASSERT_TRUE(procs[1]->running()) << procs[1]->err();
  procs[1]->Kill(SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  for (int r : {0, 2}) {
    ASSERT_TRUE(procs[r]->Wait(std::chrono::seconds(30))) << "rank " << r << " hangs";
    EXPECT_EQ(procs[r]->exit_code(), 1) << procs[r]->err();
    EXPECT_NE(procs[r]->err().find("lost rank 1"), std::string::npos) << procs[r]->err();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, std::chrono::seconds(20));
  ASSERT_TRUE(procs[1]->Wait(std::chrono::seconds(5)));
  EXPECT_EQ(procs[1]->exit_code(), 128 + SIGKILL);
}

TEST_F(Distributed, HungRankStopsTheOthersAfterTheTimeout) {
  // SIGSTOP freezes rank 1 (and its heartbeat): the others fail when the collective timeout
  // (--timeout 4 here) passes, naming rank 1; then the test kills the frozen rank.
  auto procs = StartRanks(dir_, 2, port(), Prefix(), LongFashionJob(), {}, "4");
  WaitUntilTraining(*procs[1]);
  ASSERT_TRUE(procs[1]->running()) << procs[1]->err();
  procs[1]->Kill(SIGSTOP);
  const auto stopped_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(procs[0]->Wait(std::chrono::seconds(30))) << "rank 0 hangs";
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped_at).count();
  EXPECT_EQ(procs[0]->exit_code(), 1) << procs[0]->err();
  EXPECT_NE(procs[0]->err().find("lost rank 1"), std::string::npos) << procs[0]->err();
  EXPECT_GE(waited, 3.0);  // it waited for the timeout, not less
  EXPECT_LT(waited, 15.0);
  procs[1]->Kill(SIGKILL);
  EXPECT_TRUE(procs[1]->Wait(std::chrono::seconds(5)));
}

TEST_F(Distributed, RankThatNeverJoinsIsNamedAfterTheTimeout) {
  // Only rank 0 of 2 starts: the rendezvous fails after --timeout, naming rank 1.
  const std::string prefix = Prefix();
  Args a = RankArgs(0, 2, port(), prefix, {"--data", TestData("iris.csv")}, "2");
  Subprocess p(a, dir_.Path("alone.out"), dir_.Path("alone.err"));
  ASSERT_TRUE(p.Wait(std::chrono::seconds(30)));
  EXPECT_EQ(p.exit_code(), 1);
  EXPECT_NE(p.err().find("rank(s) 1 of 2 did not join"), std::string::npos) << p.err();
}

TEST_F(Distributed, RankZeroCanHostTheStore) {
  // torchrun's convention: rank 0 starts the store on an agreed port.
  auto probe = StoreServer::Start("127.0.0.1", 0);  // find a free port, then release it
  ASSERT_TRUE(probe.ok());
  const int free_port = (*probe)->port();
  probe->reset();
  std::vector<RankRun> runs =
      RunRanks(dir_, 2, free_port, Prefix(),
               {"--data", TestData("iris.csv"), "--label-column", "target"}, {"--host-store"});
  for (int r = 0; r < 2; ++r) EXPECT_EQ(runs[r].code, 0) << runs[r].err;
  EXPECT_EQ(runs[0].summary["objective"], runs[1].summary["objective"]);
}

// A free port on loopback (found by a store that is then closed).
int FreeStorePort() {
  auto probe = StoreServer::Start("127.0.0.1", 0);
  EXPECT_TRUE(probe.ok());
  return probe.ok() ? (*probe)->port() : 0;
}

TEST_F(Distributed, TorchrunEnvironmentRanksMatchSingleProcess) {
  // No --rank/--world-size/--store: RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT as torchrun
  // and the Kubeflow PyTorchJob operator set them; rank 0 hosts the store.
  const Args job = {"--data", TestData("iris.csv"), "--label-column", "target", "--optimizer",
                    "lbfgs", "--l2", "0.01"};
  const JobOutcome ref = TrainInProcess(job);
  for (int world : {1, 2}) {
    SCOPED_TRACE(absl::StrCat(world, " ranks"));
    const int port = FreeStorePort();
    const std::string prefix = Prefix();
    std::vector<std::unique_ptr<Subprocess>> procs;
    for (int r = 0; r < world; ++r) {
      Args a = {"/usr/bin/env",
                "-u",
                "TORCHELASTIC_USE_AGENT_STORE",
                absl::StrCat("RANK=", r),
                absl::StrCat("WORLD_SIZE=", world),
                "MASTER_ADDR=127.0.0.1",
                absl::StrCat("MASTER_PORT=", port),
                WorkerBinary(),
                "run",
                "--timeout",
                "20",
                "-o",
                "json",
                "--save-model",
                dir_.Path(prefix + "-%r.npz")};
      a.insert(a.end(), job.begin(), job.end());
      const std::string base = dir_.Path(absl::StrCat(prefix, "-rank", r));
      procs.push_back(std::make_unique<Subprocess>(a, base + ".out", base + ".err"));
    }
    for (int r = 0; r < world; ++r) {
      SCOPED_TRACE(absl::StrCat("rank ", r));
      ASSERT_TRUE(procs[r]->Wait(std::chrono::seconds(120)));
      ASSERT_EQ(procs[r]->exit_code(), 0) << procs[r]->err();
      EXPECT_EQ(LastJsonLine(procs[r]->out())["world_size"].get<int>(), world);
      auto model = LoadModel(dir_.Path(absl::StrCat(prefix, "-", r, ".npz")));
      ASSERT_TRUE(model.ok()) << model.status();
      EXPECT_LE(MaxAbsDiff(*model, ref.result.model), 1e-5);
    }
  }
}

TEST(DistributedFlags, IncompleteTorchrunEnvironmentOrPartialFlagsAreUsageErrors) {
  TempDir dir;
  for (const Args& prefix :
       {Args{"/usr/bin/env", "-u", "RANK", "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1",
             "MASTER_PORT=1"},
        Args{"/usr/bin/env", "RANK=x", "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1",
             "MASTER_PORT=1"},
        Args{"/usr/bin/env", "-u", "RANK"}}) {
    Args a = prefix;
    a.insert(a.end(), {WorkerBinary(), "run", "--data", TestData("iris.csv")});
    if (prefix.size() == 3) a.insert(a.end(), {"--rank", "0"});  // a flag without the others
    Subprocess p(a, dir.Path("out"), dir.Path("err"));
    ASSERT_TRUE(p.Wait(std::chrono::seconds(30)));
    EXPECT_EQ(p.exit_code(), 2) << p.err();
    EXPECT_NE(p.err().find("--rank"), std::string::npos) << p.err();
  }
}

TEST(DistributedFlags, BadRendezvousFlagsAreUsageErrors) {
  TempDir dir;
  for (const Args& extra : {Args{"--store", "nohost"}, Args{"--store", "127.0.0.1:99999"},
                            Args{"--rank", "3", "--world-size", "2", "--store", "127.0.0.1:1"}}) {
    Args a = {WorkerBinary(), "run", "--data", TestData("iris.csv")};
    if (std::find(extra.begin(), extra.end(), "--rank") == extra.end()) {
      a.insert(a.end(), {"--rank", "0", "--world-size", "1"});
    }
    a.insert(a.end(), extra.begin(), extra.end());
    Subprocess p(a, dir.Path("out"), dir.Path("err"));
    ASSERT_TRUE(p.Wait(std::chrono::seconds(30)));
    EXPECT_EQ(p.exit_code(), 2) << p.err();
    EXPECT_TRUE(p.err().find("--store") != std::string::npos ||
                p.err().find("--rank") != std::string::npos)
        << p.err();
  }
}

}  // namespace
}  // namespace logit
