#include "server/coordinator.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "nlohmann/json.hpp"
#include "server/auth.h"
#include "server/request_decode.h"
#include "worker/data/limits.h"
#include "worker/dist/process_group.h"
#include "worker/kernel/trainer.h"
#include "worker/model_io.h"
#include "worker/spec.h"

namespace logit {

namespace fs = std::filesystem;
using google::protobuf::util::TimeUtil;
using Clock = std::chrono::steady_clock;

namespace {

bool IsFinished(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

google::protobuf::Timestamp Now() { return TimeUtil::GetCurrentTime(); }

// Keeps the name's extension (the readers infer the format from it) and nothing dangerous.
std::string SafeFileName(const std::string& name) {
  std::string base = fs::path(name).filename().string();
  for (char& c : base) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')) c = '_';
  }
  if (base.empty() || base == "." || base == "..") base = "data";
  return base;
}

// Bytes free for this process on the file system holding `path` (INT64_MAX when unknown).
int64_t FreeDiskBytes(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return INT64_MAX;
  return static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize);
}

// Reads all chunks from `next` into `path`, at most `max_bytes` (RESOURCE_EXHAUSTED naming
// `limit_name` beyond) and never below `reserve_bytes` of free disk; removes the file on error.
absl::StatusOr<int64_t> WriteChunks(const std::string& path,
                                    const std::function<absl::StatusOr<bool>(std::string*)>& next,
                                    int64_t max_bytes = INT64_MAX,
                                    const std::string& limit_name = "", int64_t reserve_bytes = 0) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  int64_t size = 0, checked_disk_at = -1;
  std::string chunk;
  auto fail = [&](absl::Status st) {
    out.close();
    std::error_code ec;
    fs::remove(path, ec);
    return st;
  };
  while (true) {
    auto more = next(&chunk);
    if (!more.ok()) return fail(more.status());
    if (!*more) break;
    if (static_cast<int64_t>(chunk.size()) > max_bytes - size) {
      return fail(absl::ResourceExhaustedError(
          absl::StrCat("upload: more than ", max_bytes, " bytes, over the limit ", limit_name)));
    }
    if (reserve_bytes > 0 && (checked_disk_at < 0 || size - checked_disk_at >= (64 << 20))) {
      checked_disk_at = size;
      const int64_t free = FreeDiskBytes(fs::path(path).parent_path().string());
      if (free - static_cast<int64_t>(chunk.size()) < reserve_bytes) {
        return fail(absl::ResourceExhaustedError(
            absl::StrCat("upload: the server's disk has ", free,
                         " bytes free, and keeps --min-free-disk-bytes=", reserve_bytes, " free")));
      }
    }
    out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    size += static_cast<int64_t>(chunk.size());
  }
  out.flush();
  if (!out) {
    std::error_code ec;
    fs::remove(path, ec);
    return absl::ResourceExhaustedError(absl::StrCat("writing ", path, " failed (disk full?)"));
  }
  return size;
}

// Reads the rank-0 summary without trusting it: a missing, null or mistyped field (a NaN is
// written as null) leaves the result's field unset instead of throwing.
void FillResult(const std::string& summary_json, v1::JobResult* r) {
  r->set_summary_json(summary_json);
  const auto j = nlohmann::json::parse(summary_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return;
  auto number = [&j](const char* key) -> std::optional<double> {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_number()) return std::nullopt;
    return it->get<double>();
  };
  r->set_epochs_run(static_cast<int64_t>(std::clamp(number("epochs_run").value_or(0), 0.0, 1e15)));
  const auto reason = j.find("stop_reason");
  if (reason != j.end() && reason->is_string()) r->set_stop_reason(reason->get<std::string>());
  r->set_train_loss(number("train_loss").value_or(0));
  r->set_objective(number("objective").value_or(0));
  r->set_wall_seconds(number("wall_seconds").value_or(0));
  if (auto v = number("val_accuracy")) {
    r->set_val_accuracy(*v);
    r->set_has_val_accuracy(true);
  }
  if (auto v = number("test_accuracy")) {
    r->set_test_accuracy(*v);
    r->set_has_test_accuracy(true);
  }
}

}  // namespace

