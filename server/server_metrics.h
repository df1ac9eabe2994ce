// The coordinator's Prometheus metrics (README "Metrics"): counters and histograms updated as
// things happen, and gauges read from a snapshot of the coordinator at every scrape (jobs and
// workers by state, the queue, per-job progress), so they never drift from the state they show.
//
// Per-job series (label `job`) exist while the job is unfinished and for `job_grace` after it
// ends, then vanish: cardinality stays bounded however many jobs run. No gRPC or LibTorch
// types here; the gRPC layer reports its calls through Rpc() and Predict().
//
// Thread-safe: prometheus-cpp's metrics are; the snapshot source is guarded by source_mu_.
#ifndef LOGIT_SERVER_SERVER_METRICS_H_
#define LOGIT_SERVER_SERVER_METRICS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "logit/v1/training.pb.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "worker/common/mutex.h"

namespace logit {

// One job's gauges, as the coordinator publishes it.
struct JobSeries {
  std::string job_id;
  int attempt = 0;
  int retries = 0;
  int workers = 0;  // ranks of the running attempt (0 when not running)
  // The last epoch's figures; for a succeeded job, the final model's loss, objective and
  // validation loss.
  std::optional<v1::EpochMetrics> last_epoch;
  // Accuracy by split ("train", "validation", "test") of the finished job's summary.
  std::map<std::string, double> final_accuracy;
  // Unfinished jobs that checkpoint: seconds since the latest checkpoint, or since the attempt
  // started when it has none yet.
  std::optional<double> checkpoint_age_seconds;
};

// What the gauges show, read under the coordinator's lock at every scrape.
struct ClusterSnapshot {
  std::map<v1::JobState, int> jobs;  // by state
  int queue_jobs = 0;                // QUEUED + RETRYING
  double queue_oldest_age_seconds = 0;
  std::map<std::string, int> workers;  // "idle", "busy"
  bool storage_healthy = true;
  std::vector<JobSeries> job_series;  // unfinished jobs and those within the grace period
};

class ServerMetrics {
 public:
  ServerMetrics();
  ~ServerMetrics();

  // What /metrics serves: the registry's counters and histograms, and the snapshot gauges.
  std::vector<std::weak_ptr<prometheus::Collectable>> collectables() const;

  // The snapshot source (the coordinator sets it; null clears it and waits for a scrape in
  // progress to finish, so the source may be destroyed after).
  void SetSnapshotSource(std::function<ClusterSnapshot()> source);

  // Events.
  void JobSubmitted();
  void JobStarted(double queue_wait_seconds);  // a job's first start only
  // `running_seconds` is unset for a job that never started (it is counted, not timed).
  void JobFinished(v1::JobState state, std::optional<double> running_seconds);
  void JobRetried();
  void WorkerRegistered();
  void WorkerLost();
  void HeartbeatsMissed(int n);
  void CheckpointStored(int64_t bytes);
  // kind: "dataset", "model", "checkpoint".
  void Uploaded(const std::string& kind, int64_t bytes);
  void StoreWrite(double seconds);
  // protocol: "logit" (TrainingService.Predict) or "oip" (ModelInfer); code: a gRPC code name.
  void Predict(const std::string& protocol, const std::string& code, int64_t rows, double seconds);
  // One finished gRPC call of "/package.Service/Method".
  // `streaming`: its duration is the stream's life (a WatchJob lasts as long as its job), so
  // only unary calls are timed.
  void Rpc(const std::string& full_method, const std::string& code, double seconds,
           bool streaming = false);

  // Canonical names of gRPC status codes ("OK", "NOT_FOUND", ...).
  static std::string CodeName(int code);
  // A job state as a label value ("queued", "running", ...).
  static std::string StateName(v1::JobState state);

 private:
  class SnapshotCollector;

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<SnapshotCollector> snapshot_;

  prometheus::Counter* submitted_;
  prometheus::Family<prometheus::Counter>* finished_;
  prometheus::Family<prometheus::Histogram>* duration_;
  prometheus::Histogram* queue_wait_;
  prometheus::Counter* retries_;
  prometheus::Counter* registrations_;
  prometheus::Counter* lost_;
  prometheus::Counter* heartbeats_missed_;
  prometheus::Counter* checkpoints_;
  prometheus::Counter* checkpoint_bytes_;
  prometheus::Family<prometheus::Counter>* upload_bytes_;
  prometheus::Histogram* store_write_;
  prometheus::Family<prometheus::Counter>* predict_requests_;
  prometheus::Family<prometheus::Counter>* predict_rows_;
  prometheus::Family<prometheus::Histogram>* predict_duration_;
  prometheus::Family<prometheus::Counter>* rpc_handled_;
  prometheus::Family<prometheus::Histogram>* rpc_duration_;
};

}  // namespace logit

#endif  // LOGIT_SERVER_SERVER_METRICS_H_
