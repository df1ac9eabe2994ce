// The client side of the coordinator's per-attempt key-value store: a KeyValueStore whose every
// operation is one WorkerService.Rendezvous call carrying this rank's identity (the coordinator
// checks that the worker holds the rank and picks the attempt's store). Set it as
// RendezvousOptions::kv so that the ranks rendezvous and keep their heartbeats through the
// authenticated gRPC channel they already have: when the coordinator goes away, store calls
// fail with a status instead of killing the process.
#ifndef LOGIT_WORKER_DIST_COORDINATOR_KV_H_
#define LOGIT_WORKER_DIST_COORDINATOR_KV_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "logit/v1/worker.grpc.pb.h"
#include "logit/v1/worker.pb.h"
#include "worker/dist/kv_store.h"

namespace logit {

// Thread-safe (gRPC stubs are; a Transport must be too).
class CoordinatorKv final : public KeyValueStore {
 public:
  // Sends one request, `from` already filled in; returns the response or a status whose code
  // says what went wrong.
  using Transport =
      std::function<absl::StatusOr<v1::RendezvousResponse>(const v1::RendezvousRequest&)>;

  // Each operation calls stub->Rendezvous with `from` (worker id, secret, job, attempt, rank)
  // and a deadline of `call_timeout` from the call's start. A failed call returns its gRPC code
  // (UNAVAILABLE when the coordinator is unreachable, DEADLINE_EXCEEDED, PERMISSION_DENIED, ...)
  // with a message "rendezvous store: OP 'key': <gRPC message>". The stub is shared with the
  // caller's other calls. REQUIRES: call_timeout > 0.
  CoordinatorKv(std::shared_ptr<v1::WorkerService::StubInterface> stub, v1::RankIdentity from,
                std::chrono::milliseconds call_timeout = std::chrono::seconds(10));

  // Each operation is one call of `transport` (tests, and in-process stores): the same requests
  // and error messages without gRPC.
  CoordinatorKv(Transport transport, v1::RankIdentity from);

  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key) override;
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;
  absl::StatusOr<bool> Check(const std::vector<std::string>& keys) override;
  absl::StatusOr<bool> Delete(const std::string& key) override;
  absl::StatusOr<int64_t> NumKeys() override;
  absl::StatusOr<std::string> CompareSet(const std::string& key, const std::string& expected,
                                         const std::string& desired) override;

 private:
  // Sends `request` (op and operands set) with from_; errors name the op and `what`.
  absl::StatusOr<v1::RendezvousResponse> Call(v1::RendezvousRequest request,
                                              const std::string& what) const;

  // Constant after construction.
  const Transport transport_;
  const v1::RankIdentity from_;  // holds the worker secret: never logged or put in a message
};

}  // namespace logit

#endif  // LOGIT_WORKER_DIST_COORDINATOR_KV_H_
