#include "client/cli.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "client/cli_support.h"
#include "client/job_file.h"
#include "client/local_trainer.h"
#include "client/manage.h"
#include "client/output.h"
#include "client/remote.h"
#include "nlohmann/json.hpp"
#include "worker/common/status.h"
#include "worker/job_cli.h"
#include "worker/job_spec.h"
#include "worker/kernel/metrics.h"
#include "worker/model/model_io.h"
#include "worker/model/predict.h"
#include "worker/summary.h"

namespace logit {

namespace {

// Flag values of `logit train`: the shared training flags plus the CLI's own.
struct TrainFlags {
  v1::JobSpec spec;   // the training flags and -f file
  LocalRunFlags run;  // --save-model, --threads (--local)
  bool local = false;
  bool detach = false;
};

struct PredictFlags {
  std::string model, model_file, input, format, out, labels, label_column;
  int64_t piece_bytes = int64_t{64} << 20;
};

struct Globals {
  ConnectOptions connect;  // --server, --token-file / LOGIT_TOKEN, --tls-*
  std::string token_file;
  std::string output = "table";
  bool verbose = false;  // -v
};

// An error in the flag values: exit 2.
struct UsageError {
  std::string message;
};

// The exit code of a failed --local job: a usage error for a bad device request (the flag
// names what this machine cannot do), a failed job otherwise.
int LocalFailureCode(const absl::Status& st) {
  return absl::IsInvalidArgument(st) && ErrorField(st) == "device" ? kExitUsage : kExitJobFailed;
}

// The plan of a --local job: local files only, one process.
absl::StatusOr<JobPlan> PlanLocalJob(const TrainFlags& f) {
  const v1::JobSpec& s = f.spec;
  for (const std::string* p : {&s.data(), &s.val_data(), &s.test_data()}) {
    if (absl::StartsWith(*p, "dataset:") || absl::StartsWith(*p, "server:")) {
      return FieldError("data", absl::StrCat("'", *p,
                                             "' names a server-side dataset; --local needs a "
                                             "local file"));
    }
  }
  ASSIGN_OR_RETURN(JobPlan plan, PlanJob(s));
  if (plan.workers != 1) return FieldError("workers", "--local trains in one process; use 1");
  plan.train.threads = f.run.threads;
  RETURN_IF_ERROR(ValidateTrainOptions(plan.train));
  return plan;
}

int RunLocalTrain(const TrainFlags& f, const Globals& g, OutputFormat format, std::ostream& out,
                  std::ostream& err) {
  absl::StatusOr<JobPlan> plan = PlanLocalJob(f);
  if (!plan.ok()) {
    err << "logit train: " << FlagMessage(plan.status()) << "\n";
    return kExitUsage;
  }
  auto trainer = LoadLocalTrainer();
  if (!trainer.ok()) {
    err << "logit train: " << trainer.status().message() << "\n";
    return kExitJobFailed;
  }
  const bool json = format != OutputFormat::kTable;
  const int64_t total_epochs = EffectiveEpochs(plan->train);
  const bool iterations = plan->train.optimizer == OptimizerKind::kLbfgs;
  if (g.verbose) err << "logit: " << (*trainer)->describe_backend() << "\n";
  auto on_epoch = [&](const EpochRecord& e) {
    if (!json) out << EpochLine(e, total_epochs, iterations) << std::endl;
  };
  auto outcome = (*trainer)->run(plan->data, plan->train, on_epoch);
  if (!outcome.ok()) {
    err << "logit train: " << FlagMessage(outcome.status()) << "\n";
    if (json) {
      v1::Job job;
      job.set_id("local");
      job.set_state(v1::FAILED);
      job.set_reason(std::string(outcome.status().message()));
      PrintStructured(JobJson(job), format, out);
    }
    return LocalFailureCode(outcome.status());
  }
  const v1::TrainingSummary summary = MakeSummary(*outcome, plan->train);
  const std::string& save = f.run.save_model;
  if (!save.empty()) {
    absl::Status st = SaveModel(outcome->result.model, save, SummaryToJson(summary).dump());
    if (!st.ok()) {
      err << "logit train: " << FlagMessage(st) << "\n";
      return kExitJobFailed;
    }
  }
  if (json) {
    // The same job object a server prints; its model is the file written, if any.
    v1::Job job;
    job.set_id("local");
    job.set_state(v1::SUCCEEDED);
    *job.mutable_spec() = f.spec;
    job.set_model_id(save);
    *job.mutable_result() = ResultFromSummary(summary);
    PrintStructured(JobJson(job), format, out);
  } else {
    PrintResultTable(summary, out);
    PrintMetricsTable(summary, out);  // as a server job's end prints it
    if (!save.empty()) out << "model written to " << save << "\n";
  }
  for (const std::string& w : summary.warnings()) err << "logit train: warning: " << w << "\n";
  return kExitOk;
}

int RunPredict(const PredictFlags& f, const Globals& g, std::ostream& out, std::ostream& err) {
  std::optional<LinearModel> model;
  if (!f.model_file.empty()) {
    auto loaded = LoadModel(f.model_file);
    if (!loaded.ok()) {
      err << "logit predict: --model-file: " << loaded.status().message() << "\n";
      return kExitJobFailed;
    }
    model = std::move(*loaded);
  } else if (f.model.empty()) {
    err << "logit predict: give --model ID (on the server) or --model-file FILE\n";
    return kExitUsage;
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
  // The model fixes the feature count (sparse rows may show fewer), the classes and the names
  // string labels map to.
  google::protobuf::RepeatedPtrField<std::string> class_names;
  if (model) {
    ro.num_features = model->num_features;
    ro.classes = model->num_classes;
    class_names.Add(model->class_names.begin(), model->class_names.end());
  } else {
    auto info = RemoteModelInfo(g.connect, f.model);
    if (!info.ok()) {
      err << "logit predict: " << info.status().message() << "\n";
      return absl::IsUnavailable(info.status()) ? kExitUnreachable
             : absl::IsNotFound(info.status())  ? kExitNotFound
                                                : kExitJobFailed;
    }
    ro.num_features = info->num_features();
    ro.classes = info->num_classes();
    class_names = info->summary().class_names();
  }
  ro.class_names.assign(class_names.begin(), class_names.end());
  ro.require_labels = false;
  // A row's predicted class as printed: its name, or its index.
  auto class_label = [&](int64_t k) -> nlohmann::json {
    if (k < class_names.size()) return class_names.Get(static_cast<int>(k));
    return k;
  };
  // A CSV field (one with a comma, a quote or a line break is quoted whole, RFC 4180).
  auto csv_field = [](const std::string& text) -> std::string {
    if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
    return absl::StrCat("\"", absl::StrReplaceAll(text, {{"\"", "\"\""}}), "\"");
  };
  auto label_text = [&](int64_t k) -> std::string {
    return k < class_names.size() ? class_names.Get(static_cast<int>(k)) : std::to_string(k);
  };
  std::ofstream file;
  if (!f.out.empty()) {
    file.open(f.out);
    if (!file) {
      err << "logit predict: --out: cannot write " << f.out << "\n";
      return kExitUsage;
    }
  }
  std::ostream& dst = f.out.empty() ? out : file;
  // Large inputs go through in pieces of about --piece-bytes of file (the readers' row shards),
  // so memory stays bounded whatever the input size.
  std::error_code ec;
  const uintmax_t bytes = std::filesystem::file_size(f.input, ec);
  const uintmax_t piece_bytes = static_cast<uintmax_t>(std::max<int64_t>(1, f.piece_bytes));
  const int pieces =
      ec ? 1 : static_cast<int>(std::max<uintmax_t>(1, (bytes + piece_bytes - 1) / piece_bytes));
  const bool structured = g.output != "table";
  const OutputFormat out_format =
      structured ? ParseOutputFormat(g.output).value_or(OutputFormat::kJson) : OutputFormat::kTable;
  // Rows that carry labels are evaluated: sums over the pieces, and for binary models every
  // row's score (ROC AUC ranks all rows at once; 16 bytes a row).
  MetricSums sums;
  int64_t evaluated_classes = 0;
  std::vector<double> scores;
  std::vector<int64_t> positive;
  bool header = false;
  for (int piece = 0; piece < pieces; ++piece) {
    ro.rank = piece;
    ro.world = pieces;
    auto data = ReadDataset(ro);
    if (!data.ok()) {
      err << "logit predict: " << data.status().message() << "\n";
      return kExitJobFailed;
    }
    if (class_names.empty() && !data->class_names.empty()) {
      err << "logit predict: " << f.input << ": the labels are names ('"
          << data->class_names.front()
          << "', ...) but the model was trained on numeric labels (class indices)\n";
      return kExitJobFailed;
    }
    int64_t k = 0;
    absl::StatusOr<std::vector<float>> proba;
    if (model) {
      proba = PredictProba(*model, *data);
      k = model->num_classes;
    } else {
      proba = RemotePredict(g.connect, f.model, *data, &k);
    }
    if (!proba.ok()) {
      err << "logit predict: " << proba.status().message() << "\n";
      return absl::IsUnavailable(proba.status()) ? kExitUnreachable : kExitJobFailed;
    }
    if (data->has_labels && data->num_rows > 0 &&
        static_cast<int64_t>(data->labels.size()) == data->num_rows) {
      if (evaluated_classes != 0 && evaluated_classes != k) {
        err << "logit predict: the model's class count changed from " << evaluated_classes << " to "
            << k << " during prediction\n";
        return kExitJobFailed;
      }
      evaluated_classes = k;
      const MetricSums s = AccumulateMetrics(*proba, data->labels, k);
      sums.rows += s.rows;
      sums.loss += s.loss;
      sums.weight += s.weight;
      sums.correct += s.correct;
      sums.confusion.resize(s.confusion.size(), 0);
      for (size_t j = 0; j < s.confusion.size(); ++j) sums.confusion[j] += s.confusion[j];
      if (k == 2) {
        for (int64_t i = 0; i < data->num_rows; ++i) {
          scores.push_back((*proba)[i * 2 + 1]);
          positive.push_back(data->labels[i] == 1);
        }
      }
    }
    if (structured) {
      for (int64_t i = 0; i < data->num_rows; ++i) {
        const float* p = proba->data() + i * k;
        nlohmann::json row = {{"label", class_label(std::max_element(p, p + k) - p)},
                              {"probabilities", std::vector<float>(p, p + k)}};
        PrintStructured(row, out_format, dst);
      }
      continue;
    }
    if (!header) {
      dst << "label";
      for (int64_t j = 0; j < k; ++j) dst << "," << csv_field("p_" + label_text(j));
      dst << "\n" << std::setprecision(9);
      header = true;
    }
    for (int64_t i = 0; i < data->num_rows; ++i) {
      const float* p = proba->data() + i * k;
      dst << csv_field(label_text(std::max_element(p, p + k) - p));
      for (int64_t j = 0; j < k; ++j) dst << "," << p[j];
      dst << "\n";
    }
  }
  if (file.is_open()) {
    file.close();
    if (!file) {
      err << "logit predict: --out: writing " << f.out << " failed\n";
      return kExitJobFailed;
    }
  }
  if (evaluated_classes == 0) return kExitOk;
  // The evaluation goes where the predictions do not, so that either stays machine-readable:
  // stdout when they went to --out, stderr when they went to stdout.
  std::ostream& report = f.out.empty() ? err : out;
  const v1::ClassificationMetrics metrics = MetricsProto(MetricsFromSums(
      sums, evaluated_classes, evaluated_classes == 2 ? RocAuc(scores, positive) : -1));
  if (structured) {
    PrintStructured(nlohmann::json{{"metrics", MessageJson(metrics)}}, out_format, report);
  } else {
    PrintEvaluation("eval", metrics, class_names, report);
  }
  return kExitOk;
}

}  // namespace

int RunCli(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"logit: logistic regression at any scale", "logit"};
  app.require_subcommand(1);
  // Global flags may come anywhere on the line, before or after the subcommand (as kubectl's):
  // a subcommand passes flags it does not know to its parent.
  app.fallthrough();
  app.set_version_flag("--version", absl::StrCat("logit ", LOGIT_VERSION));
  Globals g;
  std::string server_flag, output_flag;
  app.add_option("--server", server_flag,
                 absl::StrCat("coordinator address HOST:PORT (env LOGIT_SERVER; default ",
                              kDefaultServer, ")"));
  app.add_option("--token-file", g.token_file,
                 "file holding the bearer token the server wants (default: env LOGIT_TOKEN)");
  app.add_option("--tls-ca", g.connect.tls_ca_file,
                 "PEM CA that signed the server's certificate: connect with TLS");
  app.add_option("--tls-cert", g.connect.tls_cert_file, "PEM client certificate (mutual TLS)");
  app.add_option("--tls-key", g.connect.tls_key_file, "PEM key of --tls-cert");
  app.add_option("-o,--output-format", output_flag, "printed format: table, json or yaml")
      ->check(CLI::IsMember({"table", "json", "yaml"}));
  app.add_flag("-v,--verbose", g.verbose, "informational lines too (BLAS, devices)");

