// The one conversion from the API's JobSpec to the job the kernel runs. It owns every default
// and every check of a JobSpec; the server (admission), the workers and `logit train --local`
// all call PlanJob, and nothing else reads a JobSpec's training fields.
//
// Adding a training option: add the field to JobSpec (proto/logit/v1/training.proto), map it
// here in PlanJob (and to its flag in worker/job_cli.cc), and add the kernel option it feeds
// (worker/kernel/train_options.h). tests/unit/job_spec_test.cc fails until all three agree.
#ifndef LOGIT_WORKER_JOB_SPEC_H_
#define LOGIT_WORKER_JOB_SPEC_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/data/readers.h"
#include "worker/kernel/train_options.h"

namespace logit {

namespace v1 {
class JobSpec;
}

// Where a job's rows come from.
struct DataConfig {
  // The training file: path, label file, format, label column, classes, features, pixel scale.
  ReadOptions train;
  // Optional explicit validation / test files (same format as the training file unless named).
  std::string val_path, val_labels;
  std::string test_path, test_labels;
  // Fractions of the training file held out by seed when no explicit file is given.
  // Each in [0, 1), sum < 1.
  double val_split = 0;
  double test_split = 0;
  // Split each class in those proportions (scikit-learn's stratify=y); else rows by hash.
  bool stratify = true;
};

// A validated job: what the kernel trains and how the service runs it.
struct JobPlan {
  DataConfig data;
  TrainOptions train;
  int workers = 1;               // ranks, >= 1
  double deadline_seconds = 0;   // 0: none
  // Epochs (SGD/Adam) or iterations (L-BFGS) between checkpoints; 0: none; nullopt: the
  // server's default (a local run takes none).
  std::optional<int64_t> checkpoint_every;
  int max_retries = 3;  // retries of attempts that a retry can fix, >= 0
  int min_workers = 1;  // ranks a retried attempt may shrink to, 1..workers (unset: workers)
  std::string name;     // for people
  std::map<std::string, std::string> labels;  // JobSpec.job_labels, for selecting jobs
};

// Validates `spec` and resolves its defaults. InvalidArgument naming the JobSpec field (in the
// message, "batch_size: must be >= 1, got 0", and as the ErrorField payload). Data references
// are taken as they are: the server resolves "dataset:" / "server:" before planning.
absl::StatusOr<JobPlan> PlanJob(const v1::JobSpec& spec);

// JobSpec fields that PlanJob deliberately does not read, with the reason. Empty today; the
// descriptor test in tests/unit/job_spec_test.cc fails for a field neither read nor listed.
const std::map<std::string, std::string>& JobSpecFieldsNotPlanned();

}  // namespace logit

#endif  // LOGIT_WORKER_JOB_SPEC_H_