Coordinator::Coordinator(const CoordinatorConfig& config) : config_(config) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(const CoordinatorConfig& config) {
  std::unique_ptr<Coordinator> c(new Coordinator(config));
  std::error_code ec;
  for (const char* sub : {"", "datasets", "models"}) {
    fs::create_directories(fs::path(config.data_dir) / sub, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("data_dir: cannot create ", config.data_dir, "/", sub, ": ", ec.message()));
    }
  }
  auto store = Store::Open((fs::path(config.data_dir) / "logit.db").string());
  if (!store.ok()) return store.status();
  c->store_ = std::move(*store);
  absl::Status st = c->Load();
  if (!st.ok()) return st;
  c->monitor_ = std::thread([p = c.get()] { p->MonitorLoop(); });
  return c;
}

Coordinator::~Coordinator() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (monitor_.joinable()) monitor_.join();
}

absl::Status Coordinator::Load() {
  auto jobs = store_->LoadJobs();
  if (!jobs.ok()) return jobs.status();
  auto events = store_->LoadEvents();
  if (!events.ok()) return events.status();
  auto datasets = store_->LoadDatasets();
  if (!datasets.ok()) return datasets.status();
  auto models = store_->LoadModels();
  if (!models.ok()) return models.status();
  std::lock_guard<std::mutex> lock(mu_);
  for (v1::Job& j : *jobs) jobs_[j.id()].job = std::move(j);
  for (v1::JobEvent& e : *events) {
    auto it = jobs_.find(e.job_id());
    if (it != jobs_.end()) it->second.events.push_back(std::move(e));
  }
  for (DatasetRecord& d : *datasets) datasets_[d.info.id()] = std::move(d);
  for (ModelRecord& m : *models) models_[m.info.model_id()] = std::move(m);
  // Jobs queued before the restart queue again in their order; running ones cannot resume
  // without checkpoints and fail with a reason.
  std::vector<std::pair<int64_t, std::string>> queued;
  for (auto& [id, entry] : jobs_) {
    if (entry.job.state() == v1::QUEUED) {
      queued.emplace_back(TimeUtil::TimestampToNanoseconds(entry.job.created()), id);
    } else if (entry.job.state() == v1::RUNNING || entry.job.state() == v1::RETRYING) {
      SetStateLocked(entry, v1::FAILED, "the coordinator restarted while the job was running");
    }
  }
  std::sort(queued.begin(), queued.end());
  for (const auto& q : queued) queue_.push_back(q.second);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Coordinator::ResolveData(const std::string& field,
                                                     const std::string& ref) {
  if (absl::StartsWith(ref, "dataset:")) {
    const std::string id = ref.substr(8);
    auto it = datasets_.find(id);
    if (it == datasets_.end()) {
      return absl::NotFoundError(absl::StrCat(field, ": dataset '", id, "' does not exist"));
    }
    return it->second.path;
  }
  if (absl::StartsWith(ref, "server:")) {
    if (config_.data_root.empty()) {
      return absl::PermissionDeniedError(absl::StrCat(
          field, ": '", ref, "': this server has no --data-root, so server: paths are disabled"));
    }
    std::error_code ec;
    const fs::path root = fs::weakly_canonical(config_.data_root, ec);
    const fs::path rel = ref.substr(7);
    if (rel.is_absolute()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": '", ref, "' must be relative to the server's data root"));
    }
    const fs::path full = fs::weakly_canonical(root / rel, ec);
    const std::string r = root.string(), f = full.string();
    if (ec || f.compare(0, r.size(), r) != 0 || (f.size() > r.size() && f[r.size()] != '/')) {
      return absl::PermissionDeniedError(
          absl::StrCat(field, ": '", ref, "' points outside the server's data root"));
    }
    if (!fs::is_regular_file(full, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": '", ref, "': no such file"));
    }
    return f;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": '", ref, "' must be dataset:ID (upload it first: logit upload) or server:PATH"));
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
    auto path = ResolveData(f.name, *f.value);
    if (!path.ok()) return path.status();
    *f.value = *path;
  }
  if (spec.workers() < 0) return absl::InvalidArgumentError("workers: must be >= 1");
  if (spec.workers() == 0) out.set_workers(1);
  auto built = BuildJob(JobFlagsFromSpec(out));
  if (!built.ok()) return built.status();
  return out;
}

