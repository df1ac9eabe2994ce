// A logit-worker's Prometheus metrics (README "Metrics"): its registration and heartbeats, the
// ranks it ran, and how fast they trained (epoch and step times, rows processed, allreduce
// latency, checkpoint uploads). Per-rank gauges (labels job, rank) stay for `rank_grace` after
// the rank ends, then vanish. Thread-safe.
#ifndef LOGIT_WORKER_AGENT_METRICS_H_
#define LOGIT_WORKER_AGENT_METRICS_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "worker/common/mutex.h"

namespace logit {

class AgentMetrics {
 public:
  explicit AgentMetrics(std::chrono::milliseconds rank_grace = std::chrono::minutes(2));

  // What /metrics serves.
  std::vector<std::weak_ptr<prometheus::Collectable>> collectables() const;

  void SetRegistered(bool registered);
  void HeartbeatFailed();
  // A rank of (job, rank) starts / ends with outcome "succeeded", "failed" or "cancelled".
  void RankStarted(const std::string& job, int rank);
  void RankFinished(const std::string& job, int rank, const std::string& outcome);
  // After each epoch of the rank: its wall time, this rank's rows, all ranks' rows per second.
  void Epoch(const std::string& job, int rank, int64_t epoch, double seconds, int64_t local_rows,
             double samples_per_second);
  void Step(double seconds);
  void Allreduce(double seconds, int64_t bytes);
  void CheckpointUploaded(double seconds);

 private:
  class RankCollector;

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<RankCollector> ranks_;
  prometheus::Gauge* registered_;
  prometheus::Gauge* busy_;
  prometheus::Counter* heartbeat_failures_;
  prometheus::Family<prometheus::Counter>* finished_;
  prometheus::Histogram* epoch_;
  prometheus::Histogram* step_;
  prometheus::Counter* samples_;
  prometheus::Histogram* allreduce_;
  prometheus::Counter* allreduce_bytes_;
  prometheus::Histogram* checkpoint_upload_;
};

}  // namespace logit

#endif  // LOGIT_WORKER_AGENT_METRICS_H_
