// The c10d process group (worker/dist/process_group.h) rendezvousing through a KeyValueStore
// (RendezvousOptions::kv) instead of a TCPStore: ranks as threads of this process, each with its
// own CoordinatorKv whose transport applies requests straight to a RendezvousKv, as the
// coordinator's Rendezvous handler does. Real Gloo on 127.0.0.1, short timeouts. The store can be
// switched off to play a coordinator that went away.
#include "worker/dist/process_group.h"

#include <ATen/ATen.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/rendezvous_kv.h"
#include "tests/unit/test_util.h"
#include "worker/dist/coordinator_kv.h"
#include "worker/kernel/collective.h"

namespace logit {
namespace {

using ::logit::testing::StatusIs;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr char kScope[] = "job-1/attempt-0";

// One attempt's store as the coordinator serves it, and a switch that makes every call fail as
// a call to a dead coordinator does.
class FakeCoordinator {
 public:
  std::shared_ptr<KeyValueStore> StoreFor(int rank) {
    v1::RankIdentity from;
    from.set_worker_id(absl::StrCat("w", rank));
    from.set_job_id("job-1");
    from.set_rank(rank);
    return std::make_shared<CoordinatorKv>(
        [this](const v1::RendezvousRequest& r) -> absl::StatusOr<v1::RendezvousResponse> {
          if (down_) return absl::UnavailableError("failed to connect to all addresses");
          return kv_.Apply(kScope, r);
        },
        from);
  }
  void GoDown() { down_ = true; }

