// The event log: each job's events (state changes and per-epoch metrics, sequence 1, 2, ...
// without gaps, each one already durable when it is appended here) and its latest transient
// StepProgress, and the WatchJob streams that follow them.
//
// Thread-safety: thread-safe. mu_ guards every job's log; each job has its own condition
// variable, signalled on every append, progress update and shutdown, so a watcher wakes as soon
// as there is something to send. Watchers never send while holding mu_. Appends for one job
// must come in sequence order (the Coordinator appends under its commit lock).
#ifndef LOGIT_SERVER_EVENT_LOG_H_
#define LOGIT_SERVER_EVENT_LOG_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "logit/v1/training.pb.h"
#include "worker/common/mutex.h"

namespace logit {

class EventLog {
 public:
  // A watcher re-checks its `cancelled` callback at least this often (gRPC's synchronous API
  // has no cancellation callback); events and shutdown wake it at once.
  static constexpr absl::Duration kCancelCheckInterval = absl::Milliseconds(200);

  // `max_watchers_per_job`: concurrent Watch calls per job (0 = no limit).
  explicit EventLog(int max_watchers_per_job);

  // Adds a job with its stored events (sequences 1..n in order); `finished` if its state is
  // final.
  void Restore(const std::string& job_id, std::vector<v1::JobEvent> events, bool finished);
  // Appends `event`, whose sequence must be the job's next; a final state change finishes the
  // job's log. Creates the job's log on its first event.
  void Append(const v1::JobEvent& event);
  // Replaces the job's transient in-epoch progress (ignored once the job has finished).
  void SetProgress(const std::string& job_id, const v1::StepProgress& progress);
  // Wakes every watcher; they return UNAVAILABLE.
  void Shutdown();

  // Calls `send` for every event from `from_sequence` on, then for live ones (the latest
  // progress as a transient event with the sequence of the last stored event), until the job
  // has finished and everything was sent (OK), `send` returns false or `cancelled` returns true
  // (CANCELLED), or Shutdown (UNAVAILABLE). NOT_FOUND for an unknown job, RESOURCE_EXHAUSTED
  // over the watcher limit.
  absl::Status Watch(const std::string& job_id, int64_t from_sequence,
                     const std::function<bool(const v1::JobEvent&)>& send,
                     const std::function<bool()>& cancelled);

 private:
  struct JobLog {
    std::vector<v1::JobEvent> events;
    bool finished = false;
    v1::StepProgress progress;
    int64_t progress_version = 0;
    int watchers = 0;
    CondVar changed;
  };
  // The job's log, created if absent. Logs are never erased, so the pointer stays valid.
  JobLog* LogLocked(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_watchers_per_job_;

  Mutex mu_;
  std::map<std::string, std::unique_ptr<JobLog>> jobs_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace logit

#endif  // LOGIT_SERVER_EVENT_LOG_H_
