#include "server/server_metrics.h"

#include <utility>

#include "absl/strings/str_split.h"
#include "prometheus/gauge.h"

namespace logit {

namespace {

using prometheus::Histogram;

// Seconds: 0.1 s .. 1 day for jobs; 0.1 ms .. 10 s for requests and store writes.
Histogram::BucketBoundaries JobBuckets() {
  return {0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400};
}
Histogram::BucketBoundaries RequestBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

constexpr v1::JobState kStates[] = {v1::QUEUED,    v1::RUNNING, v1::RETRYING,
                                    v1::SUCCEEDED, v1::FAILED,  v1::CANCELLED};
constexpr v1::JobState kFinalStates[] = {v1::SUCCEEDED, v1::FAILED, v1::CANCELLED};

prometheus::ClientMetric GaugeValue(std::vector<prometheus::ClientMetric::Label> labels,
                                    double value) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  return m;
}

}  // namespace

// Gauges computed from the coordinator's state at scrape time.
class ServerMetrics::SnapshotCollector : public prometheus::Collectable {
 public:
  void SetSource(std::function<ClusterSnapshot()> source) {
    MutexLock lock(&mu_);  // waits for a Collect in progress
    source_ = std::move(source);
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::MetricType;
    ClusterSnapshot s;
    {
      MutexLock lock(&mu_);
      if (!source_) return {};
      s = source_();
    }
    std::vector<prometheus::MetricFamily> out;
    out.reserve(32);  // family() hands out references into it: no reallocation
    auto family = [&out](const char* name, const char* help) -> prometheus::MetricFamily& {
      out.push_back({name, help, MetricType::Gauge, {}});
      return out.back();
    };
    prometheus::MetricFamily& jobs = family("logit_jobs", "Jobs by state.");
    for (v1::JobState st : kStates) {
      auto it = s.jobs.find(st);
      jobs.metric.push_back(
          GaugeValue({{"state", StateName(st)}}, it == s.jobs.end() ? 0 : it->second));
    }
    family("logit_queue_jobs", "Jobs waiting for workers (queued or retrying).")
        .metric.push_back(GaugeValue({}, s.queue_jobs));
    family("logit_queue_oldest_age_seconds",
           "Seconds the longest-waiting queued job has waited (0: the queue is empty).")
        .metric.push_back(GaugeValue({}, s.queue_oldest_age_seconds));
    prometheus::MetricFamily& workers = family("logit_workers", "Registered workers by state.");
    for (const char* st : {"idle", "busy"}) {
      auto it = s.workers.find(st);
      workers.metric.push_back(GaugeValue({{"state", st}}, it == s.workers.end() ? 0 : it->second));
    }
    family("logit_storage_healthy",
           "1 when the data dir and the job store took the last probe write, else 0.")
        .metric.push_back(GaugeValue({}, s.storage_healthy ? 1 : 0));

    // Per job: present while unfinished and for the grace period after.
    prometheus::MetricFamily& epoch =
        family("logit_job_epoch", "Last finished epoch (L-BFGS iteration) of the job.");
    prometheus::MetricFamily& total =
        family("logit_job_total_epochs", "Epochs (L-BFGS iterations) the job may run.");
    prometheus::MetricFamily& loss = family("logit_job_loss",
                                            "Training loss (mean cross-entropy): after the last "
                                            "epoch; of the final model once the job succeeded.");
    prometheus::MetricFamily& objective =
        family("logit_job_objective",
               "Training objective (loss + penalty): after the last epoch; of the final model once "
               "the job succeeded.");
    prometheus::MetricFamily& val_loss =
        family("logit_job_val_loss",
               "Validation loss: after the last epoch; of the final model once the job succeeded.");
    prometheus::MetricFamily& accuracy = family("logit_job_accuracy",
                                                "Accuracy of the job's model by split (validation: "
                                                "last epoch; train/test: the final summary).");
    prometheus::MetricFamily& sps =
        family("logit_job_samples_per_second",
               "Training rows per second over all ranks in the job's last epoch.");
    prometheus::MetricFamily& epoch_s =
        family("logit_job_epoch_duration_seconds", "Wall time of the job's last epoch.");
    prometheus::MetricFamily& attempt =
        family("logit_job_attempt", "The job's current attempt (0 = first).");
    prometheus::MetricFamily& retries =
        family("logit_job_retries", "Retries the job has used (charged against max_retries).");
    prometheus::MetricFamily& ranks =
        family("logit_job_workers", "Ranks of the job's running attempt.");
    prometheus::MetricFamily& ckpt_age =
        family("logit_job_checkpoint_age_seconds",
               "Seconds since the unfinished job's latest checkpoint (since its attempt started "
               "when none yet).");
    for (const JobSeries& j : s.job_series) {
      const std::vector<prometheus::ClientMetric::Label> id = {{"job", j.job_id}};
      attempt.metric.push_back(GaugeValue(id, j.attempt));
      retries.metric.push_back(GaugeValue(id, j.retries));
      ranks.metric.push_back(GaugeValue(id, j.workers));
      if (j.checkpoint_age_seconds) {
        ckpt_age.metric.push_back(GaugeValue(id, *j.checkpoint_age_seconds));
      }
      if (j.last_epoch) {
        const v1::EpochMetrics& e = *j.last_epoch;
        epoch.metric.push_back(GaugeValue(id, static_cast<double>(e.epoch())));
        loss.metric.push_back(GaugeValue(id, e.train_loss()));
        objective.metric.push_back(GaugeValue(id, e.objective()));
        // Unset (0) when the job reported no epoch, e.g. it succeeded before its first report.
        if (e.total_epochs() > 0) {
          total.metric.push_back(GaugeValue(id, static_cast<double>(e.total_epochs())));
        }
        if (e.seconds() > 0) {
          epoch_s.metric.push_back(GaugeValue(id, e.seconds()));
          sps.metric.push_back(GaugeValue(id, e.samples_per_second()));
        }
        if (e.has_validation()) {
          val_loss.metric.push_back(GaugeValue(id, e.val_loss()));
          if (!j.final_accuracy.count("validation")) {
            accuracy.metric.push_back(
                GaugeValue({{"job", j.job_id}, {"split", "validation"}}, e.val_accuracy()));
          }
        }
      }
      for (const auto& [split, value] : j.final_accuracy) {
        accuracy.metric.push_back(GaugeValue({{"job", j.job_id}, {"split", split}}, value));
      }
    }
    return out;
  }

