#include "server/event_log.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"

namespace logit {

namespace {

bool IsFinalStateChange(const v1::JobEvent& e) {
  if (!e.has_state_change()) return false;
  const v1::JobState s = e.state_change().state();
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

}  // namespace

EventLog::EventLog(int max_watchers_per_job) : max_watchers_per_job_(max_watchers_per_job) {}

EventLog::JobLog* EventLog::LogLocked(const std::string& job_id) {
  std::unique_ptr<JobLog>& log = jobs_[job_id];
  if (!log) log = std::make_unique<JobLog>();
  return log.get();
}

void EventLog::Restore(const std::string& job_id, std::vector<v1::JobEvent> events, bool finished) {
  MutexLock lock(&mu_);
  JobLog* log = LogLocked(job_id);
  log->events = std::move(events);
  log->finished = finished;
}

void EventLog::Append(const v1::JobEvent& event) {
  MutexLock lock(&mu_);
  JobLog* log = LogLocked(event.job_id());
  log->events.push_back(event);
  if (IsFinalStateChange(event)) log->finished = true;
  log->changed.SignalAll();
}

void EventLog::SetProgress(const std::string& job_id, const v1::StepProgress& progress) {
  MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second->finished) return;
  it->second->progress = progress;
  ++it->second->progress_version;
  it->second->changed.SignalAll();
}

void EventLog::Shutdown() {
  MutexLock lock(&mu_);
  stopping_ = true;
  for (auto& [id, log] : jobs_) log->changed.SignalAll();
}

absl::Status EventLog::Watch(const std::string& job_id, int64_t from_sequence,
                             const std::function<bool(const v1::JobEvent&)>& send,
                             const std::function<bool()>& cancelled) {
  size_t next = static_cast<size_t>(std::max<int64_t>(1, from_sequence) - 1);
  int64_t seen_progress = -1;  // the first live progress is sent; older ones are not replayed
  JobLog* log = nullptr;
  {
    MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
    log = it->second.get();
    if (max_watchers_per_job_ > 0 && log->watchers >= max_watchers_per_job_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("job '", job_id, "' already has ", log->watchers,
                       " watchers, the limit --max-watchers-per-job=", max_watchers_per_job_));
    }
    ++log->watchers;
    seen_progress = log->progress_version;
  }
  struct Unwatch {
    EventLog* events;
    JobLog* log;
    ~Unwatch() {
      MutexLock lock(&events->mu_);
      --log->watchers;
    }
  } unwatch{this, log};
  while (true) {
    std::vector<v1::JobEvent> batch;
    bool finished = false;
    {
      MutexLock lock(&mu_);
      if (next >= log->events.size() && !log->finished && log->progress_version == seen_progress &&
          !stopping_) {
        log->changed.WaitWithTimeout(&mu_, kCancelCheckInterval);
      }
      if (stopping_) return absl::UnavailableError("the server is shutting down");
      for (; next < log->events.size(); ++next) batch.push_back(log->events[next]);
      finished = log->finished;
      if (!finished && log->progress_version != seen_progress) {
        seen_progress = log->progress_version;
        v1::JobEvent ev;
        ev.set_job_id(job_id);
        ev.set_sequence(static_cast<int64_t>(log->events.size()));
        *ev.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
        *ev.mutable_progress() = log->progress;
        batch.push_back(std::move(ev));
      }
    }
    for (const v1::JobEvent& e : batch) {
      if (!send(e)) return absl::CancelledError("the watcher went away");
    }
    if (finished && batch.empty()) return absl::OkStatus();
    if (cancelled()) return absl::CancelledError("the watcher went away");
  }
}

}  // namespace logit
