// The coordinator's durable state behind one interface: jobs, their events, datasets and
// models metadata (weights and datasets are files next to it). SqliteJobStore (store.h) is the
// server's; MemoryJobStore (memory_store.h) is the unit tests' fake.
//
// Contract of every implementation: thread-safe; a write returns OK only once it is durable
// (committed), so the caller may acknowledge it; a failed write changes nothing and returns
// the store's error, which callers propagate.
#ifndef LOGIT_SERVER_JOB_STORE_H_
#define LOGIT_SERVER_JOB_STORE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "logit/v1/training.pb.h"

namespace logit {

// A model's metadata and where its .npz lives.
struct ModelRecord {
  v1::ModelInfo info;
  std::string path;
};

// A dataset's metadata and where its bytes live.
struct DatasetRecord {
  v1::Dataset info;
  std::string path;
};

// A stored checkpoint of a job and where its file lives.
struct CheckpointRecord {
  std::string job_id;
  v1::CheckpointInfo info;
  std::string path;
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Called after every write transaction with its duration in seconds (metrics). Set it before
  // the store is shared between threads.
  void set_write_observer(std::function<void(double seconds)> observer) {
    write_observer_ = std::move(observer);
  }

  // The next number of a counter ("job", "model", "dataset"), durable across restarts.
  virtual absl::StatusOr<int64_t> NextId(const std::string& kind) = 0;

  // Inserts or replaces the job (keyed by id). Load order is first-insertion order.
  virtual absl::Status PutJob(const v1::Job& job) = 0;
  // PutJob(job) and AppendEvent(event) in one transaction: both are durable, or neither.
  virtual absl::Status PutJobWithEvent(const v1::Job& job, const v1::JobEvent& event) = 0;
  virtual absl::StatusOr<std::vector<v1::Job>> LoadJobs() = 0;
  // Stores the event under (job_id, sequence), replacing one stored there before.
  virtual absl::Status AppendEvent(const v1::JobEvent& event) = 0;
  // Every event in insertion order.
  virtual absl::StatusOr<std::vector<v1::JobEvent>> LoadEvents() = 0;

  virtual absl::Status PutDataset(const DatasetRecord& dataset) = 0;
  // OK also when no such dataset is stored.
  virtual absl::Status DeleteDataset(const std::string& dataset_id) = 0;
  virtual absl::StatusOr<std::vector<DatasetRecord>> LoadDatasets() = 0;

  virtual absl::Status PutModel(const ModelRecord& model) = 0;
  // OK also when no such model is stored.
  virtual absl::Status DeleteModel(const std::string& model_id) = 0;
  virtual absl::StatusOr<std::vector<ModelRecord>> LoadModels() = 0;

  // PutJobWithEvent(job, event) and the checkpoint's record in one transaction.
  virtual absl::Status PutJobWithCheckpoint(const v1::Job& job, const v1::JobEvent& event,
                                            const CheckpointRecord& checkpoint) = 0;
  // Forgets the job's checkpoints with these numbers (OK for unknown ones).
  virtual absl::Status DeleteCheckpoints(const std::string& job_id,
                                         const std::vector<int64_t>& numbers) = 0;
  // Every checkpoint record in insertion order.
  virtual absl::StatusOr<std::vector<CheckpointRecord>> LoadCheckpoints() = 0;

 protected:
  std::function<void(double seconds)> write_observer_;
};

}  // namespace logit

#endif  // LOGIT_SERVER_JOB_STORE_H_
