// The Prometheus endpoint of logit-server and logit-worker (`--metrics-listen HOST:PORT`):
// text exposition (prometheus-cpp's TextSerializer) on http://HOST:PORT/metrics of the
// registered collectables plus the standard process_* metrics of this process.
//
// HTTP is libmicrohttpd's, not prometheus-cpp's civetweb Exposer: Debian's civetweb starts its
// threads with a small fixed stack, which pthread_create refuses in a process whose libraries
// (LibTorch, OpenMP) need more thread-local storage than that ("Cannot create threads").
#ifndef LOGIT_WORKER_COMMON_METRICS_ENDPOINT_H_
#define LOGIT_WORKER_COMMON_METRICS_ENDPOINT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "worker/common/mutex.h"

struct MHD_Daemon;

namespace logit {

// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_start_time_seconds, process_open_fds, process_max_fds and process_threads, read from
// /proc/self at every scrape (the names and meanings of Prometheus' client libraries).
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

class MetricsEndpoint {
 public:
  // Listens on `listen` ("HOST:PORT"; port 0 picks a free one, see port()). InvalidArgument
  // naming --metrics-listen for a malformed address; Unavailable when it cannot listen there.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& listen);
  ~MetricsEndpoint();

  // Adds a collectable to /metrics; the endpoint holds a weak reference (keep it alive).
  void Register(const std::weak_ptr<prometheus::Collectable>& collectable);
  // The port it listens on.
  int port() const { return port_; }

  // The exposition text of everything registered (what GET /metrics returns).
  std::string Render() const;

 private:
  MetricsEndpoint();
  mutable Mutex mu_;
  std::vector<std::weak_ptr<prometheus::Collectable>> collectables_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<ProcessCollector> process_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
};

}  // namespace logit

#endif  // LOGIT_WORKER_COMMON_METRICS_ENDPOINT_H_