void Coordinator::AppendEventLocked(JobEntry& entry, v1::JobEvent event) {
  event.set_job_id(entry.job.id());
  event.set_sequence(static_cast<int64_t>(entry.events.size()) + 1);
  *event.mutable_time() = Now();
  entry.job.set_last_sequence(event.sequence());
  (void)store_->AppendEvent(event);  // durable before watchers see it
  entry.events.push_back(std::move(event));
  changed_.notify_all();
}

void Coordinator::SetStateLocked(JobEntry& entry, v1::JobState state, const std::string& reason) {
  v1::Job& job = entry.job;
  job.set_state(state);
  job.set_reason(reason);
  if (state == v1::RUNNING) *job.mutable_started() = Now();
  v1::JobEvent ev;
  ev.mutable_state_change()->set_state(state);
  ev.mutable_state_change()->set_reason(reason);
  if (IsFinished(state)) {
    *job.mutable_finished() = Now();
    job.clear_workers();
    entry.rendezvous.reset();  // the attempt's keys go with its store
  }
  job.set_last_sequence(static_cast<int64_t>(entry.events.size()) + 1);
  if (IsFinished(state)) *ev.mutable_job() = job;
  (void)store_->PutJob(job);
  AppendEventLocked(entry, std::move(ev));
}

absl::StatusOr<v1::Job> Coordinator::SubmitJob(const v1::JobSpec& spec) {
  std::lock_guard<std::mutex> lock(mu_);
  if (config_.max_workers_per_job > 0 && spec.workers() > config_.max_workers_per_job) {
    return absl::ResourceExhaustedError(
        absl::StrCat("workers: ", spec.workers(), " is over the limit --max-workers-per-job=",
                     config_.max_workers_per_job, ", so the job could never be placed"));
  }
  if (config_.max_queued_jobs > 0) {
    int64_t queued = 0;
    for (const std::string& id : queue_) {
      auto it = jobs_.find(id);
      queued += it != jobs_.end() && it->second.job.state() == v1::QUEUED;
    }
    if (queued >= config_.max_queued_jobs) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the queue holds ", queued, " jobs, the limit --max-queued-jobs=",
                       config_.max_queued_jobs, "; retry when some have run"));
    }
  }
  auto resolved = ResolveSpec(spec);
  if (!resolved.ok()) return resolved.status();
  auto n = store_->NextId("job");
  if (!n.ok()) return n.status();
  JobEntry& entry = jobs_[absl::StrCat("job-", *n)];
  entry.job.set_id(absl::StrCat("job-", *n));
  *entry.job.mutable_spec() = spec;
  if (spec.workers() == 0) entry.job.mutable_spec()->set_workers(1);
  *entry.job.mutable_created() = Now();
  SetStateLocked(entry, v1::QUEUED, "waiting for workers");
  queue_.push_back(entry.job.id());
  ScheduleLocked();
  return entry.job;
}

