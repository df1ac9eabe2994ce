#include "worker/job_cli.h"

#include <optional>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "worker/common/status.h"
#include "worker/kernel/train_options.h"
#include "worker/kernel/trainer.h"
#include "worker/summary.h"

namespace logit {

namespace {

// Adds `--name`: its value of type T goes to the JobSpec through `set`.
template <typename T, typename Set>
CLI::Option* Field(CLI::App* app, const std::string& name, v1::JobSpec* spec, Set set,
                   const std::string& help) {
  return app->add_option_function<T>(
      name, [spec, set](const T& value) { set(spec, value); }, help);
}

v1::Optimizer ParseOptimizerFlag(const std::string& text) {
  auto kind = ParseOptimizer(text);
  if (!kind.ok()) throw CLI::ValidationError("--optimizer", FlagMessage(kind.status()));
  return OptimizerProto(*kind);
}

v1::Precision ParsePrecisionFlag(const std::string& text) {
  auto p = ParsePrecision(text);
  if (!p.ok()) throw CLI::ValidationError("--precision", FlagMessage(p.status()));
  switch (*p) {
    case Precision::kAuto:
      return v1::AUTO;
    case Precision::kFloat32:
      return v1::FLOAT32;
    case Precision::kFloat64:
      return v1::FLOAT64;
    case Precision::kMixed:
      return v1::MIXED;
  }
  return v1::AUTO;
}

void AddDataFlags(CLI::App* app, v1::JobSpec* s) {
  using S = v1::JobSpec;
  using Str = std::string;
  Field<Str>(
      app, "--data", s, [](S* s, const Str& v) { s->set_data(v); },
      "training data file (or dataset:ID / server:PATH)");
  Field<Str>(
      app, "--labels", s, [](S* s, const Str& v) { s->set_labels(v); },
      "label file (.npy / IDX data)");
  Field<Str>(
      app, "--format", s, [](S* s, const Str& v) { s->set_format(v); },
      "csv|libsvm|npy|idx (default: from the file name)");
  Field<Str>(
      app, "--label-column", s, [](S* s, const Str& v) { s->set_label_column(v); },
      "CSV label column: header name, or number counting from 1 (-1 = last; default: last)");
  Field<int64_t>(
      app, "--classes", s, [](S* s, int64_t v) { s->set_classes(v); },
      "number of classes (default: max label + 1)");
  Field<int64_t>(
      app, "--features", s, [](S* s, int64_t v) { s->set_features(v); },
      "number of features (default: inferred)");
  Field<double>(
      app, "--val-split", s, [](S* s, double v) { s->set_val_split(v); },
      "fraction held out for validation");
  Field<double>(
      app, "--test-split", s, [](S* s, double v) { s->set_test_split(v); },
      "fraction held out for testing");
  Field<Str>(
      app, "--val-data", s, [](S* s, const Str& v) { s->set_val_data(v); }, "validation file");
  Field<Str>(
      app, "--val-labels", s, [](S* s, const Str& v) { s->set_val_labels(v); },
      "validation label file");
  Field<Str>(
      app, "--test-data", s, [](S* s, const Str& v) { s->set_test_data(v); }, "test file");
  Field<Str>(
      app, "--test-labels", s, [](S* s, const Str& v) { s->set_test_labels(v); },
      "test label file");
  app->add_flag_function(
      "--no-pixel-scale", [s](int64_t n) { s->set_no_pixel_scale(n > 0); },
      "keep uint8 features unscaled");
}

void AddModelFlags(CLI::App* app, v1::JobSpec* s) {
  using S = v1::JobSpec;
  app->add_flag_function(
      "--stratify,!--no-stratify", [s](int64_t n) { s->set_stratify(n > 0); },
      "split each class in the --val-split/--test-split proportions (default on)");
  app->add_flag_function(
      "--bias,!--no-bias", [s](int64_t n) { s->set_bias(n > 0); }, "fit an intercept (default on)");
  Field<std::string>(
      app, "--optimizer", s,
      [](S* s, const std::string& v) { s->set_optimizer(ParseOptimizerFlag(v)); }, "sgd|adam|lbfgs")
      ->default_str("lbfgs");
  Field<double>(
      app, "--lr", s, [](S* s, double v) { s->set_lr(v); },
      "step size (default sgd 0.1, adam 1e-3, lbfgs 1)");
  Field<double>(
      app, "--momentum", s, [](S* s, double v) { s->set_momentum(v); }, "SGD momentum")
      ->default_str("0");
  app->add_flag_function(
      "--nesterov", [s](int64_t n) { s->set_nesterov(n > 0); }, "Nesterov momentum (SGD)");
  Field<int64_t>(
      app, "--batch-size", s, [](S* s, int64_t v) { s->set_batch_size(v); },
      "global rows per step (SGD/Adam)")
      ->default_str("256");
  Field<int64_t>(
      app, "--epochs", s, [](S* s, int64_t v) { s->set_epochs(v); },
      "epochs (SGD/Adam, default 10) / max iterations (L-BFGS, default 1000)");
  Field<double>(
      app, "--tol", s, [](S* s, double v) { s->set_tol(v); }, "stopping tolerance")
      ->default_str("1e-06");
  Field<double>(
      app, "--C", s, [](S* s, double v) { s->set_c(v); },
      "scikit-learn's C, inverse regularisation: l2 = 1/(C n_train) after the split "
      "(default 1 unless --l1/--l2/--penalty none)");
  Field<std::string>(
      app, "--penalty", s, [](S* s, const std::string& v) { s->set_penalty(v); },
      "l2 (default, C = 1) or none (no penalty)");
  Field<double>(
      app, "--l1", s, [](S* s, double v) { s->set_l1(v); }, "L1 penalty (default 0)");
  Field<double>(
      app, "--l2", s, [](S* s, double v) { s->set_l2(v); },
      "L2 penalty on the mean loss, instead of --C");
  Field<std::string>(
      app, "--class-weight", s, [](S* s, const std::string& v) { s->set_class_weight(v); },
      "balanced or k=v,...");
  app->add_flag_function(
      "--standardize", [s](int64_t n) { s->set_standardize(n > 0); },
      "standardise features (folded into the model)");
  Field<uint64_t>(
      app, "--seed", s, [](S* s, uint64_t v) { s->set_seed(v); }, "random seed")
      ->default_str("0");
  Field<int64_t>(
      app, "--early-stopping-patience", s,
      [](S* s, int64_t v) { s->set_early_stopping_patience(v); },
      "epochs without improvement (0 = off)");
  Field<std::string>(
      app, "--precision", s,
      [](S* s, const std::string& v) { s->set_precision(ParsePrecisionFlag(v)); },
      "auto|float32|float64|mixed")
      ->default_str("auto");
  Field<int64_t>(
      app, "--lbfgs-history", s, [](S* s, int64_t v) { s->set_lbfgs_history(v); },
      "L-BFGS memory (0 = auto: up to 100 pairs)")
      ->default_str("0");
}

void AddServiceFlags(CLI::App* app, v1::JobSpec* s) {
  using S = v1::JobSpec;
  Field<int32_t>(
      app, "--workers", s, [](S* s, int32_t v) { s->set_workers(v); },
      "worker processes (server mode)")
      ->default_str("1");
  Field<std::string>(
      app, "--device", s, [](S* s, const std::string& v) { s->set_device(v); }, "cpu|cuda[:N]|auto")
      ->default_str("cpu");
  Field<int64_t>(
      app, "--checkpoint-every", s, [](S* s, int64_t v) { s->set_checkpoint_every(v); },
      "server mode: send a checkpoint every N epochs (SGD/Adam) or iterations (L-BFGS); "
      "0 = never (default: the server's --checkpoint-every)");
  Field<int32_t>(
      app, "--max-retries", s, [](S* s, int32_t v) { s->set_max_retries(v); },
      "server mode: retries after a lost worker or failed collective, resuming from the "
      "latest checkpoint")
      ->default_str("3");
  Field<int32_t>(
      app, "--min-workers", s, [](S* s, int32_t v) { s->set_min_workers(v); },
      "server mode: a retried attempt may run on this few workers (default: --workers)");
  Field<std::string>(
      app, "--name", s, [](S* s, const std::string& v) { s->set_name(v); },
      "a label for people (shown by 'logit status', selected by 'logit jobs --name')");
  app->add_option_function<std::vector<std::string>>(
      "--label",
      [s](const std::vector<std::string>& values) {
        for (const std::string& v : values) {
          auto pairs = ParseLabelPairs(v);
          if (!pairs.ok()) {
            throw CLI::ValidationError("--label", std::string(pairs.status().message()));
          }
          for (const auto& [key, value] : *pairs) (*s->mutable_job_labels())[key] = value;
        }
      },
      "KEY=VALUE label of the job (repeatable, or k=v,k2=v2), selected by 'logit jobs -l'");
  Field<double>(
      app, "--deadline", s, [](S* s, double v) { s->set_deadline_seconds(v); },
      "server mode: fail the job when it has not finished this many seconds after "
      "submission (0 = no deadline)");
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseLabelPairs(
    const std::string& text) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", item, "' is not KEY=VALUE (e.g. team=search)"));
    }
    pairs.emplace_back(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
  }
  return pairs;
}

void AddJobFlags(CLI::App* app, v1::JobSpec* spec) {
  AddDataFlags(app, spec);
  AddModelFlags(app, spec);
  AddServiceFlags(app, spec);
}

void AddLocalRunFlags(CLI::App* app, LocalRunFlags* f) {
  app->add_option("--save-model", f->save_model, "write the model (.npz, .safetensors, .onnx)");
  app->add_option("--threads", f->threads, "compute threads (0 = all cores, shared by the ranks)");
}

std::string FlagMessage(const absl::Status& status) {
  std::string msg(status.message());
  const std::optional<std::string> field = ErrorField(status);
  if (!field || msg.compare(0, field->size() + 1, *field + ":") != 0) return msg;
  const std::string flag = *field == "deadline_seconds" ? "deadline"
                           : *field == "job_labels"     ? "label"
                           : *field == "c"              ? "C"
                                                        : absl::StrReplaceAll(*field, {{"_", "-"}});
  return absl::StrCat("--", flag, msg.substr(field->size()));
}

std::string EpochLine(const EpochRecord& e, int64_t total_epochs, bool iterations) {
  std::string line = iterations ? absl::StrCat("iter ", e.epoch, " (max ", total_epochs, ")")
                                : absl::StrCat("epoch ", e.epoch, "/", total_epochs);
  absl::StrAppend(&line, "  loss ", Fixed(e.train_loss, 6), "  objective ", Fixed(e.objective, 6));
  if (!std::isnan(e.val_loss)) {
    absl::StrAppend(&line, "  val_loss ", Fixed(e.val_loss, 6), "  val_acc ",
                    Fixed(100 * e.val_accuracy, 2), "%");
  }
  absl::StrAppend(&line, "  (", Fixed(e.seconds, 3), "s)");
  return line;
}

}  // namespace logit
