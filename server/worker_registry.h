// The worker registry: membership, per-worker secrets and authentication, heartbeats, which
// rank of which job attempt each worker holds, the assignment waiting for its next heartbeat,
// and lost-worker detection.
//
// Thread-safety: thread-safe; every method takes mu_ for a short, non-blocking critical section
// and calls nothing outside the registry while holding it. Nothing here is durable: workers
// re-register with a restarted coordinator.
#ifndef LOGIT_SERVER_WORKER_REGISTRY_H_
#define LOGIT_SERVER_WORKER_REGISTRY_H_

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "logit/v1/worker.pb.h"
#include "worker/common/mutex.h"

namespace logit {

class WorkerRegistry {
 public:
  using Clock = std::chrono::steady_clock;

  // `heartbeat_interval` is what registered workers are told to use.
  explicit WorkerRegistry(std::chrono::milliseconds heartbeat_interval);

  // Adds a worker under `worker_id` (the coordinator draws ids from its durable store, so they
  // never repeat across restarts), idle, with a fresh secret.
  v1::RegisterWorkerResponse Register(const v1::RegisterWorkerRequest& request,
                                      const std::string& worker_id);

  // What a heartbeat found.
  struct Beat {
    bool unknown = false;                      // not registered (lost, or a restarted server)
    std::optional<v1::Assignment> assignment;  // to deliver (again) with this reply
    std::string job_id;                        // the attempt the worker holds ("" = idle)
    int attempt = 0;
    int missed = 0;  // heartbeat periods that passed since the previous one without a beat
  };
  // Records a heartbeat of `worker_id`, which runs (`running_job`, `running_attempt`) ("" =
  // nothing). A pending assignment is returned with every heartbeat until one names its job
  // attempt (at-least-once delivery: a lost reply loses nothing). PERMISSION_DENIED if the
  // worker is registered and `secret` is not its secret.
  absl::StatusOr<Beat> Heartbeat(const std::string& worker_id, const std::string& secret,
                                 const std::string& running_job = "", int running_attempt = 0);

  // OK if `secret` is the worker's secret; PERMISSION_DENIED otherwise (unknown worker too).
  absl::Status Authenticate(const std::string& worker_id, const std::string& secret) const;
  // OK if the worker is authentic and holds `rank` of the job attempt; PERMISSION_DENIED
  // otherwise.
  absl::Status CheckRankHolder(const std::string& worker_id, const std::string& secret,
                               const std::string& job_id, int attempt, int rank) const;

  // Ids of the idle workers, and how many are registered.
  std::vector<std::string> IdleWorkers(int* registered) const;
  // Marks gang[r] busy with rank r of the job attempt, if every one of them is still idle;
  // returns false (changing nothing) otherwise. No assignment is delivered before Deliver.
  bool Reserve(const std::vector<std::string>& gang, const std::string& job_id, int attempt);
  // Frees the workers of a Reserve whose placement could not be committed.
  void Unreserve(const std::vector<std::string>& gang, const std::string& job_id, int attempt);
  // Queues `assignment` for the worker's heartbeats until acknowledged (no-op if the worker is
  // gone).
  void Deliver(const std::string& worker_id, v1::Assignment assignment);
  // Frees the worker if it still holds that job attempt; returns whether it did.
  bool Release(const std::string& worker_id, const std::string& job_id, int attempt);

  // A worker removed for silence, and what it held.
  struct Lost {
    std::string worker_id;
    std::string job_id;  // "" = it was idle
    int attempt = 0;
    int rank = 0;
  };
  // Removes every worker not heard from for `timeout` before `now`.
  std::vector<Lost> RemoveSilent(Clock::time_point now, std::chrono::milliseconds timeout);

  // Registered workers by state ("idle", "busy").
  std::map<std::string, int> Counts() const;

 private:
  struct Worker {
    v1::RegisterWorkerRequest info;
    std::string secret;  // RegisterWorkerResponse.worker_secret
    Clock::time_point last_seen;
    std::string job_id;  // busy with this job attempt ("" = idle)
    int attempt = 0;
    int rank = 0;
    std::optional<v1::Assignment> pending;  // sent with heartbeats until acknowledged
  };
  // The worker if `secret` is its secret, PERMISSION_DENIED otherwise.
  absl::StatusOr<const Worker*> AuthenticLocked(const std::string& worker_id,
                                                const std::string& secret) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::chrono::milliseconds heartbeat_interval_;

  mutable Mutex mu_;
  std::map<std::string, Worker> workers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace logit

#endif  // LOGIT_SERVER_WORKER_REGISTRY_H_
