#include "server/worker_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/auth.h"
#include "worker/common/status.h"

namespace logit {

WorkerRegistry::WorkerRegistry(std::chrono::milliseconds heartbeat_interval)
    : heartbeat_interval_(heartbeat_interval) {}

v1::RegisterWorkerResponse WorkerRegistry::Register(const v1::RegisterWorkerRequest& request,
                                                    const std::string& id) {
  const std::string secret = RandomSecret();
  MutexLock lock(&mu_);
  Worker& w = workers_[id];
  w.info = request;
  w.last_seen = Clock::now();
  w.secret = secret;
  v1::RegisterWorkerResponse resp;
  resp.set_worker_id(id);
  resp.set_worker_secret(w.secret);
  resp.set_heartbeat_interval_ms(heartbeat_interval_.count());
  return resp;
}

absl::StatusOr<const WorkerRegistry::Worker*> WorkerRegistry::AuthenticLocked(
    const std::string& worker_id, const std::string& secret) const {
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || !SecretsEqual(secret, it->second.secret)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "worker_secret: not the secret issued to worker '", worker_id, "' at registration"));
  }
  return &it->second;
}

absl::StatusOr<WorkerRegistry::Beat> WorkerRegistry::Heartbeat(const std::string& worker_id,
                                                               const std::string& secret,
                                                               const std::string& running_job,
                                                               int running_attempt) {
  MutexLock lock(&mu_);
  Beat beat;
  if (workers_.find(worker_id) == workers_.end()) {
    beat.unknown = true;
    return beat;
  }
  RETURN_IF_ERROR(AuthenticLocked(worker_id, secret).status());
  Worker& w = workers_[worker_id];
  const Clock::time_point now = Clock::now();
  if (heartbeat_interval_.count() > 0) {
    // A beat up to two periods after the last one missed none.
    beat.missed = std::max<int>(0, static_cast<int>((now - w.last_seen) / heartbeat_interval_) - 1);
  }
  w.last_seen = now;
  if (w.pending && w.pending->job_id() == running_job && w.pending->attempt() == running_attempt) {
    w.pending.reset();  // acknowledged: the worker runs it
  }
  beat.assignment = w.pending;
  beat.job_id = w.job_id;
  beat.attempt = w.attempt;
  return beat;
}

absl::Status WorkerRegistry::Authenticate(const std::string& worker_id,
                                          const std::string& secret) const {
  MutexLock lock(&mu_);
  return AuthenticLocked(worker_id, secret).status();
}

absl::Status WorkerRegistry::CheckRankHolder(const std::string& worker_id,
                                             const std::string& secret, const std::string& job_id,
                                             int attempt, int rank) const {
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(const Worker* w, AuthenticLocked(worker_id, secret));
  if (w->job_id != job_id || w->attempt != attempt || w->rank != rank) {
    return absl::PermissionDeniedError(absl::StrCat("worker '", worker_id, "' does not hold rank ",
                                                    rank, " of ", job_id, " attempt ", attempt));
  }
  return absl::OkStatus();
}

std::vector<std::string> WorkerRegistry::IdleWorkers(int* registered) const {
  MutexLock lock(&mu_);
  std::vector<std::string> idle;
  for (const auto& [id, w] : workers_) {
    if (w.job_id.empty()) idle.push_back(id);
  }
  if (registered != nullptr) *registered = static_cast<int>(workers_.size());
  return idle;
}

bool WorkerRegistry::Reserve(const std::vector<std::string>& gang, const std::string& job_id,
                             int attempt) {
  MutexLock lock(&mu_);
  for (const std::string& id : gang) {
    auto it = workers_.find(id);
    if (it == workers_.end() || !it->second.job_id.empty()) return false;
  }
  for (size_t r = 0; r < gang.size(); ++r) {
    Worker& w = workers_[gang[r]];
    w.job_id = job_id;
    w.attempt = attempt;
    w.rank = static_cast<int>(r);
    w.pending.reset();
  }
  return true;
}

void WorkerRegistry::Unreserve(const std::vector<std::string>& gang, const std::string& job_id,
                               int attempt) {
  for (const std::string& id : gang) Release(id, job_id, attempt);
}

void WorkerRegistry::Deliver(const std::string& worker_id, v1::Assignment assignment) {
  MutexLock lock(&mu_);
  auto it = workers_.find(worker_id);
  if (it != workers_.end()) it->second.pending = std::move(assignment);
}

bool WorkerRegistry::Release(const std::string& worker_id, const std::string& job_id, int attempt) {
  MutexLock lock(&mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.job_id != job_id || it->second.attempt != attempt) {
    return false;
  }
  it->second.job_id.clear();
  it->second.pending.reset();
  return true;
}

std::vector<WorkerRegistry::Lost> WorkerRegistry::RemoveSilent(Clock::time_point now,
                                                               std::chrono::milliseconds timeout) {
  MutexLock lock(&mu_);
  std::vector<Lost> lost;
  for (auto it = workers_.begin(); it != workers_.end();) {
    const Worker& w = it->second;
    if (now - w.last_seen < timeout) {
      ++it;
      continue;
    }
    lost.push_back(Lost{it->first, w.job_id, w.attempt, w.rank});
    it = workers_.erase(it);
  }
  return lost;
}

std::map<std::string, int> WorkerRegistry::Counts() const {
  MutexLock lock(&mu_);
  std::map<std::string, int> counts{{"idle", 0}, {"busy", 0}};
  for (const auto& [id, w] : workers_) ++counts[w.job_id.empty() ? "idle" : "busy"];
  return counts;
}

}  // namespace logit