 private:
  mutable Mutex mu_;
  std::function<ClusterSnapshot()> source_ ABSL_GUARDED_BY(mu_);
};

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      snapshot_(std::make_shared<SnapshotCollector>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  prometheus::Registry& r = *registry_;
  BuildGauge()
      .Name("logit_build_info")
      .Help("Always 1; the version label names the logit build.")
      .Register(r)
      .Add({{"version", LOGIT_VERSION}})
      .Set(1);
  submitted_ = &BuildCounter()
                    .Name("logit_jobs_submitted_total")
                    .Help("Jobs accepted by SubmitJob.")
                    .Register(r)
                    .Add({});
  finished_ = &BuildCounter()
                   .Name("logit_jobs_finished_total")
                   .Help("Jobs that reached a final state, by state.")
                   .Register(r);
  duration_ = &BuildHistogram()
                   .Name("logit_job_duration_seconds")
                   .Help(
                       "Running time of finished jobs (first start to end; 0 if never started), "
                       "by final state.")
                   .Register(r);
  for (v1::JobState st : kFinalStates) {
    finished_->Add({{"state", StateName(st)}});
    duration_->Add({{"state", StateName(st)}}, JobBuckets());
  }
  queue_wait_ = &BuildHistogram()
                     .Name("logit_job_queue_wait_seconds")
                     .Help("Seconds from a job's submission to its first start.")
                     .Register(r)
                     .Add({}, JobBuckets());
  retries_ = &BuildCounter()
                  .Name("logit_job_retries_total")
                  .Help(
                      "Job attempts that ended and were retried (RETRYING), a coordinator "
                      "restart's uncharged retries included.")
                  .Register(r)
                  .Add({});
  registrations_ = &BuildCounter()
                        .Name("logit_worker_registrations_total")
                        .Help("Worker registrations (a restarted worker registers again).")
                        .Register(r)
                        .Add({});
  lost_ = &BuildCounter()
               .Name("logit_workers_lost_total")
               .Help("Workers removed because their heartbeats stopped.")
               .Register(r)
               .Add({});
  heartbeats_missed_ = &BuildCounter()
                            .Name("logit_worker_heartbeats_missed_total")
                            .Help("Heartbeat periods that passed without the worker's heartbeat.")
                            .Register(r)
                            .Add({});
  checkpoints_ = &BuildCounter()
                      .Name("logit_checkpoints_stored_total")
                      .Help("Checkpoints stored durably.")
                      .Register(r)
                      .Add({});
  checkpoint_bytes_ = &BuildCounter()
                           .Name("logit_checkpoint_bytes_total")
                           .Help("Bytes of the checkpoints stored.")
                           .Register(r)
                           .Add({});
  upload_bytes_ = &BuildCounter()
                       .Name("logit_upload_bytes_total")
                       .Help("Bytes received and stored, by kind (dataset, model, checkpoint).")
                       .Register(r);
  for (const char* kind : {"dataset", "model", "checkpoint"}) upload_bytes_->Add({{"kind", kind}});
  store_write_ = &BuildHistogram()
                      .Name("logit_store_write_duration_seconds")
                      .Help("Duration of job store (SQLite) write transactions, fsync included.")
                      .Register(r)
                      .Add({}, RequestBuckets());
  predict_requests_ = &BuildCounter()
                           .Name("logit_predict_requests_total")
                           .Help(
                               "Predict (protocol logit) and ModelInfer (protocol oip) requests, "
                               "by gRPC code.")
                           .Register(r);
  predict_rows_ = &BuildCounter()
                       .Name("logit_predict_rows_total")
                       .Help("Rows predicted, by protocol.")
                       .Register(r);
  predict_duration_ = &BuildHistogram()
                           .Name("logit_predict_duration_seconds")
                           .Help("Latency of Predict / ModelInfer requests, by protocol.")
                           .Register(r);
  for (const char* protocol : {"logit", "oip"}) {
    predict_requests_->Add({{"protocol", protocol}, {"code", "OK"}});
    predict_rows_->Add({{"protocol", protocol}});
    predict_duration_->Add({{"protocol", protocol}}, RequestBuckets());
  }
  rpc_handled_ = &BuildCounter()
                      .Name("logit_grpc_server_handled_total")
                      .Help("gRPC calls completed by the server, by service, method and code.")
                      .Register(r);
  rpc_duration_ = &BuildHistogram()
                       .Name("logit_grpc_server_handling_seconds")
                       .Help("Duration of unary gRPC calls, by service and method.")
                       .Register(r);
}