void Coordinator::ScheduleLocked() {
  while (!queue_.empty()) {
    auto it = jobs_.find(queue_.front());
    if (it == jobs_.end() || it->second.job.state() != v1::QUEUED) {
      queue_.pop_front();
      continue;
    }
    JobEntry& entry = it->second;
    const int need = std::max(1, entry.job.spec().workers());
    std::vector<std::string> idle;
    for (auto& [id, w] : workers_) {
      if (w.job_id.empty()) idle.push_back(id);
    }
    if (static_cast<int>(idle.size()) < need) {
      // Strict FIFO: a big job at the head is never overtaken by small ones behind it.
      const std::string reason = absl::StrCat("waiting for ", need, " idle workers (", idle.size(),
                                              " idle, ", workers_.size(), " registered)");
      if (entry.job.reason() != reason) {
        entry.job.set_reason(reason);
        (void)store_->PutJob(entry.job);
      }
      return;
    }
    queue_.pop_front();
    auto resolved = ResolveSpec(entry.job.spec());  // datasets may be gone since submission
    if (!resolved.ok()) {
      SetStateLocked(entry, v1::FAILED, std::string(resolved.status().message()));
      continue;
    }
    auto rendezvous = StoreServer::Start(config_.store_host, 0);
    if (!rendezvous.ok()) {
      SetStateLocked(entry, v1::FAILED, std::string(rendezvous.status().message()));
      continue;
    }
    entry.rendezvous = std::move(*rendezvous);
    std::sort(idle.begin(), idle.end(), [](const std::string& a, const std::string& b) {
      return a.size() != b.size() ? a.size() < b.size() : a < b;
    });
    idle.resize(need);
    entry.rank_done.assign(need, false);
    entry.job.clear_workers();
    for (int r = 0; r < need; ++r) {
      WorkerEntry& w = workers_[idle[r]];
      v1::Assignment a;
      a.set_job_id(entry.job.id());
      a.set_attempt(entry.job.attempt());
      a.set_rank(r);
      a.set_world_size(need);
      a.set_store_host(config_.store_host);
      a.set_store_port(entry.rendezvous->port());
      a.set_store_prefix(absl::StrCat(entry.job.id(), "/attempt-", entry.job.attempt()));
      *a.mutable_spec() = *resolved;
      a.set_timeout_ms(config_.collective_timeout.count());
      w.job_id = entry.job.id();
      w.attempt = entry.job.attempt();
      w.rank = r;
      w.pending = std::move(a);
      entry.job.add_workers(idle[r]);
    }
    SetStateLocked(entry, v1::RUNNING, absl::StrCat("running on ", absl::StrJoin(idle, ", ")));
  }
}

absl::StatusOr<v1::Job> Coordinator::GetJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  return it->second.job;
}

std::vector<v1::Job> Coordinator::ListJobs(v1::JobState state, int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::Job> out;
  for (const auto& [id, e] : jobs_) {
    if (state == v1::JOB_STATE_UNSPECIFIED || e.job.state() == state) out.push_back(e.job);
  }
  std::sort(out.begin(), out.end(), [](const v1::Job& a, const v1::Job& b) {
    return TimeUtil::TimestampToNanoseconds(a.created()) >
           TimeUtil::TimestampToNanoseconds(b.created());
  });
  if (limit <= 0) limit = 100;
  if (static_cast<int>(out.size()) > limit) out.resize(limit);
  return out;
}

absl::StatusOr<v1::Job> Coordinator::CancelJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  JobEntry& entry = it->second;
  if (!IsFinished(entry.job.state())) {
    // Running ranks learn it from their next heartbeat or progress report; their workers stay
    // busy until each rank has reported that it stopped.
    SetStateLocked(entry, v1::CANCELLED, "cancelled by a client");
    ScheduleLocked();
  }
  return entry.job;
}

