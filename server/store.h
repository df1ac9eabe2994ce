// Durable state of the coordinator in one embedded SQLite database (--data-dir/logit.db):
// jobs, their events, datasets and models metadata. Weights and datasets are files next to it.
// Every write is a committed transaction before the caller acknowledges anything.
#ifndef LOGIT_SERVER_STORE_H_
#define LOGIT_SERVER_STORE_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "logit/v1/training.pb.h"

struct sqlite3;

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

class Store {
 public:
  // Opens (creating if needed) the database file.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();

  // The next number of a counter ("job", "model", "dataset"), durable across restarts.
  absl::StatusOr<int64_t> NextId(const std::string& kind);

  absl::Status PutJob(const v1::Job& job);
  absl::StatusOr<std::vector<v1::Job>> LoadJobs();
  absl::Status AppendEvent(const v1::JobEvent& event);
  absl::StatusOr<std::vector<v1::JobEvent>> LoadEvents();

  absl::Status PutDataset(const DatasetRecord& dataset);
  absl::StatusOr<std::vector<DatasetRecord>> LoadDatasets();

  absl::Status PutModel(const ModelRecord& model);
  absl::Status DeleteModel(const std::string& model_id);
  absl::StatusOr<std::vector<ModelRecord>> LoadModels();

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  absl::Status Exec(const std::string& sql);
  // Inserts or replaces (key, blob[, path]) into `table`.
  absl::Status Put(const std::string& table, const std::string& key,
                   const google::protobuf::Message& value, const std::string& extra);
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadAll(
      const std::string& table, const std::string& order_by);

  std::mutex mu_;
  sqlite3* db_;
};

}  // namespace logit

#endif  // LOGIT_SERVER_STORE_H_
