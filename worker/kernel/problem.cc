#include "worker/kernel/problem.h"

#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/common/status.h"
#include "worker/data/limits.h"

namespace logit {

namespace {

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
  ASSIGN_OR_RETURN(const ClassWeightSpec spec, ParseClassWeight(o.class_weight));
  std::vector<double> cw(classes, 1.0);
  if (spec.balanced) {
    at::Tensor counts = at::zeros({classes}, at::kDouble);
    double* c = counts.data_ptr<double>();
    for (int64_t y : d.labels) c[y] += 1;
    if (coll != nullptr) RETURN_IF_ERROR(coll->AllReduceSum(counts));
    const double n = counts.sum().item<double>();
    for (int64_t k = 0; k < classes; ++k) cw[k] = c[k] > 0 ? n / (classes * c[k]) : 1.0;
  } else {
    for (const auto& [k, v] : spec.explicit_weights) {
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
    for (size_t k = 0; k < d.csr_indices.size(); ++k) {
      const double v = d.CsrValue(static_cast<int64_t>(k));
      a[d.csr_indices[k]] += v;
      b[d.csr_indices[k]] += v * v;
    }
  } else {
    const int64_t block = 4096;
    for (int64_t r = 0; r < d.num_rows; r += block) {
      const int64_t m = std::min(block, d.num_rows - r);
      at::Tensor x =
          d.storage == FeatureStorage::kDenseUint8
              ? at::from_blob(const_cast<uint8_t*>(d.U8Rows()) + r * nf, {m, nf}, at::kByte)
                    .to(at::kDouble)
                    .mul_(d.u8_scale)
              : at::from_blob(const_cast<float*>(d.F32Rows()) + r * nf, {m, nf}, at::kFloat)
                    .to(at::kDouble);
      s1.add_(x.sum(0));
      s2.add_(x.square().sum(0));
    }
  }
  sums[2 * nf] = static_cast<double>(d.num_rows);
  if (coll != nullptr) RETURN_IF_ERROR(coll->AllReduceSum(sums));
  const double n = sums[2 * nf].item<double>();
  if (n <= 0) return absl::InvalidArgumentError(absl::StrCat(d.source, ": no training rows"));
  *mu = s1 / n;
  at::Tensor var = (s2 / n - mu->square()).clamp_min(0);
  *sigma = var.sqrt();
  // Constant features: scale 1 (like scikit-learn's StandardScaler).
  *sigma = at::where(*sigma > 1e-12 * (mu->abs() + 1), *sigma, at::ones_like(*sigma));
  return absl::OkStatus();
}

// The shape every rank agrees on: the largest feature count and label over all ranks and
// splits, and the training rows over all ranks.
struct GlobalFacts {
  int64_t max_features = 0, max_label = 0, rows = 0;
};

// This rank's part of the facts; `local` receives the first problem found in its files.
GlobalFacts LocalFacts(const TrainInputs& inputs, absl::Status* local) {
  const Dataset& train = *inputs.train;
  GlobalFacts f{train.num_features, train.MaxLabel(), train.num_rows};
  for (const Dataset* d : {inputs.val, inputs.test}) {
    if (d == nullptr) continue;
    f.max_label = std::max(f.max_label, d->MaxLabel());
    if (d->storage == FeatureStorage::kSparseCsr) {
      f.max_features = std::max(f.max_features, d->num_features);
    } else if (d->num_features != train.num_features && local->ok()) {
      *local = absl::InvalidArgumentError(absl::StrCat(d->source, ": has ", d->num_features,
                                                       " features, the training data has ",
                                                       train.num_features));
    }
  }
  return f;
}

absl::StatusOr<GlobalFacts> ReduceFacts(GlobalFacts f, Collective* coll) {
  if (coll == nullptr) return f;
  at::Tensor facts = at::zeros({2}, at::kLong);
  facts[0] = f.max_features;
  facts[1] = f.max_label;
  RETURN_IF_ERROR(coll->AllReduceMax(facts));
  at::Tensor rows = at::full({1}, f.rows, at::kLong);
  RETURN_IF_ERROR(coll->AllReduceSum(rows));
  return GlobalFacts{facts[0].item<int64_t>(), facts[1].item<int64_t>(), rows.item<int64_t>()};
}

// The checks of this rank's data against the global shape (the first failure).
absl::Status CheckShape(const TrainInputs& inputs, int64_t classes, int64_t nf) {
  for (const Dataset* d : {inputs.train, inputs.val, inputs.test}) {
    if (d != nullptr) RETURN_IF_ERROR(CheckLabels(*d, classes));
  }
  const Dataset& train = *inputs.train;
  if (nf != train.num_features && train.storage != FeatureStorage::kSparseCsr) {
    return absl::InvalidArgumentError(absl::StrCat(train.source, ": has ", train.num_features,
                                                   " features, another shard has ", nf));
  }
  if (nf < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("features: ", train.source, " has no feature columns (no index:value pairs)"));
  }
  const auto params = CheckedMul(nf, classes == 2 ? 1 : classes);
  if (!params || *params > kMaxParameters) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "features: ", nf, " features x ", classes, " classes is more than the limit of ",
        kMaxParameters, " model parameters (check the data's largest feature index and label)"));
  }
  return absl::OkStatus();
}