 private:
  RendezvousKv kv_;
  std::atomic<bool> down_{false};
};

RendezvousOptions Options(FakeCoordinator& coordinator, int rank, int world, milliseconds timeout) {
  RendezvousOptions o;
  o.kv = coordinator.StoreFor(rank);
  o.store_port = 0;  // unused with kv (a TCPStore would reject it)
  o.prefix = "job-1/attempt-0";
  o.rank = rank;
  o.world_size = world;
  o.timeout = timeout;
  return o;
}

// Connects ranks `joining` of `world` in threads; every rank's result, by rank.
std::vector<absl::StatusOr<ProcessGroupConnection>> Connect(FakeCoordinator& coordinator, int world,
                                                            const std::vector<int>& joining,
                                                            milliseconds timeout) {
  std::vector<absl::StatusOr<ProcessGroupConnection>> out;
  for (int r = 0; r < world; ++r) out.emplace_back(absl::UnknownError("rank did not join"));
  std::vector<std::thread> threads;
  for (int r : joining) {
    threads.emplace_back(
        [&, r] { out[r] = ConnectProcessGroup(Options(coordinator, r, world, timeout)); });
  }
  for (std::thread& t : threads) t.join();
  return out;
}

// Runs `step(rank, collective)` on every rank in threads; the statuses by rank.
template <typename Step>
std::vector<absl::Status> OnEveryRank(std::vector<absl::StatusOr<ProcessGroupConnection>>& conns,
                                      Step step) {
  std::vector<absl::Status> out(conns.size());
  std::vector<std::thread> threads;
  for (size_t r = 0; r < conns.size(); ++r) {
    threads.emplace_back(
        [&, r] { out[r] = step(static_cast<int>(r), conns[r]->collective.get()); });
  }
  for (std::thread& t : threads) t.join();
  return out;
}

TEST(KvProcessGroup, RanksJoinThroughTheStoreAndReduceAndAgree) {
  for (int world : {2, 3}) {
    SCOPED_TRACE(absl::StrCat(world, " ranks"));
    FakeCoordinator coordinator;
    auto conns =
        Connect(coordinator, world, world == 2 ? std::vector<int>{0, 1} : std::vector<int>{0, 1, 2},
                std::chrono::seconds(20));
    for (int r = 0; r < world; ++r) {
      ASSERT_TRUE(conns[r].ok()) << "rank " << r << ": " << conns[r].status();
      EXPECT_EQ(conns[r]->backend, "gloo");
      EXPECT_EQ(conns[r]->local_ranks, world);
      EXPECT_EQ(conns[r]->collective->rank(), r);
    }
    std::vector<at::Tensor> sums(world), maxes(world);
    auto reduced = OnEveryRank(conns, [&](int r, Collective* c) -> absl::Status {
      sums[r] = at::tensor({static_cast<double>(r + 1), 1.0}, at::kDouble);
      maxes[r] = at::tensor({static_cast<float>(r), static_cast<float>(-r)});
      absl::Status st = c->AllReduceSum(sums[r]);
      if (!st.ok()) return st;
      return c->AllReduceMax(maxes[r]);
    });
    for (int r = 0; r < world; ++r) {
      ASSERT_TRUE(reduced[r].ok()) << reduced[r];
      EXPECT_EQ(sums[r][0].item<double>(), world * (world + 1) / 2.0);
      EXPECT_EQ(sums[r][1].item<double>(), world);
      EXPECT_EQ(maxes[r][0].item<float>(), world - 1);
      EXPECT_EQ(maxes[r][1].item<float>(), 0);
    }
    auto agreed_ok =
        OnEveryRank(conns, [](int, Collective* c) { return c->Agree(absl::OkStatus()); });
    for (const absl::Status& st : agreed_ok) EXPECT_TRUE(st.ok()) << st;
    // The lowest failing rank's reason reaches every rank through the store.
    auto agreed = OnEveryRank(conns, [](int r, Collective* c) {
      return c->Agree(r >= 1 ? absl::InvalidArgumentError(absl::StrCat("bad shard on ", r))
                             : absl::OkStatus());
    });
    for (int r = 0; r < world; ++r) {
      EXPECT_THAT(agreed[r],
                  StatusIs(absl::StatusCode::kInvalidArgument, "rank 1: bad shard on 1"));
    }
  }
}

TEST(KvProcessGroup, RankThatNeverJoinsIsDeadlineExceededNamingIt) {
  FakeCoordinator coordinator;
  const auto start = Clock::now();
  auto conns = Connect(coordinator, 3, {0, 1}, milliseconds(1000));
  const auto elapsed = Clock::now() - start;
  for (int r : {0, 1}) {
    EXPECT_THAT(conns[r], StatusIs(absl::StatusCode::kDeadlineExceeded,
                                   "rendezvous: rank(s) 2 of 3 did not join prefix "
                                   "'job-1/attempt-0' at the coordinator's rendezvous store"));
  }
  EXPECT_GE(elapsed, milliseconds(1000));
  EXPECT_LT(elapsed, milliseconds(3000));
}

TEST(KvProcessGroup, StoreDownAtJoinIsUnavailableAtOnce) {
  FakeCoordinator coordinator;
  coordinator.GoDown();
  const auto start = Clock::now();
  auto conns = Connect(coordinator, 2, {0, 1}, milliseconds(5000));
  for (int r : {0, 1}) {
    EXPECT_THAT(conns[r], StatusIs(absl::StatusCode::kUnavailable,
                                   "rendezvous store: SET 'job-1/attempt-0/joined/"));
    EXPECT_THAT(std::string(conns[r].status().message()),
                HasSubstr("failed to connect to all addresses"));
  }
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
}

TEST(KvProcessGroup, StoreThatFailsMidTrainingGivesErrorsWithoutCrashOrHang) {
  FakeCoordinator coordinator;
  const milliseconds timeout(5000);
  auto conns = Connect(coordinator, 2, {0, 1}, timeout);
  for (int r : {0, 1}) ASSERT_TRUE(conns[r].ok()) << conns[r].status();
  coordinator.GoDown();
  // Let the heartbeat threads fail a few beats.
  std::this_thread::sleep_for(milliseconds(500));

  // Gloo needs no store once connected: reductions and an all-OK vote go on.
  auto reduced = OnEveryRank(conns, [](int r, Collective* c) {
    at::Tensor t = at::full({3}, r + 1.0, at::kDouble);
    absl::Status st = c->AllReduceSum(t);
    if (st.ok() && t[2].item<double>() != 3.0) return absl::InternalError("wrong sum");
    return st.ok() ? c->Agree(absl::OkStatus()) : st;
  });
  for (const absl::Status& st : reduced) EXPECT_TRUE(st.ok()) << st;

  // A failure's reason cannot be stored or read: both ranks learn of it at once.
  auto start = Clock::now();
  auto agreed = OnEveryRank(conns, [](int r, Collective* c) {
    return c->Agree(r == 1 ? absl::DataLossError("bad shard") : absl::OkStatus());
  });
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
  EXPECT_THAT(agreed[0],
              StatusIs(absl::StatusCode::kUnavailable,
                       "rank 1 failed; its reason is unreadable: rendezvous store: CHECK"));
  EXPECT_THAT(agreed[1], StatusIs(absl::StatusCode::kUnavailable, "rendezvous store: SET"));
  EXPECT_THAT(std::string(agreed[1].message()), HasSubstr("local error: bad shard"));

  // A peer that leaves fails the next collective; the diagnosis says the store is gone.
  conns[1]->collective.reset();
  start = Clock::now();
  at::Tensor t = at::ones({2});
  absl::Status st = conns[0]->collective->AllReduceSum(t);
  EXPECT_LT(Clock::now() - start, timeout);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("the coordinator's rendezvous store failed, so the coordinator is gone"));
  conns[0]->collective.reset();  // joins the heartbeat thread: no hang
}

TEST(KvProcessGroup, OptionsWithoutKvStillNeedAStorePort) {
  RendezvousOptions o;
  o.store_port = 0;
  EXPECT_THAT(ConnectProcessGroup(o),
              StatusIs(absl::StatusCode::kInvalidArgument, "store: port 0 is not in [1, 65535]"));
}

}  // namespace
}  // namespace logit
