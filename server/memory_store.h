// An in-memory JobStore for unit tests: the same contract as SqliteJobStore, nothing durable,
// and writes that can be made to fail on demand.
//
// Thread-safe (one mutex).
#ifndef LOGIT_SERVER_MEMORY_STORE_H_
#define LOGIT_SERVER_MEMORY_STORE_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "server/job_store.h"
#include "worker/common/mutex.h"

namespace logit {

class MemoryJobStore final : public JobStore {
 public:
  MemoryJobStore() = default;

  // From now on every write (NextId included) fails with `status` and changes nothing; OK
  // makes writes succeed again. Reads never fail.
  void FailWrites(absl::Status status);
  // Writes that succeeded so far.
  int64_t writes() const;

  absl::StatusOr<int64_t> NextId(const std::string& kind) override;

  absl::Status PutJob(const v1::Job& job) override;
  absl::Status PutJobWithEvent(const v1::Job& job, const v1::JobEvent& event) override;
  absl::StatusOr<std::vector<v1::Job>> LoadJobs() override;
  absl::Status AppendEvent(const v1::JobEvent& event) override;
  absl::StatusOr<std::vector<v1::JobEvent>> LoadEvents() override;

  absl::Status PutDataset(const DatasetRecord& dataset) override;
  absl::Status DeleteDataset(const std::string& dataset_id) override;
  absl::StatusOr<std::vector<DatasetRecord>> LoadDatasets() override;

  absl::Status PutModel(const ModelRecord& model) override;
  absl::Status DeleteModel(const std::string& model_id) override;
  absl::StatusOr<std::vector<ModelRecord>> LoadModels() override;

  absl::Status PutJobWithCheckpoint(const v1::Job& job, const v1::JobEvent& event,
                                    const CheckpointRecord& checkpoint) override;
  absl::Status DeleteCheckpoints(const std::string& job_id,
                                 const std::vector<int64_t>& numbers) override;
  absl::StatusOr<std::vector<CheckpointRecord>> LoadCheckpoints() override;

 private:
  // Rows of one table in first-insertion order, replaced in place.
  template <typename T>
  struct Table {
    std::vector<std::pair<std::string, T>> rows;
    void Put(const std::string& key, const T& value) {
      for (auto& row : rows) {
        if (row.first == key) {
          row.second = value;
          return;
        }
      }
      rows.emplace_back(key, value);
    }
    std::vector<T> All() const {
      std::vector<T> out;
      for (const auto& row : rows) out.push_back(row.second);
      return out;
    }
  };

  mutable Mutex mu_;
  absl::Status fail_writes_ ABSL_GUARDED_BY(mu_);
  int64_t writes_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int64_t> counters_ ABSL_GUARDED_BY(mu_);
  Table<v1::Job> jobs_ ABSL_GUARDED_BY(mu_);
  Table<v1::JobEvent> events_ ABSL_GUARDED_BY(mu_);
  Table<DatasetRecord> datasets_ ABSL_GUARDED_BY(mu_);
  Table<ModelRecord> models_ ABSL_GUARDED_BY(mu_);
  Table<CheckpointRecord> checkpoints_ ABSL_GUARDED_BY(mu_);
};

}  // namespace logit

#endif  // LOGIT_SERVER_MEMORY_STORE_H_
