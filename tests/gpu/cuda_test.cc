// The kernel and the c10d process group on a CUDA device, checked against the CPU results.
// On a machine without CUDA (CI) only the error path runs: asking for a GPU is a clear
// InvalidArgument naming `device`, never a crash. tests/gpu/run_gpu_check.sh runs the rest on a
// GPU machine (a CUDA LibTorch built with -DLOGIT_KERNEL_ONLY=ON).
#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "tests/unit/job_test_util.h"
#include "tests/unit/test_util.h"
#include "worker/data/readers.h"
#include "worker/dist/process_group.h"
#include "worker/job.h"
#include "worker/kernel/collective.h"

namespace logit {
namespace {

using ::logit::testing::DenseToCsr;
using ::logit::testing::FashionMnistJob;
using ::logit::testing::MaxAbsDiff;
using ::logit::testing::StatusIs;
using ::logit::testing::TestData;

#define REQUIRE_CUDA() \
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device in this LibTorch build or machine"

Dataset ReadCsv(const std::string& name) {
  ReadOptions o;
  o.path = TestData(name);
  o.label_column = "target";
  auto d = ReadDataset(o);
  EXPECT_TRUE(d.ok()) << d.status();
  return *d;
}

// Trains on the CPU and on cuda:0 with the same options; the device run must land on the GPU and
// give the CPU's model within `weight_tol` and its objective within `rel_tol`.
void ExpectCudaMatchesCpu(TrainOptions o, const Dataset& data, double weight_tol, double rel_tol) {
  o.device = "cpu";
  auto cpu = Train(o, {&data});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  o.device = "cuda";
  auto gpu = Train(o, {&data});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ(gpu->device, "cuda:0");
  EXPECT_LE(MaxAbsDiff(cpu->model, gpu->model), weight_tol);
  EXPECT_NEAR(gpu->objective, cpu->objective, rel_tol * std::abs(cpu->objective));
  EXPECT_EQ(gpu->stop_reason, cpu->stop_reason);
  EXPECT_NEAR(gpu->train_metrics->accuracy, cpu->train_metrics->accuracy, 1e-12);
}

TEST(Cuda, AskingForAGpuWithoutOneIsAClearError) {
  if (at::hasCUDA()) GTEST_SKIP() << "this machine has a CUDA device";
  const Dataset iris = ReadCsv("iris.csv");
  TrainOptions o;
  o.device = "cuda";
  EXPECT_THAT(Train(o, {&iris}), StatusIs(absl::StatusCode::kInvalidArgument, "device: 'cuda'"));
  RendezvousOptions ro;
  ro.device = "cuda:0";
  ro.store_port = 29500;  // never reached: the device is checked first
  EXPECT_THAT(ConnectProcessGroup(ro),
              StatusIs(absl::StatusCode::kInvalidArgument, "device: 'cuda:0'"));
}

TEST(Cuda, DeviceIndexBeyondTheMachineIsAnErrorNotACrash) {
  REQUIRE_CUDA();
  const Dataset iris = ReadCsv("iris.csv");
  TrainOptions o;
  o.device = "cuda:63";  // no machine here has 64 GPUs
  EXPECT_THAT(Train(o, {&iris}),
              StatusIs(absl::StatusCode::kInvalidArgument, "device: 'cuda:63': this machine has"));
}

TEST(Cuda, LbfgsSoftmaxMatchesCpu) {
  REQUIRE_CUDA();
  TrainOptions o;
  o.l2 = 0.01;
  o.tol = 1e-10;
  ExpectCudaMatchesCpu(o, ReadCsv("iris.csv"), 1e-6, 1e-10);
}

TEST(Cuda, LbfgsBinaryStandardizedBalancedMatchesCpu) {
  REQUIRE_CUDA();
  TrainOptions o;
  o.l2 = 1e-3;
  o.tol = 1e-10;
  o.standardize = true;
  o.class_weight = "balanced";
  ExpectCudaMatchesCpu(o, ReadCsv("breast_cancer.csv"), 1e-5, 1e-10);
}

TEST(Cuda, SparseRowsMatchCpu) {
  REQUIRE_CUDA();
  // Standardised (as the distributed test): raw digits pixels leave the optimum flat enough
  // that two summation orders stop 1e-3 apart in the weights at the same objective tolerance.
  TrainOptions o;
  o.l2 = 1e-2;
  o.tol = 1e-10;
  o.standardize = true;
  ExpectCudaMatchesCpu(o, DenseToCsr(ReadCsv("digits.csv")), 1e-4, 1e-8);
}

TEST(Cuda, OwlqnL1GivesTheCpuZeroPattern) {
  REQUIRE_CUDA();
  const Dataset cancer = ReadCsv("breast_cancer.csv");
  TrainOptions o;
  o.l1 = 0.01;
  o.standardize = true;
  o.tol = 1e-10;
  auto cpu = Train(o, {&cancer});
  o.device = "cuda";
  auto gpu = Train(o, {&cancer});
  ASSERT_TRUE(cpu.ok() && gpu.ok()) << gpu.status();
  int zeros = 0;
  for (size_t i = 0; i < cpu->model.weights.size(); ++i) {
    EXPECT_EQ(cpu->model.weights[i] == 0, gpu->model.weights[i] == 0) << "weight " << i;
    zeros += cpu->model.weights[i] == 0;
  }
  EXPECT_GT(zeros, 0);
  EXPECT_NEAR(gpu->objective, cpu->objective, 1e-8 * cpu->objective);
}

TEST(Cuda, AdamFloat32FollowsTheCpuPath) {
  REQUIRE_CUDA();
  // Same seed, same shuffles; float32 sums in another order: close, not equal.
  TrainOptions o;
  o.optimizer = OptimizerKind::kAdam;
  o.batch_size = 16;
  o.epochs = 5;
  o.seed = 3;
  o.standardize = true;
  ExpectCudaMatchesCpu(o, ReadCsv("iris.csv"), 1e-3, 1e-4);
}

TEST(Cuda, FashionMnistReachesTheAccuracyTargetsOnTheGpu) {
  REQUIRE_CUDA();
  TrainOptions adam;
  adam.optimizer = OptimizerKind::kAdam;
  adam.batch_size = 256;
  adam.epochs = 10;
  adam.device = "cuda";
  auto a = RunTrainingJob(FashionMnistJob(), adam);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_GE(a->result.test_metrics->accuracy, 0.83);
  TrainOptions lbfgs;
  lbfgs.l2 = 1.0 / 60000;  // C = 1
  lbfgs.epochs = 150;
  lbfgs.tol = 1e-8;
  lbfgs.device = "cuda";
  auto l = RunTrainingJob(FashionMnistJob(), lbfgs);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_GE(l->result.test_metrics->accuracy, 0.84);
  std::printf(
      "[ gpu ] Adam b256 x10: %.2f s, test acc %.4f; L-BFGS %lld it: %.2f s, test acc %.4f\n",
      a->result.wall_seconds, a->result.test_metrics->accuracy,
      static_cast<long long>(l->result.epochs_run), l->result.wall_seconds,
      l->result.test_metrics->accuracy);
}

TEST(Cuda, NcclProcessGroupTrainsLikeASingleProcess) {
  REQUIRE_CUDA();
  auto store = StoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(store.ok()) << store.status();
  RendezvousOptions ro;
  ro.store_port = (*store)->port();
  ro.prefix = "cuda-test";
  ro.device = "cuda:0";
  ro.timeout = std::chrono::seconds(30);
  auto conn = ConnectProcessGroup(ro);
  ASSERT_TRUE(conn.ok()) << conn.status();
#ifdef USE_C10D_NCCL
  EXPECT_EQ(conn->backend, "nccl");
#endif
  std::printf("[ gpu ] process group backend: %s\n", conn->backend.c_str());
  const Dataset cancer = ReadCsv("breast_cancer.csv");
  TrainOptions o;
  o.l2 = 1e-3;
  o.tol = 1e-10;
  o.standardize = true;
  o.class_weight = "balanced";
  o.device = "cuda";
  auto alone = Train(o, {&cancer});
  auto grouped = Train(o, {&cancer}, {}, conn->collective.get());
  ASSERT_TRUE(alone.ok() && grouped.ok()) << grouped.status();
  EXPECT_LE(MaxAbsDiff(alone->model, grouped->model), 1e-9);
  EXPECT_NEAR(grouped->objective, alone->objective, 1e-12 * alone->objective);
  // The collective's own operations on device and host tensors.
  at::Tensor t = at::arange(5, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA));
  ASSERT_TRUE(conn->collective->AllReduceSum(t).ok());
  EXPECT_FLOAT_EQ(t[4].item<float>(), 4.0f);
  at::Tensor h = at::full({2}, 7, at::kLong);
  ASSERT_TRUE(conn->collective->AllReduceMax(h).ok());
  EXPECT_EQ(h[1].item<int64_t>(), 7);
  EXPECT_THAT(conn->collective->Agree(absl::InvalidArgumentError("bad shard")),
              StatusIs(absl::StatusCode::kInvalidArgument, "rank 0: bad shard"));
}

}  // namespace
}  // namespace logit
