// The training summary as the API's message (v1::TrainingSummary): made once from a finished
// job, then carried typed from the worker to the coordinator, the job's result, the model's
// metadata and the CLI. The JSON form (SummaryToJson) is for people and files only: the CLI's
// `-o json` line and the summary stored inside model files; nothing parses it back.
// LibTorch-free.
#ifndef LOGIT_WORKER_SUMMARY_H_
#define LOGIT_WORKER_SUMMARY_H_

#include <iosfwd>

#include "logit/v1/training.pb.h"
#include "nlohmann/json.hpp"
#include "worker/job.h"

namespace logit {

// The API's value of a kernel optimizer.
v1::Optimizer OptimizerProto(OptimizerKind kind);

// The summary of a finished job trained with `options`.
v1::TrainingSummary MakeSummary(const JobOutcome& outcome, const TrainOptions& options);

// The API's form of kernel metrics (as the summary's train/val/test metrics carry them).
v1::ClassificationMetrics MetricsProto(const ClassificationMetrics& metrics);

// The job's final figures (JobResult) from its summary.
v1::JobResult ResultFromSummary(const v1::TrainingSummary& summary);

// The stop reason as people read it: "max_epochs", "objective_tol", "gradient_tol",
// "line_search", "early_stopping".
std::string StopReasonText(v1::StopReason reason);

// The summary as JSON: the fields by their proto names, the stop reason and optimizer as text,
// NaNs as null, and train/val/test accuracy at the top level.
nlohmann::json SummaryToJson(const v1::TrainingSummary& summary);

// `v` with `digits` decimals, "-" for NaN.
std::string Fixed(double v, int digits);

// The human-readable result: stop reason, objective and train/val/test metrics.
void PrintResultTable(const v1::TrainingSummary& summary, std::ostream& out);

// The final metrics in detail: ROC AUC for binary models, else per-class precision, recall,
// F1 and support (test metrics when there is a test set, else validation, else training).
void PrintMetricsTable(const v1::TrainingSummary& summary, std::ostream& out);

// One evaluation in full, as `logit predict` prints it: the line PrintResultTable prints for a
// split ("NAME: accuracy ...  log_loss ...  macro_f1 ...  roc_auc ... (N rows)", ROC AUC for
// binary models) and the per-class precision, recall, F1 and support table, whatever the class
// count; classes by name when `class_names` has one per class.
void PrintEvaluation(const char* name, const v1::ClassificationMetrics& metrics,
                     const google::protobuf::RepeatedPtrField<std::string>& class_names,
                     std::ostream& out);

}  // namespace logit

#endif  // LOGIT_WORKER_SUMMARY_H_
