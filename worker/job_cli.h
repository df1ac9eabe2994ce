// The training flags of SPEC.md, shared by `logit train` and `logit-worker run`: their CLI11
// definitions, their conversion into DataConfig / TrainOptions, and the printed progress.
#ifndef LOGIT_WORKER_JOB_CLI_H_
#define LOGIT_WORKER_JOB_CLI_H_

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/job.h"

namespace CLI {
class App;
}

namespace logit {

// Flag values of a training job, before conversion into DataConfig / TrainOptions.
struct JobFlags {
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
  double deadline_seconds = 0;  // server mode: fail the job past this many seconds (0 = none)
};

// Adds the training flags to `app` (a CLI11 subcommand), storing into `flags`.
void AddJobFlags(CLI::App* app, JobFlags* flags);

// Converts and validates; InvalidArgument names the option ("batch_size: ...").
absl::StatusOr<std::pair<DataConfig, TrainOptions>> BuildJob(const JobFlags& flags);

// Turns an option name at the start of a status message ("batch_size: ...") into its flag
// spelling ("--batch-size: ...").
std::string FlagMessage(const absl::Status& status);

// `v` with `digits` decimals, "-" for NaN.
std::string Fixed(double v, int digits);

// One line of per-epoch progress: "epoch 3/10  loss ...  val_acc ...%  (0.12s)".
std::string EpochLine(const EpochRecord& record, int64_t total_epochs);

// The human-readable result: stop reason, objective and train/val/test metrics.
void PrintResultTable(const TrainResult& result, std::ostream& out);

}  // namespace logit

#endif  // LOGIT_WORKER_JOB_CLI_H_
