// A Collective among N ranks that are threads of one process: fast, deterministic tests of the
// distributed code paths without processes or sockets. Sums run in rank order, so every rank
// gets the same bits, and the same bits on every run.
#ifndef LOGIT_WORKER_KERNEL_INPROCESS_COLLECTIVE_H_
#define LOGIT_WORKER_KERNEL_INPROCESS_COLLECTIVE_H_

#include <chrono>
#include <memory>
#include <vector>

#include "worker/kernel/collective.h"

namespace logit {

// The collectives of one group of `world` ranks: element r is rank r's. Each must be used by one
// thread at a time, and every rank must make the same sequence of calls. A call waits for every
// rank up to `timeout`; when one does not arrive in time the group breaks: that call and every
// later one, on every rank, return DeadlineExceeded naming the missing ranks. The collectives
// share the group; they may be destroyed in any order.
std::vector<std::unique_ptr<Collective>> MakeInProcessGroup(
    int world, std::chrono::milliseconds timeout = std::chrono::seconds(60));

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_INPROCESS_COLLECTIVE_H_
