// The server-backed side of the CLI: upload local files, submit, follow a job's events.
#ifndef LOGIT_CLIENT_REMOTE_H_
#define LOGIT_CLIENT_REMOTE_H_

#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"
#include "client/output.h"
#include "logit/v1/training.grpc.pb.h"
#include "logit/v1/training.pb.h"
#include "proto/connect.h"
#include "worker/data/dataset.h"

namespace logit {

struct RemoteOptions {
  ConnectOptions connect;  // server HOST:PORT, token, TLS
  OutputFormat output = OutputFormat::kTable;  // -o
  bool detach = false;     // print the job id only
  bool tty = false;        // stdout is a terminal: draw a progress bar
  bool events = false;     // structured output: print every event as it comes (watch)
  bool verbose = false;    // -v: informational lines too
  bool iterations = false; // progress counts L-BFGS iterations, not epochs
  // train: download the model to this file (.npz, .safetensors, .onnx) once the job succeeds.
  std::string save_model;
  // train: (dataset:ID, the local file uploaded as it): messages name the user's own files.
  std::vector<std::pair<std::string, std::string>> local_names;

  bool structured() const { return output != OutputFormat::kTable; }
};

// `logit train` against a server: local data files are uploaded first; then the job is
// submitted and followed. Returns the CLI exit code.
int RunRemoteTrain(const v1::JobSpec& spec, const RemoteOptions& options, std::ostream& out,
                   std::ostream& err);

// Ctrl-C while a job is followed: stops following (the job keeps running) and returns true;
// false when nothing is followed.
bool DetachFollow();

// What `logit jobs` lists.
struct JobsFilter {
  std::string state;                  // a JobState name, any case ("running"); "": all
  std::vector<std::string> selector;  // "k=v" or "k=v,k2=v2" items, all must match
  std::string name;                   // the job's exact name; "": all
  int limit = 100;
};

// A TrainingService stub on the server of `options`. REQUIRES: Dial(options.connect) succeeds
// (RunCli checked the TLS files).
std::unique_ptr<v1::TrainingService::Stub> Connect(const RemoteOptions& options);

// Prints a failed call of command `what` to `err` ("logit WHAT: ...", naming the server when it
// could not be reached) and returns its exit code (ExitCodeOf).
int RpcError(const RemoteOptions& options, const std::string& what, const grpc::Status& status,
             std::ostream& err);

// False, saying so on `err`, when no server address is set.
bool NeedServer(const RemoteOptions& options, const std::string& what, std::ostream& err);

// The exit code for a failed call: 3 unreachable or unauthenticated, 4 not found, 2 invalid
// argument or permission denied, 1 otherwise.
int ExitCodeOf(const grpc::Status& status);

// The other server subcommands; each returns the CLI exit code (see cli.h). Commands taking
// several ids try each one; the exit code is the highest of theirs.
// `logit jobs`: a table with the job's name, age (since submission) and duration (start to
// end, or to now while it runs).
int RunJobs(const RemoteOptions& options, const JobsFilter& filter, std::ostream& out,
            std::ostream& err);
int RunStatus(const RemoteOptions& options, const std::vector<std::string>& job_ids,
              std::ostream& out, std::ostream& err);
int RunWatch(const RemoteOptions& options, const std::string& job_id, int64_t from,
             std::ostream& out, std::ostream& err);
int RunCancel(const RemoteOptions& options, const std::vector<std::string>& job_ids,
              std::ostream& out, std::ostream& err);
int RunUpload(const RemoteOptions& options, const std::string& file, std::ostream& out,
              std::ostream& err);
int RunModelGet(const RemoteOptions& options, const std::string& model_id, const std::string& file,
                std::ostream& out, std::ostream& err);

// `logit health`: the server's grpc.health.v1 status for `service` ("" = the whole server)
// within `timeout_s`. Prints it (SERVING, NOT_SERVING, ...); exit 0 when SERVING, 1 when not,
// 3 when the server cannot be reached, 2 for an unknown service.
int RunHealth(const RemoteOptions& options, const std::string& service, double timeout_s,
              std::ostream& out, std::ostream& err);

// A server model's feature count, class count and class names (GetModel's info only).
absl::StatusOr<v1::ModelInfo> RemoteModelInfo(const ConnectOptions& server,
                                              const std::string& model_id);

// Probabilities (rows x K) for every row of `data` from the server's model `model_id`, in
// requests of about 3 MiB. Unavailable when the server cannot be reached.
absl::StatusOr<std::vector<float>> RemotePredict(const ConnectOptions& server,
                                                 const std::string& model_id, const Dataset& data,
                                                 int64_t* num_classes);

}  // namespace logit

#endif  // LOGIT_CLIENT_REMOTE_H_