absl::Status Coordinator::WatchJob(const std::string& job_id, int64_t from_sequence,
                                   const std::function<bool(const v1::JobEvent&)>& send,
                                   const std::function<bool()>& cancelled) {
  size_t next = static_cast<size_t>(std::max<int64_t>(1, from_sequence) - 1);
  int64_t seen_progress = -1;  // the first live progress is sent; older ones are not replayed
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
    if (config_.max_watchers_per_job > 0 && it->second.watchers >= config_.max_watchers_per_job) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "job '", job_id, "' already has ", it->second.watchers,
          " watchers, the limit --max-watchers-per-job=", config_.max_watchers_per_job));
    }
    ++it->second.watchers;
    seen_progress = it->second.progress_version;
  }
  // Jobs are never erased, so the entry outlives this watcher.
  struct Unwatch {
    Coordinator* c;
    const std::string& id;
    ~Unwatch() {
      std::lock_guard<std::mutex> lock(c->mu_);
      --c->jobs_[id].watchers;
    }
  } unwatch{this, job_id};
  while (true) {
    std::vector<v1::JobEvent> batch;
    bool finished = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto it = jobs_.find(job_id);
      if (it == jobs_.end()) {
        return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
      }
      JobEntry& entry = it->second;
      if (next >= entry.events.size() && !IsFinished(entry.job.state()) &&
          entry.progress_version == seen_progress) {
        changed_.wait_for(lock, std::chrono::milliseconds(200));
        if (stopping_) return absl::UnavailableError("the server is shutting down");
      }
      for (; next < entry.events.size(); ++next) batch.push_back(entry.events[next]);
      finished = IsFinished(entry.job.state());
      if (!finished && entry.progress_version != seen_progress) {
        seen_progress = entry.progress_version;
        v1::JobEvent ev;
        ev.set_job_id(job_id);
        ev.set_sequence(static_cast<int64_t>(entry.events.size()));
        *ev.mutable_time() = Now();
        *ev.mutable_progress() = entry.progress;
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

absl::StatusOr<v1::Dataset> Coordinator::UploadDataset(
    const v1::DatasetInfo& info, const std::function<absl::StatusOr<bool>(std::string*)>& next) {
  if (info.name().empty()) return absl::InvalidArgumentError("info.name: no file name given");
  if (!info.format().empty() && !ParseDataFormat(info.format()).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("info.format: '", info.format(), "' is not csv, libsvm, npy or idx"));
  }
  // The most this upload may write: the per-dataset limit, what the all-datasets limit leaves,
  // and the disk space above the reserve; checked again as chunks arrive.
  int64_t allowed = config_.max_upload_bytes > 0 ? config_.max_upload_bytes : INT64_MAX;
  std::string limit_name = absl::StrCat("--max-upload-bytes=", config_.max_upload_bytes);
  if (config_.max_dataset_bytes > 0) {
    int64_t used = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [id, d] : datasets_) used += d.info.size_bytes();
    }
    if (config_.max_dataset_bytes - used < allowed) {
      allowed = std::max<int64_t>(0, config_.max_dataset_bytes - used);
      limit_name = absl::StrCat("--max-dataset-bytes=", config_.max_dataset_bytes, " (", used,
                                " bytes used)");
    }
  }
  auto n = store_->NextId("dataset");
  if (!n.ok()) return n.status();
  const std::string id = absl::StrCat("dataset-", *n);
  const fs::path dir = fs::path(config_.data_dir) / "datasets" / id;
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string path = (dir / SafeFileName(info.name())).string();
  auto size = WriteChunks(path, next, allowed, limit_name, config_.min_free_disk_bytes);
  if (!size.ok()) {
    fs::remove_all(dir, ec);
    return size.status();
  }
  DatasetRecord rec;
  rec.info.set_id(id);
  rec.info.set_name(info.name());
  rec.info.set_size_bytes(*size);
  *rec.info.mutable_created() = Now();
  rec.path = path;
  absl::Status st = store_->PutDataset(rec);
  if (!st.ok()) return st;
  std::lock_guard<std::mutex> lock(mu_);
  datasets_[id] = rec;
  return rec.info;
}

absl::StatusOr<ModelRecord> Coordinator::GetModel(const std::string& model_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(model_id);
  if (it == models_.end()) {
    return absl::NotFoundError(absl::StrCat("model '", model_id, "' not found"));
  }
  return it->second;
}

