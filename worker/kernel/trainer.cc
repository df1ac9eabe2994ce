#include "worker/kernel/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <link.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/data/limits.h"
#include "worker/kernel/collective.h"
#include "worker/kernel/fused_cpu.h"
#include "worker/kernel/lbfgs.h"
#include "worker/kernel/objective.h"

namespace logit {

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

absl::Status AllReduce(Collective* c, at::Tensor& t, bool max) {
  if (c == nullptr) return absl::OkStatus();
  return max ? c->AllReduceMax(t) : c->AllReduceSum(t);
}

absl::StatusOr<at::Device> ResolveDevice(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name == "auto") {
    return at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  }
  if (!at::hasCUDA()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device: '", name, "' requested but this LibTorch build has no CUDA device"));
  }
  try {
    at::Device device(name);
    if (!device.has_index()) device = at::Device(at::kCUDA, 0);
    const size_t count = torch::cuda::device_count();
    if (device.has_index() && static_cast<size_t>(device.index()) >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("device: '", name, "': this machine has ", count, " CUDA device(s)"));
    }
    return device;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("device: '", name, "': ", e.what()));
  }
}

// Checks labels against the class count, naming the file and row.
absl::Status CheckLabels(const Dataset& d, int64_t classes) {
  for (int64_t i = 0; i < d.num_rows; ++i) {
    if (d.labels[i] < 0 || d.labels[i] >= classes) {
      return absl::InvalidArgumentError(absl::StrCat(d.source, ": row ", d.GlobalRow(i) + 1,
                                                     ": label ", d.labels[i],
                                                     " is out of range for classes=", classes));
    }
  }
  return absl::OkStatus();
}

// Per-row weights: sample weights times class weights; undefined when all are 1.
absl::StatusOr<at::Tensor> RowWeights(const Dataset& d, const TrainOptions& o, int64_t classes,
                                      Collective* coll) {
  auto spec = ParseClassWeight(o.class_weight);
  if (!spec.ok()) return spec.status();
  std::vector<double> cw(classes, 1.0);
  if (spec->balanced) {
    at::Tensor counts = at::zeros({classes}, at::kDouble);
    double* c = counts.data_ptr<double>();
    for (int64_t y : d.labels) c[y] += 1;
    absl::Status st = AllReduce(coll, counts, false);
    if (!st.ok()) return st;
    const double n = counts.sum().item<double>();
    for (int64_t k = 0; k < classes; ++k) cw[k] = c[k] > 0 ? n / (classes * c[k]) : 1.0;
  } else {
    for (const auto& [k, v] : spec->explicit_weights) {
      if (k >= classes) {
        return absl::InvalidArgumentError(
            absl::StrCat("class_weight: class ", k, " is out of range for classes=", classes));
      }
      cw[k] = v;
    }
  }
  const bool unit_classes = std::all_of(cw.begin(), cw.end(), [](double v) { return v == 1.0; });
  if (unit_classes && d.sample_weights.empty()) return at::Tensor();
  at::Tensor w = at::empty({d.num_rows}, at::kDouble);
  double* p = w.data_ptr<double>();
  for (int64_t i = 0; i < d.num_rows; ++i) {
    const double s = d.sample_weights.empty() ? 1.0 : d.sample_weights[i];
    if (!(s >= 0) || !std::isfinite(s)) {
      return absl::InvalidArgumentError(absl::StrCat(d.source, ": row ", d.GlobalRow(i) + 1,
                                                     ": sample weight ", s, " must be >= 0"));
    }
    p[i] = s * cw[d.labels[i]];
  }
  return w;
}

