// CoordinatorKv (worker/dist/coordinator_kv.h) against a real gRPC server on loopback whose
// Rendezvous handler does what the coordinator's does (check the rank's secret, scope by job
// attempt, apply to a RendezvousKv): operations, error codes and messages, a coordinator that is
// slow or gone; and two ranks that keep training, and fail cleanly, when it stops.
#include "worker/dist/coordinator_kv.h"

#include <ATen/ATen.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/rendezvous_kv.h"
#include "tests/unit/test_util.h"
#include "worker/dist/process_group.h"
#include "worker/kernel/collective.h"

namespace logit {
namespace {

using ::logit::testing::StatusIs;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr char kSecret[] = "s3cret";

class RendezvousOnlyService final : public v1::WorkerService::Service {
 public:
  grpc::Status Rendezvous(grpc::ServerContext*, const v1::RendezvousRequest* request,
                          v1::RendezvousResponse* response) override {
    if (request->from().worker_secret() != kSecret) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "not this worker's rank");
    }
    if (request->key() == "slow") std::this_thread::sleep_for(milliseconds(600));
    absl::StatusOr<v1::RendezvousResponse> out = kv_.Apply(
        absl::StrCat(request->from().job_id(), "/attempt-", request->from().attempt()), *request);
    if (!out.ok()) {
      return grpc::Status(static_cast<grpc::StatusCode>(out.status().code()),
                          std::string(out.status().message()));
    }
    *response = *out;
    return grpc::Status::OK;
  }

 private:
  RendezvousKv kv_;
};

class CoordinatorKvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = v1::WorkerService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override { StopServer(); }

  void StopServer() {
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now() + milliseconds(500));
    server_->Wait();
    server_.reset();
  }

  std::shared_ptr<KeyValueStore> Store(int rank, const std::string& secret = kSecret,
                                       milliseconds call_timeout = milliseconds(2000)) {
    v1::RankIdentity from;
    from.set_worker_id(absl::StrCat("w", rank));
    from.set_worker_secret(secret);
    from.set_job_id("job-7");
    from.set_attempt(1);
    from.set_rank(rank);
    return std::make_shared<CoordinatorKv>(stub_, from, call_timeout);
  }

  RendezvousOnlyService service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<v1::WorkerService::Stub> stub_;
};

TEST_F(CoordinatorKvTest, OperationsRoundTripThroughGrpc) {
  auto a = Store(0);
  auto b = Store(1);
  ASSERT_TRUE(a->Set("k", std::string("v\0w", 3)).ok());
  auto got = b->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, std::string("v\0w", 3));
  got = b->Get("absent");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(*a->Add("n", 2), 2);
  EXPECT_EQ(*b->Add("n", 3), 5);
  EXPECT_TRUE(*a->Check({"k", "n"}));
  EXPECT_FALSE(*a->Check({"k", "m"}));
  EXPECT_EQ(*a->NumKeys(), 2);
  EXPECT_EQ(*a->CompareSet("k", "wrong", "x"), std::string("v\0w", 3));
  EXPECT_EQ(*a->CompareSet("c", "", "first"), "first");
  EXPECT_TRUE(*a->Delete("k"));
  EXPECT_FALSE(*a->Delete("k"));
  EXPECT_EQ(*b->NumKeys(), 2);
}

TEST_F(CoordinatorKvTest, ServerErrorsKeepTheirCodeAndNameTheStore) {
  EXPECT_THAT(Store(0)->Set("k", std::string(2 << 20, 'x')),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "rendezvous store: SET 'k': value of 2097152 bytes exceeds "
                       "max_value_bytes"));
  EXPECT_THAT(Store(0, "wrong")->Add("heartbeat/0", 1),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       "rendezvous store: ADD 'heartbeat/0': not this worker's rank"));
  EXPECT_THAT(Store(0)->Check({"a", ""}), StatusIs(absl::StatusCode::kInvalidArgument,
                                                   "rendezvous store: CHECK 2 keys: keys:"));
}

TEST_F(CoordinatorKvTest, SlowCoordinatorIsDeadlineExceededAfterTheCallTimeout) {
  const auto start = Clock::now();
  EXPECT_THAT(Store(0, kSecret, milliseconds(100))->Get("slow"),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "rendezvous store: GET 'slow':"));
  EXPECT_LT(Clock::now() - start, milliseconds(500));
}

TEST_F(CoordinatorKvTest, CoordinatorGoneIsUnavailableAtOnce) {
  auto store = Store(0);
  ASSERT_TRUE(store->Set("k", "v").ok());
  StopServer();
  const auto start = Clock::now();
  EXPECT_THAT(store->Set("k", "v"),
              StatusIs(absl::StatusCode::kUnavailable, "rendezvous store: SET 'k':"));
  EXPECT_THAT(store->NumKeys(),
              StatusIs(absl::StatusCode::kUnavailable, "rendezvous store: NUM_KEYS"));
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
}

// What crashed worker processes with a TCPStore ("Connection reset by peer" in its client's
// listener thread): the store's host stops while the ranks are connected.
TEST_F(CoordinatorKvTest, RanksKeepTrainingAndFailCleanlyWhenTheCoordinatorStops) {
  const milliseconds timeout(5000);
  std::vector<absl::StatusOr<ProcessGroupConnection>> conns;
  for (int r = 0; r < 2; ++r) conns.emplace_back(absl::UnknownError("not run"));
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        RendezvousOptions o;
        o.kv = Store(r);
        o.prefix = "job-7/attempt-1";
        o.rank = r;
        o.world_size = 2;
        o.timeout = timeout;
        conns[r] = ConnectProcessGroup(o);
      });
    }
    for (std::thread& t : threads) t.join();
  }
  for (int r = 0; r < 2; ++r) ASSERT_TRUE(conns[r].ok()) << conns[r].status();
  StopServer();
  std::this_thread::sleep_for(milliseconds(500));  // heartbeats fail a few beats

  std::vector<absl::Status> sums(2), agreed(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      at::Tensor t = at::full({4}, r + 1.0);
      sums[r] = conns[r]->collective->AllReduceSum(t);
      if (sums[r].ok() && t[3].item<float>() != 3.0f) sums[r] = absl::InternalError("wrong sum");
      agreed[r] = conns[r]->collective->Agree(r == 0 ? absl::NotFoundError("no such file")
                                                     : absl::OkStatus());
    });
  }
  const auto start = Clock::now();
  for (std::thread& t : threads) t.join();
  EXPECT_LT(Clock::now() - start, timeout);
  for (const absl::Status& st : sums) EXPECT_TRUE(st.ok()) << st;
  EXPECT_THAT(agreed[0], StatusIs(absl::StatusCode::kUnavailable, "rendezvous store: SET"));
  EXPECT_THAT(std::string(agreed[0].message()), HasSubstr("local error: no such file"));
  EXPECT_THAT(agreed[1],
              StatusIs(absl::StatusCode::kUnavailable, "rank 0 failed; its reason is unreadable"));
  for (auto& c : conns) c->collective.reset();
}

}  // namespace
}  // namespace logit
