#include "worker/job_cli.h"

#include <cmath>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace logit {

void AddJobFlags(CLI::App* app, JobFlags* f) {
  app->add_option("--data", f->data, "training data file (or dataset:ID / server:PATH)");
  app->add_option("--labels", f->labels, "label file (.npy / IDX data)");
  app->add_option("--format", f->format, "csv|libsvm|npy|idx (default: from the file name)");
  app->add_option("--label-column", f->label_column,
                  "CSV label column: name or index (default: last)");
  app->add_option("--classes", f->classes, "number of classes (default: max label + 1)");
  app->add_option("--features", f->features, "number of features (default: inferred)");
  app->add_flag("--bias,!--no-bias", f->bias, "fit an intercept (default on)");
  app->add_option("--optimizer", f->optimizer, "sgd|adam|lbfgs")->capture_default_str();
  app->add_option("--lr", f->lr, "step size (default sgd 0.1, adam 1e-3, lbfgs 1)");
  app->add_option("--momentum", f->momentum, "SGD momentum")->capture_default_str();
  app->add_flag("--nesterov", f->nesterov, "Nesterov momentum (SGD)");
  app->add_option("--batch-size", f->batch_size, "global rows per step (SGD/Adam)")
      ->capture_default_str();
  app->add_option("--epochs", f->epochs,
                  "epochs (SGD/Adam, default 10) / max iterations (L-BFGS, default 1000)");
  app->add_option("--tol", f->tol, "stopping tolerance")->capture_default_str();
  app->add_option("--l1", f->l1, "L1 penalty")->capture_default_str();
  app->add_option("--l2", f->l2, "L2 penalty (scikit-learn C: l2 = 1/(C n))")
      ->capture_default_str();
  app->add_option("--class-weight", f->class_weight, "balanced or k=v,...");
  app->add_option("--val-split", f->val_split, "fraction held out for validation");
  app->add_option("--test-split", f->test_split, "fraction held out for testing");
  app->add_option("--val-data", f->val_data, "validation file");
  app->add_option("--val-labels", f->val_labels, "validation label file");
  app->add_option("--test-data", f->test_data, "test file");
  app->add_option("--test-labels", f->test_labels, "test label file");
  app->add_flag("--standardize", f->standardize, "standardise features (folded into the model)");
  app->add_option("--workers", f->workers, "worker processes (server mode)")->capture_default_str();
  app->add_option("--device", f->device, "cpu|cuda[:N]|auto")->capture_default_str();
  app->add_option("--seed", f->seed, "random seed")->capture_default_str();
  app->add_option("--checkpoint-every", f->checkpoint_every,
                  "checkpoint period in epochs (server mode)");
  app->add_option("--early-stopping-patience", f->patience, "epochs without improvement (0 = off)");
  app->add_option("--save-model", f->save_model, "write the model (.npz)");
  app->add_option("--threads", f->threads, "compute threads (0 = all cores, shared by the ranks)");
  app->add_option("--precision", f->precision, "auto|float32|float64|mixed")->capture_default_str();
  app->add_option("--lbfgs-history", f->lbfgs_history, "L-BFGS memory (0 = auto: up to 100 pairs)")
      ->capture_default_str();
  app->add_flag("--no-pixel-scale", f->no_pixel_scale, "keep uint8 features unscaled");
  app->add_option("--deadline", f->deadline_seconds,
                  "server mode: fail the job when it has not finished this many seconds after "
                  "submission (0 = no deadline)");
}

