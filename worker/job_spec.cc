#include "worker/job_spec.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "logit/v1/training.pb.h"
#include "worker/common/status.h"

namespace logit {

namespace {

absl::StatusOr<OptimizerKind> OptimizerFromSpec(v1::Optimizer o) {
  switch (o) {
    case v1::OPTIMIZER_UNSPECIFIED:
    case v1::LBFGS:
      return OptimizerKind::kLbfgs;
    case v1::SGD:
      return OptimizerKind::kSgd;
    case v1::ADAM:
      return OptimizerKind::kAdam;
    default:
      return FieldError("optimizer", absl::StrCat("unknown optimizer value ", static_cast<int>(o),
                                                  " (SGD, ADAM, LBFGS)"));
  }
}

absl::StatusOr<Precision> PrecisionFromSpec(v1::Precision p) {
  switch (p) {
    case v1::AUTO:
      return Precision::kAuto;
    case v1::FLOAT32:
      return Precision::kFloat32;
    case v1::FLOAT64:
      return Precision::kFloat64;
    case v1::MIXED:
      return Precision::kMixed;
    default:
      return FieldError("precision", absl::StrCat("unknown precision value ", static_cast<int>(p),
                                                  " (AUTO, FLOAT32, FLOAT64, MIXED)"));
  }
}

absl::Status ValidateDataConfig(const DataConfig& c) {
  auto frac_ok = [](double f) { return std::isfinite(f) && f >= 0 && f < 1; };
  if (c.train.path.empty()) return FieldError("data", "no training data file given");
  if (!frac_ok(c.val_split)) {
    return FieldError("val_split", absl::StrCat("must be in [0, 1), got ", c.val_split));
  }
  if (!frac_ok(c.test_split)) {
    return FieldError("test_split", absl::StrCat("must be in [0, 1), got ", c.test_split));
  }
  if (c.val_split + c.test_split >= 1) {
    return FieldError("val_split", absl::StrCat("val_split + test_split must be < 1, got ",
                                                c.val_split + c.test_split));
  }
  if (!c.val_path.empty() && c.val_split > 0) {
    return FieldError("val_split", "give either val_data or val_split, not both");
  }
  if (!c.test_path.empty() && c.test_split > 0) {
    return FieldError("test_split", "give either test_data or test_split, not both");
  }
  if (c.train.classes < 0 || c.train.num_features < 0) {
    return FieldError(c.train.classes < 0 ? "classes" : "features", "must be >= 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<DataConfig> DataFromSpec(const v1::JobSpec& s) {
  DataConfig dc;
  dc.train.path = s.data();
  dc.train.labels_path = s.labels();
  ASSIGN_OR_RETURN(dc.train.format, ParseDataFormat(s.format()));
  dc.train.label_column = s.label_column();
  dc.train.classes = s.classes();
  dc.train.num_features = s.features();
  dc.train.pixel_scale = !s.no_pixel_scale();
  dc.val_path = s.val_data();
  dc.val_labels = s.val_labels();
  dc.test_path = s.test_data();
  dc.test_labels = s.test_labels();
  dc.val_split = s.val_split();
  dc.stratify = s.has_stratify() ? s.stratify() : true;
  dc.test_split = s.test_split();
  RETURN_IF_ERROR(ValidateDataConfig(dc));
  return dc;
}

absl::StatusOr<TrainOptions> TrainOptionsFromSpec(const v1::JobSpec& s) {
  TrainOptions o;
  o.classes = s.classes();
  o.fit_bias = s.has_bias() ? s.bias() : true;
  ASSIGN_OR_RETURN(o.optimizer, OptimizerFromSpec(s.optimizer()));
  if (s.has_lr()) o.lr = s.lr();
  o.momentum = s.momentum();
  o.nesterov = s.nesterov();
  if (s.has_batch_size()) o.batch_size = s.batch_size();
  if (s.has_epochs()) o.epochs = s.epochs();
  if (s.has_tol()) o.tol = s.tol();
  o.l1 = s.l1();
  o.l2 = s.l2();
  const std::string& penalty = s.penalty();
  if (!penalty.empty() && penalty != "l2" && penalty != "none") {
    return FieldError("penalty", absl::StrCat("'", penalty, "' is not l2 or none"));
  }
  if (s.has_c()) {
    if (!(s.c() > 0) || !std::isfinite(s.c())) {
      return FieldError("c", absl::StrCat("must be > 0, got ", s.c()));
    }
    if (s.has_l2()) return FieldError("c", "give C or l2, not both (l2 = 1 / (C n_train))");
    if (penalty == "none") return FieldError("penalty", "none turns the penalty off: drop C");
    o.C = s.c();
  } else if (!s.has_l1() && !s.has_l2() && penalty != "none") {
    o.C = 1.0;  // scikit-learn's default regularisation
  }
  o.class_weight = s.class_weight();
  o.standardize = s.standardize();
  o.early_stopping_patience = s.early_stopping_patience();
  o.seed = s.seed();
  o.lbfgs_history = s.lbfgs_history();
  ASSIGN_OR_RETURN(o.precision, PrecisionFromSpec(s.precision()));
  if (!s.device().empty()) o.device = s.device();
  RETURN_IF_ERROR(ValidateTrainOptions(o));
  return o;
}

}  // namespace

absl::StatusOr<JobPlan> PlanJob(const v1::JobSpec& spec) {
  JobPlan plan;
  ASSIGN_OR_RETURN(plan.data, DataFromSpec(spec));
  ASSIGN_OR_RETURN(plan.train, TrainOptionsFromSpec(spec));
  if (spec.has_workers()) {
    if (spec.workers() < 1) {
      return FieldError("workers", absl::StrCat("must be >= 1, got ", spec.workers()));
    }
    plan.workers = spec.workers();
  }
  if (spec.has_checkpoint_every()) {
    if (spec.checkpoint_every() < 0) {
      return FieldError("checkpoint_every",
                        absl::StrCat("must be >= 0 (0: none), got ", spec.checkpoint_every()));
    }
    plan.checkpoint_every = spec.checkpoint_every();
  }
  if (spec.has_max_retries()) {
    if (spec.max_retries() < 0) {
      return FieldError("max_retries",
                        absl::StrCat("must be >= 0 (0: never retry), got ", spec.max_retries()));
    }
    plan.max_retries = spec.max_retries();
  }
  plan.min_workers = plan.workers;
  if (spec.has_min_workers()) {
    if (spec.min_workers() < 1 || spec.min_workers() > plan.workers) {
      return FieldError("min_workers", absl::StrCat("must be in [1, workers = ", plan.workers,
                                                    "], got ", spec.min_workers()));
    }
    plan.min_workers = spec.min_workers();
  }
  if (!(spec.deadline_seconds() >= 0) || !std::isfinite(spec.deadline_seconds())) {
    return FieldError(
        "deadline_seconds",
        absl::StrCat("must be a finite number of seconds >= 0, got ", spec.deadline_seconds()));
  }
  plan.deadline_seconds = spec.deadline_seconds();
  plan.name = spec.name();
  for (const auto& [key, value] : spec.job_labels()) {
    const bool key_ok =
        !key.empty() && key.size() <= 63 && std::all_of(key.begin(), key.end(), [](char c) {
          return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
                 c == '/' || c == '-';
        });
    if (!key_ok) {
      return FieldError("job_labels",
                        absl::StrCat("key '", key,
                                     "' must be 1-63 characters of a-z, A-Z, 0-9, '.', '_', '/' "
                                     "and '-'"));
    }
    if (value.size() > 63) {
      return FieldError("job_labels", absl::StrCat("the value of '", key, "' has ", value.size(),
                                                   " characters, more than 63"));
    }
    plan.labels[key] = value;
  }
  return plan;
}

const std::map<std::string, std::string>& JobSpecFieldsNotPlanned() {
  static const auto* const fields = new std::map<std::string, std::string>();
  return *fields;
}

}  // namespace logit