// Feature means and standard deviations over all training rows (population std; 1 where 0).
absl::Status Standardization(const Dataset& d, int64_t num_features, Collective* coll,
                             at::Tensor* mu, at::Tensor* sigma) {
  const int64_t nf = num_features;
  at::Tensor sums = at::zeros({2 * nf + 1}, at::kDouble);
  at::Tensor s1 = sums.narrow(0, 0, nf), s2 = sums.narrow(0, nf, nf);
  if (d.storage == FeatureStorage::kSparseCsr) {
    double* a = s1.data_ptr<double>();
    double* b = s2.data_ptr<double>();
    for (size_t k = 0; k < d.csr_values.size(); ++k) {
      const double v = d.csr_values[k];
      a[d.csr_indices[k]] += v;
      b[d.csr_indices[k]] += v * v;
    }
  } else {
    const int64_t block = 4096;
    for (int64_t r = 0; r < d.num_rows; r += block) {
      const int64_t m = std::min(block, d.num_rows - r);
      at::Tensor x =
          d.storage == FeatureStorage::kDenseUint8
              ? at::from_blob(const_cast<uint8_t*>(d.dense_u8.data()) + r * nf, {m, nf}, at::kByte)
                    .to(at::kDouble)
                    .mul_(d.u8_scale)
              : at::from_blob(const_cast<float*>(d.dense_f32.data()) + r * nf, {m, nf}, at::kFloat)
                    .to(at::kDouble);
      s1.add_(x.sum(0));
      s2.add_(x.square().sum(0));
    }
  }
  sums[2 * nf] = static_cast<double>(d.num_rows);
  absl::Status st = AllReduce(coll, sums, false);
  if (!st.ok()) return st;
  const double n = sums[2 * nf].item<double>();
  if (n <= 0) return absl::InvalidArgumentError(absl::StrCat(d.source, ": no training rows"));
  *mu = s1 / n;
  at::Tensor var = (s2 / n - mu->square()).clamp_min(0);
  *sigma = var.sqrt();
  // Constant features: scale 1 (like scikit-learn's StandardScaler).
  *sigma = at::where(*sigma > 1e-12 * (mu->abs() + 1), *sigma, at::ones_like(*sigma));
  return absl::OkStatus();
}

std::vector<float> ProbabilitiesFromLogits(const at::Tensor& z, bool binary) {
  at::Tensor p;
  if (binary) {
    at::Tensor s = at::sigmoid(z.view({-1}));
    p = at::stack({1 - s, s}, 1);
  } else {
    p = at::softmax(z, 1);
  }
  p = p.to(at::kCPU, at::kFloat).contiguous();
  return std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
}

// Metrics over all ranks: additive sums through one allreduce; for the binary ROC AUC the
// scores of every rank are gathered (each rank writes its slice of a zero tensor, which a sum
// allreduce fills in), since the AUC needs the global ranking.
absl::StatusOr<ClassificationMetrics> GlobalMetrics(const std::vector<float>& proba,
                                                    const std::vector<int64_t>& labels,
                                                    int64_t classes, Collective* coll) {
  if (coll == nullptr || coll->world_size() == 1) {
    if (labels.empty()) return ClassificationMetrics();
    return ComputeMetrics(proba, labels, classes);
  }
  MetricSums sums = AccumulateMetrics(proba, labels, classes);
  const int64_t kk = classes * classes;
  at::Tensor packed = at::empty({4 + kk}, at::kDouble);
  double* p = packed.data_ptr<double>();
  p[0] = static_cast<double>(sums.rows);
  p[1] = sums.loss;
  p[2] = sums.weight;
  p[3] = sums.correct;
  for (int64_t i = 0; i < kk; ++i) p[4 + i] = static_cast<double>(sums.confusion[i]);
  absl::Status st = coll->AllReduceSum(packed);
  if (!st.ok()) return st;
  sums.rows = static_cast<int64_t>(p[0]);
  sums.loss = p[1];
  sums.weight = p[2];
  sums.correct = p[3];
  for (int64_t i = 0; i < kk; ++i) sums.confusion[i] = static_cast<int64_t>(p[4 + i]);
  double auc = -1;
  if (classes == 2) {
    const int world = coll->world_size();
    at::Tensor counts = at::zeros({world}, at::kLong);
    counts[coll->rank()] = static_cast<int64_t>(labels.size());
    st = coll->AllReduceSum(counts);
    if (!st.ok()) return st;
    const int64_t total = counts.sum().item<int64_t>();
    const int64_t offset = counts.narrow(0, 0, coll->rank()).sum().item<int64_t>();
    at::Tensor gathered = at::zeros({2, total}, at::kDouble);
    double* score = gathered.data_ptr<double>();
    double* positive = score + total;
    for (size_t i = 0; i < labels.size(); ++i) {
      score[offset + i] = proba[2 * i + 1];
      positive[offset + i] = labels[i] == 1;
    }
    st = coll->AllReduceSum(gathered);
    if (!st.ok()) return st;
    std::vector<double> all_scores(score, score + total);
    std::vector<int64_t> all_positive(total);
    for (int64_t i = 0; i < total; ++i) all_positive[i] = positive[i] > 0.5;
    auc = RocAuc(all_scores, all_positive);
  }
  return MetricsFromSums(sums, classes, auc);
}

}  // namespace