ServerMetrics::~ServerMetrics() { snapshot_->SetSource(nullptr); }

std::vector<std::weak_ptr<prometheus::Collectable>> ServerMetrics::collectables() const {
  return {registry_, snapshot_};
}

void ServerMetrics::SetSnapshotSource(std::function<ClusterSnapshot()> source) {
  snapshot_->SetSource(std::move(source));
}

void ServerMetrics::JobSubmitted() { submitted_->Increment(); }

void ServerMetrics::JobStarted(double queue_wait_seconds) {
  queue_wait_->Observe(queue_wait_seconds);
}

void ServerMetrics::JobFinished(v1::JobState state, std::optional<double> running_seconds) {
  finished_->Add({{"state", StateName(state)}}).Increment();
  if (running_seconds) {
    duration_->Add({{"state", StateName(state)}}, JobBuckets()).Observe(*running_seconds);
  }
}

void ServerMetrics::JobRetried() { retries_->Increment(); }
void ServerMetrics::WorkerRegistered() { registrations_->Increment(); }
void ServerMetrics::WorkerLost() { lost_->Increment(); }

void ServerMetrics::HeartbeatsMissed(int n) {
  if (n > 0) heartbeats_missed_->Increment(n);
}

void ServerMetrics::CheckpointStored(int64_t bytes) {
  checkpoints_->Increment();
  checkpoint_bytes_->Increment(static_cast<double>(bytes));
}

void ServerMetrics::Uploaded(const std::string& kind, int64_t bytes) {
  upload_bytes_->Add({{"kind", kind}}).Increment(static_cast<double>(bytes));
}

void ServerMetrics::StoreWrite(double seconds) { store_write_->Observe(seconds); }

void ServerMetrics::Predict(const std::string& protocol, const std::string& code, int64_t rows,
                            double seconds) {
  predict_requests_->Add({{"protocol", protocol}, {"code", code}}).Increment();
  if (rows > 0) predict_rows_->Add({{"protocol", protocol}}).Increment(static_cast<double>(rows));
  predict_duration_->Add({{"protocol", protocol}}, RequestBuckets()).Observe(seconds);
}

void ServerMetrics::Rpc(const std::string& full_method, const std::string& code, double seconds,
                        bool streaming) {
  // "/logit.v1.TrainingService/SubmitJob" -> ("logit.v1.TrainingService", "SubmitJob").
  std::vector<std::string> parts = absl::StrSplit(full_method, '/', absl::SkipEmpty());
  const std::string service = parts.size() == 2 ? parts[0] : "unknown";
  const std::string method = parts.size() == 2 ? parts[1] : "unknown";
  rpc_handled_->Add({{"grpc_service", service}, {"grpc_method", method}, {"grpc_code", code}})
      .Increment();
  if (streaming) return;
  rpc_duration_->Add({{"grpc_service", service}, {"grpc_method", method}}, RequestBuckets())
      .Observe(seconds);
}

std::string ServerMetrics::CodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  return code >= 0 && code < 17 ? kNames[code] : "UNKNOWN";
}

std::string ServerMetrics::StateName(v1::JobState state) {
  switch (state) {
    case v1::QUEUED:
      return "queued";
    case v1::RUNNING:
      return "running";
    case v1::RETRYING:
      return "retrying";
    case v1::SUCCEEDED:
      return "succeeded";
    case v1::FAILED:
      return "failed";
    case v1::CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

}  // namespace logit
