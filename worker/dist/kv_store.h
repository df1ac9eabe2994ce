// The key-value store one job attempt's ranks rendezvous through: the operations of a c10d
// Store (torch/csrc/distributed/c10d/Store.hpp) as absl::Status(Or) calls, without LibTorch.
// The coordinator serves one per attempt over gRPC (worker/dist/coordinator_kv.h is the client,
// server/rendezvous_kv.h the store); ConnectProcessGroup adapts it to a c10d::Store when
// RendezvousOptions::kv is set. A store that fails (its host gone) returns errors; it never
// throws, crashes or blocks past its own per-call deadline.
#ifndef LOGIT_WORKER_DIST_KV_STORE_H_
#define LOGIT_WORKER_DIST_KV_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace logit {

// Keys are non-empty strings; values are bytes. A key written by Add holds its sum as decimal
// text (so Get on it returns e.g. "3"), as in c10d's TCPStore.
//
// Thread-safety: implementations are safe to call from several threads at once (a rank's
// training thread and its heartbeat thread share one).
class KeyValueStore {
 public:
  virtual ~KeyValueStore() = default;

  // key := value.
  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;
  // The value under key, or nullopt when it is absent. Never waits for the key to appear
  // (callers poll; see Check).
  virtual absl::StatusOr<std::optional<std::string>> Get(const std::string& key) = 0;
  // Adds delta to the integer under key (absent: 0) and returns the sum. A value that is not
  // an integer is an error.
  virtual absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) = 0;
  // Whether every one of keys is present.
  virtual absl::StatusOr<bool> Check(const std::vector<std::string>& keys) = 0;
  // Removes key; whether it existed.
  virtual absl::StatusOr<bool> Delete(const std::string& key) = 0;
  // Keys in the store (the whole attempt's, whatever their prefix).
  virtual absl::StatusOr<int64_t> NumKeys() = 0;
  // If key's value equals expected (an absent key counts as expected == ""), it becomes
  // desired. Returns the value stored afterwards ("" when the key is still absent).
  virtual absl::StatusOr<std::string> CompareSet(const std::string& key,
                                                 const std::string& expected,
                                                 const std::string& desired) = 0;
};

}  // namespace logit

#endif  // LOGIT_WORKER_DIST_KV_STORE_H_
