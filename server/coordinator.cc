#include "server/coordinator.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "google/protobuf/util/time_util.h"
#include "nlohmann/json.hpp"
#include "server/store.h"
#include "worker/common/log.h"
#include "worker/common/status.h"
#include "worker/job_spec.h"
#include "worker/summary.h"

namespace logit {

namespace fs = std::filesystem;
using google::protobuf::util::TimeUtil;
using Clock = std::chrono::steady_clock;

namespace {

bool IsFinished(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

// Wall time to the nanosecond (protobuf's GetCurrentTime has whole seconds only on Debian 12's
// protobuf, too coarse for job durations and queue waits).
google::protobuf::Timestamp Now() {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
}

CatalogOptions CatalogOptionsFrom(const CoordinatorConfig& config) {
  CatalogOptions o;
  o.data_dir = config.data_dir;
  o.data_root = config.data_root;
  o.predict_limits = config.predict_limits;
  o.max_upload_bytes = config.max_upload_bytes;
  o.max_dataset_bytes = config.max_dataset_bytes;
  o.min_free_disk_bytes = config.min_free_disk_bytes;
  o.max_cached_models = config.max_cached_models;
  return o;
}

absl::Status MakeDataDirs(const std::string& data_dir) {
  std::error_code ec;
  for (const char* sub : {"", "datasets", "models", "checkpoints"}) {
    fs::create_directories(fs::path(data_dir) / sub, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("data_dir: cannot create ", data_dir, "/", sub, ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

// Codes of rank failures that another attempt may not repeat: a lost or hung peer, a broken
// collective, a crashed or restarted process. Bad data, an invalid spec, divergence (all
// INVALID_ARGUMENT), missing files and out-of-memory fail the job at once.
bool RetryableCode(int code) {
  switch (static_cast<absl::StatusCode>(code)) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

// The rendezvous store scope (and c10d key prefix) of a job attempt.
std::string AttemptScope(const std::string& job_id, int attempt) {
  return absl::StrCat(job_id, "/attempt-", attempt);
}

// "attempt 0: ...; attempt 1: ..." for a job's failure reason.
std::string AttemptHistory(const v1::Job& job) {
  std::vector<std::string> parts;
  for (const v1::AttemptFailure& f : job.failed_attempts()) {
    parts.push_back(absl::StrCat("attempt ", f.attempt(), ": ", f.reason()));
  }
  return absl::StrJoin(parts, "; ");
}

// The job as clients see it: the latest checkpoint's age as of now.
v1::Job WithAges(v1::Job job) {
  if (job.has_latest_checkpoint()) {
    const int64_t age_ns = TimeUtil::TimestampToNanoseconds(Now()) -
                           TimeUtil::TimestampToNanoseconds(job.latest_checkpoint().created());
    job.mutable_latest_checkpoint()->set_age_seconds(std::max<int64_t>(0, age_ns) / 1e9);
  }
  return job;
}

}  // namespace

Coordinator::Coordinator(const CoordinatorConfig& config, std::unique_ptr<JobStore> store)
    : config_(config),
      metrics_(config.metrics ? config.metrics : std::make_shared<ServerMetrics>()),
      store_(std::move(store)),
      registry_(config.heartbeat_interval),
      log_(config.max_watchers_per_job),
      catalog_(CatalogOptionsFrom(config), store_.get()),
      checkpoint_files_((fs::path(config.data_dir) / "checkpoints").string()) {
  store_->set_write_observer([m = metrics_.get()](double seconds) { m->StoreWrite(seconds); });
}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(const CoordinatorConfig& config) {
  RETURN_IF_ERROR(MakeDataDirs(config.data_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteJobStore> store,
                   SqliteJobStore::Open((fs::path(config.data_dir) / "logit.db").string()));
  return Create(config, std::move(store));
}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(const CoordinatorConfig& config,
                                                                 std::unique_ptr<JobStore> store) {
  RETURN_IF_ERROR(MakeDataDirs(config.data_dir));
  std::unique_ptr<Coordinator> c(new Coordinator(config, std::move(store)));
  RETURN_IF_ERROR(c->Load());
  c->metrics_->SetSnapshotSource([p = c.get()] { return p->MetricsSnapshot(); });
  c->monitor_ = std::thread([p = c.get()] { p->MonitorLoop(); });
  return c;
}

Coordinator::~Coordinator() {
  metrics_->SetSnapshotSource(nullptr);  // waits for a scrape in progress
  {
    MutexLock lock(&monitor_mu_);
    stopping_ = true;
  }
  monitor_wake_.SignalAll();
  log_.Shutdown();
  if (monitor_.joinable()) monitor_.join();
}

absl::Status Coordinator::Load() {
  ASSIGN_OR_RETURN(std::vector<v1::Job> jobs, store_->LoadJobs());
  ASSIGN_OR_RETURN(std::vector<v1::JobEvent> events, store_->LoadEvents());
  ASSIGN_OR_RETURN(std::vector<DatasetRecord> datasets, store_->LoadDatasets());
  ASSIGN_OR_RETURN(std::vector<ModelRecord> models, store_->LoadModels());
  ASSIGN_OR_RETURN(std::vector<CheckpointRecord> checkpoints, store_->LoadCheckpoints());
  catalog_.Restore(std::move(datasets), std::move(models));
  // Uploads a crash interrupted, and files whose record never committed, go.
  const int orphans = checkpoint_files_.RemoveOrphans(checkpoints);
  if (orphans > 0) {
    logging::Warn("removed checkpoint files without a record", {{"files", orphans}});
  }
  std::map<std::string, std::vector<v1::JobEvent>> events_by_job;
  for (v1::JobEvent& e : events) events_by_job[e.job_id()].push_back(std::move(e));
  // Jobs that were running or retrying go first (from their latest checkpoint), then the
  // queued ones, each in submission order.
  std::vector<std::pair<int64_t, std::string>> queued, retrying;
  std::vector<v1::Job> interrupted;
  {
    MutexLock lock(&mu_);
    for (v1::Job& j : jobs) {
      std::vector<v1::JobEvent>& evs = events_by_job[j.id()];
      std::stable_sort(evs.begin(), evs.end(), [](const v1::JobEvent& a, const v1::JobEvent& b) {
        return a.sequence() < b.sequence();
      });
      j.set_last_sequence(static_cast<int64_t>(evs.size()));
      log_.Restore(j.id(), std::move(evs), IsFinished(j.state()));
      const int64_t created = TimeUtil::TimestampToNanoseconds(j.created());
      if (j.state() == v1::QUEUED) {
        queued.emplace_back(created, j.id());
      } else if (j.state() == v1::RUNNING || j.state() == v1::RETRYING) {
        retrying.emplace_back(created, j.id());
        if (j.state() == v1::RUNNING) interrupted.push_back(j);
      }
      const std::string id = j.id();
      jobs_[id].job = std::move(j);
    }
    for (CheckpointRecord& r : checkpoints) {
      auto it = jobs_.find(r.job_id);
      if (it != jobs_.end()) it->second.checkpoints.push_back(std::move(r));
    }
    for (auto& [id, entry] : jobs_) {
      std::sort(entry.checkpoints.begin(), entry.checkpoints.end(),
                [](const CheckpointRecord& a, const CheckpointRecord& b) {
                  return a.info.number() < b.info.number();
                });
    }
  }
  std::sort(retrying.begin(), retrying.end());
  std::sort(queued.begin(), queued.end());
  for (const auto& q : retrying) scheduler_.Enqueue(q.second);
  for (const auto& q : queued) scheduler_.Enqueue(q.second);
  MutexLock commit(&commit_mu_);
  // A running attempt died with the old process (its workers re-register and drop it); the job
  // resumes from its latest checkpoint, and the restart is not charged against max_retries.
  for (v1::Job& job : interrupted) {
    RETURN_IF_ERROR(EndAttemptLocked(std::move(job), "the coordinator restarted",
                                     /*retryable=*/true, /*charged=*/false, /*requeue=*/false));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::JobSpec> Coordinator::ResolveSpec(const v1::JobSpec& spec) {
  if (spec.data().empty()) return absl::InvalidArgumentError("data: no training data given");
  v1::JobSpec out = spec;
  struct Field {
    const char* name;
    std::string* value;
  } fields[] = {{"data", out.mutable_data()},           {"labels", out.mutable_labels()},
                {"val_data", out.mutable_val_data()},   {"val_labels", out.mutable_val_labels()},
                {"test_data", out.mutable_test_data()}, {"test_labels", out.mutable_test_labels()}};
  for (Field& f : fields) {
    if (f.value->empty()) continue;
    ASSIGN_OR_RETURN(*f.value, catalog_.ResolveData(f.name, *f.value));
  }
  // Admission: INVALID_ARGUMENT naming the field when the resolved spec is not a valid job.
  ASSIGN_OR_RETURN(const JobPlan plan, PlanJob(out));
  out.set_workers(plan.workers);  // the effective count, as the job shows it
  if (!out.has_checkpoint_every()) out.set_checkpoint_every(config_.checkpoint_every);
  return out;
}

std::string RankFailureReason(int rank, const std::string& worker, const std::string& message) {
  // The ranks agree on the first failure, so `message` may already say "rank M: ...": the
  // failing rank's own report then reads "rank M (w-1): ...", another's names both.
  int failed = -1;
  std::string rest = message;
  if (absl::StartsWith(message, "rank ")) {
    const size_t colon = message.find(": ");
    if (colon != std::string::npos && absl::SimpleAtoi(message.substr(5, colon - 5), &failed)) {
      rest = message.substr(colon + 2);
    }
  }
  if (failed < 0 || failed == rank) return absl::StrCat("rank ", rank, " (", worker, "): ", rest);
  return absl::StrCat("rank ", failed, " (reported by rank ", rank, " on ", worker, "): ", rest);
}

std::string UserPaths(const v1::JobSpec& spec, const v1::JobSpec& resolved, std::string text) {
  const std::pair<const std::string*, const std::string*> files[] = {
      {&spec.data(), &resolved.data()},           {&spec.labels(), &resolved.labels()},
      {&spec.val_data(), &resolved.val_data()},   {&spec.val_labels(), &resolved.val_labels()},
      {&spec.test_data(), &resolved.test_data()}, {&spec.test_labels(), &resolved.test_labels()}};
  for (const auto& [ref, path] : files) {
    if (path->empty() || *path == *ref) continue;
    // An uploaded dataset by the file name it was uploaded as; a server: file as given.
    const size_t slash = path->rfind('/');
    const std::string name = absl::StartsWith(*ref, "dataset:") && slash != std::string::npos
                                 ? path->substr(slash + 1)
                                 : *ref;
    text = absl::StrReplaceAll(text, {{*path, name}});
  }
  return text;
}

absl::StatusOr<v1::Job> Coordinator::FindJob(const std::string& job_id) {
  MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  return it->second.job;
}

absl::Status Coordinator::CommitLocked(v1::Job job, v1::JobEvent event,
                                       const CheckpointRecord* checkpoint) {
  const int64_t sequence = job.last_sequence() + 1;
  job.set_last_sequence(sequence);
  event.set_job_id(job.id());
  event.set_sequence(sequence);
  *event.mutable_time() = Now();
  if (event.has_job()) event.mutable_job()->set_last_sequence(sequence);
  // Durable before anyone sees it.
  RETURN_IF_ERROR(checkpoint != nullptr ? store_->PutJobWithCheckpoint(job, event, *checkpoint)
                                        : store_->PutJobWithEvent(job, event));
  {
    MutexLock lock(&mu_);
    JobEntry& entry = jobs_[job.id()];
    if (checkpoint != nullptr) entry.checkpoints.push_back(*checkpoint);
    entry.job = std::move(job);
  }
  log_.Append(event);
  return absl::OkStatus();
}

absl::Status Coordinator::SetStateLocked(v1::Job job, v1::JobState state,
                                         const std::string& reason) {
  job.set_state(state);
  job.set_reason(reason);
  if (state == v1::RUNNING) *job.mutable_started() = Now();
  v1::JobEvent ev;
  ev.mutable_state_change()->set_state(state);
  ev.mutable_state_change()->set_reason(reason);
  if (IsFinished(state)) {
    *job.mutable_finished() = Now();
    job.clear_workers();
    job.clear_retry_after();
    if (!config_.keep_finished_checkpoints) job.clear_latest_checkpoint();
    *ev.mutable_job() = job;
  }
  const std::string id = job.id();
  const int attempt = job.attempt();
  v1::Job observed = job;
  RETURN_IF_ERROR(CommitLocked(std::move(job), std::move(ev)));
  ObserveStateChange(observed, state, reason);
  if (IsFinished(state)) {
    rendezvous_kv_.Drop(AttemptScope(id, attempt));
    scheduler_.Remove(id);
    if (!config_.keep_finished_checkpoints) DeleteCheckpointsLocked(id, 0);
  }
  return absl::OkStatus();
}

void Coordinator::DeleteCheckpointsLocked(const std::string& job_id, size_t keep) {
  std::vector<CheckpointRecord> old;  // oldest first, all but the newest `keep`
  {
    MutexLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end() || it->second.checkpoints.size() <= keep) return;
    const std::vector<CheckpointRecord>& all = it->second.checkpoints;
    old.assign(all.begin(), all.end() - static_cast<std::ptrdiff_t>(keep));
  }
  std::vector<int64_t> numbers;
  for (const CheckpointRecord& r : old) numbers.push_back(r.info.number());
  absl::Status st = store_->DeleteCheckpoints(job_id, numbers);
  if (!st.ok()) {  // the files stay with their records; the next deletion retries them
    ReportBackgroundError(st);
    return;
  }
  {
    MutexLock lock(&mu_);
    std::vector<CheckpointRecord>& all = jobs_[job_id].checkpoints;
    all.erase(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(old.size()));
  }
  for (const CheckpointRecord& r : old) CheckpointFiles::Remove(r.path);
}

absl::Status Coordinator::EndAttemptLocked(v1::Job job, const std::string& reason, bool retryable,
                                           bool charged, bool requeue) {
  const int ended = job.attempt();
  // Ranks of the ended attempt still in a collective fail at their next store call.
  rendezvous_kv_.Drop(AttemptScope(job.id(), ended));
  v1::AttemptFailure* failure = job.add_failed_attempts();
  failure->set_attempt(ended);
  failure->set_reason(reason);
  *failure->mutable_ended() = Now();
  failure->set_workers(job.workers_size());
  failure->set_charged(retryable && charged);
  absl::StatusOr<JobPlan> plan = PlanJob(job.spec());
  const int max_retries = plan.ok() ? plan->max_retries : 0;
  if (!retryable) {
    const std::string why = job.failed_attempts_size() > 1
                                ? absl::StrCat(reason, " (", AttemptHistory(job), ")")
                                : reason;
    return SetStateLocked(std::move(job), v1::FAILED, why);
  }
  if (charged && job.retries() >= max_retries) {
    const std::string why =
        max_retries == 0 ? absl::StrCat(reason, " (max_retries is 0)")
                         : absl::StrCat("gave up after ", job.retries(), " retries (max_retries ",
                                        max_retries, "): ", AttemptHistory(job));
    return SetStateLocked(std::move(job), v1::FAILED, why);
  }
  std::chrono::milliseconds backoff{0};
  if (charged) {
    job.set_retries(job.retries() + 1);
    backoff = config_.retry_backoff;
    for (int i = 1; i < job.retries() && backoff < config_.retry_backoff_max; ++i) backoff *= 2;
    backoff = std::min(backoff, config_.retry_backoff_max);
  }
  job.set_attempt(ended + 1);
  job.clear_workers();
  *job.mutable_retry_after() = TimeUtil::NanosecondsToTimestamp(
      TimeUtil::TimestampToNanoseconds(Now()) + std::chrono::nanoseconds(backoff).count());
  const std::string from =
      job.has_latest_checkpoint()
          ? absl::StrCat("resuming from checkpoint ", job.latest_checkpoint().number(), " (epoch ",
                         job.latest_checkpoint().epoch(), ")")
          : "starting over (no checkpoint yet)";
  const std::string retry =
      charged ? absl::StrCat("retry ", job.retries(), " of ", max_retries) : "not charged";
  const std::string id = job.id();
  RETURN_IF_ERROR(SetStateLocked(
      std::move(job), v1::RETRYING,
      absl::StrCat(
          "attempt ", ended, " ended: ", reason, "; ", retry, ", ", from,
          backoff.count() > 0 ? absl::StrCat(" after ", backoff.count() / 1000.0, " s") : "")));
  if (requeue) scheduler_.Requeue(id);
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> Coordinator::SubmitJob(const v1::JobSpec& spec) {
  if (config_.max_workers_per_job > 0 && spec.workers() > config_.max_workers_per_job) {
    return absl::ResourceExhaustedError(
        absl::StrCat("workers: ", spec.workers(), " is over the limit --max-workers-per-job=",
                     config_.max_workers_per_job, ", so the job could never be placed"));
  }
  MutexLock commit(&commit_mu_);
  if (config_.max_queued_jobs > 0) {
    const int queued = scheduler_.Size();
    if (queued >= config_.max_queued_jobs) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the queue holds ", queued, " jobs, the limit --max-queued-jobs=",
                       config_.max_queued_jobs, "; retry when some have run"));
    }
  }
  ASSIGN_OR_RETURN(const v1::JobSpec resolved, ResolveSpec(spec));
  ASSIGN_OR_RETURN(const int64_t n, store_->NextId("job"));
  v1::Job job;
  job.set_id(absl::StrCat("job-", n));
  *job.mutable_spec() = spec;
  job.mutable_spec()->set_workers(resolved.workers());  // the effective count (PlanJob's)
  *job.mutable_created() = Now();
  const std::string id = job.id();
  RETURN_IF_ERROR(SetStateLocked(std::move(job), v1::QUEUED, "waiting for workers"));
  scheduler_.Enqueue(id);
  // The job is durably queued: a failure to place it now is the scheduler's, not the submit's.
  absl::Status scheduled = ScheduleLocked();
  if (!scheduled.ok()) ReportBackgroundError(scheduled);
  return FindJob(id);
}

absl::Status Coordinator::ScheduleLocked() {
  while (std::optional<std::string> head = scheduler_.Front()) {
    absl::StatusOr<v1::Job> found = FindJob(*head);
    if (!found.ok() || (found->state() != v1::QUEUED && found->state() != v1::RETRYING)) {
      scheduler_.Remove(*head);
      continue;
    }
    v1::Job job = std::move(*found);
    const std::string id = job.id();
    const bool retry = job.state() == v1::RETRYING;
    // A retry waits out its backoff at the head of the queue (strict FIFO).
    if (retry && TimeUtil::TimestampToNanoseconds(job.retry_after()) >
                     TimeUtil::TimestampToNanoseconds(Now())) {
      return absl::OkStatus();
    }
    const int wanted = std::max(1, job.spec().workers());
    // A retry may shrink to min_workers (the data are re-sharded, the global batch stays).
    const int fewest = retry && job.spec().has_min_workers()
                           ? std::clamp(job.spec().min_workers(), 1, wanted)
                           : wanted;
    int registered = 0;
    const std::vector<std::string> idle = registry_.IdleWorkers(&registered);
    const int need = std::min(wanted, static_cast<int>(idle.size()));
    if (need < fewest) {
      const std::string reason =
          Scheduler::WaitingReason(fewest, static_cast<int>(idle.size()), registered);
      if (!retry && job.reason() != reason) {
        job.set_reason(reason);
        RETURN_IF_ERROR(store_->PutJob(job));
        MutexLock lock(&mu_);
        jobs_[id].job = std::move(job);
      }
      return absl::OkStatus();
    }
    scheduler_.Remove(id);
    // Datasets may be gone since submission; a job that cannot start fails with the reason.
    absl::StatusOr<v1::JobSpec> resolved = ResolveSpec(job.spec());
    if (!resolved.ok()) {
      absl::Status st =
          SetStateLocked(std::move(job), v1::FAILED, std::string(resolved.status().message()));
      if (!st.ok()) {
        scheduler_.Requeue(id);
        return st;
      }
      continue;
    }
    const std::vector<std::string> gang = Scheduler::PickGang(idle, need);
    if (!registry_.Reserve(gang, id, job.attempt())) {
      scheduler_.Requeue(id);  // a worker went away since IdleWorkers; the next pass retries
      return absl::OkStatus();
    }
    std::vector<v1::Assignment> assignments;
    job.clear_workers();
    for (int r = 0; r < need; ++r) {
      v1::Assignment a;
      a.set_job_id(id);
      a.set_attempt(job.attempt());
      a.set_rank(r);
      a.set_world_size(need);
      a.set_store_host(config_.store_host);
      a.set_store_port(0);  // the attempt's store is the coordinator's Rendezvous()
      a.set_store_prefix(AttemptScope(id, job.attempt()));
      *a.mutable_spec() = *resolved;
      a.set_timeout_ms(config_.collective_timeout.count());
      if (job.has_latest_checkpoint()) a.set_resume_checkpoint(job.latest_checkpoint().number());
      a.set_throttle_checkpoints(!job.spec().has_checkpoint_every());
      assignments.push_back(std::move(a));
      job.add_workers(gang[r]);
    }
    const int attempt = job.attempt();
    std::string running = absl::StrCat("running on ", absl::StrJoin(gang, ", "));
    if (attempt > 0) {
      absl::StrAppend(
          &running, " (attempt ", attempt,
          job.has_latest_checkpoint()
              ? absl::StrCat(", resumed from checkpoint ", job.latest_checkpoint().number(),
                             " at epoch ", job.latest_checkpoint().epoch())
              : ", from the start",
          ")");
    }
    job.clear_retry_after();
    absl::Status st = SetStateLocked(std::move(job), v1::RUNNING, running);
    if (!st.ok()) {
      registry_.Unreserve(gang, id, attempt);
      scheduler_.Requeue(id);
      return st;
    }
    // Only a durably RUNNING job's assignments reach the workers.
    for (int r = 0; r < need; ++r) registry_.Deliver(gang[r], std::move(assignments[r]));
  }
  return absl::OkStatus();
}

void Coordinator::Schedule() {
  MutexLock commit(&commit_mu_);
  absl::Status st = ScheduleLocked();
  if (!st.ok()) ReportBackgroundError(st);
}

void Coordinator::ReportBackgroundError(const absl::Status& status) {
  logging::Error("store write failed", {logging::Field::Error(status)});
  MutexLock lock(&mu_);
  storage_status_ = absl::UnavailableError(absl::StrCat("store: write failed: ", status.message()));
}

absl::StatusOr<v1::Job> Coordinator::GetJob(const std::string& job_id) {
  ASSIGN_OR_RETURN(v1::Job job, FindJob(job_id));
  return WithAges(std::move(job));
}

std::vector<v1::Job> Coordinator::ListJobs(v1::JobState state, int limit) {
  v1::ListJobsRequest request;
  request.set_state(state);
  request.set_limit(limit);
  return ListJobs(request);
}

std::vector<v1::Job> Coordinator::ListJobs(const v1::ListJobsRequest& request) {
  auto selected = [&request](const v1::Job& job) {
    if (request.state() != v1::JOB_STATE_UNSPECIFIED && job.state() != request.state()) {
      return false;
    }
    if (!request.name().empty() && job.spec().name() != request.name()) return false;
    const auto& labels = job.spec().job_labels();
    for (const auto& [key, value] : request.label_selector()) {
      auto it = labels.find(key);
      if (it == labels.end() || it->second != value) return false;
    }
    return true;
  };
  std::vector<v1::Job> out;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, e] : jobs_) {
      if (selected(e.job)) out.push_back(WithAges(e.job));
    }
  }
  std::sort(out.begin(), out.end(), [](const v1::Job& a, const v1::Job& b) {
    return TimeUtil::TimestampToNanoseconds(a.created()) >
           TimeUtil::TimestampToNanoseconds(b.created());
  });
  const int limit = request.limit() > 0 ? request.limit() : 100;
  if (static_cast<int>(out.size()) > limit) out.resize(limit);
  return out;
}

absl::StatusOr<v1::Job> Coordinator::CancelJob(const std::string& job_id) {
  MutexLock commit(&commit_mu_);
  ASSIGN_OR_RETURN(v1::Job job, FindJob(job_id));
  if (!IsFinished(job.state())) {
    // Running ranks learn it from their next heartbeat or progress report; their workers stay
    // busy until each rank has reported that it stopped.
    RETURN_IF_ERROR(SetStateLocked(std::move(job), v1::CANCELLED, "cancelled by a client"));
    absl::Status scheduled = ScheduleLocked();
    if (!scheduled.ok()) ReportBackgroundError(scheduled);
  }
  return FindJob(job_id);
}

absl::Status Coordinator::WatchJob(const std::string& job_id, int64_t from_sequence,
                                   const std::function<bool(const v1::JobEvent&)>& send,
                                   const std::function<bool()>& cancelled) {
  return log_.Watch(job_id, from_sequence, send, cancelled);
}

absl::StatusOr<v1::Dataset> Coordinator::UploadDataset(
    const v1::DatasetInfo& info, const std::function<absl::StatusOr<bool>(std::string*)>& next) {
  absl::StatusOr<v1::Dataset> dataset = catalog_.UploadDataset(info, next);
  if (dataset.ok()) {
    metrics_->Uploaded("dataset", dataset->size_bytes());
    logging::Info(
        "dataset uploaded",
        {{"dataset", dataset->id()}, {"name", dataset->name()}, {"bytes", dataset->size_bytes()}});
  }
  return dataset;
}

absl::StatusOr<std::vector<v1::Dataset>> Coordinator::ListDatasets(const std::string& sha256) {
  const bool hex = std::all_of(sha256.begin(), sha256.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  if (!sha256.empty() && (sha256.size() != 64 || !hex)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sha256: '", sha256, "' is not 64 lower-case hex digits"));
  }
  return catalog_.ListDatasets(sha256);
}

absl::Status Coordinator::DeleteDataset(const std::string& dataset_id) {
  MutexLock commit(&commit_mu_);
  const std::string ref = "dataset:" + dataset_id;
  std::vector<std::string> users;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, e] : jobs_) {
      if (IsFinished(e.job.state())) continue;
      const v1::JobSpec& s = e.job.spec();
      for (const std::string* f : {&s.data(), &s.labels(), &s.val_data(), &s.val_labels(),
                                   &s.test_data(), &s.test_labels()}) {
        if (*f == ref) {
          users.push_back(absl::StrCat(id, " (", v1::JobState_Name(e.job.state()), ")"));
          break;
        }
      }
    }
  }
  if (!users.empty()) {
    // Checked before the id's existence: a dataset a job names exists (SubmitJob resolved it).
    return absl::FailedPreconditionError(absl::StrCat("dataset_id: dataset '", dataset_id,
                                                      "' is needed by ", absl::StrJoin(users, ", "),
                                                      "; cancel them or wait until they finish"));
  }
  RETURN_IF_ERROR(catalog_.DeleteDataset(dataset_id));
  logging::Info("dataset deleted", {{"dataset", dataset_id}});
  return absl::OkStatus();
}

absl::StatusOr<ModelRecord> Coordinator::GetModel(const std::string& model_id) {
  ASSIGN_OR_RETURN(ModelRecord rec, catalog_.GetModel(model_id));
  MutexLock lock(&mu_);
  auto it = jobs_.find(rec.info.job_id());
  if (it != jobs_.end()) rec.info.set_job_name(it->second.job.spec().name());
  return rec;
}

std::vector<v1::ModelInfo> Coordinator::ListModels() {
  std::vector<v1::ModelInfo> models = catalog_.ListModels();
  MutexLock lock(&mu_);
  for (v1::ModelInfo& m : models) {
    auto it = jobs_.find(m.job_id());
    if (it == jobs_.end()) continue;
    m.set_job_name(it->second.job.spec().name());
    if (!m.has_created()) *m.mutable_created() = it->second.job.finished();
  }
  return models;
}

absl::Status Coordinator::DeleteModel(const std::string& model_id) {
  RETURN_IF_ERROR(catalog_.DeleteModel(model_id));
  logging::Info("model deleted", {{"model", model_id}});
  return absl::OkStatus();
}

absl::StatusOr<v1::PredictResponse> Coordinator::Predict(const v1::PredictRequest& request) {
  return catalog_.Predict(request);
}

absl::StatusOr<v1::RegisterWorkerResponse> Coordinator::RegisterWorker(
    const v1::RegisterWorkerRequest& request) {
  absl::StatusOr<int64_t> n = store_->NextId("worker");
  if (!n.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot register a worker now: ", n.status().message()));
  }
  v1::RegisterWorkerResponse resp = registry_.Register(request, absl::StrCat("w-", *n));
  metrics_->WorkerRegistered();
  logging::Info("worker registered", {{"worker", resp.worker_id()},
                                      {"host", request.hostname()},
                                      {"pid", static_cast<int64_t>(request.pid())},
                                      {"device", request.device()},
                                      {"threads", request.threads()}});
  Schedule();
  return resp;
}

absl::StatusOr<v1::HeartbeatResponse> Coordinator::Heartbeat(const v1::HeartbeatRequest& request) {
  ASSIGN_OR_RETURN(WorkerRegistry::Beat beat,
                   registry_.Heartbeat(request.worker_id(), request.worker_secret(),
                                       request.job_id(), request.attempt()));
  metrics_->HeartbeatsMissed(beat.missed);
  v1::HeartbeatResponse resp;
  if (beat.unknown) {
    resp.set_reregister(true);  // lost and forgotten, or registered with a restarted server
    return resp;
  }
  if (beat.assignment) {
    *resp.mutable_assignment() = std::move(*beat.assignment);
    return resp;
  }
  if (!beat.job_id.empty()) {
    bool gone = false;
    {
      MutexLock lock(&mu_);
      auto j = jobs_.find(beat.job_id);
      gone = j == jobs_.end() || IsFinished(j->second.job.state()) ||
             j->second.job.attempt() != beat.attempt;
    }
    if (gone) resp.set_cancel(true);
    // A worker that is no longer running the attempt (it restarted) is free again.
    if (request.job_id().empty() && gone &&
        registry_.Release(request.worker_id(), beat.job_id, beat.attempt)) {
      Schedule();
    }
  }
  return resp;
}

absl::StatusOr<v1::ReportProgressResponse> Coordinator::ReportProgress(
    const v1::ReportProgressRequest& request) {
  RETURN_IF_ERROR(registry_.CheckRankHolder(request.worker_id(), request.worker_secret(),
                                            request.job_id(), request.attempt(), request.rank()));
  v1::ReportProgressResponse resp;
  auto is_current = [&request](const v1::Job& job) {
    return request.attempt() == job.attempt() && !IsFinished(job.state());
  };
  if (request.has_progress()) {  // transient: nothing durable, no commit
    ASSIGN_OR_RETURN(const v1::Job job, FindJob(request.job_id()));
    const bool current = is_current(job);
    if (current && request.rank() == 0) log_.SetProgress(request.job_id(), request.progress());
    resp.set_cancel(!current);
    return resp;
  }
  MutexLock commit(&commit_mu_);
  ASSIGN_OR_RETURN(v1::Job job, FindJob(request.job_id()));
  const bool current = is_current(job);
  if (request.has_epoch()) {
    if (current && request.rank() == 0) {
      v1::JobEvent ev;
      *ev.mutable_epoch() = request.epoch();
      RETURN_IF_ERROR(CommitLocked(std::move(job), std::move(ev)));
      MutexLock lock(&mu_);
      jobs_[request.job_id()].last_epoch = request.epoch();
    }
    resp.set_cancel(!current);
    return resp;
  }
  // A rank finished: its worker is free once it has stopped.
  registry_.Release(request.worker_id(), request.job_id(), request.attempt());
  const v1::RankOutcome& out = request.outcome();
  absl::Status recorded;
  if (current) {
    if (!out.ok()) {
      // The first failing rank ends the attempt; the others' reports then concern an old one.
      std::string reason = RankFailureReason(request.rank(), request.worker_id(), out.message());
      // Users know their files by the names they gave, not by the server's copies.
      if (absl::StatusOr<v1::JobSpec> resolved = ResolveSpec(job.spec()); resolved.ok()) {
        reason = UserPaths(job.spec(), *resolved, std::move(reason));
      }
      recorded = EndAttemptLocked(std::move(job), std::move(reason), RetryableCode(out.code()));
    } else if (request.rank() == 0) {
      *job.mutable_result() = ResultFromSummary(out.summary());
      if (job.model_id().empty()) {
        recorded = SetStateLocked(std::move(job), v1::FAILED,
                                  "rank 0 finished without uploading the model");
      } else {
        const std::string reason = job.result().stop_reason();
        recorded = SetStateLocked(std::move(job), v1::SUCCEEDED, reason);
      }
    }
  }
  absl::Status scheduled = ScheduleLocked();
  if (!scheduled.ok()) ReportBackgroundError(scheduled);
  RETURN_IF_ERROR(recorded);
  return resp;
}

absl::StatusOr<v1::UploadModelResponse> Coordinator::UploadModel(
    const v1::ModelUpload& header, const std::function<absl::StatusOr<bool>(std::string*)>& next) {
  // Only rank 0 uploads the model.
  RETURN_IF_ERROR(registry_.CheckRankHolder(header.worker_id(), header.worker_secret(),
                                            header.job_id(), header.attempt(), 0));
  {
    ASSIGN_OR_RETURN(const v1::Job job, FindJob(header.job_id()));
    if (job.attempt() != header.attempt() || IsFinished(job.state())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job '", header.job_id(), "' no longer runs attempt ", header.attempt()));
    }
  }
  ASSIGN_OR_RETURN(const std::string model_id,
                   catalog_.AddModel(header.job_id(), header.summary(), next));
  {
    MutexLock commit(&commit_mu_);
    ASSIGN_OR_RETURN(v1::Job job, FindJob(header.job_id()));
    job.set_model_id(model_id);
    RETURN_IF_ERROR(store_->PutJob(job));
    MutexLock lock(&mu_);
    jobs_[header.job_id()].job = std::move(job);
  }
  const int64_t bytes = [&] {
    absl::StatusOr<ModelRecord> model = catalog_.GetModel(model_id);
    return model.ok() ? model->info.size_bytes() : int64_t{0};
  }();
  metrics_->Uploaded("model", bytes);
  logging::Info("model stored", {{"job", header.job_id()},
                                 {"attempt", header.attempt()},
                                 {"model", model_id},
                                 {"bytes", bytes}});
  v1::UploadModelResponse resp;
  resp.set_model_id(model_id);
  return resp;
}

absl::StatusOr<v1::UploadCheckpointResponse> Coordinator::UploadCheckpoint(
    const v1::CheckpointUpload& header,
    const std::function<absl::StatusOr<bool>(std::string*)>& next) {
  const v1::RankIdentity& from = header.from();
  if (from.rank() != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("rank: only rank 0 sends checkpoints, not rank ", from.rank()));
  }
  RETURN_IF_ERROR(registry_.CheckRankHolder(from.worker_id(), from.worker_secret(), from.job_id(),
                                            from.attempt(), 0));
  if (header.epoch() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("epoch: a checkpoint follows epoch 1 or later, got ", header.epoch()));
  }
  auto current = [&](const v1::Job& job) -> absl::Status {
    if (job.attempt() != from.attempt() || IsFinished(job.state())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job '", from.job_id(), "' no longer runs attempt ", from.attempt()));
    }
    return absl::OkStatus();
  };
  {
    ASSIGN_OR_RETURN(const v1::Job job, FindJob(from.job_id()));
    RETURN_IF_ERROR(current(job));
  }
  // The bytes are received and fsynced outside the commit lock; numbering, the rename and the
  // record happen under it.
  ASSIGN_OR_RETURN(const std::string temp,
                   checkpoint_files_.Receive(from.job_id(), header.size_bytes(),
                                             config_.max_checkpoint_bytes, next));
  MutexLock commit(&commit_mu_);
  absl::StatusOr<v1::Job> job = FindJob(from.job_id());
  absl::Status still = job.ok() ? current(*job) : job.status();
  if (!still.ok()) {
    CheckpointFiles::Remove(temp);
    return still;
  }
  const int64_t number = job->latest_checkpoint().number() + 1;
  ASSIGN_OR_RETURN(const std::string path, checkpoint_files_.Publish(temp, from.job_id(), number));
  CheckpointRecord record;
  record.job_id = from.job_id();
  record.path = path;
  record.info.set_number(number);
  record.info.set_epoch(header.epoch());
  record.info.set_attempt(from.attempt());
  *record.info.mutable_created() = Now();
  record.info.set_size_bytes(header.size_bytes());
  *job->mutable_latest_checkpoint() = record.info;
  v1::JobEvent ev;
  *ev.mutable_checkpoint() = record.info;
  absl::Status committed = CommitLocked(std::move(*job), std::move(ev), &record);
  if (!committed.ok()) {
    CheckpointFiles::Remove(path);
    return committed;
  }
  metrics_->CheckpointStored(header.size_bytes());
  metrics_->Uploaded("checkpoint", header.size_bytes());
  logging::Info("checkpoint stored", {{"job", from.job_id()},
                                      {"attempt", from.attempt()},
                                      {"worker", from.worker_id()},
                                      {"checkpoint", number},
                                      {"epoch", header.epoch()},
                                      {"bytes", header.size_bytes()}});
  DeleteCheckpointsLocked(from.job_id(),
                          static_cast<size_t>(std::max(1, config_.keep_checkpoints)));
  v1::UploadCheckpointResponse resp;
  *resp.mutable_checkpoint() = record.info;
  return resp;
}