absl::Status Coordinator::DeleteModel(const std::string& model_id) {
  std::string path;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(model_id);
    if (it == models_.end()) {
      return absl::NotFoundError(absl::StrCat("model '", model_id, "' not found"));
    }
    path = it->second.path;
    absl::Status st = store_->DeleteModel(model_id);
    if (!st.ok()) return st;
    models_.erase(it);
    model_cache_.erase(model_id);
  }
  std::error_code ec;
  fs::remove(path, ec);
  return absl::OkStatus();
}

absl::StatusOr<v1::PredictResponse> Coordinator::Predict(const v1::PredictRequest& request) {
  const auto start = Clock::now();
  std::shared_ptr<const LinearModel> model;
  std::string path;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(request.model_id());
    if (it == models_.end()) {
      return absl::NotFoundError(absl::StrCat("model '", request.model_id(), "' not found"));
    }
    path = it->second.path;
    auto c = model_cache_.find(request.model_id());
    if (c != model_cache_.end()) model = c->second;
  }
  if (!model) {
    auto loaded = LoadModel(path);
    if (!loaded.ok()) return loaded.status();
    model = std::make_shared<const LinearModel>(std::move(*loaded));
    std::lock_guard<std::mutex> lock(mu_);
    model_cache_[request.model_id()] = model;
  }
  auto rows =
      RowsFromPredict(request, model->num_features, model->num_classes, config_.predict_limits);
  if (!rows.ok()) return rows.status();
  auto proba = PredictProba(*model, *rows);
  if (!proba.ok()) return proba.status();
  v1::PredictResponse resp;
  const int64_t k = model->num_classes;
  resp.set_num_classes(k);
  resp.mutable_probabilities()->Add(proba->begin(), proba->end());
  for (int64_t i = 0; i < rows->num_rows; ++i) {
    const float* p = proba->data() + i * k;
    resp.add_labels(std::max_element(p, p + k) - p);
  }
  resp.set_server_nanos(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  return resp;
}

v1::RegisterWorkerResponse Coordinator::RegisterWorker(const v1::RegisterWorkerRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string id = absl::StrCat("w-", ++next_worker_);
  WorkerEntry& w = workers_[id];
  w.info = request;
  w.last_seen = Clock::now();
  w.secret = RandomSecret();
  v1::RegisterWorkerResponse resp;
  resp.set_worker_id(id);
  resp.set_worker_secret(w.secret);
  resp.set_heartbeat_interval_ms(config_.heartbeat_interval.count());
  ScheduleLocked();
  return resp;
}

absl::StatusOr<Coordinator::WorkerEntry*> Coordinator::AuthenticWorkerLocked(
    const std::string& worker_id, const std::string& secret) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || !SecretsEqual(secret, it->second.secret)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "worker_secret: not the secret issued to worker '", worker_id, "' at registration"));
  }
  return &it->second;
}

absl::StatusOr<Coordinator::WorkerEntry*> Coordinator::RankHolderLocked(
    const std::string& worker_id, const std::string& secret, const std::string& job_id, int attempt,
    int rank) {
  auto authentic = AuthenticWorkerLocked(worker_id, secret);
  if (!authentic.ok()) return authentic.status();
  const WorkerEntry& w = **authentic;
  if (w.job_id != job_id || w.attempt != attempt || w.rank != rank) {
    return absl::PermissionDeniedError(absl::StrCat("worker '", worker_id, "' does not hold rank ",
                                                    rank, " of ", job_id, " attempt ", attempt));
  }
  return authentic;
}

