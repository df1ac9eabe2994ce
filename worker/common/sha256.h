// SHA-256 of bytes and files (OpenSSL's libcrypto), as lower-case hex: the content hash that
// identifies a dataset between the coordinator and the workers' caches.
#ifndef LOGIT_WORKER_COMMON_SHA256_H_
#define LOGIT_WORKER_COMMON_SHA256_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace logit {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  // The digest of everything updated so far, as 64 lower-case hex digits; ends the hash.
  std::string HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The SHA-256 of `size` bytes.
std::string Sha256Of(const void* data, size_t size);

// A file's hash and the hashes of its fixed-size blocks (DataFileInfo.block_sha256): a worker
// fetches and verifies only the blocks that hold its shard.
struct FileDigests {
  int64_t size = 0;
  std::string sha256;
  int64_t block_bytes = 0;
  std::vector<std::string> blocks;  // block i covers [i * block_bytes, (i + 1) * block_bytes)
};

// The block size for a file of `size` bytes: a power of two of at least 1 MiB, doubled until
// the file has at most 16384 blocks (so that the list of hashes stays small).
int64_t BlockBytesFor(int64_t size);

// Reads the file once for both its hash and its block hashes (block size BlockBytesFor).
// NotFound / Internal naming the file when it cannot be read, DataLoss when it changes size
// while being read.
absl::StatusOr<FileDigests> DigestFile(const std::string& path);

}  // namespace logit

#endif  // LOGIT_WORKER_COMMON_SHA256_H_