absl::StatusOr<CheckpointRecord> Coordinator::FindCheckpoint(
    const v1::FetchCheckpointRequest& request) {
  const v1::RankIdentity& from = request.from();
  RETURN_IF_ERROR(registry_.CheckRankHolder(from.worker_id(), from.worker_secret(), from.job_id(),
                                            from.attempt(), from.rank()));
  MutexLock lock(&mu_);
  auto it = jobs_.find(from.job_id());
  if (it == jobs_.end()) {
    return absl::NotFoundError(absl::StrCat("job '", from.job_id(), "' not found"));
  }
  for (const CheckpointRecord& r : it->second.checkpoints) {
    if (r.info.number() == request.number()) return r;
  }
  return absl::NotFoundError(
      absl::StrCat("number: job '", from.job_id(), "' has no checkpoint ", request.number()));
}

absl::StatusOr<std::pair<std::string, v1::DataFileInfo>> Coordinator::OpenDataFile(
    const v1::FetchDataRequest& request) {
  const v1::RankIdentity& from = request.from();
  RETURN_IF_ERROR(registry_.CheckRankHolder(from.worker_id(), from.worker_secret(), from.job_id(),
                                            from.attempt(), from.rank()));
  ASSIGN_OR_RETURN(const v1::Job job, FindJob(from.job_id()));
  if (job.attempt() != from.attempt() || IsFinished(job.state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("job '", from.job_id(), "' no longer runs attempt ", from.attempt()));
  }
  ASSIGN_OR_RETURN(const v1::JobSpec resolved, ResolveSpec(job.spec()));
  bool named = false;
  for (const std::string* p : {&resolved.data(), &resolved.labels(), &resolved.val_data(),
                               &resolved.val_labels(), &resolved.test_data(),
                               &resolved.test_labels()}) {
    named = named || (!p->empty() && *p == request.path());
  }
  if (!named) {
    return absl::PermissionDeniedError(absl::StrCat(
        "path: job '", from.job_id(), "' names no data file '", request.path(), "'"));
  }
  ASSIGN_OR_RETURN(v1::DataFileInfo info,
                   catalog_.DescribeDataFile(request.path(),
                                             !(request.info_only() && request.skip_sha256()),
                                             request.with_blocks()));
  return std::make_pair(request.path(), std::move(info));
}

