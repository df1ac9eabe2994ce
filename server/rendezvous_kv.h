// The key-value stores of the running job attempts, which their ranks rendezvous through
// (WorkerService.Rendezvous): one in-memory store per scope ("job-N/attempt-M"), the c10d Store
// operations of a v1::RendezvousRequest applied to it. The coordinator authenticates the rank
// (CheckRankHolder) and names the scope; this class knows nothing of workers, jobs or gRPC.
//
// Limits keep a misbehaving rank from exhausting the coordinator's memory: keys per scope, bytes
// per key, per value, per scope (keys + values) and in all scopes together, and the number of
// scopes. A write that would pass one fails with RESOURCE_EXHAUSTED naming the limit and changes
// nothing.
//
// Locking: one mutex (mu_) guards every scope. Apply and Drop hold it for one in-memory map
// operation (no I/O, no waiting, no callbacks), so concurrent handlers only ever wait for each
// other's map updates. Waiting for a key is the client's job (it polls CHECK), never a handler's.
#ifndef LOGIT_SERVER_RENDEZVOUS_KV_H_
#define LOGIT_SERVER_RENDEZVOUS_KV_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "logit/v1/worker.pb.h"
#include "worker/common/mutex.h"

namespace logit {

struct RendezvousKvLimits {
  // Scopes (job attempts) holding at least one key at once.
  int64_t max_scopes = 4096;
  // Keys in one scope. A rank writes a handful (join, heartbeat, Gloo's addresses, failure
  // reasons), so this allows attempts of thousands of ranks.
  int64_t max_keys_per_scope = 65536;
  // Bytes of one key.
  int64_t max_key_bytes = 1024;
  // Bytes of one value (Gloo's largest is a rank's addresses of all peers, ~100 B per peer).
  int64_t max_value_bytes = 1 << 20;
  // Bytes of one scope's keys and values together.
  int64_t max_scope_bytes = 64 << 20;
  // Bytes of all scopes' keys and values together.
  int64_t max_total_bytes = 256 << 20;
};

class RendezvousKv {
 public:
  explicit RendezvousKv(RendezvousKvLimits limits = {});
  RendezvousKv(const RendezvousKv&) = delete;
  RendezvousKv& operator=(const RendezvousKv&) = delete;

  // Applies one operation to `scope`'s store (created by its first write; reads of a scope
  // that holds nothing see an empty store). Response per op (see worker.proto):
  //   SET: nothing. GET: found, value. ADD: number (the sum). CHECK: found (all keys present).
  //   DELETE: found (the key existed). NUM_KEYS: number. COMPARE_SET: value (stored after the
  //   call), found (the key is present after the call).
  // Errors: INVALID_ARGUMENT naming the field ("scope", "op", "key", "keys") for an empty scope,
  // an unknown op or an empty key, and for ADD on a value that is not an integer;
  // OUT_OF_RANGE when an ADD overflows int64; RESOURCE_EXHAUSTED naming the limit.
  absl::StatusOr<v1::RendezvousResponse> Apply(const std::string& scope,
                                               const v1::RendezvousRequest& request)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Forgets `scope` and its keys (the attempt ended). Dropping an unknown scope does nothing.
  // A later write to the same scope starts an empty store: the caller must reject ranks of
  // ended attempts before Apply.
  void Drop(const std::string& scope) ABSL_LOCKS_EXCLUDED(mu_);

  // Scopes holding at least one key (for metrics and tests).
  int64_t scope_count() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Scope {
    std::map<std::string, std::string> values;
    int64_t bytes = 0;  // keys and values
  };

  // Stores `value` under `key` in `scope_name` (creating both as needed) within the limits.
  absl::Status Put(const std::string& scope_name, const std::string& key, std::string value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes a scope that holds no key.
  void EraseIfEmpty(const std::string& scope_name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const RendezvousKvLimits limits_;

  mutable Mutex mu_;
  std::map<std::string, Scope> scopes_ ABSL_GUARDED_BY(mu_);
  int64_t total_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace logit

#endif  // LOGIT_SERVER_RENDEZVOUS_KV_H_
