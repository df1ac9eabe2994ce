// Collective operations among the ranks of one job. Implementations wrap c10d (Gloo/NCCL, see
// worker/dist/process_group.h) and return absl::Status; no exception crosses this interface.
// Every rank of a job must make the same sequence of calls.
#ifndef LOGIT_WORKER_KERNEL_COLLECTIVE_H_
#define LOGIT_WORKER_KERNEL_COLLECTIVE_H_

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

namespace logit {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In-place element-wise sum over all ranks of a contiguous tensor.
  virtual absl::Status AllReduceSum(at::Tensor& tensor) = 0;
  // In-place element-wise max over all ranks.
  virtual absl::Status AllReduceMax(at::Tensor& tensor) = 0;
  // Every rank passes its local outcome of a step that may fail on some ranks only (reading its
  // shard, checking its labels). Returns OK when every rank passed OK; otherwise the status of
  // the lowest failing rank (same code, message prefixed by "rank R: "), on every rank, so that
  // all ranks stop together with the same reason instead of waiting for each other.
  virtual absl::Status Agree(const absl::Status& local) = 0;
};

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_COLLECTIVE_H_
