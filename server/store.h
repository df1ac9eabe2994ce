// The server's JobStore: one embedded SQLite database (--data-dir/logit.db) in WAL mode with
// synchronous=FULL, so every write is a committed, fsynced transaction before it returns.
// Thread-safe: one connection, every use of it under mu_ (a leaf lock).
#ifndef LOGIT_SERVER_STORE_H_
#define LOGIT_SERVER_STORE_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "logit/v1/training.pb.h"
#include "server/job_store.h"
#include "worker/common/mutex.h"

struct sqlite3;

namespace logit {

class SqliteJobStore final : public JobStore {
 public:
  // Opens (creating if needed) the database file.
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(const std::string& path);
  ~SqliteJobStore() override;

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
  explicit SqliteJobStore(sqlite3* db) : db_(db) {}
  absl::Status ExecLocked(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Inserts or replaces (key, blob[, path]) into `table`.
  absl::Status PutLocked(const std::string& table, const std::string& key,
                         const google::protobuf::Message& value, const std::string& extra)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Put(const std::string& table, const std::string& key,
                   const google::protobuf::Message& value, const std::string& extra);
  // Deletes the row `key` of `table` (OK when there is none).
  absl::Status Delete(const std::string& table, const std::string& key);
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadAll(
      const std::string& table, const std::string& order_by);

  Mutex mu_;
  sqlite3* const db_ ABSL_PT_GUARDED_BY(mu_);
};

}  // namespace logit

#endif  // LOGIT_SERVER_STORE_H_
