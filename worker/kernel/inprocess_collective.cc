#include "worker/kernel/inprocess_collective.h"

#include <ATen/ATen.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace logit {

namespace {

// What a rank brings to one collective call, and what the call returns to every rank.
struct Contribution {
  at::Tensor tensor;  // a private copy (allreduce)
  absl::Status status;
};

using Combine = std::function<Contribution(const std::vector<Contribution>&)>;

// The rendezvous of the ranks: each call waits for all of them; the last to arrive combines
// the contributions once, in rank order, and every rank gets that result.
class Group {
 public:
  Group(int world, std::chrono::milliseconds timeout)
      : world_(world), timeout_(timeout), slots_(world), arrived_(world, false) {}

  int world() const { return world_; }

  Contribution Exchange(int rank, Contribution mine, const Combine& combine) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!broken_.ok()) return {at::Tensor(), broken_};
    const int64_t generation = generation_;
    slots_[rank] = std::move(mine);
    arrived_[rank] = true;
    if (++count_ == world_) {
      result_ = combine(slots_);
      for (int r = 0; r < world_; ++r) {
        slots_[r] = Contribution();
        arrived_[r] = false;
      }
      count_ = 0;
      ++generation_;
      cv_.notify_all();
      return result_;
    }
    const bool done =
        cv_.wait_for(lock, timeout_, [&] { return generation_ != generation || !broken_.ok(); });
    if (generation_ != generation) return result_;
    if (!done) Break();
    return {at::Tensor(), broken_};
  }

 private:
  // REQUIRES: mu_ held, after a timeout.
  void Break() {
    std::vector<int> missing;
    for (int r = 0; r < world_; ++r) {
      if (!arrived_[r]) missing.push_back(r);
    }
    broken_ = absl::DeadlineExceededError(
        absl::StrCat("in-process collective: rank(s) ", absl::StrJoin(missing, ","),
                     " did not arrive within ", timeout_.count(), " ms"));
    cv_.notify_all();
  }

  // Constant after construction.
  const int world_;
  const std::chrono::milliseconds timeout_;

  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  std::vector<Contribution> slots_;
  std::vector<bool> arrived_;
  int count_ = 0;
  int64_t generation_ = 0;
  Contribution result_;
  absl::Status broken_;
};

// The element-wise sum (or max) of the ranks' tensors, added in rank order.
Contribution Reduce(const std::vector<Contribution>& in, bool max) {
  try {
    at::Tensor out = in[0].tensor.clone();
    for (size_t r = 1; r < in.size(); ++r) {
      if (max) {
        out = at::maximum(out, in[r].tensor);
      } else {
        out.add_(in[r].tensor);
      }
    }
    return {out, absl::OkStatus()};
  } catch (const std::exception& e) {
    return {at::Tensor(), absl::InternalError(absl::StrCat("in-process allreduce: ", e.what()))};
  }
}

// OK, or the lowest failing rank's status with "rank R: " before its message.
Contribution FirstFailure(const std::vector<Contribution>& in) {
  for (size_t r = 0; r < in.size(); ++r) {
    const absl::Status& st = in[r].status;
    if (!st.ok())
      return {at::Tensor(), absl::Status(st.code(), absl::StrCat("rank ", r, ": ", st.message()))};
  }
  return {};
}

class InProcessCollective : public Collective {
 public:
  InProcessCollective(std::shared_ptr<Group> group, int rank)
      : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int world_size() const override { return group_->world(); }

  absl::Status AllReduceSum(at::Tensor& tensor) override { return AllReduce(tensor, false); }
  absl::Status AllReduceMax(at::Tensor& tensor) override { return AllReduce(tensor, true); }

  absl::Status Agree(const absl::Status& local) override {
    return group_->Exchange(rank_, {at::Tensor(), local}, FirstFailure).status;
  }

 private:
  absl::Status AllReduce(at::Tensor& tensor, bool max) {
    try {
      Contribution mine{tensor.clone(), absl::OkStatus()};
      const Contribution all =
          group_->Exchange(rank_, std::move(mine),
                           [max](const std::vector<Contribution>& in) { return Reduce(in, max); });
      if (!all.status.ok()) return all.status;
      tensor.copy_(all.tensor);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("in-process allreduce: ", e.what()));
    }
  }

  const std::shared_ptr<Group> group_;
  const int rank_;
};

}  // namespace

std::vector<std::unique_ptr<Collective>> MakeInProcessGroup(int world,
                                                            std::chrono::milliseconds timeout) {
  auto group = std::make_shared<Group>(world, timeout);
  std::vector<std::unique_ptr<Collective>> ranks;
  for (int r = 0; r < world; ++r) ranks.push_back(std::make_unique<InProcessCollective>(group, r));
  return ranks;
}

}  // namespace logit
