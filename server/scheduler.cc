#include "server/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace logit {

void Scheduler::Enqueue(const std::string& job_id) {
  MutexLock lock(&mu_);
  queue_.push_back(job_id);
}

void Scheduler::Requeue(const std::string& job_id) {
  MutexLock lock(&mu_);
  queue_.push_front(job_id);
}

void Scheduler::Remove(const std::string& job_id) {
  MutexLock lock(&mu_);
  queue_.erase(std::remove(queue_.begin(), queue_.end(), job_id), queue_.end());
}

std::optional<std::string> Scheduler::Front() const {
  MutexLock lock(&mu_);
  if (queue_.empty()) return std::nullopt;
  return queue_.front();
}

int Scheduler::Size() const {
  MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

std::vector<std::string> Scheduler::PickGang(std::vector<std::string> idle, int need) {
  std::sort(idle.begin(), idle.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  });
  idle.resize(need);
  return idle;
}

std::string Scheduler::WaitingReason(int need, int idle, int registered) {
  return absl::StrCat("waiting for ", need, " idle workers (", idle, " idle, ", registered,
                      " registered)");
}

}  // namespace logit
