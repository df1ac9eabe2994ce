// Collective operations among the ranks of one job. Implementations wrap c10d (Gloo/NCCL) and
// return absl::Status; no exception crosses this interface.
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
};

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_COLLECTIVE_H_
