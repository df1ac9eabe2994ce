// Writing a streamed upload (datasets, models, checkpoints) to a file: size and free-disk
// limits, optional fsync, and no partial file left behind on any error.
#ifndef LOGIT_SERVER_CHUNK_FILE_H_
#define LOGIT_SERVER_CHUNK_FILE_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <string>

#include "absl/status/statusor.h"

namespace logit {

// Yields the next chunk of an upload into its argument; false at the end, or the transport's
// error.
using ChunkSource = std::function<absl::StatusOr<bool>(std::string*)>;

struct ChunkWriteOptions {
  // More bytes fail with RESOURCE_EXHAUSTED naming `limit_name`.
  int64_t max_bytes = std::numeric_limits<int64_t>::max();
  std::string limit_name;
  // The write stops (RESOURCE_EXHAUSTED) before the file system has less than this free.
  int64_t reserve_bytes = 0;
  // fsync the file before returning (the caller renames it and syncs the directory).
  bool sync = false;
  // When set, receives the SHA-256 (hex) of the bytes written.
  std::string* sha256 = nullptr;
};

// Reads every chunk from `next` into a new file at `path` and returns its size. On any error
// the file is removed.
absl::StatusOr<int64_t> WriteChunks(const std::string& path, const ChunkSource& next,
                                    const ChunkWriteOptions& options = {});

// Bytes free for this process on the file system holding `path` (INT64_MAX when unknown).
int64_t FreeDiskBytes(const std::string& path);

}  // namespace logit

#endif  // LOGIT_SERVER_CHUNK_FILE_H_