  TrainFlags tf;
  CLI::App* train = app.add_subcommand("train", "train a model (in-process with --local)");
  train->footer(
      "Examples:\n"
      "  logit train --local --data iris.csv --label-column target --save-model iris.npz\n"
      "  logit train --local --data /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz "
      "\\\n"
      "      --labels /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz \\\n"
      "      --optimizer adam --batch-size 256 --epochs 2 --val-split 0.1 -o json\n"
      "  logit train --data iris.csv --label-column target --workers 2 --save-model iris.onnx\n"
      "  logit train --data iris.csv --label-column target --name nightly --label team=search");
  train->add_flag("--local", tf.local, "train in this process, without a server");
  train->add_flag("--detach", tf.detach, "submit, print the job id and return");
  std::string job_file;
  train->add_option("-f,--file", job_file,
                    "job spec file (.yaml/.json, JobSpec fields); flags given too override it");
  AddJobFlags(train, &tf.spec);
  AddLocalRunFlags(train, &tf.run);

  PredictFlags pf;
  CLI::App* predict = app.add_subcommand("predict", "predict classes and probabilities");
  predict->footer(
      "Rows that carry labels (a CSV's label column, --labels) are evaluated too: accuracy, log\n"
      "loss, ROC AUC (binary) and per-class precision, recall, F1 and support, printed after\n"
      "the predictions: on stdout with --out, else on stderr (-o json: {\"metrics\": {...}}).\n"
      "\n"
      "Examples:\n"
      "  logit predict --model-file iris.npz --input iris.csv --label-column target\n"
      "  logit predict --model-file iris.npz --input rows.csv --out pred.csv\n"
      "  logit predict --model-file iris.onnx --input iris.csv --label-column target "
      "--out pred.csv -o json");
  auto* model_opt = predict->add_option("--model", pf.model, "model id on the server");
  auto* file_opt = predict->add_option("--model-file", pf.model_file,
                                       "local model file (.npz, .safetensors or .onnx)");
  model_opt->excludes(file_opt);
  predict->add_option("--input", pf.input, "rows to predict")->required();
  predict->add_option("--format", pf.format, "csv|libsvm|npy|idx");
  predict->add_option("--labels", pf.labels,
                      "label file of .npy / IDX input (optional): evaluate against it");
  predict->add_option("--label-column", pf.label_column,
                      "CSV label column, if present: not a feature; evaluate against it");
  predict->add_option("--out", pf.out, "write predictions to this file");
  predict
      ->add_option("--piece-bytes", pf.piece_bytes,
                   "read the input in pieces of about this many bytes of file")
      ->capture_default_str();

