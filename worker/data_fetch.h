// How a worker reads the data files of its job when it may not see the coordinator's disk:
// the file itself when this machine has the same file (a shared file system), else a copy
// fetched over WorkerService.FetchData, verified against the coordinator's SHA-256 and kept in
// a bounded local cache keyed by that hash, so the next job on the same data fetches nothing.
#ifndef LOGIT_WORKER_DATA_FETCH_H_
#define LOGIT_WORKER_DATA_FETCH_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "logit/v1/worker.grpc.pb.h"

namespace logit {

struct DataCacheOptions {
  enum class Access {
    kAuto,    // the coordinator's path when a file of the same size is there, else fetch
    kDirect,  // always the coordinator's path (a shared file system)
    kFetch,   // always through the cache
  };
  Access access = Access::kAuto;
  // Where fetched files are kept: DIR/SHA256/NAME. Created when missing.
  std::string dir = "/tmp/logit-cache";
  // The cache's size bound: least recently used files are removed to make room. A file larger
  // than this cannot be fetched (RESOURCE_EXHAUSTED naming --cache-max-bytes).
  int64_t max_bytes = int64_t{16} << 30;
};

// "auto" / "direct" / "fetch"; InvalidArgument naming --data-access otherwise.
absl::StatusOr<DataCacheOptions::Access> ParseDataAccess(const std::string& name);

// Thread-compatible: one rank at a time calls it (the agent runs one rank at a time); separate
// processes sharing a cache directory are safe (downloads go to private temporary names and are
// renamed into place).
class DataFetcher {
 public:
  DataFetcher(std::shared_ptr<v1::WorkerService::Stub> stub, DataCacheOptions options);

  // The path to read `path` (a data file as the assignment's spec names it) from. `fetched` is
  // set when bytes were transferred. UNAVAILABLE when the coordinator cannot be reached,
  // DATA_LOSS when the bytes do not match the coordinator's hash, RESOURCE_EXHAUSTED when the
  // file is larger than the cache.
  absl::StatusOr<std::string> Localize(const v1::RankIdentity& rank, const std::string& path,
                                       bool* fetched = nullptr);

 private:
  // The file's size, and its SHA-256 unless `skip_sha256` (then only when already known).
  absl::StatusOr<v1::DataFileInfo> Describe(const v1::RankIdentity& rank, const std::string& path,
                                            bool skip_sha256);
  absl::Status Download(const v1::RankIdentity& rank, const std::string& path,
                        const v1::DataFileInfo& info, const std::string& dest);
  // Removes least recently used entries until `incoming` more bytes fit the bound.
  void MakeRoom(int64_t incoming, const std::string& keep);

  const std::shared_ptr<v1::WorkerService::Stub> stub_;
  const DataCacheOptions options_;
};

}  // namespace logit

#endif  // LOGIT_WORKER_DATA_FETCH_H_