absl::StatusOr<std::vector<float>> PredictProba(const LinearModel& model, const Dataset& data) {
  const int64_t d = model.num_features, c = model.OutputColumns();
  if (data.num_features != d &&
      !(data.storage == FeatureStorage::kSparseCsr && data.num_features <= d)) {
    return absl::InvalidArgumentError(absl::StrCat(data.source, ": has ", data.num_features,
                                                   " features but the model expects ", d));
  }
  if (static_cast<int64_t>(model.weights.size()) != d * c ||
      static_cast<int64_t>(model.bias.size()) != c) {
    return absl::InvalidArgumentError("model: weights and bias do not match its shape");
  }
  const at::Tensor w = at::from_blob(const_cast<float*>(model.weights.data()), {d, c}, at::kFloat);
  const at::Tensor b = at::from_blob(const_cast<float*>(model.bias.data()), {c}, at::kFloat);
  std::vector<float> out;
  out.reserve(data.num_rows * model.num_classes);
  const int64_t block = 8192;
  try {
    for (int64_t r = 0; r < data.num_rows; r += block) {
      const int64_t m = std::min(block, data.num_rows - r);
      at::Tensor z;
      switch (data.storage) {
        case FeatureStorage::kDenseFloat32:
          z = at::addmm(
              b,
              at::from_blob(const_cast<float*>(data.dense_f32.data()) + r * d, {m, d}, at::kFloat),
              w);
          break;
        case FeatureStorage::kDenseUint8:
          z = at::addmm(
              b,
              at::from_blob(const_cast<uint8_t*>(data.dense_u8.data()) + r * d, {m, d}, at::kByte)
                  .to(at::kFloat)
                  .mul_(data.u8_scale),
              w);
          break;
        case FeatureStorage::kSparseCsr:
          z = at::mm(SparseRowsToCoo(data, nullptr, m, r, d, at::kFloat), w).add_(b);
          break;
      }
      const std::vector<float> p = ProbabilitiesFromLogits(z, model.IsBinary());
      out.insert(out.end(), p.begin(), p.end());
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("predict: ", e.what()));
  }
  return out;
}

std::string DescribeComputeBackend() {
  std::set<std::string> libs;
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* arg) {
        const std::string name = info->dlpi_name ? info->dlpi_name : "";
        if (name.find("blas") != std::string::npos || name.find("lapack") != std::string::npos) {
          char resolved[PATH_MAX];
          const char* real = realpath(name.c_str(), resolved);
          static_cast<std::set<std::string>*>(arg)->insert(real ? real : name);
        }
        return 0;
      },
      &libs);
  // A CPU BLAS that is none of the fast ones is the reference BLAS (Debian's default
  // libblas.so.3). No BLAS library at all: LibTorch carries its own (pip builds link MKL in).
  bool slow = false;
  for (const std::string& lib : libs) {
    const bool fast =
        lib.find("openblas") != std::string::npos || lib.find("mkl") != std::string::npos ||
        lib.find("blis") != std::string::npos || lib.find("cublas") != std::string::npos;
    slow = slow || !fast;
  }
  std::string blas = libs.empty() ? "builtin" : absl::StrJoin(libs, ",");
  std::string warn;
  if (slow) warn = " WARNING=reference-BLAS-is-~25x-slower;install-libopenblas0-openmp";
  return absl::StrCat("blas=", blas, " torch_threads=", at::get_num_threads(),
                      " cuda=", at::hasCUDA() ? "yes" : "no", warn);
}

