#include "client/cli.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/job.h"
#include "worker/model_io.h"

namespace logit {

namespace {

// Flag values of `logit train`, before conversion into DataConfig / TrainOptions.
struct TrainFlags {
  bool local = false;
  std::string data, labels, format, label_column;
  int64_t classes = 0, features = 0;
  bool bias = true;
  std::string optimizer = "lbfgs";
  std::optional<double> lr;
  double momentum = 0;
  bool nesterov = false;
  int64_t batch_size = 256;
  std::optional<int64_t> epochs;
  double tol = 1e-6, l1 = 0, l2 = 0;
  std::string class_weight;
  double val_split = 0, test_split = 0;
  std::string val_data, val_labels, test_data, test_labels;
  bool standardize = false;
  int workers = 1;
  std::string device = "cpu";
  uint64_t seed = 0;
  int64_t checkpoint_every = 0;
  int64_t patience = 0;
  std::string save_model;
  int threads = 0;
  std::string precision = "auto";
  bool no_pixel_scale = false;
  int64_t lbfgs_history = 0;
};

struct PredictFlags {
  std::string model, model_file, input, format, out, labels, label_column;
};

struct Globals {
  std::string server;
  std::string output = "table";
};

// An error in the flag values: exit 2.
struct UsageError {
  std::string message;
};

absl::StatusOr<std::pair<DataConfig, TrainOptions>> BuildJob(const TrainFlags& f) {
  DataConfig dc;
  for (const std::string* p : {&f.data, &f.val_data, &f.test_data}) {
    if (absl::StartsWith(*p, "dataset:") || absl::StartsWith(*p, "server:")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--data: '", *p, "' names a server-side dataset; --local needs a local file"));
    }
  }
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
  if (f.workers != 1) {
    return absl::InvalidArgumentError("--workers: --local trains in one process; use 1");
  }
  if (f.checkpoint_every < 0) return absl::InvalidArgumentError("--checkpoint-every: must be >= 0");
  return std::make_pair(dc, o);
}

// Converts an option name in a status message ("batch_size: ...") into its flag spelling.
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

int RunTrain(const TrainFlags& f, const Globals& g, std::ostream& out, std::ostream& err) {
  if (!f.local) {
    err << "logit train: the server-backed mode is not available yet in this build; "
           "use --local to train in-process\n";
    return kExitUsage;
  }
  auto job = BuildJob(f);
  if (!job.ok()) {
    err << "logit train: " << FlagMessage(job.status()) << "\n";
    return kExitUsage;
  }
  const auto& [dc, opts] = *job;
  const bool json = g.output == "json";
  const int64_t total_epochs = EffectiveEpochs(opts);
  err << "logit: " << DescribeComputeBackend() << "\n";
  auto on_epoch = [&](const EpochRecord& e) {
    if (json) return;
    out << "epoch " << e.epoch << "/" << total_epochs << "  loss " << Fixed(e.train_loss, 6)
        << "  objective " << Fixed(e.objective, 6);
    if (!std::isnan(e.val_loss)) {
      out << "  val_loss " << Fixed(e.val_loss, 6) << "  val_acc " << Fixed(100 * e.val_accuracy, 2)
          << "%";
    }
    out << "  (" << Fixed(e.seconds, 3) << "s)" << std::endl;
  };
  auto outcome = RunTrainingJob(dc, opts, on_epoch);
  if (!outcome.ok()) {
    err << "logit train: " << FlagMessage(outcome.status()) << "\n";
    if (json) {
      out << nlohmann::json{{"job_id", "local"},
                            {"state", "FAILED"},
                            {"error", std::string(outcome.status().message())}}
                 .dump()
          << "\n";
    }
    return absl::IsInvalidArgument(outcome.status()) &&
                   absl::StartsWith(outcome.status().message(), "device")
               ? kExitUsage
               : kExitJobFailed;
  }
  nlohmann::json summary = SummaryJson(*outcome, opts);
  if (!f.save_model.empty()) {
    absl::Status st = SaveModel(outcome->result.model, f.save_model, summary.dump());
    if (!st.ok()) {
      err << "logit train: " << FlagMessage(st) << "\n";
      return kExitJobFailed;
    }
  }
  const TrainResult& r = outcome->result;
  if (json) {
    nlohmann::json line = summary;
    line.erase("history");
    line["job_id"] = "local";
    line["state"] = "SUCCEEDED";
    line["model_id"] = f.save_model;
    out << line.dump() << "\n";
  } else {
    out << "stopped: " << r.stop_reason << " after " << r.epochs_run << " epochs, "
        << r.function_evaluations << " evaluations, " << Fixed(r.wall_seconds, 2) << "s\n";
    out << "objective " << Fixed(r.objective, 8) << "  train_loss " << Fixed(r.train_loss, 6)
        << "\n";
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
    if (!f.save_model.empty()) out << "model written to " << f.save_model << "\n";
  }
  return kExitOk;
}

int RunPredict(const PredictFlags& f, const Globals& g, std::ostream& out, std::ostream& err) {
  if (f.model_file.empty()) {
    err << "logit predict: --model (server) is not available yet in this build; use --model-file\n";
    return kExitUsage;
  }
  auto model = LoadModel(f.model_file);
  if (!model.ok()) {
    err << "logit predict: --model-file: " << model.status().message() << "\n";
    return kExitJobFailed;
  }
  ReadOptions ro;
  ro.path = f.input;
  ro.labels_path = f.labels;
  auto fmt = ParseDataFormat(f.format);
  if (!fmt.ok()) {
    err << "logit predict: " << FlagMessage(fmt.status()) << "\n";
    return kExitUsage;
  }
  ro.format = *fmt;
  ro.label_column = f.label_column;
  ro.num_features = model->num_features;
  ro.classes = model->num_classes;
  ro.require_labels = false;
  auto data = ReadDataset(ro);
  if (!data.ok()) {
    err << "logit predict: " << data.status().message() << "\n";
    return kExitJobFailed;
  }
  auto proba = PredictProba(*model, *data);
  if (!proba.ok()) {
    err << "logit predict: " << proba.status().message() << "\n";
    return kExitJobFailed;
  }
  std::ofstream file;
  if (!f.out.empty()) {
    file.open(f.out);
    if (!file) {
      err << "logit predict: --out: cannot write " << f.out << "\n";
      return kExitUsage;
    }
  }
  std::ostream& dst = f.out.empty() ? out : file;
  const int64_t k = model->num_classes;
  if (g.output == "json") {
    for (int64_t i = 0; i < data->num_rows; ++i) {
      const float* p = proba->data() + i * k;
      nlohmann::json row = {{"label", std::max_element(p, p + k) - p},
                            {"probabilities", std::vector<float>(p, p + k)}};
      dst << row.dump() << "\n";
    }
  } else {
    dst << "label";
    for (int64_t j = 0; j < k; ++j) dst << ",p_" << j;
    dst << "\n" << std::setprecision(9);
    for (int64_t i = 0; i < data->num_rows; ++i) {
      const float* p = proba->data() + i * k;
      dst << (std::max_element(p, p + k) - p);
      for (int64_t j = 0; j < k; ++j) dst << "," << p[j];
      dst << "\n";
    }
  }
  return kExitOk;
}

}  // namespace

int RunCli(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"logit: logistic regression at any scale", "logit"};
  app.require_subcommand(1);
  Globals g;
  if (const char* env = std::getenv("LOGIT_SERVER")) g.server = env;
  app.add_option("--server", g.server, "coordinator address HOST:PORT (env LOGIT_SERVER)");
  app.add_option("-o,--output-format", g.output, "printed format")
      ->check(CLI::IsMember({"table", "json"}));

