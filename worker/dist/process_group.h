// The c10d process group of one job attempt: rendezvous through a key-value store under a
// per-attempt PrefixStore (the coordinator's, over gRPC, when RendezvousOptions::kv is set; a
// c10d TCPStore otherwise), Gloo on CPU, NCCL on CUDA (when LibTorch has it), wrapped as a
// logit::Collective. LibTorch-free interface; c10d exceptions stop in the implementation and
// become absl::Status.
#ifndef LOGIT_WORKER_DIST_PROCESS_GROUP_H_
#define LOGIT_WORKER_DIST_PROCESS_GROUP_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace logit {

class Collective;
class KeyValueStore;

struct RendezvousOptions {
  // The attempt's key-value store (worker/dist/kv_store.h; the coordinator's is a CoordinatorKv).
  // When set, the rendezvous, the heartbeats, the lost-rank diagnosis and Agree's failure
  // reasons all go through it (shared by this rank's threads; no TCPStore client is opened),
  // store_port and host_store are ignored, and store_host only picks Gloo's network device
  // (loopback when it is a loopback address; give the coordinator's host). A store that fails
  // makes the rendezvous, Agree and the diagnosis of a failed collective return errors; it
  // never ends the process. Null: the c10d TCPStore at store_host:store_port.
  std::shared_ptr<KeyValueStore> kv;
  // Address of the c10d TCPStore (hosted by the coordinator, a test harness, or by this rank
  // when host_store is set).
  std::string store_host = "127.0.0.1";
  int store_port = 0;
  // Key prefix of this job attempt, e.g. "job-42/attempt-0": jobs and retries never collide.
  std::string prefix = "logit";
  int rank = 0;
  int world_size = 1;
  // This rank starts the TCPStore server on store_port (torchrun's MASTER_PORT convention).
  bool host_store = false;
  // How long to wait for the other ranks to join, and for any collective to complete: a rank
  // that stops answering fails every other rank after this long.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  // "cpu" -> Gloo; "cuda" or "cuda:N" -> NCCL when this LibTorch build has it.
  std::string device = "cpu";
  // Network interface Gloo binds to (e.g. "eth0"); empty: loopback when the store is on
  // loopback, else the address this host name resolves to.
  std::string interface;
  // Called after every allreduce with its duration and payload (metrics, benchmarks).
  std::function<void(double seconds, int64_t bytes)> on_allreduce;
};

struct ProcessGroupConnection {
  std::unique_ptr<Collective> collective;
  int local_ranks = 1;  // ranks of this job on this host (for the default thread count)
  std::string backend;  // "gloo" or "nccl"
  // Where this rank computes: "cpu" or "cuda:N" ("cuda" and "auto" resolved; ranks sharing a
  // host take its GPUs in turn). Pass it on as the training device.
  std::string device = "cpu";
  double connect_seconds = 0;
};

// Joins the job's process group. Blocks until all world_size ranks have joined or the timeout
// passes (DeadlineExceeded naming the ranks that never came). InvalidArgument for bad options.
absl::StatusOr<ProcessGroupConnection> ConnectProcessGroup(const RendezvousOptions& options);

// This machine's host name ("unknown" when it cannot be read).
std::string LocalHostName();

// Compute threads for one of `ranks_on_host` processes sharing this machine's cores (at least 1).
int ThreadsPerRank(int ranks_on_host);

// A standalone TCPStore server (the coordinator or a test harness hosts one for many jobs).
class StoreServer {
 public:
  // port 0 picks a free port; see port().
  static absl::StatusOr<std::unique_ptr<StoreServer>> Start(const std::string& host, int port);
  ~StoreServer();
  int port() const;

 private:
  struct Impl;
  explicit StoreServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace logit

#endif  // LOGIT_WORKER_DIST_PROCESS_GROUP_H_
