// The coordinator's service logic, a facade over its parts: the Scheduler (FIFO queue, gang
// placement), the WorkerRegistry (membership, secrets, heartbeats, assignments, lost workers),
// the EventLog (events and WatchJob streams), the Catalog (datasets, models, Predict cache) and
// the JobStore (durable state). No gRPC types here beyond the generated messages;
// grpc_services.cc maps absl::Status to grpc::Status.
//
// Locking (lock order: commit_mu_, then mu_; the parts' own mutexes are leaves, never held
// while calling back in here):
//  - commit_mu_ serialises every change of a job's durable state (its record and events): the
//    change is computed from the published state, written to the store, and only then
//    published (jobs_ under mu_, then the EventLog). Store writes happen under commit_mu_ but
//    never under mu_, so readers (GetJob, ListJobs, WatchJob, heartbeats, progress, Predict)
//    never wait for an fsync. Sequences have no gaps: they are assigned and published in
//    commit order. A failed write publishes nothing and its status is returned to the RPC
//    (background paths log it and report it through StorageStatus()).
//  - mu_ guards the published jobs and the storage status; held only briefly.
#ifndef LOGIT_SERVER_COORDINATOR_H_
#define LOGIT_SERVER_COORDINATOR_H_

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "logit/v1/training.pb.h"
#include "logit/v1/worker.pb.h"
#include "server/catalog.h"
#include "server/checkpoint_files.h"
#include "server/event_log.h"
#include "server/job_store.h"
#include "server/rendezvous_kv.h"
#include "server/request_decode.h"
#include "server/scheduler.h"
#include "server/server_metrics.h"
#include "server/worker_registry.h"
#include "worker/common/mutex.h"

namespace logit {

struct CoordinatorConfig {
  std::string data_dir = "./logit-data";  // logit.db, datasets/, models/
  std::string data_root;                  // where "server:PATH" may point; empty: nowhere
  // The coordinator's address as the workers see it; it tells their Gloo which network
  // device to use (loopback for 127.0.0.1). Ranks rendezvous through Rendezvous().
  std::string store_host = "127.0.0.1";
  std::chrono::milliseconds heartbeat_interval{500};
  // A worker silent for this long is lost; its job fails with a reason naming it.
  std::chrono::milliseconds worker_timeout{10000};
  // Collective timeout handed to the ranks.
  std::chrono::milliseconds collective_timeout{60000};
  // How often the data dir and the job store are probed with a small write.
  std::chrono::milliseconds storage_probe_interval{2000};
  // How often the monitor looks for lost workers and expired deadlines.
  std::chrono::milliseconds monitor_interval{200};
  // Rows per Predict / ModelInfer request.
  PredictLimits predict_limits;
  // Loaded models kept in memory for Predict, least recently used evicted (0 = no limit).
  int max_cached_models = 64;
  // Checkpoint period for jobs whose spec leaves checkpoint_every unset (0: none).
  int64_t checkpoint_every = 10;
  // Checkpoints kept per job (the newest; older ones are deleted as new ones arrive), >= 1.
  int keep_checkpoints = 2;
  // Keep a finished job's checkpoints (default: deleted when the job ends).
  bool keep_finished_checkpoints = false;
  // Over this, a checkpoint upload fails with RESOURCE_EXHAUSTED (0 = no limit).
  int64_t max_checkpoint_bytes = 0;
  // Backoff before retry n (1-based): retry_backoff * 2^(n-1), at most retry_backoff_max.
  std::chrono::milliseconds retry_backoff{1000};
  std::chrono::milliseconds retry_backoff_max{30000};
  // Over these, requests fail with RESOURCE_EXHAUSTED naming the limit (0 = no limit).
  int max_queued_jobs = 1000;                      // jobs waiting in the queue
  int max_workers_per_job = 256;                   // JobSpec.workers
  int max_watchers_per_job = 64;                   // concurrent WatchJob streams per job
  int64_t max_upload_bytes = int64_t{64} << 30;    // one uploaded dataset
  int64_t max_dataset_bytes = 0;                   // all uploaded datasets together
  int64_t min_free_disk_bytes = int64_t{1} << 30;  // uploads stop before the disk is this full
  // Prometheus metrics; null: the coordinator keeps its own (unexposed) instance.
  std::shared_ptr<ServerMetrics> metrics;
  // A finished job's per-job series (logit_job_*) stay this long, then vanish.
  std::chrono::milliseconds metrics_job_grace{120000};
};

// A failed rank's report as a job's reason: "rank 1 (w-2): msg", or when the ranks agreed on
// another rank's failure "rank 0 (reported by rank 1 on w-2): msg".
std::string RankFailureReason(int rank, const std::string& worker, const std::string& message);

// `text` with each data file's server-side path (in `resolved`) replaced by what the user knows
// it as: an uploaded dataset's file name, or the server:PATH given (in `spec`).
std::string UserPaths(const v1::JobSpec& spec, const v1::JobSpec& resolved, std::string text);

class Coordinator {
 public:
  // Opens the SQLite store under config.data_dir, reloads jobs, events, datasets and models,
  // starts the monitor thread.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(const CoordinatorConfig& config);
  // The same on `store` (tests: a MemoryJobStore); config.data_dir still holds the files.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(const CoordinatorConfig& config,
                                                             std::unique_ptr<JobStore> store);
  ~Coordinator();

