// Scheduling: the FIFO queue of jobs waiting for workers and the gang placement policy.
//
// Strict FIFO: the job at the head is placed first, and a job that needs more idle workers
// than there are blocks the ones behind it (a big job is never starved by small ones). A job is
// placed as a gang: all of its ranks at once, on the idle workers with the lowest ids.
//
// Thread-safety: Scheduler is thread-safe (its queue is guarded by its own mutex, never held
// while calling out). The placement itself (the queue's head, the registry's idle workers and
// the job's new state together) is made atomic by the caller: the Coordinator places jobs only
// while holding its commit lock.
#ifndef LOGIT_SERVER_SCHEDULER_H_
#define LOGIT_SERVER_SCHEDULER_H_

#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "worker/common/mutex.h"

namespace logit {

class Scheduler {
 public:
  Scheduler() = default;

  // Appends a queued job at the tail.
  void Enqueue(const std::string& job_id);
  // Puts a job back at the head (a placement that could not complete).
  void Requeue(const std::string& job_id);
  // Removes the job wherever it is (cancelled, failed); no-op if absent.
  void Remove(const std::string& job_id);
  // The head of the queue, if any.
  std::optional<std::string> Front() const;
  // Jobs waiting.
  int Size() const;

  // The gang for a job of `need` ranks among `idle` worker ids: rank r runs on the r-th lowest
  // id ("w-2" before "w-10"). REQUIRES: idle.size() >= need.
  static std::vector<std::string> PickGang(std::vector<std::string> idle, int need);
  // Job.reason while the head job waits for workers.
  static std::string WaitingReason(int need, int idle, int registered);

 private:
  mutable Mutex mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
};

}  // namespace logit

#endif  // LOGIT_SERVER_SCHEDULER_H_
