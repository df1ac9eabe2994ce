// Drives the `logit` binary as a user would: train --local, save, predict, errors, exit codes.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <memory>
#include <sstream>

#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tests/integration/subprocess.h"
#include "tests/unit/test_util.h"

namespace logit {
namespace {

using ::logit::testing::Subprocess;
using ::logit::testing::TempDir;
using ::logit::testing::TestData;

struct CliRun {
  int code = -1;
  std::string out, err;
};

std::string Slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

CliRun Logit(const TempDir& dir, const std::string& args) {
  const char* cli = std::getenv("LOGIT_CLI");
  const std::string cmd = std::string(cli ? cli : "logit") + " " + args + " > " +
                          dir.Path("stdout") + " 2> " + dir.Path("stderr") + " < /dev/null";
  CliRun r;
  const int st = std::system(cmd.c_str());
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = Slurp(dir.Path("stdout"));
  r.err = Slurp(dir.Path("stderr"));
  return r;
}

std::string LastLine(const std::string& s) {
  std::vector<std::string> lines = absl::StrSplit(s, '\n', absl::SkipEmpty());
  return lines.empty() ? "" : lines.back();
}

TEST(CliTrainLocal, TrainsSavesAndPredictsIris) {
  TempDir dir;
  const std::string model = dir.Path("iris.npz");
  CliRun r = Logit(
      dir, "-o json train --local --data " + TestData("iris.csv") +
               " --label-column target --l2 0.01 --test-split 0.2 --seed 3 --save-model " + model);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(LastLine(r.out));
  for (const char* key : {"job_id", "state", "model_id", "epochs_run", "train_loss", "objective",
                          "val_accuracy", "test_accuracy", "wall_seconds"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["state"], "SUCCEEDED");
  EXPECT_GT(j["test_accuracy"].get<double>(), 0.85);

  CliRun p = Logit(dir, "predict --model-file " + model + " --input " + TestData("iris.csv") +
                            " --label-column target --out " + dir.Path("pred.csv"));
  ASSERT_EQ(p.code, 0) << p.err;
  std::vector<std::string> lines =
      absl::StrSplit(Slurp(dir.Path("pred.csv")), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 151u);
  EXPECT_EQ(lines[0], "label,p_0,p_1,p_2");
  EXPECT_EQ(lines[1].substr(0, 2), "0,");  // the first iris is a setosa
}

TEST(CliTrainLocal, TablePrintsHistoryAndAccuracy) {
  TempDir dir;
  CliRun r =
      Logit(dir, "train --local --data " + TestData("iris.csv") +
                     " --optimizer adam --lr 0.05 --epochs 5 --batch-size 16 --val-split 0.2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("epoch 5/5"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("val_acc"), std::string::npos);
  EXPECT_NE(r.out.find("train: accuracy"), std::string::npos);
  // Informational lines (the BLAS in use) only with -v.
  EXPECT_EQ(r.err.find("blas="), std::string::npos) << r.err;
  CliRun v = Logit(dir, "train --local -v --data " + TestData("iris.csv") + " --epochs 2");
  ASSERT_EQ(v.code, 0) << v.err;
  EXPECT_NE(v.err.find("blas="), std::string::npos) << v.err;
  // L-BFGS counts iterations (its --epochs only caps them), not epochs.
  EXPECT_NE(v.out.find("iter 1 (max 2)"), std::string::npos) << v.out;
}

TEST(CliUsage, BadFlagValuesExitTwoNamingTheFlag) {
  TempDir dir;
  const std::string data = " --local --data " + TestData("iris.csv");
  CliRun r = Logit(dir, "train" + data + " --batch-size 0");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--batch-size"), std::string::npos) << r.err;
  r = Logit(dir, "train" + data + " --lr -1");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--lr"), std::string::npos) << r.err;
  r = Logit(dir, "train" + data + " --val-split 0.7 --test-split 0.5");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--val-split"), std::string::npos) << r.err;
  r = Logit(dir, "train" + data + " --optimizer newton");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--optimizer"), std::string::npos) << r.err;
  r = Logit(dir, "train --local --data x.csv --no-such-flag");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--no-such-flag"), std::string::npos) << r.err;
  r = Logit(dir, "train --local");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--data"), std::string::npos) << r.err;
}

TEST(CliTrainLocal, MalformedDataExitsOneNamingFileAndLine) {
  TempDir dir;
  const std::string bad = dir.Write("bad.csv", "a,b,y\n1,2,0\n3,oops,1\n");
  CliRun r = Logit(dir, "train --local --data " + bad);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(bad + ":3: column 2"), std::string::npos) << r.err;
}

TEST(CliPredict, FeatureCountMismatchIsAClearError) {
  TempDir dir;
  const std::string model = dir.Path("m.npz");
  ASSERT_EQ(
      Logit(dir, "train --local --data " + TestData("iris.csv") + " --save-model " + model).code,
      0);
  const std::string rows = dir.Write("rows.csv", "1,2,3\n");
  CliRun r = Logit(dir, "predict --model-file " + model + " --input " + rows);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("rows.csv"), std::string::npos) << r.err;
}

// The rows of a CSV of numbers after its header: one vector per line.
std::vector<std::vector<double>> CsvRows(const std::string& text) {
  std::vector<std::vector<double>> rows;
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<double> row;
    for (absl::string_view field : absl::StrSplit(lines[i], ',')) {
      row.push_back(std::stod(std::string(field)));
    }
    rows.push_back(row);
  }
  return rows;
}

// Accuracy and mean log loss of the predictions in `pred_csv` (label,p_0,...,p_K-1 as predict
// writes them) against the last column of `data_csv`: what `logit predict` should report.
std::pair<double, double> Evaluate(const std::string& pred_csv, const std::string& data_csv) {
  const auto pred = CsvRows(pred_csv), data = CsvRows(data_csv);
  EXPECT_EQ(pred.size(), data.size());
  int64_t correct = 0;
  double loss = 0;
  for (size_t i = 0; i < pred.size() && i < data.size(); ++i) {
    const size_t y = static_cast<size_t>(data[i].back());
    correct += static_cast<size_t>(pred[i][0]) == y;
    loss -= std::log(std::max(pred[i][1 + y], 1e-15));
  }
  return {static_cast<double>(correct) / pred.size(), loss / pred.size()};
}

std::string Fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// A .npy file (format 1.0) holding `values` of dtype `descr` and `shape`.
template <typename T>
std::string Npy(const std::string& descr, const std::string& shape, const std::vector<T>& values) {
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  return out;
}

TEST(CliPredict, OnnxModelFilePredictsLikeNpz) {
  TempDir dir;
  // The same deterministic training twice, saved in each format.
  const std::string train = "train --local --threads 1 --seed 5 --l2 0.01 --label-column target ";
  for (const char* file : {"iris.npz", "iris.onnx"}) {
    CliRun t =
        Logit(dir, train + "--data " + TestData("iris.csv") + " --save-model " + dir.Path(file));
    ASSERT_EQ(t.code, 0) << t.err;
  }
  const std::string rows = " --input " + TestData("iris.csv") + " --label-column target";
  CliRun npz = Logit(dir, "predict --model-file " + dir.Path("iris.npz") + rows);
  CliRun onnx = Logit(dir, "predict --model-file " + dir.Path("iris.onnx") + rows);
  ASSERT_EQ(npz.code, 0) << npz.err;
  ASSERT_EQ(onnx.code, 0) << onnx.err;
  EXPECT_EQ(std::count(onnx.out.begin(), onnx.out.end(), '\n'), 151);
  EXPECT_EQ(onnx.out, npz.out);
  EXPECT_EQ(onnx.err, npz.err);  // the evaluation
  // A file that is ONNX but not logit's graph is refused, naming the file.
  const std::string foreign = dir.Write("foreign.onnx", std::string("\x3a\x00", 2));  // graph {}
  CliRun bad = Logit(dir, "predict --model-file " + foreign + rows);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("foreign.onnx: not a logit model: expected"), std::string::npos)
      << bad.err;
}