absl::StatusOr<TrainResult> Train(const TrainOptions& options, const TrainInputs& inputs,
                                  const EpochCallback& on_epoch, Collective* coll) {
  const auto start = Clock::now();
  absl::Status st = ValidateTrainOptions(options);
  if (!st.ok()) return st;
  if (inputs.train == nullptr) return absl::InvalidArgumentError("data: no training data");
  const Dataset& train = *inputs.train;
  auto device = ResolveDevice(options.device);
  if (!device.ok()) return device.status();
  at::set_num_threads(options.threads > 0
                          ? options.threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));

  try {
    // Global facts: class count and feature count. Checks that may fail on one shard only end
    // in Agree, so that every rank stops with the same reason.
    at::Tensor facts = at::zeros({2}, at::kLong);
    int64_t max_features = train.num_features;
    int64_t max_label = train.MaxLabel();
    absl::Status local;
    for (const Dataset* d : {inputs.val, inputs.test}) {
      if (d == nullptr) continue;
      max_label = std::max(max_label, d->MaxLabel());
      if (d->storage == FeatureStorage::kSparseCsr) {
        max_features = std::max(max_features, d->num_features);
      } else if (d->num_features != train.num_features && local.ok()) {
        local = absl::InvalidArgumentError(absl::StrCat(d->source, ": has ", d->num_features,
                                                        " features, the training data has ",
                                                        train.num_features));
      }
    }
    facts[0] = max_features;
    facts[1] = max_label;
    st = AllReduce(coll, facts, true);
    if (!st.ok()) return st;
    const int64_t classes =
        options.classes > 0 ? options.classes : std::max<int64_t>(2, facts[1].item<int64_t>() + 1);
    for (const Dataset* d : {inputs.train, inputs.val, inputs.test}) {
      if (d != nullptr && local.ok()) local = CheckLabels(*d, classes);
    }
    const int64_t nf = facts[0].item<int64_t>();
    at::Tensor rows_t = at::full({1}, train.num_rows, at::kLong);
    st = AllReduce(coll, rows_t, false);
    if (!st.ok()) return st;
    const int64_t global_rows = rows_t.item<int64_t>();
    if (local.ok() && nf != train.num_features && train.storage != FeatureStorage::kSparseCsr) {
      local = absl::InvalidArgumentError(absl::StrCat(train.source, ": has ", train.num_features,
                                                      " features, another shard has ", nf));
    }
    const auto params = CheckedMul(nf, classes == 2 ? 1 : classes);
    if (local.ok() && nf < 1) {
      local = absl::InvalidArgumentError(absl::StrCat(
          "features: ", train.source, " has no feature columns (no index:value pairs)"));
    }
    if (local.ok() && (!params || *params > kMaxParameters)) {
      local = absl::ResourceExhaustedError(absl::StrCat(
          "features: ", nf, " features x ", classes, " classes is more than the limit of ",
          kMaxParameters, " model parameters (check the data's largest feature index and label)"));
    }
    if (coll != nullptr) local = coll->Agree(local);
    if (!local.ok()) return local;
    auto weights = RowWeights(train, options, classes, coll);
    if (!weights.ok()) return weights.status();
    at::Tensor mu, sigma;
    if (options.standardize) {
      st = Standardization(train, nf, coll, &mu, &sigma);
      if (!st.ok()) return st;
    }

    ObjectiveConfig cfg;
    cfg.classes = classes;
    cfg.fit_bias = options.fit_bias;
    cfg.l2 = options.l2;
    cfg.dtype = UsesFloat64(options) ? at::kDouble : at::kFloat;
    cfg.mixed_products = UsesMixedProducts(options);
    cfg.device = *device;
    cfg.num_features = nf;  // sparse shards may see fewer columns than the global count
    auto objective = LogisticObjective::Create(train, cfg, *weights, mu, sigma, coll);
    if (!objective.ok()) return objective.status();
    LogisticObjective& obj = **objective;

    std::unique_ptr<LogisticObjective> val_obj;
    if (inputs.val != nullptr) {
      ObjectiveConfig vcfg = cfg;
      vcfg.l2 = 0;
      auto created = LogisticObjective::Create(*inputs.val, vcfg, at::Tensor(), mu, sigma, coll);
      if (!created.ok()) return created.status();
      val_obj = std::move(*created);
    }

    TrainResult result;
    result.device = device->str();
    at::Tensor theta = at::zeros({obj.num_params()}, obj.options());
    auto record_epoch = [&](int64_t epoch, double loss, double objective_value,
                            Clock::time_point epoch_start) -> absl::Status {
      EpochRecord rec;
      rec.epoch = epoch;
      rec.train_loss = loss;
      rec.objective = objective_value;
      if (val_obj) {
        auto vs = val_obj->Evaluate(theta);
        if (!vs.ok()) return vs.status();
        rec.val_loss = vs->loss;
        rec.val_accuracy = vs->accuracy;
      }
      // A non-finite objective (too large a learning rate) ends the job on every rank at once.
      absl::Status finite = std::isfinite(objective_value)
                                ? absl::OkStatus()
                                : absl::InvalidArgumentError(absl::StrCat(
                                      "diverged: the training objective became ", objective_value,
                                      " in epoch ", epoch, "; lower --lr or use --standardize"));
      if (coll != nullptr) finite = coll->Agree(finite);
      if (!finite.ok()) return finite;
      rec.seconds = Seconds(epoch_start);
      rec.samples = global_rows;
      result.history.push_back(rec);
      if (on_epoch) on_epoch(rec);
      return absl::OkStatus();
    };

    // A stop request (cancel) ends training on every rank at the same step: the ranks agree on
    // it through a MAX allreduce every kStopCheckSteps steps and every epoch / iteration.
    constexpr int64_t kStopCheckSteps = 32;
    auto check_stop = [&]() -> absl::Status {
      if (inputs.stop == nullptr) return absl::OkStatus();
      at::Tensor flag = at::full({1}, inputs.stop->load() ? 1 : 0, at::kInt);
      absl::Status cs = AllReduce(coll, flag, true);
      if (!cs.ok()) return cs;
      if (flag.item<int>() != 0) return absl::CancelledError("training was cancelled");
      return absl::OkStatus();
    };
    const int64_t epochs = EffectiveEpochs(options);
    if (options.optimizer == OptimizerKind::kLbfgs) {
      LbfgsOptions lo;
      lo.max_iterations = epochs;
      lo.tol = options.tol;
      // Two float64 vectors of num_params per pair; keep the history under ~1.6 GB.
      const int64_t fit = static_cast<int64_t>(1.6e9 / (16.0 * obj.num_params()));
      if (options.lbfgs_history > std::max<int64_t>(10, fit)) {
        // The same on every rank (num_params is global): all stop together.
        return absl::ResourceExhaustedError(absl::StrCat(
            "lbfgs_history: ", options.lbfgs_history, " pairs of 2 x ", obj.num_params(),
            " float64 values exceed the 1.6 GB history budget (at most ",
            std::max<int64_t>(10, fit), " pairs for this model)"));
      }
      lo.history = options.lbfgs_history > 0 ? options.lbfgs_history
                                             : std::max<int64_t>(10, std::min<int64_t>(100, fit));
      lo.l1 = options.l1;
      lo.initial_step = EffectiveLearningRate(options);
      auto epoch_start = Clock::now();
      int64_t offset = 0;  // iterations of earlier phases
      auto on_iteration = [&](int64_t it, const PassValue& v, double f) -> absl::Status {
        // theta is updated only at the end; evaluate validation on the final point.
        EpochRecord rec;
        rec.epoch = offset + it;
        rec.train_loss = v.loss;
        rec.objective = f;
        rec.seconds = Seconds(epoch_start);
        rec.samples = global_rows;
        epoch_start = Clock::now();
        result.history.push_back(rec);
        if (on_epoch) on_epoch(rec);
        return check_stop();
      };
      // --precision mixed on dense CPU rows: float32 products (fast) until L-BFGS stalls, then a
      // float64 polish from there (fresh history) to the tolerance.
      auto report = MinimizeLbfgs(obj, theta, lo, on_iteration);
      if (!report.ok()) return report.status();
      if (PolishesInFloat64(options) && obj.mixed_products() &&
          report->stop_reason != "max_epochs" && report->iterations < epochs) {
        obj.set_mixed_products(false);
        LbfgsOptions polish = lo;
        polish.max_iterations = epochs - report->iterations;
        offset = report->iterations;
        auto second = MinimizeLbfgs(obj, theta, polish, on_iteration);
        if (!second.ok()) return second.status();
        second->iterations += report->iterations;
        second->evaluations += report->evaluations;
        report = std::move(second);
      }
      result.stop_reason = report->stop_reason;
      result.epochs_run = report->iterations;
      result.function_evaluations = report->evaluations;
      result.objective = report->objective;
      result.train_loss = report->last.loss;
      if (val_obj && !result.history.empty()) {
        auto vs = val_obj->Evaluate(theta);
        if (!vs.ok()) return vs.status();
        result.history.back().val_loss = vs->loss;
        result.history.back().val_accuracy = vs->accuracy;
      }
    } else {
      const double lr = EffectiveLearningRate(options);
      const bool adam = options.optimizer == OptimizerKind::kAdam;
      // The fused CPU path keeps the parameters (and the moments) class-major during an epoch;
      // theta gets them back at every epoch's end. The update is elementwise either way.
      const bool class_major = obj.ClassMajorMinibatch();
      at::Tensor params = class_major ? obj.ToClassMajor(theta) : theta;
      at::Tensor grad = at::zeros_like(params);
      at::Tensor m1 = at::zeros_like(params), m2 = adam ? at::zeros_like(params) : at::Tensor();
      at::Tensor denom = adam ? at::empty_like(params) : at::Tensor();
      const int64_t nw = obj.num_weights();
      // On the CPU in float32 the update is one fused loop instead of ~8 tensor ops.
      const bool fused_update = params.device().is_cpu() && params.scalar_type() == at::kFloat;
      std::vector<int64_t> order(train.num_rows);
      std::iota(order.begin(), order.end(), 0);
      std::mt19937_64 rng(options.seed);
      // Every rank runs the same number of steps: the largest shard sets it.
      // A global batch of batch_size rows: each of the W ranks contributes ceil(B / W) rows.
      const int world = coll ? coll->world_size() : 1;
      const int64_t local_batch = std::max<int64_t>(1, (options.batch_size + world - 1) / world);
      at::Tensor steps_t =
          at::full({1}, (train.num_rows + local_batch - 1) / local_batch, at::kLong);
      st = AllReduce(coll, steps_t, true);
      if (!st.ok()) return st;
      const int64_t steps = std::max<int64_t>(1, steps_t.item<int64_t>());
      int64_t step_count = 0;
      double best = std::numeric_limits<double>::infinity();
      int64_t since_best = 0;
      result.stop_reason = "max_epochs";
      for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
        const auto epoch_start = Clock::now();
        std::shuffle(order.begin(), order.end(), rng);
        double loss_sum = 0;
        for (int64_t s = 0; s < steps; ++s) {
          if (s % kStopCheckSteps == kStopCheckSteps - 1) {
            st = check_stop();
            if (!st.ok()) return st;
          }
          const size_t b = std::min<size_t>(order.size(), s * local_batch);
          const size_t e = std::min<size_t>(order.size(), b + local_batch);
          auto v = class_major ? obj.BatchValueAndGradientClassMajor(params, order, b, e, grad)
                               : obj.BatchValueAndGradient(params, order, b, e, grad);
          if (!v.ok()) {
            // A global batch with no weight (possible with uneven shards) is skipped.
            if (coll != nullptr && absl::IsInvalidArgument(v.status())) continue;
            return v.status();
          }
          loss_sum += v->loss;
          ++step_count;
          if (inputs.on_step) inputs.on_step(epoch, s + 1, steps, options.batch_size);
          if (s + 1 < steps) {  // the next batch's rows load while this step updates
            const size_t nb = std::min<size_t>(order.size(), (s + 1) * local_batch);
            obj.PrefetchBatch(order, nb, std::min<size_t>(order.size(), nb + local_batch));
          }
          if (fused_update) {
            if (adam) {
              fused::AdamStep(params.data_ptr<float>(), grad.data_ptr<float>(),
                              m1.data_ptr<float>(), m2.data_ptr<float>(), params.numel(), nw, lr,
                              options.beta1, options.beta2, options.adam_eps, step_count,
                              options.l1);
            } else {
              fused::SgdStep(params.data_ptr<float>(), grad.data_ptr<float>(), m1.data_ptr<float>(),
                             params.numel(), nw, lr, options.momentum, options.nesterov,
                             options.l1);
            }
            continue;
          }
          at::Tensor w = params.narrow(0, 0, nw);
          if (adam) {
            m1.mul_(options.beta1).add_(grad, 1 - options.beta1);
            m2.mul_(options.beta2).addcmul_(grad, grad, 1 - options.beta2);
            const double bc1 = 1 - std::pow(options.beta1, static_cast<double>(step_count));
            const double bc2 = 1 - std::pow(options.beta2, static_cast<double>(step_count));
            at::sqrt_out(denom, m2).div_(std::sqrt(bc2)).add_(options.adam_eps);
            params.addcdiv_(m1, denom, -lr / bc1);
            if (options.l1 > 0) {  // proximal step with Adam's per-coordinate step size
              at::Tensor thresh = (lr * options.l1) / denom.narrow(0, 0, nw);
              w.copy_(w.sign() * (w.abs() - thresh).clamp_min(0));
            }
          } else {
            if (options.momentum > 0) {
              m1.mul_(options.momentum).add_(grad);
              if (options.nesterov) {
                params.add_(grad, -lr).add_(m1, -lr * options.momentum);
              } else {
                params.add_(m1, -lr);
              }
            } else {
              params.add_(grad, -lr);
            }
            if (options.l1 > 0) w.copy_(w.sign() * (w.abs() - lr * options.l1).clamp_min(0));
          }
        }
        if (class_major) obj.FromClassMajor(params, theta);
        const double train_loss = loss_sum / static_cast<double>(steps);
        const double objective_value = train_loss + obj.Penalty(theta, options.l1);
        st = record_epoch(epoch, train_loss, objective_value, epoch_start);
        if (!st.ok()) return st;
        st = check_stop();
        if (!st.ok()) return st;
        result.epochs_run = epoch;
        const double monitored = val_obj ? result.history.back().val_loss : objective_value;
        if (monitored < best - options.tol * std::abs(best) || !std::isfinite(best)) {
          best = monitored;
          since_best = 0;
        } else if (options.early_stopping_patience > 0 &&
                   ++since_best >= options.early_stopping_patience) {
          result.stop_reason = "early_stopping";
          break;
        }
      }
      result.function_evaluations = step_count;
      auto final_value = obj.Evaluate(theta);  // loss only: no gradient needed here
      if (!final_value.ok()) return final_value.status();
      result.train_loss = final_value->loss;
      result.objective = final_value->loss + obj.Penalty(theta, options.l1);
    }

    result.model = obj.ToModel(theta);
    auto metrics_of =
        [&](const Dataset* d) -> absl::StatusOr<std::optional<ClassificationMetrics>> {
      // Every rank takes part (a rank may hold no rows of a split); the sums are global.
      const bool present = d != nullptr;
      at::Tensor any = at::full({1}, present ? 1 : 0, at::kLong);
      absl::Status ast = AllReduce(coll, any, true);
      if (!ast.ok()) return ast;
      if (any.item<int64_t>() == 0) return std::optional<ClassificationMetrics>();
      static const Dataset kEmpty;
      const Dataset& data = present ? *d : kEmpty;
      std::vector<float> proba;
      if (data.num_rows > 0) {
        auto p = PredictProba(result.model, data);
        if (!p.ok()) return p.status();
        proba = std::move(*p);
      }
      auto global = GlobalMetrics(proba, data.labels, classes, coll);
      if (!global.ok()) return global.status();
      if (global->rows == 0) return std::optional<ClassificationMetrics>();
      return std::optional<ClassificationMetrics>(*global);
    };
    auto m_train = metrics_of(&train);
    if (!m_train.ok()) return m_train.status();
    auto m_val = metrics_of(inputs.val);
    if (!m_val.ok()) return m_val.status();
    auto m_test = metrics_of(inputs.test);
    if (!m_test.ok()) return m_test.status();
    result.train_metrics = *m_train;
    result.val_metrics = *m_val;
    result.test_metrics = *m_test;
    result.wall_seconds = Seconds(start);
    return result;
  } catch (const std::exception& e) {
    // LibTorch reports failures (out of memory, device errors) as exceptions; they stop here.
    return absl::InternalError(absl::StrCat("kernel: ", e.what()));
  }
}

}  // namespace logit