  std::string job_arg, upload_file, model_arg, model_file_arg, shell;
  std::vector<std::string> job_args;
  JobsFilter jobs_filter;
  int64_t watch_from = 1;
  CLI::App* jobs = app.add_subcommand("jobs", "list jobs on the server, newest first");
  jobs->add_option("--state", jobs_filter.state,
                   "only jobs in this state (queued, running, succeeded, failed, cancelled, "
                   "retrying; any case)");
  jobs->add_option("-l,--selector", jobs_filter.selector,
                   "only jobs with this label, KEY=VALUE (repeatable, or k=v,k2=v2: all must "
                   "match)");
  jobs->add_option("--name", jobs_filter.name, "only jobs with this name (train --name)");
  jobs->add_option("--limit", jobs_filter.limit, "at most this many")->capture_default_str();
  jobs->footer(
      "Examples:\n"
      "  logit jobs --state running\n"
      "  logit jobs -l team=search\n"
      "  logit jobs --name nightly -o json");
  CLI::App* status = app.add_subcommand("status", "show jobs");
  status->add_option("JOB", job_args, "job ids")->required();
  status->footer("Examples:\n  logit status job-1\n  logit status job-1 job-2 -o json");
  CLI::App* watch = app.add_subcommand("watch", "follow a job's events (re-attach)");
  watch->add_option("JOB", job_arg, "job id")->required();
  watch->add_option("--from", watch_from, "first event sequence number")->capture_default_str();
  watch->footer(
      "Examples:\n  logit watch job-1 --from 1\n"
      "  logit watch job-1 -o json    # one JSON object per event (NDJSON)");
  CLI::App* cancel = app.add_subcommand("cancel", "cancel queued or running jobs");
  cancel->add_option("JOB", job_args, "job ids")->required();
  cancel->footer("Example:\n  logit cancel job-2 job-3");
  CLI::App* upload = app.add_subcommand("upload", "stream a dataset file to the server");
  upload->add_option("FILE", upload_file, "the file")->required();
  upload->footer("Example:\n  logit upload iris.csv    # prints dataset:dataset-N for --data");
  std::string health_service;
  double health_timeout_s = 5;
  CLI::App* health = app.add_subcommand(
      "health", "the server's gRPC health status (exit 0 SERVING, 1 not serving, 3 unreachable)");
  health->add_option("--service", health_service, "a service name (default: the whole server)");
  health->add_option("--timeout", health_timeout_s, "seconds to wait for the answer")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 3600.0));
  health->footer(
      "Examples (a container HEALTHCHECK, a Kubernetes exec probe):\n"
      "  logit health\n"
      "  logit health --service logit.v1.TrainingService --timeout 2");
  CLI::App* model = app.add_subcommand("model", "trained models on the server");
  model->require_subcommand(1);
  model->footer("Example:\n  logit model get model-1 iris.npz");
  CLI::App* model_get =
      model->add_subcommand("get", "download a model (.npz, .safetensors or .onnx)");
  model_get->add_option("MODEL", model_arg, "model id")->required();
  model_get->add_option("FILE", model_file_arg, "output file; the extension picks the format")
      ->required();
  model_get->footer(
      "Examples:\n  logit model get model-1 iris.npz\n  logit model get model-1 iris.onnx");
  std::vector<std::string> rm_ids;
  CLI::App* model_rm = model->add_subcommand("rm", "delete models (weights and metadata)");
  model_rm->add_option("MODEL", rm_ids, "model ids")->required();
  model_rm->footer(
      "Example:\n  logit model rm model-2\n"
      "Exit codes: 0 all deleted, 4 one was not found, 3 server unreachable.");
  CLI::App* models = app.add_subcommand("models", "list the server's models, newest first");
  models->footer("Examples:\n  logit models\n  logit models -o json");
  std::string datasets_sha256;
  CLI::App* datasets =
      app.add_subcommand("datasets", "list the server's uploaded datasets, newest first");
  datasets->add_option("--sha256", datasets_sha256, "only datasets with this SHA-256 (hex)");
  datasets->footer(
      "Examples:\n"
      "  logit datasets\n"
      "  logit datasets --sha256 \"$(sha256sum iris.csv | cut -c1-64)\" -o json");
  CLI::App* dataset = app.add_subcommand("dataset", "uploaded datasets on the server");
  dataset->require_subcommand(1);
  dataset->footer("Example:\n  logit datasets");
  CLI::App* dataset_rm = dataset->add_subcommand(
      "rm", "delete datasets (refused while a queued or running job needs one)");
  dataset_rm->add_option("DATASET", rm_ids, "dataset ids (dataset-N or dataset:dataset-N)")
      ->required();
  dataset_rm->footer(
      "Example:\n  logit dataset rm dataset-2\n"
      "Exit codes: 0 all deleted, 1 refused (a job needs it), 4 not found, 3 server "
      "unreachable.");

  CLI::App* completion =
      app.add_subcommand("completion", "print a shell completion script (bash or zsh)");
  completion->add_option("SHELL", shell, "bash or zsh")
      ->required()
      ->check(CLI::IsMember({"bash", "zsh"}));
  completion->footer(
      "Examples:\n  source <(logit completion bash)\n"
      "  logit completion zsh > _logit    # then move _logit into a directory of $fpath");

  // Set last: subcommands created after it would inherit it.
  app.footer(absl::StrCat(
      "Settings come from flags, then the environment (LOGIT_SERVER, LOGIT_TOKEN), then the "
      "config file (",
      ConfigPath(), ": server, token_file, tls_ca, tls_cert, tls_key, output).\n"
      "Exit codes: 0 ok, 1 job failed or cancelled, 2 usage or invalid spec, 3 server "
      "unreachable or credentials refused, 4 not found.\n"
      "Examples:\n"
      "  logit train --local --data iris.csv --label-column target\n"
      "  logit jobs -o json\n"
      "  source <(logit completion bash)"));
  // A job file fills the training flags first; flags on the command line then override it.
  for (int i = 1; i + 1 < argc; ++i) {
    const std::string a = argv[i];
    if (a != "-f" && a != "--file") continue;
    auto spec = LoadJobFile(argv[i + 1]);
    if (!spec.ok()) {
      err << "logit train: " << FlagMessage(spec.status()) << "\n";
      return kExitUsage;
    }
    tf.spec = *spec;  // the flags parsed below override its fields
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help and --version exit 0 (printed for the selected subcommand); anything else is a usage
    // error, with a suggestion for a mistyped command or flag.
    if (e.get_exit_code() == 0) {
      app.exit(e, out, err);
      return kExitOk;
    }
    const std::string hint = Suggestion(app, argc, argv);
    if (!hint.empty()) {
      err << "logit: " << hint << "\n";
    } else {
      app.exit(e, out, err);
    }
    err << "run 'logit --help' or 'logit SUBCOMMAND --help' for usage\n";
    return kExitUsage;
  }
  if (completion->parsed()) {
    out << CompletionScript(app, shell);
    return kExitOk;
  }

  // Flags, then the environment, then the config file, then the defaults.
  auto config = LoadConfig();
  if (!config.ok()) {
    err << "logit: " << config.status().message() << "\n";
    return kExitUsage;
  }
  const char* env_server = std::getenv("LOGIT_SERVER");
  g.connect.server = !server_flag.empty()                   ? server_flag
                     : env_server != nullptr && *env_server ? std::string(env_server)
                     : !config->server.empty()              ? config->server
                                                            : std::string(kDefaultServer);
  const char* env_token = std::getenv("LOGIT_TOKEN");
  if (g.token_file.empty() && (env_token == nullptr || !*env_token)) {
    g.token_file = config->token_file;
  }
  if (g.connect.tls_ca_file.empty()) g.connect.tls_ca_file = config->tls_ca;
  if (g.connect.tls_cert_file.empty()) g.connect.tls_cert_file = config->tls_cert;
  if (g.connect.tls_key_file.empty()) g.connect.tls_key_file = config->tls_key;
  g.output = !output_flag.empty() ? output_flag : !config->output.empty() ? config->output : "table";
  auto format = ParseOutputFormat(g.output);
  if (!format.ok()) {
    err << "logit: " << config->path << ": output: " << format.status().message() << "\n";
    return kExitUsage;
  }
  auto token = LoadToken(g.token_file);
  if (!token.ok()) {
    err << "logit: " << token.status().message() << "\n";
    return kExitUsage;
  }
  g.connect.token = *token;
  if (!(train->parsed() && tf.local) && !predict->parsed()) {
    auto dial = Dial(g.connect);  // reads the TLS files: a bad one is a usage error
    if (!dial.ok()) {
      err << "logit: " << dial.status().message() << "\n";
      return kExitUsage;
    }
  }
  RemoteOptions ro;
  ro.connect = g.connect;
  ro.output = *format;
  ro.verbose = g.verbose;
  ro.tty = &out == &std::cout && isatty(STDOUT_FILENO) && isatty(STDERR_FILENO);
  if (train->parsed()) {
    if (tf.local) {
      // Flags that only a server acts on would be ignored by an in-process run: refuse them.
      std::vector<std::string> server_only;
      for (const char* flag : {"--detach", "--checkpoint-every", "--max-retries", "--min-workers",
                               "--deadline", "--name"}) {
        if (train->count(flag) > 0) server_only.push_back(flag);
      }
      if (!server_only.empty()) {
        err << "logit train: " << absl::StrJoin(server_only, ", ")
            << (server_only.size() == 1 ? " needs" : " need")
            << " a server; --local trains in this process (drop --local to submit the job)\n";
        return kExitUsage;
      }
      return RunLocalTrain(tf, g, *format, out, err);
    }
    ro.detach = tf.detach;
    ro.save_model = tf.run.save_model;
    return RunRemoteTrain(tf.spec, ro, out, err);
  }
  if (jobs->parsed()) return RunJobs(ro, jobs_filter, out, err);
  if (health->parsed()) return RunHealth(ro, health_service, health_timeout_s, out, err);
  if (status->parsed()) return RunStatus(ro, job_args, out, err);
  if (watch->parsed()) return RunWatch(ro, job_arg, watch_from, out, err);
  if (cancel->parsed()) return RunCancel(ro, job_args, out, err);
  if (upload->parsed()) return RunUpload(ro, upload_file, out, err);
  if (model_get->parsed()) return RunModelGet(ro, model_arg, model_file_arg, out, err);
  if (model_rm->parsed()) return RunModelRm(ro, rm_ids, out, err);
  if (models->parsed()) return RunModels(ro, out, err);
  if (datasets->parsed()) return RunDatasets(ro, datasets_sha256, out, err);
  if (dataset_rm->parsed()) return RunDatasetRm(ro, rm_ids, out, err);
  if (predict->parsed()) return RunPredict(pf, g, out, err);
  return kExitUsage;
}

}  // namespace logit
