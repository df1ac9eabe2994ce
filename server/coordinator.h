// The coordinator's service logic: jobs, the FIFO gang scheduler, workers and their
// heartbeats, events for watchers, datasets, models and predictions. No gRPC types here
// beyond the generated messages; grpc_services.cc maps absl::Status to grpc::Status.
#ifndef LOGIT_SERVER_COORDINATOR_H_
#define LOGIT_SERVER_COORDINATOR_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "logit/v1/training.pb.h"
#include "logit/v1/worker.pb.h"
#include "server/request_decode.h"
#include "server/store.h"
#include "worker/kernel/model.h"

namespace logit {

class StoreServer;

struct CoordinatorConfig {
  std::string data_dir = "./logit-data";  // logit.db, datasets/, models/
  std::string data_root;                  // where "server:PATH" may point; empty: nowhere
  // Host the workers use to reach the c10d TCPStores this coordinator hosts (one per running
  // job attempt).
  std::string store_host = "127.0.0.1";
  std::chrono::milliseconds heartbeat_interval{500};
  // A worker silent for this long is lost; its job fails with a reason naming it.
  std::chrono::milliseconds worker_timeout{10000};
  // Collective timeout handed to the ranks.
  std::chrono::milliseconds collective_timeout{60000};
  // How often the data dir and the job store are probed with a small write.
  std::chrono::milliseconds storage_probe_interval{2000};
  // Rows per Predict / ModelInfer request.
  PredictLimits predict_limits;
  // Over these, requests fail with RESOURCE_EXHAUSTED naming the limit (0 = no limit).
  int max_queued_jobs = 1000;                      // jobs waiting in the queue
  int max_workers_per_job = 256;                   // JobSpec.workers
  int max_watchers_per_job = 64;                   // concurrent WatchJob streams per job
  int64_t max_upload_bytes = int64_t{64} << 30;    // one uploaded dataset
  int64_t max_dataset_bytes = 0;                   // all uploaded datasets together
  int64_t min_free_disk_bytes = int64_t{1} << 30;  // uploads stop before the disk is this full
};

class Coordinator {
 public:
  // Opens the store under config.data_dir, reloads jobs, events, datasets and models, starts
  // the c10d store and the monitor thread.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(const CoordinatorConfig& config);
  ~Coordinator();

  // Client API (logit.v1.TrainingService).
  absl::StatusOr<v1::Job> SubmitJob(const v1::JobSpec& spec);
  absl::StatusOr<v1::Job> GetJob(const std::string& job_id);
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
  absl::StatusOr<ModelRecord> GetModel(const std::string& model_id);
  absl::Status DeleteModel(const std::string& model_id);
  absl::StatusOr<v1::PredictResponse> Predict(const v1::PredictRequest& request);

  // Worker API (logit.v1.WorkerService). Registration issues a secret; every later call must
  // carry it, and reports and uploads are accepted only for the ranks assigned to that worker
  // (PERMISSION_DENIED otherwise).
  v1::RegisterWorkerResponse RegisterWorker(const v1::RegisterWorkerRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  absl::StatusOr<v1::ReportProgressResponse> ReportProgress(
      const v1::ReportProgressRequest& request);
  absl::StatusOr<v1::UploadModelResponse> UploadModel(
      const v1::ModelUpload& header, const std::function<absl::StatusOr<bool>(std::string*)>& next);

  // OK when the data dir and the job store took a write at the last probe (every
  // storage_probe_interval); the server's health check says NOT_SERVING otherwise.
  absl::Status StorageStatus();

  // Registered workers by state ("idle", "busy"), for metrics and tests.
  std::map<std::string, int> WorkerCounts();

 private:
  struct JobEntry {
    v1::Job job;
    std::vector<v1::JobEvent> events;
    std::vector<bool> rank_done;
    // The latest in-epoch progress (transient: not stored) and how often it changed.
    v1::StepProgress progress;
    int64_t progress_version = 0;
    int watchers = 0;  // live WatchJob streams
    // The c10d TCPStore of the running attempt: started when the attempt is placed, stopped
    // (every key gone) when the job finishes.
    std::unique_ptr<StoreServer> rendezvous;
  };
  struct WorkerEntry {
    v1::RegisterWorkerRequest info;
    std::string secret;  // RegisterWorkerResponse.worker_secret
    std::chrono::steady_clock::time_point last_seen;
    std::string job_id;  // busy with this job attempt ("" = idle)
    int attempt = 0;
    int rank = 0;
    std::optional<v1::Assignment> pending;  // delivered with the next heartbeat
  };

  explicit Coordinator(const CoordinatorConfig& config);
  absl::Status Load();
  // The following run under mu_.
  // Resolves "dataset:ID" / "server:PATH" to a file path; `field` names the JobSpec field.
  absl::StatusOr<std::string> ResolveData(const std::string& field, const std::string& ref);
  // Resolves every data reference and validates the spec (INVALID_ARGUMENT names the field).
  absl::StatusOr<v1::JobSpec> ResolveSpec(const v1::JobSpec& spec);
  void AppendEventLocked(JobEntry& entry, v1::JobEvent event);
  void SetStateLocked(JobEntry& entry, v1::JobState state, const std::string& reason);
  void ScheduleLocked();
  // The worker `worker_id` if `secret` is its secret; PERMISSION_DENIED otherwise.
  absl::StatusOr<WorkerEntry*> AuthenticWorkerLocked(const std::string& worker_id,
                                                     const std::string& secret);
  // The worker `worker_id` if `secret` is its secret and it holds `rank` of the job attempt;
  // PERMISSION_DENIED otherwise.
  absl::StatusOr<WorkerEntry*> RankHolderLocked(const std::string& worker_id,
                                                const std::string& secret,
                                                const std::string& job_id, int attempt, int rank);
  void ReleaseWorkersLocked(const JobEntry& entry, bool only_done);
  void MonitorLoop();

  const CoordinatorConfig config_;
  std::unique_ptr<Store> store_;

  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, JobEntry> jobs_;
  std::deque<std::string> queue_;
  std::map<std::string, WorkerEntry> workers_;
  std::map<std::string, DatasetRecord> datasets_;
  std::map<std::string, ModelRecord> models_;
  std::map<std::string, std::shared_ptr<const LinearModel>> model_cache_;
  int64_t next_worker_ = 0;

  absl::Status ProbeStorage();   // no lock needed: the store serialises its own writes
  absl::Status storage_status_;  // guarded by mu_
  bool stopping_ = false;
  std::thread monitor_;
};

}  // namespace logit

#endif  // LOGIT_SERVER_COORDINATOR_H_