absl::StatusOr<v1::RendezvousResponse> Coordinator::Rendezvous(
    const v1::RendezvousRequest& request) {
  const v1::RankIdentity& from = request.from();
  RETURN_IF_ERROR(registry_.CheckRankHolder(from.worker_id(), from.worker_secret(), from.job_id(),
                                            from.attempt(), from.rank()));
  {
    // A dropped scope stays dropped: an ended attempt's ranks are refused, not given a new one.
    MutexLock lock(&mu_);
    auto it = jobs_.find(from.job_id());
    if (it == jobs_.end() || it->second.job.attempt() != from.attempt() ||
        IsFinished(it->second.job.state())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job '", from.job_id(), "' no longer runs attempt ", from.attempt()));
    }
  }
  return rendezvous_kv_.Apply(AttemptScope(from.job_id(), from.attempt()), request);
}

std::map<std::string, int> Coordinator::WorkerCounts() { return registry_.Counts(); }

absl::Status Coordinator::ProbeStorage() {
  const std::string path = (fs::path(config_.data_dir) / ".storage-probe").string();
  {
    std::ofstream out(path, std::ios::trunc);
    out << "probe\n";
    out.flush();
    if (!out) {
      return absl::UnavailableError(absl::StrCat("data_dir: cannot write ", path));
    }
  }
  std::error_code ec;
  fs::remove(path, ec);
  auto id = store_->NextId("storage-probe");
  if (!id.ok()) {
    return absl::UnavailableError(absl::StrCat("store: cannot write: ", id.status().message()));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::StorageStatus() {
  MutexLock lock(&mu_);
  return storage_status_;
}

void Coordinator::MonitorPass() {
  MutexLock commit(&commit_mu_);
  std::vector<WorkerRegistry::Lost> lost =
      registry_.RemoveSilent(Clock::now(), config_.worker_timeout);
  for (const WorkerRegistry::Lost& w : lost) {
    metrics_->WorkerLost();
    if (config_.heartbeat_interval.count() > 0) {
      metrics_->HeartbeatsMissed(std::max<int>(
          0, static_cast<int>(config_.worker_timeout / config_.heartbeat_interval) - 1));
    }
    logging::Warn("worker lost", {{"worker", w.worker_id},
                                  {"job", w.job_id},
                                  {"attempt", w.attempt},
                                  {"rank", w.rank},
                                  {"silent_seconds", config_.worker_timeout.count() / 1000.0}});
  }
  // Losses whose job could not be failed last time are retried.
  lost.insert(lost.begin(), unrecorded_losses_.begin(), unrecorded_losses_.end());
  unrecorded_losses_.clear();
  for (const WorkerRegistry::Lost& w : lost) {
    if (w.job_id.empty()) continue;
    absl::StatusOr<v1::Job> job = FindJob(w.job_id);
    if (!job.ok() || IsFinished(job->state()) || job->attempt() != w.attempt) continue;
    absl::Status st = EndAttemptLocked(
        std::move(*job),
        absl::StrCat("worker ", w.worker_id, " (rank ", w.rank, ") was lost: no heartbeat for ",
                     config_.worker_timeout.count() / 1000.0, " s"),
        /*retryable=*/true);
    if (!st.ok()) {
      unrecorded_losses_.push_back(w);
      ReportBackgroundError(st);
    }
  }
  std::vector<v1::Job> expired;
  {
    const auto wall_now = TimeUtil::TimestampToNanoseconds(Now());
    MutexLock lock(&mu_);
    for (const auto& [id, entry] : jobs_) {
      const double deadline = entry.job.spec().deadline_seconds();
      if (deadline <= 0 || IsFinished(entry.job.state())) continue;
      const double age = (wall_now - TimeUtil::TimestampToNanoseconds(entry.job.created())) / 1e9;
      if (age > deadline) expired.push_back(entry.job);
    }
  }
  for (v1::Job& job : expired) {
    const double deadline = job.spec().deadline_seconds();
    // Its ranks learn it from their next heartbeat, like a cancellation.
    absl::Status st = SetStateLocked(std::move(job), v1::FAILED,
                                     absl::StrCat("deadline exceeded: not finished ", deadline,
                                                  " s after submission (deadline_seconds)"));
    if (!st.ok()) ReportBackgroundError(st);
  }
  absl::Status scheduled = ScheduleLocked();
  if (!scheduled.ok()) ReportBackgroundError(scheduled);
}

void Coordinator::MonitorLoop() {
  auto next_probe = Clock::now();
  while (true) {
    {
      MutexLock lock(&monitor_mu_);
      if (!stopping_) {
        monitor_wake_.WaitWithTimeout(&monitor_mu_, absl::FromChrono(config_.monitor_interval));
      }
      if (stopping_) return;
    }
    if (Clock::now() >= next_probe) {
      absl::Status probed = ProbeStorage();
      {
        MutexLock lock(&mu_);
        if (!probed.ok() && storage_status_.ok()) {
          logging::Error("storage probe failed", {logging::Field::Error(probed)});
        }
        if (probed.ok() && !storage_status_.ok()) logging::Info("storage recovered");
        storage_status_ = probed;
      }
      next_probe = Clock::now() + config_.storage_probe_interval;
    }
    MonitorPass();
  }
}

void Coordinator::ObserveStateChange(const v1::Job& job, v1::JobState state,
                                     const std::string& reason) {
  auto seconds_between = [](const google::protobuf::Timestamp& from,
                            const google::protobuf::Timestamp& to) {
    return std::max<double>(
        0, (TimeUtil::TimestampToNanoseconds(to) - TimeUtil::TimestampToNanoseconds(from)) / 1e9);
  };
  switch (state) {
    case v1::QUEUED:
      metrics_->JobSubmitted();
      logging::Info("job queued", {{"job", job.id()}, {"workers", job.spec().workers()}});
      break;
    case v1::RUNNING: {
      bool first = false;
      {
        MutexLock lock(&mu_);
        JobEntry& entry = jobs_[job.id()];
        if (!entry.first_started) {
          entry.first_started = job.started();
          first = job.attempt() == 0;
        }
        // A new attempt reports its own epochs; until then the gauges show none.
        if (job.attempt() > 0) entry.last_epoch.reset();
      }
      if (first) metrics_->JobStarted(seconds_between(job.created(), job.started()));
      logging::Info("job started", {{"job", job.id()},
                                    {"attempt", job.attempt()},
                                    {"workers", absl::StrJoin(job.workers(), ",")},
                                    {"resume_checkpoint", job.latest_checkpoint().number()}});
      break;
    }
    case v1::RETRYING:
      metrics_->JobRetried();
      logging::Warn("job retrying", {{"job", job.id()},
                                     {"attempt", job.attempt()},
                                     {"retries", job.retries()},
                                     {"reason", reason}});
      break;
    case v1::SUCCEEDED:
    case v1::FAILED:
    case v1::CANCELLED: {
      google::protobuf::Timestamp started = job.started();
      {
        MutexLock lock(&mu_);
        auto it = jobs_.find(job.id());
        if (it != jobs_.end() && it->second.first_started) started = *it->second.first_started;
      }
      // A job that never ran (cancelled or expired in the queue) has no running time.
      const bool ran = job.has_started();
      const double running = ran ? seconds_between(started, job.finished()) : 0.0;
      metrics_->JobFinished(state, ran ? std::optional<double>(running) : std::nullopt);
      logging::Log(state == v1::FAILED ? logging::Level::kWarn : logging::Level::kInfo,
                   "job finished",
                   {{"job", job.id()},
                    {"attempt", job.attempt()},
                    {"state", ServerMetrics::StateName(state)},
                    {"reason", reason},
                    {"model", job.model_id()},
                    {"seconds", running}});
      break;
    }
    default:
      break;
  }
}

ClusterSnapshot Coordinator::MetricsSnapshot() {
  ClusterSnapshot s;
  s.workers = registry_.Counts();
  const int64_t now = TimeUtil::TimestampToNanoseconds(Now());
  auto age = [now](const google::protobuf::Timestamp& t) {
    return std::max<double>(0, (now - TimeUtil::TimestampToNanoseconds(t)) / 1e9);
  };
  const int64_t grace_ns = std::chrono::nanoseconds(config_.metrics_job_grace).count();
  MutexLock lock(&mu_);
  s.storage_healthy = storage_status_.ok();
  for (const auto& [id, entry] : jobs_) {
    const v1::Job& job = entry.job;
    ++s.jobs[job.state()];
    const bool finished = IsFinished(job.state());
    if (job.state() == v1::QUEUED || job.state() == v1::RETRYING) {
      ++s.queue_jobs;
      // A retry waits from the end of its failed attempt.
      const google::protobuf::Timestamp& since =
          job.state() == v1::RETRYING && job.failed_attempts_size() > 0
              ? job.failed_attempts(job.failed_attempts_size() - 1).ended()
              : job.created();
      s.queue_oldest_age_seconds = std::max(s.queue_oldest_age_seconds, age(since));
    }
    if (finished && now - TimeUtil::TimestampToNanoseconds(job.finished()) > grace_ns) continue;
    JobSeries series;
    series.job_id = id;
    series.attempt = job.attempt();
    series.retries = job.retries();
    series.workers = job.state() == v1::RUNNING ? job.workers_size() : 0;
    series.last_epoch = entry.last_epoch;
    if (job.state() == v1::SUCCEEDED && job.has_result()) {
      const v1::TrainingSummary& summary = job.result().summary();
      // The final model's figures replace the last epoch's (which were taken during it).
      v1::EpochMetrics& final_epoch =
          series.last_epoch ? *series.last_epoch : series.last_epoch.emplace();  // unset: 0
      final_epoch.set_epoch(job.result().epochs_run());
      final_epoch.set_train_loss(job.result().train_loss());
      final_epoch.set_objective(job.result().objective());
      if (summary.val_metrics().rows() > 0) {
        final_epoch.set_has_validation(true);
        final_epoch.set_val_loss(summary.val_metrics().log_loss());
      }
      if (summary.train_metrics().rows() > 0) {
        series.final_accuracy["train"] = summary.train_metrics().accuracy();
      }
      if (summary.val_metrics().rows() > 0) {
        series.final_accuracy["validation"] = summary.val_metrics().accuracy();
      }
      if (summary.test_metrics().rows() > 0) {
        series.final_accuracy["test"] = summary.test_metrics().accuracy();
      }
    }
    if (job.state() == v1::RUNNING) {
      const int64_t every = job.spec().has_checkpoint_every() ? job.spec().checkpoint_every()
                                                              : config_.checkpoint_every;
      if (every > 0) {
        series.checkpoint_age_seconds =
            job.has_latest_checkpoint() && job.latest_checkpoint().attempt() == job.attempt()
                ? age(job.latest_checkpoint().created())
                : age(job.started());
      }
    }
    s.job_series.push_back(std::move(series));
  }
  return s;
}

}  // namespace logit