  // Client API (logit.v1.TrainingService).
  absl::StatusOr<v1::Job> SubmitJob(const v1::JobSpec& spec);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);
  // Jobs newest first that pass the request's filters (state, name, label selector), at most
  // its limit (0: 100).
  std::vector<v1::Job> ListJobs(const v1::ListJobsRequest& request);
  std::vector<v1::Job> ListJobs(v1::JobState state, int limit);
  absl::StatusOr<v1::Job> CancelJob(const std::string& job_id);
  // Calls `send` for every event from `from_sequence` on, live ones included, until the job
  // finishes, `send` returns false or `cancelled` returns true.
  absl::Status WatchJob(const std::string& job_id, int64_t from_sequence,
                        const std::function<bool(const v1::JobEvent&)>& send,
                        const std::function<bool()>& cancelled);
  // `next` yields the chunks; it returns false at the end, or a status on a transport error.
  absl::StatusOr<v1::Dataset> UploadDataset(
      const v1::DatasetInfo& info, const std::function<absl::StatusOr<bool>(std::string*)>& next);
  // Datasets newest first; with `sha256` non-empty only those with that hash
  // (INVALID_ARGUMENT unless it is 64 lower-case hex digits).
  absl::StatusOr<std::vector<v1::Dataset>> ListDatasets(const std::string& sha256);
  // NOT_FOUND if unknown; FAILED_PRECONDITION naming the jobs while a QUEUED, RUNNING or
  // RETRYING job names the dataset (checked under commit_mu_, so no job can be submitted with
  // it meanwhile).
  absl::Status DeleteDataset(const std::string& dataset_id);
  // The model with its job's name (ModelInfo.job_name).
  absl::StatusOr<ModelRecord> GetModel(const std::string& model_id);
  // Models newest first, each with its job's name, without the summaries' history.
  std::vector<v1::ModelInfo> ListModels();
  absl::Status DeleteModel(const std::string& model_id);
  absl::StatusOr<v1::PredictResponse> Predict(const v1::PredictRequest& request);

  // Worker API (logit.v1.WorkerService). Registration issues a secret; every later call must
  // carry it, and reports and uploads are accepted only for the ranks assigned to that worker
  // (PERMISSION_DENIED otherwise). Worker ids come from the store: they never repeat, across
  // restarts too.
  absl::StatusOr<v1::RegisterWorkerResponse> RegisterWorker(
      const v1::RegisterWorkerRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  absl::StatusOr<v1::ReportProgressResponse> ReportProgress(
      const v1::ReportProgressRequest& request);
  absl::StatusOr<v1::UploadModelResponse> UploadModel(
      const v1::ModelUpload& header, const std::function<absl::StatusOr<bool>(std::string*)>& next);
  // Rank 0 of the current attempt stores a checkpoint; it is durable (file and record) when
  // this returns OK. Older checkpoints beyond keep_checkpoints are deleted.
  absl::StatusOr<v1::UploadCheckpointResponse> UploadCheckpoint(
      const v1::CheckpointUpload& header,
      const std::function<absl::StatusOr<bool>(std::string*)>& next);
  // The checkpoint a rank of the current attempt resumes from: its info and file path.
  absl::StatusOr<CheckpointRecord> FindCheckpoint(const v1::FetchCheckpointRequest& request);
  // A data file a rank of the current attempt may read (FetchData): its path on this machine
  // and its size and SHA-256. PERMISSION_DENIED unless the caller holds a rank of the job's
  // current attempt and the job's spec names the file.
  absl::StatusOr<std::pair<std::string, v1::DataFileInfo>> OpenDataFile(
      const v1::FetchDataRequest& request);
  // One operation on the key-value store of the caller's job attempt (rendezvous, agreement,
  // rank heartbeats). Only ranks of the job's current, unfinished attempt may use it
  // (PERMISSION_DENIED / FAILED_PRECONDITION otherwise); it is dropped when the attempt ends.
  absl::StatusOr<v1::RendezvousResponse> Rendezvous(const v1::RendezvousRequest& request);

  // OK when the data dir and the job store took a write at the last probe (every
  // storage_probe_interval) and no background store write failed since; the server's health
  // check says NOT_SERVING otherwise.
  absl::Status StorageStatus();

  // Registered workers by state ("idle", "busy"), for metrics and tests.
  std::map<std::string, int> WorkerCounts();

  // The metrics the coordinator updates (config.metrics, or its own).
  ServerMetrics& metrics() { return *metrics_; }
  // What the snapshot gauges show now (ServerMetrics reads it at every scrape).
  ClusterSnapshot MetricsSnapshot() ABSL_LOCKS_EXCLUDED(mu_);

  // The catalog, for tests of the Predict cache.
  Catalog& catalog_for_test() { return catalog_; }

 private:
  // A job as published: its record (always equal to what the store holds) and its stored
  // checkpoints, oldest first.
  struct JobEntry {
    v1::Job job;
    std::vector<CheckpointRecord> checkpoints;
    // For the metrics only (not durable): the latest epoch reported by rank 0 and when the
    // job first started running (its duration counts from there).
    std::optional<v1::EpochMetrics> last_epoch;
    std::optional<google::protobuf::Timestamp> first_started;
  };

  Coordinator(const CoordinatorConfig& config, std::unique_ptr<JobStore> store);
  absl::Status Load();

  // Resolves every data reference and validates the spec (INVALID_ARGUMENT names the field).
  absl::StatusOr<v1::JobSpec> ResolveSpec(const v1::JobSpec& spec);
  // The published job (a copy), NOT_FOUND if unknown.
  absl::StatusOr<v1::Job> FindJob(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);

  // Writes `job` with `event` (which gets the job's next sequence and the time) to the store in
  // one transaction, then publishes both. `checkpoint`, if given, is recorded in the same
  // transaction and joins the job's checkpoints. On a store error nothing is published.
  absl::Status CommitLocked(v1::Job job, v1::JobEvent event,
                            const CheckpointRecord* checkpoint = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // CommitLocked with `job` moved to `state` and its state-change event. A final state drops
  // the running attempt's rendezvous store.
  absl::Status SetStateLocked(v1::Job job, v1::JobState state, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the job's current attempt for `reason`. A retryable end with retries left makes the
  // job RETRYING (attempt + 1, backoff, back at the head of the queue, resuming from its latest
  // checkpoint); otherwise the job FAILS with every attempt's reason. `charged` retries count
  // against spec.max_retries (a coordinator restart is not charged).
  // `requeue`: put a RETRYING job at the head of the queue (Load enqueues them itself).
  absl::Status EndAttemptLocked(v1::Job job, const std::string& reason, bool retryable,
                                bool charged = true, bool requeue = true)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // Deletes the job's checkpoints (records, then files) but the newest `keep`; a store error is
  // reported in background and leaves them for the next deletion.
  void DeleteCheckpointsLocked(const std::string& job_id, size_t keep)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // Places queued jobs, head first, while enough workers are idle. Returns the first store
  // error (the job it concerned stays queued).
  absl::Status ScheduleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // ScheduleLocked for paths whose own work is done: a store error is reported in background.
  void Schedule() ABSL_LOCKS_EXCLUDED(commit_mu_, mu_);
  // Logs a store error of a background path and reports it through StorageStatus().
  void ReportBackgroundError(const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);

  absl::Status ProbeStorage();  // no lock needed: the store serialises its own writes
  // One pass of the monitor: lost workers, expired deadlines, scheduling.
  void MonitorPass() ABSL_LOCKS_EXCLUDED(commit_mu_, mu_);
  void MonitorLoop();

  // Counts, logs and times a committed state change (SetStateLocked's, after the commit).
  void ObserveStateChange(const v1::Job& job, v1::JobState state, const std::string& reason)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Constant after construction (the parts are thread-safe themselves).
  const CoordinatorConfig config_;
  const std::shared_ptr<ServerMetrics> metrics_;
  const std::unique_ptr<JobStore> store_;
  Scheduler scheduler_;
  WorkerRegistry registry_;
  EventLog log_;
  Catalog catalog_;
  CheckpointFiles checkpoint_files_;
  RendezvousKv rendezvous_kv_;

  Mutex commit_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  // Lost workers whose job could not be failed yet (a store error): retried by the monitor.
  std::vector<WorkerRegistry::Lost> unrecorded_losses_ ABSL_GUARDED_BY(commit_mu_);

  Mutex mu_;
  std::map<std::string, JobEntry> jobs_ ABSL_GUARDED_BY(mu_);
  absl::Status storage_status_ ABSL_GUARDED_BY(mu_);

  Mutex monitor_mu_;
  CondVar monitor_wake_;
  bool stopping_ ABSL_GUARDED_BY(monitor_mu_) = false;
  std::thread monitor_;
};

}  // namespace logit

#endif  // LOGIT_SERVER_COORDINATOR_H_
