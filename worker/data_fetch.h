// How a worker reads the data files of its job when it may not see the coordinator's disk:
// the file itself when this machine has the same file (a shared file system), else the blocks
// its shard needs, fetched over WorkerService.FetchData, each verified against the
// coordinator's block hashes and kept in a bounded local cache keyed by the file's SHA-256, so
// the next job on the same data fetches nothing.
#ifndef LOGIT_WORKER_DATA_FETCH_H_
#define LOGIT_WORKER_DATA_FETCH_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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
  // Where fetched files are kept: DIR/SHA256/NAME, a file of the full size holding the blocks
  // fetched so far (the others are holes), with DIR/SHA256/.NAME.have listing them. Created
  // when missing.
  std::string dir = "/tmp/logit-cache";
  // The cache's size bound (bytes on disk): least recently used files are removed to make
  // room. A shard larger than this cannot be fetched (RESOURCE_EXHAUSTED naming
  // --cache-max-bytes).
  int64_t max_bytes = int64_t{16} << 30;
};

// "auto" / "direct" / "fetch"; InvalidArgument naming --data-access otherwise.
absl::StatusOr<DataCacheOptions::Access> ParseDataAccess(const std::string& name);

// The part of a data file a rank reads: shard `rank` of `world`, of a features file or (when
// `labels`) of a labels file.
struct DataShard {
  int rank = 0;
  int world = 1;
  bool labels = false;
};

// Thread-compatible. Processes sharing a cache directory take turns (a lock file in it), so
// ranks of different workers on one machine may share it.
class DataFetcher {
 public:
  DataFetcher(std::shared_ptr<v1::WorkerService::Stub> stub, DataCacheOptions options);

  // The path to read `path` (a data file as the assignment's spec names it) from for `shard`.
  // For an uncompressed .npy or IDX file only the blocks holding the header and the shard's
  // rows are fetched (ShardByteRanges); other formats are fetched whole. Blocks already in the
  // cache are re-verified against their hashes before use; a corrupt one is fetched again.
  // `fetched_bytes` is set to the bytes transferred. UNAVAILABLE when the coordinator cannot
  // be reached, DATA_LOSS when bytes do not match the coordinator's hashes, RESOURCE_EXHAUSTED
  // when the shard is larger than the cache.
  absl::StatusOr<std::string> Localize(const v1::RankIdentity& rank, const std::string& path,
                                       const DataShard& shard, int64_t* fetched_bytes = nullptr);

 private:
  class Entry;
  // The file's size; its SHA-256 unless `skip_sha256` (then only when already known); its
  // block hashes when `with_blocks`.
  absl::StatusOr<v1::DataFileInfo> Describe(const v1::RankIdentity& rank, const std::string& path,
                                            bool skip_sha256, bool with_blocks);
  // Makes blocks `needed` (sorted, distinct) of `entry` present and verified.
  absl::Status Ensure(const v1::RankIdentity& rank, const std::string& path, Entry* entry,
                      const std::vector<int64_t>& needed, int64_t* fetched_bytes);
  // Fetches blocks [first, last] into `entry`, verifying each.
  absl::Status FetchBlocks(const v1::RankIdentity& rank, const std::string& path, Entry* entry,
                           int64_t first, int64_t last);
  // Removes least recently used entries until `incoming` more bytes fit the bound.
  void MakeRoom(int64_t incoming, const std::string& keep);

  const std::shared_ptr<v1::WorkerService::Stub> stub_;
  const DataCacheOptions options_;
};

}  // namespace logit

#endif  // LOGIT_WORKER_DATA_FETCH_H_