absl::StatusOr<v1::HeartbeatResponse> Coordinator::Heartbeat(const v1::HeartbeatRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  v1::HeartbeatResponse resp;
  if (workers_.find(request.worker_id()) == workers_.end()) {
    resp.set_reregister(true);  // lost and forgotten, or registered with a restarted server
    return resp;
  }
  auto authentic = AuthenticWorkerLocked(request.worker_id(), request.worker_secret());
  if (!authentic.ok()) return authentic.status();
  WorkerEntry& w = **authentic;
  w.last_seen = Clock::now();
  if (w.pending) {
    *resp.mutable_assignment() = *w.pending;
    w.pending.reset();
    return resp;
  }
  if (!w.job_id.empty()) {
    auto j = jobs_.find(w.job_id);
    const bool gone = j == jobs_.end() || IsFinished(j->second.job.state()) ||
                      j->second.job.attempt() != w.attempt;
    if (gone) resp.set_cancel(true);
    // A worker that is no longer running the attempt (it restarted) is free again.
    if (request.job_id().empty() && gone) {
      w.job_id.clear();
      ScheduleLocked();
    }
  }
  return resp;
}

absl::StatusOr<v1::ReportProgressResponse> Coordinator::ReportProgress(
    const v1::ReportProgressRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  v1::ReportProgressResponse resp;
  auto holder = RankHolderLocked(request.worker_id(), request.worker_secret(), request.job_id(),
                                 request.attempt(), request.rank());
  if (!holder.ok()) return holder.status();
  auto it = jobs_.find(request.job_id());
  if (it == jobs_.end()) {
    return absl::NotFoundError(absl::StrCat("job '", request.job_id(), "' not found"));
  }
  JobEntry& entry = it->second;
  const bool current = request.attempt() == entry.job.attempt() && !IsFinished(entry.job.state());
  if (request.has_progress()) {
    if (current && request.rank() == 0) {
      entry.progress = request.progress();
      ++entry.progress_version;
      changed_.notify_all();
    }
    resp.set_cancel(!current);
    return resp;
  }
  if (request.has_epoch()) {
    if (current && request.rank() == 0) {
      v1::JobEvent ev;
      *ev.mutable_epoch() = request.epoch();
      AppendEventLocked(entry, std::move(ev));
    }
    resp.set_cancel(!current);
    return resp;
  }
  // A rank finished: its worker is free once it has stopped.
  auto w = workers_.find(request.worker_id());
  if (w != workers_.end() && w->second.job_id == request.job_id()) w->second.job_id.clear();
  const v1::RankOutcome& out = request.outcome();
  if (current) {
    if (request.rank() >= 0 && request.rank() < static_cast<int>(entry.rank_done.size())) {
      entry.rank_done[request.rank()] = true;
    }
    if (!out.ok()) {
      SetStateLocked(
          entry, v1::FAILED,
          absl::StrCat("rank ", request.rank(), " (", request.worker_id(), "): ", out.message()));
    } else if (request.rank() == 0) {
      FillResult(out.summary_json(), entry.job.mutable_result());
      if (entry.job.model_id().empty()) {
        SetStateLocked(entry, v1::FAILED, "rank 0 finished without uploading the model");
      } else {
        SetStateLocked(entry, v1::SUCCEEDED, entry.job.result().stop_reason());
      }
    }
  }
  ScheduleLocked();
  return resp;
}

