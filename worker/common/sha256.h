// SHA-256 of bytes and files (OpenSSL's libcrypto), as lower-case hex: the content hash that
// identifies a dataset between the coordinator and the workers' caches.
#ifndef LOGIT_WORKER_COMMON_SHA256_H_
#define LOGIT_WORKER_COMMON_SHA256_H_

#include <cstddef>
#include <memory>
#include <string>

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

// The SHA-256 of a file's bytes; NotFound / Internal naming the file when it cannot be read.
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);

}  // namespace logit

#endif  // LOGIT_WORKER_COMMON_SHA256_H_