TEST(CliPredict, LabelledRowsAreEvaluatedWhereThePredictionsAreNot) {
  TempDir dir;
  const std::string model = dir.Path("iris.npz");
  ASSERT_EQ(Logit(dir, "train --local --data " + TestData("iris.csv") +
                           " --label-column target --optimizer adam --lr 0.05 --epochs 3 "
                           "--save-model " +
                           model)
                .code,
            0);
  const std::string predict = "predict --model-file " + model + " --input " + TestData("iris.csv") +
                              " --label-column target";
  // --out: the predictions in the file, the evaluation on stdout.
  CliRun to_file = Logit(dir, predict + " --out " + dir.Path("pred.csv"));
  ASSERT_EQ(to_file.code, 0) << to_file.err;
  EXPECT_EQ(to_file.err, "");
  const std::string pred = Slurp(dir.Path("pred.csv"));
  const auto [accuracy, log_loss] = Evaluate(pred, Slurp(TestData("iris.csv")));
  EXPECT_GT(accuracy, 0.3);  // a short training: not perfect, so the table is not trivial
  EXPECT_NE(to_file.out.find("eval: accuracy " + Fixed(100 * accuracy, 2) + "%  log_loss " +
                             Fixed(log_loss, 4)),
            std::string::npos)
      << to_file.out << "expected accuracy " << accuracy << " log_loss " << log_loss;
  EXPECT_NE(to_file.out.find("(150 rows)"), std::string::npos) << to_file.out;
  EXPECT_NE(to_file.out.find("  class  precision  recall  f1      support\n  0      "),
            std::string::npos)
      << to_file.out;
  EXPECT_NE(to_file.out.find("weighted_f1"), std::string::npos) << to_file.out;

  // No --out: stdout holds only the predictions, the evaluation goes to stderr.
  CliRun to_stdout = Logit(dir, predict);
  ASSERT_EQ(to_stdout.code, 0) << to_stdout.err;
  EXPECT_EQ(to_stdout.out, pred);
  EXPECT_EQ(to_stdout.err, to_file.out);

  // -o json with --out: stdout is one {"metrics": ...} object, the API's ClassificationMetrics.
  CliRun json = Logit(dir, "-o json " + predict + " --out " + dir.Path("pred.ndjson"));
  ASSERT_EQ(json.code, 0) << json.err;
  std::vector<std::string> out_lines = absl::StrSplit(json.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(out_lines.size(), 1u) << json.out;
  const auto m = nlohmann::json::parse(out_lines[0], nullptr, false);
  ASSERT_TRUE(m.is_object() && m.contains("metrics")) << json.out;
  const auto& metrics = m["metrics"];
  EXPECT_EQ(metrics["rows"], 150);
  EXPECT_EQ(metrics["classes"], 3);
  EXPECT_DOUBLE_EQ(metrics["accuracy"].get<double>(), accuracy);
  EXPECT_NEAR(metrics["log_loss"].get<double>(), log_loss, 1e-6);
  EXPECT_EQ(metrics["support"], nlohmann::json({50, 50, 50}));
  EXPECT_EQ(metrics["precision"].size(), 3u);
  EXPECT_EQ(metrics["confusion"].size(), 9u);
  EXPECT_EQ(metrics["has_roc_auc"], false);
  std::vector<std::string> rows =
      absl::StrSplit(Slurp(dir.Path("pred.ndjson")), '\n', absl::SkipEmpty());
  EXPECT_EQ(rows.size(), 150u);
  // -o json without --out: the rows on stdout, the metrics object on stderr.
  CliRun json_stdout = Logit(dir, "-o json " + predict);
  ASSERT_EQ(json_stdout.code, 0) << json_stdout.err;
  EXPECT_EQ(json_stdout.out, Slurp(dir.Path("pred.ndjson")));
  EXPECT_EQ(json_stdout.err, json.out);

  // .npy rows with --labels: the same evaluation.
  std::vector<float> x;
  std::vector<int64_t> y;
  for (const auto& row : CsvRows(Slurp(TestData("iris.csv")))) {
    for (size_t j = 0; j + 1 < row.size(); ++j) x.push_back(static_cast<float>(row[j]));
    y.push_back(static_cast<int64_t>(row.back()));
  }
  const std::string xs = dir.Write("x.npy", Npy("<f4", "(150, 4)", x));
  const std::string ys = dir.Write("y.npy", Npy("<i8", "(150,)", y));
  CliRun npy = Logit(dir, "predict --model-file " + model + " --input " + xs + " --labels " + ys +
                              " --out " + dir.Path("npy.csv"));
  ASSERT_EQ(npy.code, 0) << npy.err;
  EXPECT_EQ(npy.out, to_file.out);

  // Rows without labels: predictions only, as before.
  std::string unlabelled;
  for (const auto& row : CsvRows(Slurp(TestData("iris.csv")))) {
    unlabelled += Fixed(row[0], 1) + "," + Fixed(row[1], 1) + "," + Fixed(row[2], 1) + "," +
                  Fixed(row[3], 1) + "\n";
  }
  CliRun plain =
      Logit(dir, "predict --model-file " + model + " --input " + dir.Write("rows.csv", unlabelled) +
                     " --out " + dir.Path("plain.csv"));
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_EQ(plain.out, "");
  EXPECT_EQ(plain.err, "");
  EXPECT_EQ(Slurp(dir.Path("plain.csv")), pred);
}

TEST(CliPredict, BinaryEvaluationHasRocAucAndTheClassTable) {
  TempDir dir;
  const std::string model = dir.Path("bc.onnx");
  ASSERT_EQ(Logit(dir, "train --local --data " + TestData("breast_cancer.csv") +
                           " --label-column target --standardize --l2 0.01 --save-model " + model)
                .code,
            0);
  const std::string predict = "predict --model-file " + model + " --input " +
                              TestData("breast_cancer.csv") + " --label-column target";
  CliRun table = Logit(dir, predict + " --out " + dir.Path("pred.csv"));
  ASSERT_EQ(table.code, 0) << table.err;
  const auto [accuracy, log_loss] =
      Evaluate(Slurp(dir.Path("pred.csv")), Slurp(TestData("breast_cancer.csv")));
  EXPECT_GT(accuracy, 0.9);
  EXPECT_NE(table.out.find("eval: accuracy " + Fixed(100 * accuracy, 2) + "%  log_loss " +
                           Fixed(log_loss, 4)),
            std::string::npos)
      << table.out;
  const size_t auc = table.out.find("roc_auc ");
  ASSERT_NE(auc, std::string::npos) << table.out;
  EXPECT_GT(std::stod(table.out.substr(auc + 8, 6)), 0.9) << table.out;
  EXPECT_NE(table.out.find("\n  1      "), std::string::npos) << table.out;  // class 1's row
  CliRun json = Logit(dir, "-o yaml " + predict + " --out " + dir.Path("pred.yaml"));
  ASSERT_EQ(json.code, 0) << json.err;
  EXPECT_EQ(json.out.rfind("---\nmetrics:\n", 0), 0u) << json.out;
  EXPECT_NE(json.out.find("has_roc_auc: true"), std::string::npos) << json.out;
}

TEST(CliHelp, EverySubcommandHasHelpWithExamples) {
  TempDir dir;
  for (const char* sub :
       {"train", "predict", "jobs", "status", "watch", "cancel", "upload", "health", "model",
        "model get", "model rm", "models", "datasets", "dataset rm", "completion"}) {
    CliRun r = Logit(dir, std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0);
    EXPECT_NE(r.out.find("\nExample"), std::string::npos) << sub << r.out;
  }
}

TEST(CliJobFile, YamlAndJsonSpecsWithFlagOverrides) {
  TempDir dir;
  const std::string yaml = dir.Write("job.yaml", "data: " + TestData("iris.csv") +
                                                     "\nlabel_column: target\noptimizer: adam\n"
                                                     "lr: 0.05\nepochs: 3\nbatch_size: 16\n");
  CliRun r = Logit(dir, "train --local -f " + yaml);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("epoch 3/3"), std::string::npos) << r.out;
  CliRun over = Logit(dir, "train --local -f " + yaml + " --epochs 2");
  EXPECT_NE(over.out.find("epoch 2/2"), std::string::npos) << over.out;
  const std::string json = dir.Write(
      "job.json", "{\"data\": \"" + TestData("iris.csv") +
                      "\", \"labelColumn\": \"target\", \"optimizer\": \"sgd\", \"epochs\": 2}");
  CliRun j = Logit(dir, "train --local -f " + json);
  EXPECT_EQ(j.code, 0) << j.err;
  EXPECT_NE(j.out.find("epoch 2/2"), std::string::npos);
  const std::string bad = dir.Write("bad.json", "{\"data\": \"x\", \"bogus\": 1}");
  CliRun b = Logit(dir, "train --local -f " + bad);
  EXPECT_EQ(b.code, 2);
  EXPECT_NE(b.err.find("bogus"), std::string::npos) << b.err;
  const std::string broken = dir.Write("broken.yaml", "data: [1,\n");
  CliRun y = Logit(dir, "train --local -f " + broken);
  EXPECT_EQ(y.code, 2);
  EXPECT_NE(y.err.find("broken.yaml:2"), std::string::npos) << y.err;
}

