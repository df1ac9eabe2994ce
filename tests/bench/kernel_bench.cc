// Kernel benchmark on Fashion-MNIST (a command, not a test). Prints one JSON object.
//   kernel_bench [--threads N] [--lbfgs-iters N] [--skip-lbfgs] [--device cpu|cuda]
//                [--lbfgs-precision mixed|float64]   (default: both)
//                [--data-dir DIR]   (default: Debian's /usr/share/datasets/fashion-mnist)
// Run through tests/bench/run_kernel_bench.sh, which also runs the PyTorch peer and prints ratios.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/data/readers.h"
#include "worker/kernel/objective.h"
#include "worker/kernel/trainer.h"

using logit::Dataset;
using Clock = std::chrono::steady_clock;

namespace {

// scikit-learn 1.2.1 lbfgs run to convergence, C = 1 (shared/baselines.md).
constexpr double kSklearnOptimum = 0.3498933953;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double PeakRssMb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

double FullGradientSeconds(const Dataset& train, at::ScalarType dtype, const at::Device& device,
                           int reps, bool mixed = false) {
  logit::ObjectiveConfig cfg;
  cfg.classes = 10;
  cfg.l2 = 1.0 / 60000;
  cfg.dtype = dtype;
  cfg.device = device;
  cfg.mixed_products = mixed;
  auto obj = logit::LogisticObjective::Create(train, cfg, at::Tensor(), at::Tensor(), at::Tensor(),
                                              nullptr);
  at::Tensor theta = at::zeros({(*obj)->num_params()}, (*obj)->options());
  at::Tensor grad = at::zeros_like(theta);
  (void)(*obj)->ValueAndGradient(theta, grad);  // warm-up
  const auto t = Clock::now();
  for (int i = 0; i < reps; ++i) (void)(*obj)->ValueAndGradient(theta, grad);
  return Since(t) / reps;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  int64_t lbfgs_iters = 1500;
  bool skip_lbfgs = false;
  std::string device = "cpu";
  std::vector<std::string> lbfgs_precisions = {"mixed", "float64"};
  std::string dir = "/usr/share/datasets/fashion-mnist";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--lbfgs-iters") && i + 1 < argc)
      lbfgs_iters = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--skip-lbfgs"))
      skip_lbfgs = true;
    else if (!std::strcmp(argv[i], "--lbfgs-precision") && i + 1 < argc)
      lbfgs_precisions = {argv[++i]};
    else if (!std::strcmp(argv[i], "--device") && i + 1 < argc)
      device = argv[++i];
    else if (!std::strcmp(argv[i], "--data-dir") && i + 1 < argc)
      dir = argv[++i];
    else {
      std::cerr << "kernel_bench: unknown argument '" << argv[i] << "'\n";
      return 2;
    }
  }
  at::set_num_threads(threads);
  logit::ReadOptions ro;
  ro.path = dir + "/train-images-idx3-ubyte.gz";
  ro.labels_path = dir + "/train-labels-idx1-ubyte.gz";
  auto t0 = Clock::now();
  auto train = logit::ReadDataset(ro);
  if (!train.ok()) {
    std::cerr << train.status() << "\n";
    return 1;
  }
  nlohmann::json out;
  out["backend"] = logit::DescribeComputeBackend();
  out["threads"] = threads;
  out["device"] = device;
  const at::Device dev(device == "cuda" ? "cuda:0" : device);
  out["read_seconds"] = Since(t0);
  out["full_gradient_seconds_f32"] = FullGradientSeconds(*train, at::kFloat, dev, 10);
  out["full_gradient_seconds_f64"] = FullGradientSeconds(*train, at::kDouble, dev, 5);
  out["full_gradient_seconds_mixed"] = FullGradientSeconds(*train, at::kDouble, dev, 5, true);

  for (int64_t batch : {16, 256, 1024}) {
    logit::TrainOptions o;
    o.optimizer = logit::OptimizerKind::kAdam;
    o.batch_size = batch;
    o.epochs = 2;
    o.threads = threads;
    o.device = device;
    auto r = logit::Train(o, {&*train});
    if (!r.ok()) {
      std::cerr << r.status() << "\n";
      return 1;
    }
    // CPU: the mean of the epochs. GPU: the last epoch (the first pays kernel loading and the
    // caching allocator's warm-up; the GPU peer also times an epoch after a warm-up one).
    double s = 0;
    for (const auto& e : r->history) s += e.seconds;
    out["adam_epoch_seconds"][std::to_string(batch)] =
        dev.is_cuda() ? r->history.back().seconds : s / r->history.size();
    // A sanity check beside the speed: the loss after the timed epochs (about 0.45 / 0.52 /
    // 0.62 at batch 16 / 256 / 1024 after 2 epochs).
    out["adam_train_loss"][std::to_string(batch)] = r->train_loss;
  }

  for (const std::string& precision : lbfgs_precisions) {
    if (skip_lbfgs) break;
    logit::TrainOptions o;
    o.precision = *logit::ParsePrecision(precision);
    o.l2 = 1.0 / 60000;
    o.tol = 1e-12;
    o.epochs = lbfgs_iters;
    o.threads = threads;
    o.device = device;
    double elapsed = 0, t4 = -1, t5 = -1, t6 = -1;
    int64_t i4 = -1, i5 = -1, i6 = -1;
    auto r = logit::Train(o, {&*train}, [&](const logit::EpochRecord& e) {
      elapsed += e.seconds;
      const double gap = (e.objective - kSklearnOptimum) / kSklearnOptimum;
      if (gap <= 1e-4 && t4 < 0) {
        t4 = elapsed;
        i4 = e.epoch;
      }
      if (gap <= 1e-5 && t5 < 0) {
        t5 = elapsed;
        i5 = e.epoch;
      }
      if (gap <= 1e-6 && t6 < 0) {
        t6 = elapsed;
        i6 = e.epoch;
      }
    });
    if (!r.ok()) {
      std::cerr << r.status() << "\n";
      return 1;
    }
    out["lbfgs"][precision] = {{"seconds_to_gap_1e-4", t4},
                               {"iterations_to_gap_1e-4", i4},
                               {"seconds_to_gap_1e-5", t5},
                               {"iterations_to_gap_1e-5", i5},
                               {"seconds_to_gap_1e-6", t6},
                               {"iterations_to_gap_1e-6", i6},
                               {"final_objective", r->objective},
                               {"iterations", r->epochs_run},
                               {"evaluations", r->function_evaluations},
                               {"stop_reason", StopReasonName(r->stop_reason)},
                               {"train_accuracy", r->train_metrics->accuracy}};
  }
  out["peak_rss_mb"] = PeakRssMb();
  std::cout << out.dump() << std::endl;
  return 0;
}