absl::StatusOr<v1::UploadModelResponse> Coordinator::UploadModel(
    const v1::ModelUpload& header, const std::function<absl::StatusOr<bool>(std::string*)>& next) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Only rank 0 uploads the model.
    auto holder = RankHolderLocked(header.worker_id(), header.worker_secret(), header.job_id(),
                                   header.attempt(), 0);
    if (!holder.ok()) return holder.status();
    auto it = jobs_.find(header.job_id());
    if (it == jobs_.end()) {
      return absl::NotFoundError(absl::StrCat("job '", header.job_id(), "' not found"));
    }
    if (it->second.job.attempt() != header.attempt() || IsFinished(it->second.job.state())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job '", header.job_id(), "' no longer runs attempt ", header.attempt()));
    }
  }
  auto n = store_->NextId("model");
  if (!n.ok()) return n.status();
  const std::string id = absl::StrCat("model-", *n);
  const std::string path = (fs::path(config_.data_dir) / "models" / (id + ".npz")).string();
  auto size = WriteChunks(path + ".part", next, kMaxModelFileBytes,
                          absl::StrCat("of a model (", kMaxParameters, " parameters)"),
                          config_.min_free_disk_bytes);
  if (!size.ok()) return size.status();
  std::error_code ec;
  fs::rename(path + ".part", path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot store ", path, ": ", ec.message()));
  auto model = LoadModel(path);
  if (!model.ok()) {
    fs::remove(path, ec);
    return absl::InvalidArgumentError(
        absl::StrCat("model: the uploaded file is not a model: ", model.status().message()));
  }
  ModelRecord rec;
  rec.path = path;
  rec.info.set_model_id(id);
  rec.info.set_job_id(header.job_id());
  rec.info.set_num_features(model->num_features);
  rec.info.set_num_classes(model->num_classes);
  rec.info.set_size_bytes(*size);
  auto summary = LoadModelSummary(path);
  if (summary.ok()) rec.info.set_summary_json(*summary);
  absl::Status st = store_->PutModel(rec);
  if (!st.ok()) return st;
  std::lock_guard<std::mutex> lock(mu_);
  models_[id] = rec;
  auto it = jobs_.find(header.job_id());
  if (it != jobs_.end()) {
    it->second.job.set_model_id(id);
    (void)store_->PutJob(it->second.job);
  }
  v1::UploadModelResponse resp;
  resp.set_model_id(id);
  return resp;
}

std::map<std::string, int> Coordinator::WorkerCounts() {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, int> counts{{"idle", 0}, {"busy", 0}};
  for (const auto& [id, w] : workers_) ++counts[w.job_id.empty() ? "idle" : "busy"];
  return counts;
}

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
  std::lock_guard<std::mutex> lock(mu_);
  return storage_status_;
}

void Coordinator::MonitorLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  auto next_probe = Clock::now();
  while (!stopping_) {
    changed_.wait_for(lock, std::chrono::milliseconds(200));
    if (Clock::now() >= next_probe) {
      lock.unlock();
      absl::Status probed = ProbeStorage();
      lock.lock();
      if (!probed.ok() && storage_status_.ok()) {
        std::cerr << "logit-server: ERROR storage: " << probed.message() << std::endl;
      }
      storage_status_ = probed;
      next_probe = Clock::now() + config_.storage_probe_interval;
    }
    const auto now = Clock::now();
    for (auto it = workers_.begin(); it != workers_.end();) {
      WorkerEntry& w = it->second;
      if (now - w.last_seen < config_.worker_timeout) {
        ++it;
        continue;
      }
      if (!w.job_id.empty()) {
        auto j = jobs_.find(w.job_id);
        if (j != jobs_.end() && !IsFinished(j->second.job.state()) &&
            j->second.job.attempt() == w.attempt) {
          SetStateLocked(
              j->second, v1::FAILED,
              absl::StrCat("worker ", it->first, " (rank ", w.rank, ") was lost: no heartbeat for ",
                           config_.worker_timeout.count() / 1000.0, " s"));
        }
      }
      it = workers_.erase(it);
    }
    const auto wall_now = TimeUtil::TimestampToNanoseconds(Now());
    for (auto& [id, entry] : jobs_) {
      const double deadline = entry.job.spec().deadline_seconds();
      if (deadline <= 0 || IsFinished(entry.job.state())) continue;
      const double age = (wall_now - TimeUtil::TimestampToNanoseconds(entry.job.created())) / 1e9;
      if (age > deadline) {
        // Its ranks learn it from their next heartbeat, like a cancellation.
        SetStateLocked(entry, v1::FAILED,
                       absl::StrCat("deadline exceeded: not finished ", deadline,
                                    " s after submission (deadline_seconds)"));
      }
    }
    ScheduleLocked();
  }
}

}  // namespace logit