// The CLI against a real logit-server with two local workers: upload, train, follow, predict.
TEST(CliAgainstServer, UploadsTrainsFollowsAndPredicts) {
  TempDir dir;
  const char* server_bin = std::getenv("LOGIT_SERVER_BIN");
  const char* worker_bin = std::getenv("LOGIT_WORKER");
  ASSERT_TRUE(server_bin && worker_bin);
  Subprocess server({server_bin, "--listen", "127.0.0.1:0", "--local-workers", "2",
                     "--worker-binary", worker_bin, "--data-dir", dir.Path("data")},
                    dir.Path("server.out"), dir.Path("server.err"));
  std::string address;
  for (int i = 0; i < 3000 && address.empty(); ++i) {  // up to 60 s: a cold start loads LibTorch
    const std::string out = Slurp(dir.Path("server.out"));
    const size_t at = out.find("listening on ");
    if (at != std::string::npos) address = out.substr(at + 13, out.find(' ', at + 13) - at - 13);
    usleep(20000);
  }
  ASSERT_FALSE(address.empty()) << Slurp(dir.Path("server.err"));

  CliRun r = Logit(dir, "--server " + address + " -o json train --data " + TestData("iris.csv") +
                            " --label-column target --l2 0.01 --workers 2 --test-split 0.2");
  EXPECT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(LastLine(r.out), nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(j["state"], "SUCCEEDED");
  EXPECT_GT(j["test_accuracy"].get<double>(), 0.85);
  const std::string model = j["model_id"];
  EXPECT_NE(r.err.find("uploaded"), std::string::npos);

  CliRun table = Logit(dir, "--server " + address + " train --data " + TestData("iris.csv") +
                                " --label-column target --optimizer adam --epochs 3 --lr 0.05");
  EXPECT_EQ(table.code, 0) << table.err;
  EXPECT_NE(table.out.find("epoch 3/3"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("SUCCEEDED"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("precision  recall"), std::string::npos) << table.out;

  CliRun pred = Logit(dir, "--server " + address + " predict --model " + model + " --input " +
                               TestData("iris.csv") + " --label-column target");
  EXPECT_EQ(pred.code, 0) << pred.err;
  std::vector<std::string> lines = absl::StrSplit(pred.out, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 151u);
  // The rows carry labels: the evaluation follows, on stderr (stdout holds the predictions).
  EXPECT_NE(pred.err.find("eval: accuracy "), std::string::npos) << pred.err;
  EXPECT_NE(pred.err.find("(150 rows)"), std::string::npos) << pred.err;
  CliRun pred_json = Logit(dir, "--server " + address + " -o json predict --model " + model +
                                    " --input " + TestData("iris.csv") +
                                    " --label-column target --out " + dir.Path("remote.ndjson"));
  EXPECT_EQ(pred_json.code, 0) << pred_json.err;
  const auto pj = nlohmann::json::parse(LastLine(pred_json.out), nullptr, false);
  ASSERT_TRUE(pj.is_object() && pj.contains("metrics")) << pred_json.out;
  EXPECT_EQ(pj["metrics"]["rows"], 150);
  EXPECT_GT(pj["metrics"]["accuracy"].get<double>(), 0.85);

  CliRun bad = Logit(dir, "--server " + address + " train --data " + TestData("iris.csv") +
                              " --label-column target --batch-size 0 --optimizer sgd");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("--batch-size"), std::string::npos) << bad.err;
  // The server's own checks reach the user too: the field is named.
  CliRun outside = Logit(dir, "--server " + address + " train --data server:../etc/passwd");
  EXPECT_EQ(outside.code, 2);
  EXPECT_NE(outside.err.find("data"), std::string::npos) << outside.err;

  // upload -> train --detach -> watch -> status -> jobs -> model get -> local predict.
  const std::string srv = "--server " + address + " ";
  // The gRPC health protocol, as a container HEALTHCHECK or an exec probe asks it.
  CliRun health = Logit(dir, srv + "health");
  EXPECT_EQ(health.code, 0) << health.err;
  EXPECT_EQ(LastLine(health.out), "SERVING");
  CliRun health_json = Logit(dir, srv + "-o json health --service logit.v1.TrainingService");
  EXPECT_EQ(health_json.code, 0) << health_json.err;
  EXPECT_NE(health_json.out.find("\"status\":\"SERVING\""), std::string::npos) << health_json.out;
  CliRun health_unknown = Logit(dir, srv + "health --service no.such.Service");
  EXPECT_EQ(health_unknown.code, 2) << health_unknown.out;
  EXPECT_NE(health_unknown.err.find("no.such.Service"), std::string::npos) << health_unknown.err;
  CliRun up = Logit(dir, srv + "upload " + TestData("iris.csv"));
  ASSERT_EQ(up.code, 0) << up.err;
  const std::string dataset = LastLine(up.out);
  EXPECT_EQ(dataset.rfind("dataset:", 0), 0u) << dataset;
  CliRun det =
      Logit(dir, srv + "train --detach --workers 2 --label-column target --data " + dataset);
  ASSERT_EQ(det.code, 0) << det.err;
  const std::string job = LastLine(det.out);
  CliRun w = Logit(dir, srv + "watch " + job);
  EXPECT_EQ(w.code, 0) << w.err;
  EXPECT_NE(w.out.find("SUCCEEDED"), std::string::npos) << w.out;
  CliRun stat = Logit(dir, srv + "-o json status " + job);
  ASSERT_EQ(stat.code, 0) << stat.err;
  const auto sj = nlohmann::json::parse(LastLine(stat.out), nullptr, false);
  EXPECT_EQ(sj["state"], "SUCCEEDED");
  const std::string model2 = sj["model_id"];
  CliRun list = Logit(dir, srv + "jobs");
  EXPECT_EQ(list.code, 0);
  EXPECT_NE(list.out.find(job), std::string::npos) << list.out;
  CliRun get = Logit(dir, srv + "model get " + model2 + " " + dir.Path("m.npz"));
  ASSERT_EQ(get.code, 0) << get.err;
  CliRun local = Logit(dir, "predict --model-file " + dir.Path("m.npz") + " --input " +
                                TestData("iris.csv") + " --label-column target");
  CliRun remote = Logit(dir, srv + "predict --model " + model2 + " --input " +
                                 TestData("iris.csv") + " --label-column target");
  EXPECT_EQ(local.code, 0);
  EXPECT_EQ(local.out, remote.out);
  EXPECT_EQ(local.err, remote.err);  // the same evaluation
  // .safetensors from the server predicts the same locally.
  ASSERT_EQ(Logit(dir, srv + "model get " + model2 + " " + dir.Path("m.safetensors")).code, 0);
  CliRun st_local = Logit(dir, "predict --model-file " + dir.Path("m.safetensors") + " --input " +
                                   TestData("iris.csv") + " --label-column target");
  EXPECT_EQ(st_local.out, remote.out);
  // In pieces (3 here) the output is the same.
  CliRun pieces = Logit(dir, srv + "predict --model " + model2 + " --piece-bytes 1000 --input " +
                                 TestData("iris.csv") + " --label-column target");
  EXPECT_EQ(pieces.out, remote.out);
  CliRun local_pieces =
      Logit(dir, "predict --piece-bytes 700 --model-file " + dir.Path("m.npz") + " --input " +
                     TestData("iris.csv") + " --label-column target");
  EXPECT_EQ(local_pieces.out, remote.out);
  // The third way: the exported ONNX graph, read back by predict, and evaluated with numpy
  // after onnx.checker.
  ASSERT_EQ(Logit(dir, srv + "model get " + model2 + " " + dir.Path("m.onnx")).code, 0);
  CliRun onnx_local = Logit(dir, "predict --model-file " + dir.Path("m.onnx") + " --input " +
                                     TestData("iris.csv") + " --label-column target");
  EXPECT_EQ(onnx_local.code, 0) << onnx_local.err;
  EXPECT_EQ(onnx_local.out, remote.out);
  std::ofstream(dir.Path("remote.csv")) << remote.out;
  const int onnx =
      std::system(("/usr/bin/python3 " + TestData("check_onnx.py") + " " + dir.Path("m.onnx") +
                   " " + TestData("iris.csv") + " " + dir.Path("remote.csv") +
                   " --drop-column target > " + dir.Path("onnx.log") + " 2>&1")
                      .c_str());
  if (WEXITSTATUS(onnx) != 77) {  // 77: python3-onnx missing
    EXPECT_EQ(WEXITSTATUS(onnx), 0) << Slurp(dir.Path("onnx.log"));
  }
  CliRun missing = Logit(dir, srv + "status job-404");
  EXPECT_EQ(missing.code, 4);  // not found
  EXPECT_NE(missing.err.find("job-404"), std::string::npos);

  // A terminal gets a progress bar redrawn in place; a pipe gets plain lines (checked above).
  EXPECT_EQ(table.out.find('\r'), std::string::npos);
  const std::string pty_cmd = "script -qc '" + std::string(std::getenv("LOGIT_CLI")) + " " + srv +
                              "train --label-column target --optimizer sgd --batch-size 1 "
                              "--epochs 400 --data " +
                              dataset + "' /dev/null > " + dir.Path("pty.out") + " 2>&1";
  ASSERT_EQ(std::system(pty_cmd.c_str()), 0);
  const std::string pty = Slurp(dir.Path("pty.out"));
  // Inside an epoch the live bar (redrawn in place); each finished epoch a kept line that
  // first clears the bar, as Keras and Lightning print.
  EXPECT_NE(pty.find("\r\033[Kepoch "), std::string::npos) << pty;
  EXPECT_NE(pty.find("samples/s"), std::string::npos) << pty;
  for (const std::string line : {"epoch 1/400  loss", "epoch 200/400  loss", "epoch 400/400  loss"}) {
    const size_t at = pty.find(line);
    ASSERT_NE(at, std::string::npos) << line << "\n" << pty;
    EXPECT_TRUE(at > 0 && (pty[at - 1] == '\n' || pty.compare(at - 4, 4, "\r\033[K") == 0))
        << line;
  }

  // Ctrl-C detaches: the CLI exits 0 saying how to re-attach; the job keeps running.
  {
    Subprocess follow({std::getenv("LOGIT_CLI"), "--server", address, "train", "--label-column",
                       "target", "--optimizer", "sgd", "--epochs", "1000000", "--data", dataset},
                      dir.Path("follow.out"), dir.Path("follow.err"));
    for (int i = 0; i < 3000 && follow.out().find("epoch 2/") == std::string::npos; ++i) {
      usleep(20000);
    }
    follow.Kill(SIGINT);
    ASSERT_TRUE(follow.Wait(std::chrono::seconds(10)));
    EXPECT_EQ(follow.exit_code(), 0) << follow.err();
    const std::string ferr = follow.err();
    EXPECT_NE(ferr.find("Re-attach with: logit watch job-"), std::string::npos) << ferr;
    const std::string running = ferr.substr(ferr.rfind("job-"));
    const std::string id = running.substr(0, running.find_first_of(" \n;"));
    CliRun st = Logit(dir, srv + "status " + id);
    EXPECT_NE(st.out.find("RUNNING"), std::string::npos) << st.out;
    EXPECT_EQ(Logit(dir, srv + "cancel " + id).code, 0);
  }

  server.Kill(SIGTERM);
  EXPECT_TRUE(server.Wait(std::chrono::seconds(10))) << "the server did not stop";
}

// Starts a logit-server with `workers` local workers on a free port; returns its address ("" if
// it did not come up within 60 s).
std::string StartServer(const TempDir& dir, int workers, std::unique_ptr<Subprocess>* server) {
  const char* server_bin = std::getenv("LOGIT_SERVER_BIN");
  const char* worker_bin = std::getenv("LOGIT_WORKER");
  if (!server_bin || !worker_bin) return "";
  *server = std::make_unique<Subprocess>(
      std::vector<std::string>{server_bin, "--listen", "127.0.0.1:0", "--local-workers",
                               std::to_string(workers), "--worker-binary", worker_bin, "--data-dir",
                               dir.Path("data")},
      dir.Path("server.out"), dir.Path("server.err"));
  for (int i = 0; i < 3000; ++i) {  // a cold start loads LibTorch
    const std::string out = Slurp(dir.Path("server.out"));
    const size_t at = out.find("listening on ");
    if (at != std::string::npos) return out.substr(at + 13, out.find(' ', at + 13) - at - 13);
    usleep(20000);
  }
  return "";
}

// Polls `logit status JOB` until the job is in `state` (up to 60 s).
bool WaitForState(const TempDir& dir, const std::string& srv, const std::string& job,
                  const std::string& state) {
  for (int i = 0; i < 600; ++i) {
    CliRun st = Logit(dir, srv + "-o json status " + job);
    const auto j = nlohmann::json::parse(LastLine(st.out), nullptr, false);
    if (j.is_object() && j.value("state", "") == state) return true;
    usleep(100000);
  }
  return false;
}

// kubectl-style management against a real server: datasets (deduplicated uploads, listing,
// deletion refused while a job needs one), models (listing, deletion), and jobs selected by
// label, name and state.
TEST(CliAgainstServer, ListsAndDeletesModelsAndDatasetsAndSelectsJobsByLabel) {
  TempDir dir;
  std::unique_ptr<Subprocess> server;
  const std::string address = StartServer(dir, 1, &server);
  ASSERT_FALSE(address.empty()) << Slurp(dir.Path("server.err"));
  const std::string srv = "--server " + address + " ";
  const std::string iris = TestData("iris.csv");

  // Uploading the same file twice keeps one dataset.
  CliRun up = Logit(dir, srv + "upload " + iris);
  ASSERT_EQ(up.code, 0) << up.err;
  const std::string ref = LastLine(up.out);
  ASSERT_EQ(ref.rfind("dataset:", 0), 0u) << ref;
  const std::string dataset = ref.substr(8);
  EXPECT_NE(up.err.find("uploaded"), std::string::npos) << up.err;
  CliRun again = Logit(dir, srv + "upload " + iris);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(LastLine(again.out), ref);
  EXPECT_NE(again.err.find("reusing " + dataset), std::string::npos) << again.err;

  CliRun datasets = Logit(dir, srv + "-o json datasets");
  ASSERT_EQ(datasets.code, 0) << datasets.err;
  auto dj = nlohmann::json::parse(LastLine(datasets.out), nullptr, false)["datasets"];
  ASSERT_TRUE(dj.is_array()) << datasets.out;
  ASSERT_EQ(dj.size(), 1u) << datasets.out;
  EXPECT_EQ(dj[0]["id"], dataset);
  EXPECT_EQ(dj[0]["name"], "iris.csv");
  EXPECT_EQ(dj[0]["sha256"].get<std::string>().size(), 64u);
  CliRun dtable = Logit(dir, srv + "datasets");
  ASSERT_EQ(dtable.code, 0) << dtable.err;
  EXPECT_EQ(dtable.out.rfind("DATASET", 0), 0u) << dtable.out;
  EXPECT_NE(dtable.out.find("iris.csv"), std::string::npos) << dtable.out;

  // A labelled, named job that finishes; then one that keeps running on the only worker. The
  // second names the local file: the CLI finds it on the server by hash and does not upload it.
  const std::string train = srv + "train --detach --label-column target ";
  CliRun quick =
      Logit(dir, train + "--name quick --label team=search --label env=test --data " + ref);
  ASSERT_EQ(quick.code, 0) << quick.err;
  const std::string quick_job = LastLine(quick.out);
  ASSERT_EQ(Logit(dir, srv + "watch " + quick_job).code, 0);
  CliRun slow =
      Logit(dir, train + "--label team=ads --optimizer sgd --epochs 1000000 --data " + iris);
  ASSERT_EQ(slow.code, 0) << slow.err;
  const std::string slow_job = LastLine(slow.out);
  EXPECT_NE(slow.err.find("reusing " + dataset), std::string::npos) << slow.err;
  ASSERT_TRUE(WaitForState(dir, srv, slow_job, "RUNNING"));

  CliRun running = Logit(dir, srv + "jobs --state running");
  ASSERT_EQ(running.code, 0) << running.err;
  EXPECT_NE(running.out.find(slow_job), std::string::npos) << running.out;
  EXPECT_EQ(running.out.find(quick_job), std::string::npos) << running.out;
  for (const char* column : {"NAME", "AGE", "DURATION"}) {
    EXPECT_NE(running.out.find(column), std::string::npos) << running.out;
  }
  CliRun search = Logit(dir, srv + "jobs -l team=search -l env=test");
  ASSERT_EQ(search.code, 0) << search.err;
  EXPECT_NE(search.out.find(quick_job), std::string::npos) << search.out;
  EXPECT_NE(search.out.find("quick"), std::string::npos) << search.out;
  EXPECT_EQ(search.out.find(slow_job), std::string::npos) << search.out;
  CliRun nobody = Logit(dir, srv + "-o json jobs -l team=search,env=prod");
  ASSERT_EQ(nobody.code, 0) << nobody.err;
  EXPECT_EQ(nobody.out.find(quick_job), std::string::npos) << nobody.out;
  CliRun named = Logit(dir, srv + "jobs --name quick");
  EXPECT_NE(named.out.find(quick_job), std::string::npos) << named.out;
  EXPECT_EQ(named.out.find(slow_job), std::string::npos) << named.out;
  EXPECT_EQ(Logit(dir, srv + "jobs -l novalue").code, 2);
  EXPECT_EQ(Logit(dir, srv + "jobs --state sleeping").code, 2);
  CliRun bad_label = Logit(dir, srv + "train --detach --label 'has space=x' --data " + ref);
  EXPECT_EQ(bad_label.code, 2);
  EXPECT_NE(bad_label.err.find("--label"), std::string::npos) << bad_label.err;

  // The running job needs the dataset: deleting it is refused, naming the job.
  CliRun refused = Logit(dir, srv + "dataset rm " + dataset);
  EXPECT_EQ(refused.code, 1);
  EXPECT_NE(refused.err.find(slow_job), std::string::npos) << refused.err;
  EXPECT_NE(Logit(dir, srv + "datasets").out.find(dataset), std::string::npos);

  // Models: listed with their job's name, deleted; a missing one exits 4, the others go.
  CliRun models = Logit(dir, srv + "-o json models");
  ASSERT_EQ(models.code, 0) << models.err;
  auto mj = nlohmann::json::parse(LastLine(models.out), nullptr, false)["models"];
  ASSERT_TRUE(mj.is_array() && mj.size() == 1u) << models.out;
  EXPECT_EQ(mj[0]["job_id"], quick_job);
  EXPECT_EQ(mj[0]["job_name"], "quick");
  const std::string model = mj[0]["model_id"];
  CliRun mtable = Logit(dir, srv + "models");
  EXPECT_EQ(mtable.out.rfind("MODEL", 0), 0u) << mtable.out;
  EXPECT_NE(mtable.out.find(model), std::string::npos) << mtable.out;
  CliRun rm = Logit(dir, srv + "model rm model-404 " + model);
  EXPECT_EQ(rm.code, 4);
  EXPECT_NE(rm.err.find("model-404"), std::string::npos) << rm.err;
  EXPECT_NE(rm.out.find(model + " deleted"), std::string::npos) << rm.out;
  EXPECT_EQ(LastLine(Logit(dir, srv + "models -o json").out),  // global flags go after, too
            "{\"models\":[]}");

  // Once the job is cancelled the dataset can go, file and all.
  ASSERT_EQ(Logit(dir, srv + "cancel " + slow_job).code, 0);
  CliRun drm = Logit(dir, srv + "dataset rm " + ref);
  EXPECT_EQ(drm.code, 0) << drm.err;
  EXPECT_EQ(LastLine(Logit(dir, srv + "-o json datasets").out), "{\"datasets\":[]}");
  EXPECT_FALSE(std::ifstream(dir.Path("data/datasets/" + dataset + "/iris.csv")).good());
  EXPECT_EQ(Logit(dir, srv + "dataset rm " + dataset).code, 4);

  server->Kill(SIGTERM);
  EXPECT_TRUE(server->Wait(std::chrono::seconds(10))) << "the server did not stop";
}

TEST(CliAgainstServer, UnreachableServerExitsThreeNamingTheAddress) {
  TempDir dir;
  CliRun r = Logit(dir, "--server 127.0.0.1:1 train --data server:x.csv");
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("127.0.0.1:1"), std::string::npos) << r.err;
  for (const char* sub : {"models", "datasets", "model rm model-1", "dataset rm dataset-1"}) {
    CliRun m = Logit(dir, std::string("--server 127.0.0.1:1 ") + sub);
    EXPECT_EQ(m.code, 3) << sub << ": " << m.err;
    EXPECT_NE(m.err.find("127.0.0.1:1"), std::string::npos) << m.err;
  }
  CliRun health = Logit(dir, "--server 127.0.0.1:1 health --timeout 2");
  EXPECT_EQ(health.code, 3) << health.err;
  EXPECT_NE(health.err.find("127.0.0.1:1"), std::string::npos) << health.err;
}

}  // namespace
}  // namespace logit
