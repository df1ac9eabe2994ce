#include "worker/summary.h"

#include <cmath>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "absl/strings/ascii.h"

namespace logit {

namespace {

v1::StopReason StopReasonOf(StopReason r) {
  switch (r) {
    case StopReason::kMaxEpochs:
      return v1::MAX_EPOCHS;
    case StopReason::kObjectiveTol:
      return v1::OBJECTIVE_TOL;
    case StopReason::kGradientTol:
      return v1::GRADIENT_TOL;
    case StopReason::kLineSearch:
      return v1::LINE_SEARCH;
    case StopReason::kEarlyStopping:
      return v1::EARLY_STOPPING;
  }
  return v1::STOP_REASON_UNSPECIFIED;
}

void FillMetrics(const ClassificationMetrics& m, v1::ClassificationMetrics* p) {
  p->set_rows(m.rows);
  p->set_classes(m.classes);
  p->set_log_loss(m.log_loss);
  p->set_accuracy(m.accuracy);
  if (m.roc_auc >= 0) {
    p->set_roc_auc(m.roc_auc);
    p->set_has_roc_auc(true);
  }
  p->mutable_precision()->Add(m.precision.begin(), m.precision.end());
  p->mutable_recall()->Add(m.recall.begin(), m.recall.end());
  p->mutable_f1()->Add(m.f1.begin(), m.f1.end());
  p->mutable_support()->Add(m.support.begin(), m.support.end());
  p->set_macro_f1(m.macro_f1);
  p->set_weighted_f1(m.weighted_f1);
  p->mutable_confusion()->Add(m.confusion.begin(), m.confusion.end());
}

template <typename T>
std::vector<T> Vec(const google::protobuf::RepeatedField<T>& r) {
  return std::vector<T>(r.begin(), r.end());
}

nlohmann::json MetricsJson(const v1::ClassificationMetrics& m) {
  nlohmann::json j{{"rows", m.rows()},
                   {"log_loss", m.log_loss()},
                   {"accuracy", m.accuracy()},
                   {"macro_f1", m.macro_f1()},
                   {"weighted_f1", m.weighted_f1()},
                   {"precision", Vec(m.precision())},
                   {"recall", Vec(m.recall())},
                   {"f1", Vec(m.f1())},
                   {"support", Vec(m.support())},
                   {"confusion_matrix", Vec(m.confusion())}};
  if (m.has_roc_auc()) j["roc_auc"] = m.roc_auc();
  return j;
}

// The metrics of the last split present: test, else validation, else training.
std::pair<const char*, const v1::ClassificationMetrics*> LastSplit(const v1::TrainingSummary& s) {
  if (s.has_test_metrics()) return {"test", &s.test_metrics()};
  if (s.has_val_metrics()) return {"val", &s.val_metrics()};
  if (s.has_train_metrics()) return {"train", &s.train_metrics()};
  return {"", nullptr};
}

// "NAME: accuracy 96.67%  log_loss 0.0921  macro_f1 0.9666  [roc_auc 0.9950]  (150 rows)"
void PrintMetricsLine(const char* name, const v1::ClassificationMetrics& m, std::ostream& out) {
  out << name << ": accuracy " << Fixed(100 * m.accuracy(), 2) << "%  log_loss "
      << Fixed(m.log_loss(), 4) << "  macro_f1 " << Fixed(m.macro_f1(), 4);
  if (m.has_roc_auc()) out << "  roc_auc " << Fixed(m.roc_auc(), 4);
  out << "  (" << m.rows() << " rows)\n";
}

// Per-class precision, recall, F1 and support, then the macro and weighted F1. Classes are
// shown by name when `names` has one per class.
void PrintClassTable(const char* name, const v1::ClassificationMetrics& m,
                     const google::protobuf::RepeatedPtrField<std::string>& names,
                     std::ostream& out) {
  const bool named = names.size() == m.precision_size();
  int width = 5;
  if (named) {
    for (const std::string& n : names) width = std::max(width, static_cast<int>(n.size()));
  }
  out << name << " metrics:\n  " << std::left << std::setw(width + 2) << "class"
      << "precision  recall  f1      support\n";
  for (int k = 0; k < m.precision_size(); ++k) {
    out << "  " << std::left << std::setw(width + 2)
        << (named ? names.Get(k) : std::to_string(k)) << std::setw(11) << Fixed(m.precision(k), 4)
        << std::setw(8) << Fixed(m.recall(k), 4) << std::setw(8) << Fixed(m.f1(k), 4)
        << (k < m.support_size() ? m.support(k) : 0) << "\n";
  }
  out << "  macro_f1 " << Fixed(m.macro_f1(), 4) << "  weighted_f1 " << Fixed(m.weighted_f1(), 4)
      << "\n";
}

}  // namespace

v1::Optimizer OptimizerProto(OptimizerKind k) {
  switch (k) {
    case OptimizerKind::kSgd:
      return v1::SGD;
    case OptimizerKind::kAdam:
      return v1::ADAM;
    case OptimizerKind::kLbfgs:
      return v1::LBFGS;
  }
  return v1::OPTIMIZER_UNSPECIFIED;
}

v1::TrainingSummary MakeSummary(const JobOutcome& o, const TrainOptions& opt) {
  const TrainResult& r = o.result;
  v1::TrainingSummary s;
  s.set_epochs_run(r.epochs_run);
  s.set_stop_reason(StopReasonOf(r.stop_reason));
  s.set_function_evaluations(r.function_evaluations);
  s.set_train_loss(r.train_loss);
  s.set_objective(r.objective);
  s.set_wall_seconds(r.wall_seconds);
  s.set_device(r.device);
  s.set_classes(o.classes);
  s.set_features(r.model.num_features);
  s.set_train_rows(o.train_rows);
  s.set_val_rows(o.val_rows);
  s.set_test_rows(o.test_rows);
  for (const std::string& name : r.model.class_names) s.add_class_names(name);
  for (const std::string& warning : o.warnings) s.add_warnings(warning);
  v1::EffectiveOptions* eo = s.mutable_options();
  eo->set_optimizer(OptimizerProto(opt.optimizer));
  eo->set_lr(EffectiveLearningRate(opt));
  eo->set_batch_size(opt.batch_size);
  eo->set_epochs(EffectiveEpochs(opt));
  eo->set_tol(opt.tol);
  eo->set_l1(opt.l1);
  eo->set_l2(opt.C > 0 ? r.l2 : opt.l2);
  eo->set_c(opt.C);
  eo->set_class_weight(opt.class_weight);
  eo->set_standardize(opt.standardize);
  eo->set_bias(opt.fit_bias);
  eo->set_seed(opt.seed);
  for (const EpochRecord& e : r.history) {
    v1::EpochMetrics* h = s.add_history();
    h->set_epoch(e.epoch);
    h->set_train_loss(e.train_loss);
    h->set_objective(e.objective);
    h->set_seconds(e.seconds);
    if (!std::isnan(e.val_loss)) {
      h->set_has_validation(true);
      h->set_val_loss(e.val_loss);
      h->set_val_accuracy(e.val_accuracy);
    }
  }
  if (r.train_metrics) FillMetrics(*r.train_metrics, s.mutable_train_metrics());
  if (r.val_metrics) FillMetrics(*r.val_metrics, s.mutable_val_metrics());
  if (r.test_metrics) FillMetrics(*r.test_metrics, s.mutable_test_metrics());
  return s;
}

v1::JobResult ResultFromSummary(const v1::TrainingSummary& s) {
  v1::JobResult r;
  r.set_epochs_run(s.epochs_run());
  r.set_stop_reason(StopReasonText(s.stop_reason()));
  r.set_train_loss(s.train_loss());
  r.set_objective(s.objective());
  r.set_wall_seconds(s.wall_seconds());
  if (s.has_val_metrics()) {
    r.set_val_accuracy(s.val_metrics().accuracy());
    r.set_has_val_accuracy(true);
  }
  if (s.has_test_metrics()) {
    r.set_test_accuracy(s.test_metrics().accuracy());
    r.set_has_test_accuracy(true);
  }
  *r.mutable_summary() = s;
  return r;
}

std::string StopReasonText(v1::StopReason reason) {
  if (reason == v1::STOP_REASON_UNSPECIFIED) return "";
  return absl::AsciiStrToLower(v1::StopReason_Name(reason));
}

nlohmann::json SummaryToJson(const v1::TrainingSummary& s) {
  nlohmann::json history = nlohmann::json::array();
  for (const v1::EpochMetrics& e : s.history()) {
    nlohmann::json h = {{"epoch", e.epoch()},
                        {"train_loss", e.train_loss()},
                        {"objective", e.objective()},
                        {"seconds", e.seconds()}};
    if (e.has_validation()) {
      h["val_loss"] = e.val_loss();
      h["val_accuracy"] = e.val_accuracy();
    }
    history.push_back(h);
  }
  const v1::EffectiveOptions& o = s.options();
  nlohmann::json j = {
      {"epochs_run", s.epochs_run()},
      {"stop_reason", StopReasonText(s.stop_reason())},
      {"function_evaluations", s.function_evaluations()},
      {"train_loss", s.train_loss()},
      {"objective", s.objective()},
      {"wall_seconds", s.wall_seconds()},
      {"device", s.device()},
      {"classes", s.classes()},
      {"features", s.features()},
      {"rows", {{"train", s.train_rows()}, {"val", s.val_rows()}, {"test", s.test_rows()}}},
      {"options",
       {{"optimizer", absl::AsciiStrToLower(v1::Optimizer_Name(o.optimizer()))},
        {"lr", o.lr()},
        {"batch_size", o.batch_size()},
        {"epochs", o.epochs()},
        {"tol", o.tol()},
        {"l1", o.l1()},
        {"l2", o.l2()},
        {"C", o.c()},
        {"class_weight", o.class_weight()},
        {"standardize", o.standardize()},
        {"bias", o.bias()},
        {"seed", o.seed()}}},
      {"history", history}};
  if (s.class_names_size() > 0) {
    j["class_names"] = std::vector<std::string>(s.class_names().begin(), s.class_names().end());
  }
  if (s.warnings_size() > 0) {
    j["warnings"] = std::vector<std::string>(s.warnings().begin(), s.warnings().end());
  }
  auto accuracy = [](bool has, const v1::ClassificationMetrics& m) {
    return has ? nlohmann::json(m.accuracy()) : nlohmann::json();
  };
  j["val_accuracy"] = accuracy(s.has_val_metrics(), s.val_metrics());
  j["test_accuracy"] = accuracy(s.has_test_metrics(), s.test_metrics());
  j["train_accuracy"] = accuracy(s.has_train_metrics(), s.train_metrics());
  nlohmann::json metrics = nlohmann::json::object();
  if (s.has_train_metrics()) metrics["train"] = MetricsJson(s.train_metrics());
  if (s.has_val_metrics()) metrics["val"] = MetricsJson(s.val_metrics());
  if (s.has_test_metrics()) metrics["test"] = MetricsJson(s.test_metrics());
  j["metrics"] = metrics;
  return j;
}

std::string Fixed(double v, int digits) {
  if (std::isnan(v)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

v1::ClassificationMetrics MetricsProto(const ClassificationMetrics& metrics) {
  v1::ClassificationMetrics p;
  FillMetrics(metrics, &p);
  return p;
}

void PrintResultTable(const v1::TrainingSummary& s, std::ostream& out) {
  out << "stopped: " << StopReasonText(s.stop_reason()) << " after " << s.epochs_run()
      << " epochs, " << s.function_evaluations() << " evaluations, " << Fixed(s.wall_seconds(), 2)
      << "s\n";
  out << "objective " << Fixed(s.objective(), 8) << "  train_loss " << Fixed(s.train_loss(), 6)
      << "\n";
  auto show = [&](const char* name, bool has, const v1::ClassificationMetrics& m) {
    if (has) PrintMetricsLine(name, m, out);
  };
  show("train", s.has_train_metrics(), s.train_metrics());
  show("val", s.has_val_metrics(), s.val_metrics());
  show("test", s.has_test_metrics(), s.test_metrics());
}

void PrintMetricsTable(const v1::TrainingSummary& s, std::ostream& out) {
  const auto [which, m] = LastSplit(s);
  if (m == nullptr) return;
  if (m->has_roc_auc()) {
    out << which << ": roc_auc " << Fixed(m->roc_auc(), 4) << "  macro_f1 "
        << Fixed(m->macro_f1(), 4) << "\n";
    return;
  }
  PrintClassTable(which, *m, s.class_names(), out);
}

void PrintEvaluation(const char* name, const v1::ClassificationMetrics& m,
                     const google::protobuf::RepeatedPtrField<std::string>& class_names,
                     std::ostream& out) {
  PrintMetricsLine(name, m, out);
  PrintClassTable(name, m, class_names, out);
}

}  // namespace logit