absl::StatusOr<std::pair<DataConfig, TrainOptions>> BuildJob(const JobFlags& f) {
  DataConfig dc;
  dc.train.path = f.data;
  dc.train.labels_path = f.labels;
  auto fmt = ParseDataFormat(f.format);
  if (!fmt.ok()) return fmt.status();
  dc.train.format = *fmt;
  dc.train.label_column = f.label_column;
  dc.train.classes = f.classes;
  dc.train.num_features = f.features;
  dc.train.pixel_scale = !f.no_pixel_scale;
  dc.val_path = f.val_data;
  dc.val_labels = f.val_labels;
  dc.test_path = f.test_data;
  dc.test_labels = f.test_labels;
  dc.val_split = f.val_split;
  dc.test_split = f.test_split;
  absl::Status st = ValidateDataConfig(dc);
  if (!st.ok()) return st;

  TrainOptions o;
  o.classes = f.classes;
  o.fit_bias = f.bias;
  auto opt = ParseOptimizer(f.optimizer);
  if (!opt.ok()) return opt.status();
  o.optimizer = *opt;
  o.lr = f.lr;
  o.momentum = f.momentum;
  o.nesterov = f.nesterov;
  o.batch_size = f.batch_size;
  o.epochs = f.epochs;
  o.tol = f.tol;
  o.l1 = f.l1;
  o.l2 = f.l2;
  o.class_weight = f.class_weight;
  o.standardize = f.standardize;
  o.early_stopping_patience = f.patience;
  o.seed = f.seed;
  o.threads = f.threads;
  o.device = f.device;
  o.lbfgs_history = f.lbfgs_history;
  auto prec = ParsePrecision(f.precision);
  if (!prec.ok()) return prec.status();
  o.precision = *prec;
  st = ValidateTrainOptions(o);
  if (!st.ok()) return st;
  if (f.workers < 1) return absl::InvalidArgumentError("workers: must be >= 1");
  if (f.checkpoint_every < 0) return absl::InvalidArgumentError("checkpoint_every: must be >= 0");
  if (!(f.deadline_seconds >= 0) || !std::isfinite(f.deadline_seconds)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "deadline_seconds: must be a finite number of seconds >= 0, got ", f.deadline_seconds));
  }
  return std::make_pair(dc, o);
}

std::string FlagMessage(const absl::Status& st) {
  std::string msg(st.message());
  const size_t colon = msg.find(':');
  if (colon != std::string::npos && colon < 40 && msg.find(' ') > colon && msg[0] != '/' &&
      msg.find('.') > colon) {
    std::string name = msg.substr(0, colon);
    if (!absl::StartsWith(name, "--")) {
      for (char& c : name) {
        if (c == '_') c = '-';
      }
      msg = absl::StrCat("--", name, msg.substr(colon));
    }
  }
  return msg;
}

std::string Fixed(double v, int digits) {
  if (std::isnan(v)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::string EpochLine(const EpochRecord& e, int64_t total_epochs) {
  std::string line = absl::StrCat("epoch ", e.epoch, "/", total_epochs, "  loss ",
                                  Fixed(e.train_loss, 6), "  objective ", Fixed(e.objective, 6));
  if (!std::isnan(e.val_loss)) {
    absl::StrAppend(&line, "  val_loss ", Fixed(e.val_loss, 6), "  val_acc ",
                    Fixed(100 * e.val_accuracy, 2), "%");
  }
  absl::StrAppend(&line, "  (", Fixed(e.seconds, 3), "s)");
  return line;
}

void PrintResultTable(const TrainResult& r, std::ostream& out) {
  out << "stopped: " << StopReasonName(r.stop_reason) << " after " << r.epochs_run << " epochs, "
      << r.function_evaluations << " evaluations, " << Fixed(r.wall_seconds, 2) << "s\n";
  out << "objective " << Fixed(r.objective, 8) << "  train_loss " << Fixed(r.train_loss, 6) << "\n";
  auto show = [&](const char* name, const std::optional<ClassificationMetrics>& m) {
    if (!m) return;
    out << name << ": accuracy " << Fixed(100 * m->accuracy, 2) << "%  log_loss "
        << Fixed(m->log_loss, 4) << "  macro_f1 " << Fixed(m->macro_f1, 4);
    if (m->roc_auc >= 0) out << "  roc_auc " << Fixed(m->roc_auc, 4);
    out << "  (" << m->rows << " rows)\n";
  };
  show("train", r.train_metrics);
  show("val", r.val_metrics);
  show("test", r.test_metrics);
}

}  // namespace logit
