// The catalog: datasets and models (metadata in the JobStore, bytes as files under the data
// dir), the resolution of a JobSpec's data references, and Predict with a bounded LRU cache of
// loaded models.
//
// Thread-safety: thread-safe. mu_ guards the in-memory maps and the cache only; store writes,
// file I/O and model loading happen outside it (a record is written to the store first and
// published in memory after, so nothing is visible before it is durable). datasets_mu_
// serialises the changes of the dataset records (an upload's duplicate check with its write,
// a deletion), so two uploads of the same bytes keep one copy and an upload never returns a
// dataset being deleted. A model deleted while
// a Predict was loading it is never put back in the cache: every model carries a generation,
// and a loaded model is cached only if the same generation is still in the catalog.
#ifndef LOGIT_SERVER_CATALOG_H_
#define LOGIT_SERVER_CATALOG_H_

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "logit/v1/training.pb.h"
#include "server/chunk_file.h"
#include "logit/v1/worker.pb.h"
#include "server/job_store.h"
#include "server/request_decode.h"
#include "worker/common/mutex.h"
#include "worker/model/model.h"

namespace logit {

struct CatalogOptions {
  std::string data_dir = "./logit-data";  // datasets/ and models/ are under it
  std::string data_root;                  // where "server:PATH" may point; empty: nowhere
  PredictLimits predict_limits;           // rows per Predict request
  // Over these, requests fail with RESOURCE_EXHAUSTED naming the limit (0 = no limit).
  int64_t max_upload_bytes = int64_t{64} << 30;    // one uploaded dataset
  int64_t max_dataset_bytes = 0;                   // all uploaded datasets together
  int64_t min_free_disk_bytes = int64_t{1} << 30;  // uploads stop before the disk is this full
  // Loaded models kept for Predict, least recently used evicted first (0 = no limit).
  int max_cached_models = 64;
};

class Catalog {
 public:
  // `store` must outlive the catalog.
  Catalog(CatalogOptions options, JobStore* store);

  // Adds what the store holds (at start-up).
  void Restore(std::vector<DatasetRecord> datasets, std::vector<ModelRecord> models);

  // Resolves "dataset:ID" / "server:PATH" to a file path; `field` names the JobSpec field in
  // the error (NOT_FOUND, PERMISSION_DENIED or INVALID_ARGUMENT).
  absl::StatusOr<std::string> ResolveData(const std::string& field, const std::string& ref) const;

  // Size and SHA-256 of a data file a job names (a path ResolveData returned): an uploaded
  // dataset's from its record; any other file's computed once and kept while its size and
  // modification time stay the same; with `hash` false an unknown hash is left empty instead.
  // With `blocks`, also its block hashes (DataFileInfo.block_sha256), computed once per file
  // version; DATA_LOSS when an uploaded file no longer has the hash recorded at upload.
  // NOT_FOUND / INTERNAL naming the file when it is unreadable.
  absl::StatusOr<v1::DataFileInfo> DescribeDataFile(const std::string& path, bool hash = true,
                                                    bool blocks = false);

  // Stores an uploaded dataset; the store's error if its record cannot be written. Bytes with
  // the SHA-256 and name of a stored dataset return that dataset, and the new copy is removed.
  absl::StatusOr<v1::Dataset> UploadDataset(const v1::DatasetInfo& info, const ChunkSource& next);
  // The uploaded datasets, newest first; with `sha256` non-empty only those with that hash.
  std::vector<v1::Dataset> ListDatasets(const std::string& sha256) const;
  // Deletes the record (store first), then the file. NOT_FOUND if there is no such dataset.
  // The caller checks that no unfinished job needs it.
  absl::Status DeleteDataset(const std::string& dataset_id);

  // Stores a model uploaded by job `job_id`'s rank 0 and returns its id. INVALID_ARGUMENT if
  // the file is not a model; the store's error if its record cannot be written.
  absl::StatusOr<std::string> AddModel(const std::string& job_id,
                                       const v1::TrainingSummary& summary, const ChunkSource& next);
  absl::StatusOr<ModelRecord> GetModel(const std::string& model_id) const;
  // The models, newest first (by created time, then id), without their summaries' history.
  std::vector<v1::ModelInfo> ListModels() const;
  // Deletes the record (store first), then the file. NOT_FOUND if there is no such model.
  absl::Status DeleteModel(const std::string& model_id);
  absl::StatusOr<v1::PredictResponse> Predict(const v1::PredictRequest& request);

  // For tests: whether the model is in the Predict cache, and a hook Predict calls after
  // loading a model and before caching it (without mu_ held).
  bool IsCached(const std::string& model_id) const;
  void SetAfterLoadHookForTest(std::function<void(const std::string& model_id)> hook);

 private:
  struct Model {
    ModelRecord record;
    uint64_t generation = 0;
  };
  struct Cached {
    std::shared_ptr<const LinearModel> model;
    std::list<std::string>::iterator lru;  // its place in lru_
  };
  void UncacheLocked(const std::string& model_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CatalogOptions options_;
  JobStore* const store_;

  Mutex datasets_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable Mutex mu_;
  std::map<std::string, DatasetRecord> datasets_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Model> models_ ABSL_GUARDED_BY(mu_);
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, Cached> cache_ ABSL_GUARDED_BY(mu_);
  std::list<std::string> lru_ ABSL_GUARDED_BY(mu_);  // most recently used first
  std::function<void(const std::string&)> after_load_hook_ ABSL_GUARDED_BY(mu_);
  // Hashes of data files by path (server: files; uploaded files once their blocks were asked
  // for), with the (size, mtime ns) they were computed for.
  struct FileHash {
    int64_t size = 0, mtime_ns = 0;
    std::string sha256;
    int64_t block_bytes = 0;          // 0: block hashes not computed
    std::vector<std::string> blocks;  // DataFileInfo.block_sha256
  };
  std::map<std::string, FileHash> file_hashes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace logit

#endif  // LOGIT_SERVER_CATALOG_H_
