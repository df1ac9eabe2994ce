// The training flags of SPEC.md, shared by `logit train` and `logit-worker run`: each flag
// writes its JobSpec field directly (the JobSpec is the single source of truth; PlanJob in
// worker/job_spec.h turns it into the job the kernel runs), and the printed progress.
#ifndef LOGIT_WORKER_JOB_CLI_H_
#define LOGIT_WORKER_JOB_CLI_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "logit/v1/training.pb.h"

namespace CLI {
class App;
}

namespace logit {

struct EpochRecord;

// Adds the training flags to `app` (a CLI11 subcommand). Each given flag sets its field of
// `*spec` when parsed, so that flags override a spec loaded earlier from a job file. `spec`
// must outlive the parse. A flag value that no JobSpec field can hold (--optimizer newton) is
// a parse error naming the flag.
void AddJobFlags(CLI::App* app, v1::JobSpec* spec);

// Flags of a training run in this process (`logit train --local`, `logit-worker run`), not
// part of the JobSpec: where to write the model, how many threads.
struct LocalRunFlags {
  std::string save_model;
  int threads = 0;
};
void AddLocalRunFlags(CLI::App* app, LocalRunFlags* flags);

// "k=v" or "k=v,k2=v2" (--label, `logit jobs -l`) as (key, value) pairs, in order.
// InvalidArgument naming the item that has no '=' or an empty key. Keys and values are checked
// by PlanJob (job_labels).
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseLabelPairs(
    const std::string& text);

// The status message with the JobSpec field it names (ErrorField) in its flag spelling:
// "batch_size: must be >= 1" -> "--batch-size: must be >= 1".
std::string FlagMessage(const absl::Status& status);

// One line of per-epoch progress: "epoch 3/10  loss ...  val_acc ...%  (0.12s)"; with
// `iterations` (L-BFGS, whose --epochs only caps the iterations) "iter 34 (max 1000)  loss ...".
std::string EpochLine(const EpochRecord& record, int64_t total_epochs, bool iterations = false);

}  // namespace logit

#endif  // LOGIT_WORKER_JOB_CLI_H_
