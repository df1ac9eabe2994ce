#include "worker/agent_metrics.h"

namespace logit {

namespace {

using Clock = std::chrono::steady_clock;
using prometheus::Histogram;

}  // namespace

// The per-rank gauges, pruned at scrape time once their rank ended more than `grace` ago.
class AgentMetrics::RankCollector : public prometheus::Collectable {
 public:
  explicit RankCollector(std::chrono::milliseconds grace) : grace_(grace) {}

  void Started(const std::string& job, int rank) {
    MutexLock lock(&mu_);
    PruneLocked(Clock::now());  // also when nobody scrapes
    ranks_[{job, rank}] = Rank{};
  }
  void Epoch(const std::string& job, int rank, int64_t epoch, double samples_per_second) {
    MutexLock lock(&mu_);
    Rank& r = ranks_[{job, rank}];
    r.epoch = epoch;
    r.samples_per_second = samples_per_second;
  }
  void Finished(const std::string& job, int rank) {
    MutexLock lock(&mu_);
    auto it = ranks_.find({job, rank});
    if (it != ranks_.end()) it->second.ended = Clock::now();
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out(2);
    out[0] = {"logit_rank_epoch",
              "Last finished epoch (L-BFGS iteration) of a rank on this worker.",
              prometheus::MetricType::Gauge,
              {}};
    out[1] = {"logit_rank_samples_per_second",
              "Training rows per second over all ranks in the rank's last epoch.",
              prometheus::MetricType::Gauge,
              {}};
    MutexLock lock(&mu_);
    PruneLocked(Clock::now());
    for (auto it = ranks_.begin(); it != ranks_.end(); ++it) {
      const std::vector<prometheus::ClientMetric::Label> labels = {
          {"job", it->first.first}, {"rank", std::to_string(it->first.second)}};
      prometheus::ClientMetric epoch, sps;
      epoch.label = sps.label = labels;
      epoch.gauge.value = static_cast<double>(it->second.epoch);
      sps.gauge.value = it->second.samples_per_second;
      out[0].metric.push_back(std::move(epoch));
      out[1].metric.push_back(std::move(sps));
    }
    return out;
  }

 private:
  // Drops the ranks that ended more than grace_ before `now`.
  void PruneLocked(Clock::time_point now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto it = ranks_.begin(); it != ranks_.end();) {
      it = it->second.ended && now - *it->second.ended > grace_ ? ranks_.erase(it) : std::next(it);
    }
  }

  struct Rank {
    int64_t epoch = 0;
    double samples_per_second = 0;
    std::optional<Clock::time_point> ended;
  };
  const std::chrono::milliseconds grace_;
  mutable Mutex mu_;
  mutable std::map<std::pair<std::string, int>, Rank> ranks_ ABSL_GUARDED_BY(mu_);
};

AgentMetrics::AgentMetrics(std::chrono::milliseconds rank_grace)
    : registry_(std::make_shared<prometheus::Registry>()),
      ranks_(std::make_shared<RankCollector>(rank_grace)) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  prometheus::Registry& r = *registry_;
  registered_ = &BuildGauge()
                     .Name("logit_worker_registered")
                     .Help("1 while the worker is registered with the coordinator, else 0.")
                     .Register(r)
                     .Add({});
  busy_ = &BuildGauge()
               .Name("logit_worker_busy")
               .Help("1 while the worker runs a rank, else 0.")
               .Register(r)
               .Add({});
  heartbeat_failures_ = &BuildCounter()
                             .Name("logit_worker_heartbeat_failures_total")
                             .Help("Heartbeats that got no answer from the coordinator.")
                             .Register(r)
                             .Add({});
  finished_ = &BuildCounter()
                   .Name("logit_worker_ranks_finished_total")
                   .Help("Ranks this worker ran to an end, by outcome.")
                   .Register(r);
  for (const char* o : {"succeeded", "failed", "cancelled"}) finished_->Add({{"outcome", o}});
  epoch_ =
      &BuildHistogram()
           .Name("logit_epoch_duration_seconds")
           .Help("Wall time of an epoch (L-BFGS iteration) of a rank on this worker.")
           .Register(r)
           .Add({}, Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600});
  step_ = &BuildHistogram()
               .Name("logit_step_duration_seconds")
               .Help("Wall time of an SGD/Adam step (forward, backward, allreduce, update).")
               .Register(r)
               .Add({}, Histogram::BucketBoundaries{0.00001, 0.000025, 0.00005, 0.0001, 0.00025,
                                                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                    0.1, 0.25, 0.5, 1, 2.5});
  samples_ = &BuildCounter()
                  .Name("logit_samples_processed_total")
                  .Help("Training rows processed by this worker's ranks (one per row per epoch).")
                  .Register(r)
                  .Add({});
  allreduce_ = &BuildHistogram()
                    .Name("logit_allreduce_duration_seconds")
                    .Help("Latency of the ranks' allreduce calls (c10d Gloo / NCCL).")
                    .Register(r)
                    .Add({}, Histogram::BucketBoundaries{
                                 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  allreduce_bytes_ = &BuildCounter()
                          .Name("logit_allreduce_bytes_total")
                          .Help("Bytes this worker's ranks contributed to allreduce calls.")
                          .Register(r)
                          .Add({});
  checkpoint_upload_ =
      &BuildHistogram()
           .Name("logit_checkpoint_upload_duration_seconds")
           .Help("Time to write and upload a checkpoint (rank 0).")
           .Register(r)
           .Add({}, Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                0.5, 1, 2.5, 5, 10, 30, 60});
}

std::vector<std::weak_ptr<prometheus::Collectable>> AgentMetrics::collectables() const {
  return {registry_, ranks_};
}

void AgentMetrics::SetRegistered(bool registered) { registered_->Set(registered ? 1 : 0); }
void AgentMetrics::HeartbeatFailed() { heartbeat_failures_->Increment(); }

void AgentMetrics::RankStarted(const std::string& job, int rank) {
  busy_->Set(1);
  ranks_->Started(job, rank);
}

void AgentMetrics::RankFinished(const std::string& job, int rank, const std::string& outcome) {
  busy_->Set(0);
  finished_->Add({{"outcome", outcome}}).Increment();
  ranks_->Finished(job, rank);
}

void AgentMetrics::Epoch(const std::string& job, int rank, int64_t epoch, double seconds,
                         int64_t local_rows, double samples_per_second) {
  epoch_->Observe(seconds);
  samples_->Increment(static_cast<double>(local_rows));
  ranks_->Epoch(job, rank, epoch, samples_per_second);
}

void AgentMetrics::Step(double seconds) { step_->Observe(seconds); }

void AgentMetrics::Allreduce(double seconds, int64_t bytes) {
  allreduce_->Observe(seconds);
  allreduce_bytes_->Increment(static_cast<double>(bytes));
}

void AgentMetrics::CheckpointUploaded(double seconds) { checkpoint_upload_->Observe(seconds); }

}  // namespace logit