  TrainFlags tf;
  CLI::App* train = app.add_subcommand("train", "train a model (in-process with --local)");
  train->footer(
      "Examples:\n"
      "  logit train --local --data iris.csv --label-column target --save-model iris.npz\n"
      "  logit train --local --data /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz "
      "\\\n"
      "      --labels /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz \\\n"
      "      --optimizer adam --batch-size 256 --epochs 10 --val-split 0.1 -o json");
  train->add_flag("--local", tf.local, "train in this process, without a server");
  train->add_option("--data", tf.data, "training data file")->required();
  train->add_option("--labels", tf.labels, "label file (.npy / IDX data)");
  train->add_option("--format", tf.format, "csv|libsvm|npy|idx (default: from the file name)");
  train->add_option("--label-column", tf.label_column,
                    "CSV label column: name or index (default: last)");
  train->add_option("--classes", tf.classes, "number of classes (default: max label + 1)");
  train->add_option("--features", tf.features, "number of features (default: inferred)");
  train->add_flag("--bias,!--no-bias", tf.bias, "fit an intercept (default on)");
  train->add_option("--optimizer", tf.optimizer, "sgd|adam|lbfgs")->capture_default_str();
  train->add_option("--lr", tf.lr, "step size (default sgd 0.1, adam 1e-3, lbfgs 1)");
  train->add_option("--momentum", tf.momentum, "SGD momentum")->capture_default_str();
  train->add_flag("--nesterov", tf.nesterov, "Nesterov momentum (SGD)");
  train->add_option("--batch-size", tf.batch_size, "rows per step (SGD/Adam)")
      ->capture_default_str();
  train->add_option("--epochs", tf.epochs,
                    "epochs (SGD/Adam, default 10) / max iterations (L-BFGS, default 1000)");
  train->add_option("--tol", tf.tol, "stopping tolerance")->capture_default_str();
  train->add_option("--l1", tf.l1, "L1 penalty")->capture_default_str();
  train->add_option("--l2", tf.l2, "L2 penalty (scikit-learn C: l2 = 1/(C n))")
      ->capture_default_str();
  train->add_option("--class-weight", tf.class_weight, "balanced or k=v,...");
  train->add_option("--val-split", tf.val_split, "fraction held out for validation");
  train->add_option("--test-split", tf.test_split, "fraction held out for testing");
  train->add_option("--val-data", tf.val_data, "validation file");
  train->add_option("--val-labels", tf.val_labels, "validation label file");
  train->add_option("--test-data", tf.test_data, "test file");
  train->add_option("--test-labels", tf.test_labels, "test label file");
  train->add_flag("--standardize", tf.standardize, "standardise features (folded into the model)");
  train->add_option("--workers", tf.workers, "worker processes (server mode)")
      ->capture_default_str();
  train->add_option("--device", tf.device, "cpu|cuda[:N]|auto")->capture_default_str();
  train->add_option("--seed", tf.seed, "random seed")->capture_default_str();
  train->add_option("--checkpoint-every", tf.checkpoint_every,
                    "checkpoint period in epochs (server mode)");
  train->add_option("--early-stopping-patience", tf.patience,
                    "epochs without improvement (0 = off)");
  train->add_option("--save-model", tf.save_model, "write the model (.npz)");
  train->add_option("--threads", tf.threads, "compute threads (0 = all cores)");
  train->add_option("--precision", tf.precision, "auto|float32|float64")->capture_default_str();
  train
      ->add_option("--lbfgs-history", tf.lbfgs_history, "L-BFGS memory (0 = auto: up to 100 pairs)")
      ->capture_default_str();
  train->add_flag("--no-pixel-scale", tf.no_pixel_scale, "keep uint8 features unscaled");

