#include "server/memory_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace logit {

void MemoryJobStore::FailWrites(absl::Status status) {
  MutexLock lock(&mu_);
  fail_writes_ = std::move(status);
}

int64_t MemoryJobStore::writes() const {
  MutexLock lock(&mu_);
  return writes_;
}

absl::StatusOr<int64_t> MemoryJobStore::NextId(const std::string& kind) {
  MutexLock lock(&mu_);
  if (!fail_writes_.ok()) return fail_writes_;
  ++writes_;
  return ++counters_[kind];
}

absl::Status MemoryJobStore::PutJob(const v1::Job& job) {
  MutexLock lock(&mu_);
  if (!fail_writes_.ok()) return fail_writes_;
  ++writes_;
  jobs_.Put(job.id(), job);
  return absl::OkStatus();
}

absl::Status MemoryJobStore::PutJobWithEvent(const v1::Job& job, const v1::JobEvent& event) {
  MutexLock lock(&mu_);
  if (!fail_writes_.ok()) return fail_writes_;
  ++writes_;
  events_.Put(absl::StrCat(event.job_id(), "/", event.sequence()), event);
  jobs_.Put(job.id(), job);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Job>> MemoryJobStore::LoadJobs() {
  MutexLock lock(&mu_);
  return jobs_.All();
}

absl::Status MemoryJobStore::AppendEvent(const v1::JobEvent& event) {
  MutexLock lock(&mu_);
  if (!fail_writes_.ok()) return fail_writes_;
  ++writes_;
  events_.Put(absl::StrCat(event.job_id(), "/", event.sequence()), event);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::JobEvent>> MemoryJobStore::LoadEvents() {
  MutexLock lock(&mu_);
  return events_.All();
}

absl::Status MemoryJobStore::PutDataset(const DatasetRecord& dataset) {
  MutexLock lock(&mu_);
  if (!fail_writes_.ok()) return fail_writes_;
  ++writes_;
  datasets_.Put(dataset.info.id(), dataset);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<DatasetRecord>> MemoryJobStore::LoadDatasets() {
  MutexLock lock(&mu_);
  return datasets_.All();
}

absl::Status MemoryJobStore::PutModel(const ModelRecord& model) {
  MutexLock lock(&mu_);
  if (!fail_writes_.ok()) return fail_writes_;
  ++writes_;
  models_.Put(model.info.model_id(), model);
  return absl::OkStatus();
}

absl::Status MemoryJobStore::DeleteModel(const std::string& model_id) {
  MutexLock lock(&mu_);
  if (!fail_writes_.ok()) return fail_writes_;
  ++writes_;
  auto& rows = models_.rows;
  rows.erase(std::remove_if(rows.begin(), rows.end(),
                            [&](const auto& row) { return row.first == model_id; }),
             rows.end());
  return absl::OkStatus();
}

absl::Status MemoryJobStore::DeleteDataset(const std::string& dataset_id) {
  MutexLock lock(&mu_);
  if (!fail_writes_.ok()) return fail_writes_;
  ++writes_;
  auto& rows = datasets_.rows;
  rows.erase(std::remove_if(rows.begin(), rows.end(),
                            [&](const auto& row) { return row.first == dataset_id; }),
             rows.end());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ModelRecord>> MemoryJobStore::LoadModels() {
  MutexLock lock(&mu_);
  return models_.All();
}

absl::Status MemoryJobStore::PutJobWithCheckpoint(const v1::Job& job, const v1::JobEvent& event,
                                                  const CheckpointRecord& checkpoint) {
  MutexLock lock(&mu_);
  if (!fail_writes_.ok()) return fail_writes_;
  ++writes_;
  events_.Put(absl::StrCat(event.job_id(), "/", event.sequence()), event);
  jobs_.Put(job.id(), job);
  checkpoints_.Put(absl::StrCat(checkpoint.job_id, "/", checkpoint.info.number()), checkpoint);
  return absl::OkStatus();
}

absl::Status MemoryJobStore::DeleteCheckpoints(const std::string& job_id,
                                               const std::vector<int64_t>& numbers) {
  MutexLock lock(&mu_);
  if (!fail_writes_.ok()) return fail_writes_;
  ++writes_;
  auto& rows = checkpoints_.rows;
  rows.erase(std::remove_if(rows.begin(), rows.end(),
                            [&](const auto& row) {
                              return row.second.job_id == job_id &&
                                     std::find(numbers.begin(), numbers.end(),
                                               row.second.info.number()) != numbers.end();
                            }),
             rows.end());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<CheckpointRecord>> MemoryJobStore::LoadCheckpoints() {
  MutexLock lock(&mu_);
  return checkpoints_.All();
}

}  // namespace logit