// Classes, features and rows over all ranks. Checks that may fail on one shard only end in
// Agree, so that every rank stops with the same reason.
absl::Status AgreeOnShape(const TrainOptions& options, const TrainInputs& inputs, Collective* coll,
                          TrainingProblem* problem) {
  absl::Status local;
  ASSIGN_OR_RETURN(const GlobalFacts facts, ReduceFacts(LocalFacts(inputs, &local), coll));
  problem->classes =
      options.classes > 0 ? options.classes : std::max<int64_t>(2, facts.max_label + 1);
  problem->num_features = facts.max_features;
  problem->global_rows = facts.rows;
  if (local.ok()) local = CheckShape(inputs, problem->classes, problem->num_features);
  if (coll != nullptr) local = coll->Agree(local);
  return local;
}

}  // namespace

absl::StatusOr<at::Device> ResolveDevice(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name == "auto") {
    return at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  }
  if (!at::hasCUDA()) {
    return FieldError(
        "device",
        absl::StrCat("'", name, "' requested but this LibTorch build has no CUDA device"));
  }
  try {
    at::Device device(name);
    if (!device.has_index()) device = at::Device(at::kCUDA, 0);
    const size_t count = torch::cuda::device_count();
    if (device.has_index() && static_cast<size_t>(device.index()) >= count) {
      return FieldError("device",
                        absl::StrCat("'", name, "': this machine has ", count, " CUDA device(s)"));
    }
    return device;
  } catch (const std::exception& e) {
    return FieldError("device", absl::StrCat("'", name, "': ", e.what()));
  }
}

absl::StatusOr<TrainingProblem> PrepareProblem(const TrainOptions& options,
                                               const TrainInputs& inputs, Collective* coll) {
  TrainingProblem problem;
  ASSIGN_OR_RETURN(problem.device, ResolveDevice(options.device));
  RETURN_IF_ERROR(AgreeOnShape(options, inputs, coll, &problem));
  ASSIGN_OR_RETURN(const at::Tensor weights,
                   RowWeights(*inputs.train, options, problem.classes, coll));
  at::Tensor mu, sigma;
  if (options.standardize) {
    RETURN_IF_ERROR(Standardization(*inputs.train, problem.num_features, coll, &mu, &sigma));
  }
  ObjectiveConfig cfg;
  cfg.classes = problem.classes;
  cfg.fit_bias = options.fit_bias;
  // scikit-learn's C weighs the summed loss against |W|^2 / 2; the objective here is the mean
  // loss, so the same optimum needs l2 = 1 / (C n) with n the training rows over all ranks.
  cfg.l2 = options.C > 0 ? 1.0 / (options.C * static_cast<double>(std::max<int64_t>(
                                                 1, problem.global_rows)))
                         : options.l2;
  problem.l2 = cfg.l2;
  cfg.dtype = UsesFloat64(options) ? at::kDouble : at::kFloat;
  cfg.mixed_products = UsesMixedProducts(options);
  cfg.device = problem.device;
  cfg.num_features = problem.num_features;  // sparse shards may see fewer columns
  ASSIGN_OR_RETURN(problem.train,
                   LogisticObjective::Create(*inputs.train, cfg, weights, mu, sigma, coll));
  if (inputs.val != nullptr) {
    cfg.l2 = 0;
    ASSIGN_OR_RETURN(problem.val,
                     LogisticObjective::Create(*inputs.val, cfg, at::Tensor(), mu, sigma, coll));
  }
  return problem;
}

}  // namespace logit