  PredictFlags pf;
  CLI::App* predict = app.add_subcommand("predict", "predict classes and probabilities");
  predict->footer(
      "Examples:\n"
      "  logit predict --model-file iris.npz --input iris.csv --label-column target\n"
      "  logit predict --model-file m.npz --input rows.csv --out pred.csv");
  auto* model_opt = predict->add_option("--model", pf.model, "model id on the server");
  auto* file_opt = predict->add_option("--model-file", pf.model_file, "local model file (.npz)");
  model_opt->excludes(file_opt);
  predict->add_option("--input", pf.input, "rows to predict")->required();
  predict->add_option("--format", pf.format, "csv|libsvm|npy|idx");
  predict->add_option("--labels", pf.labels, "label file of .npy / IDX input (optional)");
  predict->add_option("--label-column", pf.label_column, "CSV label column to skip, if present");
  predict->add_option("--out", pf.out, "write predictions to this file");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help requests exit 0 (printed for the selected subcommand); anything else is a usage error.
    app.exit(e, out, err);
    if (e.get_exit_code() == 0) return kExitOk;
    err << "run 'logit --help' or 'logit SUBCOMMAND --help' for usage\n";
    return kExitUsage;
  }
  if (train->parsed()) return RunTrain(tf, g, out, err);
  if (predict->parsed()) return RunPredict(pf, g, out, err);
  return kExitUsage;
}

}  // namespace logit
