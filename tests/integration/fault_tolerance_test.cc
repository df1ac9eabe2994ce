// Jobs ride through faults (issue 12): real logit-server and logit-worker processes on loopback,
// killed (SIGKILL) and hung (SIGSTOP) mid-job. Each faulted job must finish with the model the
// uninterrupted job gives: L-BFGS weights to 1e-6, SGD/Adam objective to 1e-4 relative.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/server_fixture.h"
#include "worker/model/model_io.h"

namespace logit {
namespace {

using ::logit::testing::Binary;
using ::logit::testing::ChildrenOf;
using ::logit::testing::Get;
using ::logit::testing::ReadWholeFile;
using ::logit::testing::Server;
using ::logit::testing::Submit;
using ::logit::testing::Subprocess;
using ::logit::testing::TempDir;
using ::logit::testing::Watch;
using ::logit::testing::WaitForState;
using Clock = std::chrono::steady_clock;

// Fast retries, a short collective timeout (a hung rank is given up on after 5 s).
const std::vector<std::string> kFastRetries = {"--retry-backoff", "0.2", "--collective-timeout",
                                               "5"};

std::vector<std::string> With(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

v1::JobSpec FashionJob(v1::Optimizer optimizer, int workers) {
  v1::JobSpec s;
  s.set_data("server:fashion-mnist/train-images-idx3-ubyte.gz");
  s.set_labels("server:fashion-mnist/train-labels-idx1-ubyte.gz");
  s.set_optimizer(optimizer);
  s.set_workers(workers);
  s.set_l2(1e-4);
  if (optimizer == v1::LBFGS) {
    s.set_epochs(40);
    s.set_tol(1e-12);  // runs every iteration
    s.set_checkpoint_every(5);
  } else {
    s.set_epochs(12);
    s.set_checkpoint_every(3);
  }
  return s;
}

// A free TCP port on loopback (for a server that must come back on the same address).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// Waits until the job has a checkpoint after `epoch` or later (false on timeout).
bool WaitForCheckpoint(v1::TrainingService::Stub* stub, const std::string& id, int64_t epoch,
                       std::chrono::seconds timeout = std::chrono::seconds(120)) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    const v1::Job job = Get(stub, id);
    if (job.latest_checkpoint().epoch() >= epoch) return true;
    if (job.state() == v1::SUCCEEDED || job.state() == v1::FAILED) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Stored events have sequences 1..N, each once, in order (StepProgress events are transient
// and carry the latest stored sequence).
void ExpectGaplessOnce(const std::vector<v1::JobEvent>& events) {
  int64_t expected = 1;
  for (const v1::JobEvent& e : events) {
    if (e.has_progress()) continue;
    ASSERT_EQ(e.sequence(), expected);
    ++expected;
  }
}

// The RUNNING reasons' worker lists ("running on w-1, w-2 (attempt 1, ...)").
std::vector<std::string> RunningOn(const std::vector<v1::JobEvent>& events) {
  std::vector<std::string> out;
  const std::string key = "running on ";
  for (const v1::JobEvent& e : events) {
    if (!e.has_state_change() || e.state_change().state() != v1::RUNNING) continue;
    const std::string& r = e.state_change().reason();
    if (r.rfind(key, 0) != 0) continue;
    out.push_back(r.substr(key.size(), r.find(" (") - key.size()));
  }
  return out;
}

LinearModel DownloadWeights(v1::TrainingService::Stub* stub, const std::string& model_id) {
  v1::ModelInfo info;
  const std::string bytes = ::logit::testing::DownloadModel(stub, model_id, &info);
  auto model = ParseModel(bytes, "model.npz");
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : LinearModel();
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return m;
}

// The finished faulted job against the same spec run again without faults.
void ExpectSameAsUninterrupted(v1::TrainingService::Stub* stub, const v1::Job& faulted,
                               v1::JobSpec spec) {
  ASSERT_EQ(faulted.state(), v1::SUCCEEDED) << faulted.reason();
  auto clean = Submit(stub, spec);
  ASSERT_TRUE(clean.ok()) << clean.status();
  const std::vector<v1::JobEvent> events = Watch(stub, clean->id());
  ASSERT_FALSE(events.empty());
  const v1::Job reference = events.back().job();
  ASSERT_EQ(reference.state(), v1::SUCCEEDED) << reference.reason();
  EXPECT_EQ(reference.failed_attempts_size(), 0);
  EXPECT_EQ(faulted.result().epochs_run(), reference.result().epochs_run());
  if (spec.optimizer() == v1::LBFGS) {
    const LinearModel a = DownloadWeights(stub, faulted.model_id());
    const LinearModel b = DownloadWeights(stub, reference.model_id());
    EXPECT_LE(MaxAbsDiff(a.weights, b.weights), 1e-6);
    EXPECT_LE(MaxAbsDiff(a.bias, b.bias), 1e-6);
  }
  EXPECT_NEAR(faulted.result().objective(), reference.result().objective(),
              1e-4 * std::abs(reference.result().objective()));
}

class WorkerKilledMidJob : public ::testing::TestWithParam<v1::Optimizer> {};

TEST_P(WorkerKilledMidJob, RetriesFromTheCheckpointAndEndsAsTheUninterruptedJob) {
  TempDir dir;
  Server server(dir, 2, "data", "server", kFastRetries);
  ASSERT_FALSE(server.address().empty()) << server.err();
  const v1::JobSpec spec = FashionJob(GetParam(), 2);
  auto job = Submit(server.stub(), spec);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(WaitForCheckpoint(server.stub(), job->id(), spec.checkpoint_every()));
  const std::vector<pid_t> workers = ChildrenOf(server.pid());
  ASSERT_EQ(workers.size(), 2u);
  kill(workers[1], SIGKILL);  // mid-epoch: both ranks are busy
  const std::vector<v1::JobEvent> events = Watch(server.stub(), job->id());
  ExpectGaplessOnce(events);
  const v1::Job done = Get(server.stub(), job->id());
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.reason();
  ASSERT_GE(done.failed_attempts_size(), 1);
  EXPECT_GE(done.retries(), 1);
  bool resumed = false;
  for (const v1::JobEvent& e : events) {
    resumed = resumed || (e.has_state_change() && e.state_change().state() == v1::RUNNING &&
                          e.state_change().reason().find("resumed from checkpoint") !=
                              std::string::npos);
  }
  EXPECT_TRUE(resumed) << "no RUNNING event says it resumed from a checkpoint";
  EXPECT_FALSE(done.has_latest_checkpoint());  // deleted with the job's end
  ExpectSameAsUninterrupted(server.stub(), done, spec);
}

INSTANTIATE_TEST_SUITE_P(FaultTolerance, WorkerKilledMidJob,
                         ::testing::Values(v1::ADAM, v1::LBFGS),
                         [](const auto& info) { return v1::Optimizer_Name(info.param); });

TEST(FaultTolerance, HungWorkerIsGivenUpOnAndTheJobFinishesOnTheOthers) {
  TempDir dir;
  Server server(dir, 3, "data", "server", kFastRetries);
  const v1::JobSpec spec = FashionJob(v1::LBFGS, 2);
  auto job = Submit(server.stub(), spec);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(WaitForCheckpoint(server.stub(), job->id(), 5));
  // Stop every worker but one: one of the job's two ranks hangs (SIGSTOP), the spare stays
  // idle; then let the spare go so the retry has two workers.
  std::vector<pid_t> workers = ChildrenOf(server.pid());
  ASSERT_EQ(workers.size(), 3u);
  for (pid_t p : workers) kill(p, SIGSTOP);
  kill(workers[0], SIGCONT);
  kill(workers[2], SIGCONT);
  const pid_t hung = workers[1];
  const v1::Job done = WaitForState(server.stub(), job->id(), v1::SUCCEEDED,
                                    std::chrono::seconds(180));
  kill(hung, SIGCONT);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << Get(server.stub(), job->id()).reason();
  ExpectGaplessOnce(Watch(server.stub(), job->id()));
  // Unless the stopped process held no rank (then nothing failed), an attempt ended for it.
  if (done.failed_attempts_size() > 0) {
    const std::string why = done.failed_attempts(0).reason();
    EXPECT_TRUE(why.find("lost") != std::string::npos ||
                why.find("timed out") != std::string::npos ||
                why.find("imeout") != std::string::npos)
        << why;
  }
  ExpectSameAsUninterrupted(server.stub(), done, spec);
}

// External workers (not children of the server) that survive its crash.
class Workers {
 public:
  Workers(const TempDir& dir, const std::string& address, int n) {
    for (int i = 0; i < n; ++i) Add(dir, address);
  }
  void Add(const TempDir& dir, const std::string& address) {
    const int i = static_cast<int>(procs_.size());
    procs_.push_back(std::make_unique<Subprocess>(
        std::vector<std::string>{Binary("LOGIT_WORKER", "logit-worker"), "--server", address,
                                 "--threads", "1"},
        dir.Path(absl::StrCat("worker", i, ".out")), dir.Path(absl::StrCat("worker", i, ".err"))));
  }
  Subprocess& at(int i) { return *procs_[i]; }
  ~Workers() {
    for (auto& p : procs_) {
      p->Kill(SIGCONT);
      p->Kill(SIGTERM);
      p->Wait(std::chrono::seconds(20));
    }
  }

 private:
  std::vector<std::unique_ptr<Subprocess>> procs_;
};

// Watches with reconnection (a restarting server), from the event after the last one seen.
std::vector<v1::JobEvent> WatchThroughRestarts(const std::string& address, const std::string& id,
                                               int* reconnects) {
  std::vector<v1::JobEvent> events;
  const auto deadline = Clock::now() + std::chrono::seconds(240);
  while (Clock::now() < deadline) {
    auto stub = v1::TrainingService::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    v1::WatchJobRequest req;
    req.set_job_id(id);
    req.set_from_sequence(events.empty() ? 1 : events.back().sequence() + 1);
    auto reader = stub->WatchJob(&ctx, req);
    v1::JobEvent ev;
    while (reader->Read(&ev)) {
      if (!ev.has_progress()) events.push_back(ev);
    }
    const grpc::Status st = reader->Finish();
    if (st.ok()) break;
    ++*reconnects;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return events;
}

TEST(FaultTolerance, KilledCoordinatorRestartsAndTheJobResumesWhileAWatcherSeesEveryEventOnce) {
  TempDir dir;
  const std::string address = absl::StrCat("127.0.0.1:", FreePort());
  const std::vector<std::string> flags = With(kFastRetries, {"--listen", address});
  auto server = std::make_unique<Server>(dir, 0, "data", "first", flags);
  ASSERT_EQ(server->address(), address) << server->err();
  Workers workers(dir, address, 2);
  const v1::JobSpec spec = FashionJob(v1::LBFGS, 2);
  auto job = Submit(server->stub(), spec);
  ASSERT_TRUE(job.ok()) << job.status();
  int reconnects = 0;
  std::vector<v1::JobEvent> seen;
  std::thread watcher([&] { seen = WatchThroughRestarts(address, job->id(), &reconnects); });
  // The CLI's watch reconnects too.
  Subprocess cli({Binary("LOGIT_CLI", "logit"), "--server", address, "watch", job->id()},
                 dir.Path("cli.out"), dir.Path("cli.err"));
  ASSERT_TRUE(WaitForCheckpoint(server->stub(), job->id(), 5));
  const v1::Job before = Get(server->stub(), job->id());
  const std::vector<std::string> old_workers(before.workers().begin(), before.workers().end());
  server->Kill();
  server.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Server again(dir, 0, "data", "second", flags);
  ASSERT_EQ(again.address(), address) << again.err();
  watcher.join();
  ASSERT_TRUE(cli.Wait(std::chrono::seconds(120)));
  EXPECT_EQ(cli.exit_code(), 0) << ReadWholeFile(dir.Path("cli.err"));
  EXPECT_GE(reconnects, 1);
  ExpectGaplessOnce(seen);
  const v1::Job done = Get(again.stub(), job->id());
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.reason();
  ASSERT_GE(done.failed_attempts_size(), 1);
  EXPECT_NE(done.failed_attempts(0).reason().find("coordinator restarted"), std::string::npos);
  EXPECT_EQ(done.retries(), 0);  // a restart is not charged
  // The workers re-registered under new ids and ran the resumed attempt.
  for (const std::string& w : old_workers) {
    for (const v1::JobEvent& e : seen) {
      if (e.has_state_change() && e.state_change().state() == v1::RUNNING &&
          e.sequence() > 3) {
        EXPECT_EQ(e.state_change().reason().find(w + ","), std::string::npos) << w;
      }
    }
  }
  EXPECT_EQ(seen.back().sequence(), done.last_sequence());
  const std::string cli_out = ReadWholeFile(dir.Path("cli.out"));
  EXPECT_NE(cli_out.find("SUCCEEDED"), std::string::npos) << cli_out;
  ExpectSameAsUninterrupted(again.stub(), done, spec);
}

TEST(FaultTolerance, RetryRunsOnFewerWorkersDownToMinWorkers) {
  TempDir dir;
  Server server(dir, 0, "data", "server", kFastRetries);
  Workers workers(dir, server.address(), 2);
  v1::JobSpec spec = FashionJob(v1::LBFGS, 2);
  spec.set_min_workers(1);
  auto job = Submit(server.stub(), spec);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(WaitForCheckpoint(server.stub(), job->id(), 5));
  workers.at(1).Kill(SIGKILL);
  const std::vector<v1::JobEvent> events = Watch(server.stub(), job->id());
  ExpectGaplessOnce(events);
  const v1::Job done = Get(server.stub(), job->id());
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.reason();
  ASSERT_GE(done.failed_attempts_size(), 1);
  EXPECT_EQ(done.failed_attempts(0).workers(), 2);
  const std::vector<std::string> gangs = RunningOn(events);
  ASSERT_GE(gangs.size(), 2u);
  EXPECT_NE(gangs.front().find(", "), std::string::npos) << gangs.front();  // two ranks
  EXPECT_EQ(gangs.back().find(", "), std::string::npos) << gangs.back();    // then one
  // The uninterrupted reference runs on the one worker left: the same mathematics.
  spec.set_workers(1);
  spec.clear_min_workers();
  ExpectSameAsUninterrupted(server.stub(), done, spec);
}

TEST(FaultTolerance, ExhaustedRetriesFailWithEveryAttemptsReason) {
  TempDir dir;
  Server server(dir, 0, "data", "server", kFastRetries);
  Workers workers(dir, server.address(), 1);
  v1::JobSpec spec = FashionJob(v1::LBFGS, 1);
  spec.set_epochs(1000);
  spec.set_max_retries(1);
  auto job = Submit(server.stub(), spec);
  ASSERT_TRUE(job.ok()) << job.status();
  for (int attempt = 0; attempt < 2; ++attempt) {
    const v1::Job running = WaitForState(server.stub(), job->id(), v1::RUNNING);
    ASSERT_EQ(running.attempt(), attempt);
    workers.at(attempt).Kill(SIGKILL);
    if (attempt == 0) {
      ASSERT_EQ(WaitForState(server.stub(), job->id(), v1::RETRYING).state(), v1::RETRYING);
      workers.Add(dir, server.address());
    }
  }
  const std::vector<v1::JobEvent> events = Watch(server.stub(), job->id());
  ExpectGaplessOnce(events);
  const v1::Job failed = events.back().job();
  EXPECT_EQ(failed.state(), v1::FAILED);
  EXPECT_NE(failed.reason().find("gave up after 1 retries"), std::string::npos) << failed.reason();
  EXPECT_NE(failed.reason().find("attempt 0: worker"), std::string::npos) << failed.reason();
  EXPECT_NE(failed.reason().find("attempt 1: worker"), std::string::npos) << failed.reason();
}

TEST(FaultTolerance, CancelDuringARetryCancelsAtOnce) {
  TempDir dir;
  Server server(dir, 1, "data", "server", {"--retry-backoff", "60"});
  auto job = Submit(server.stub(), FashionJob(v1::LBFGS, 1));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(WaitForState(server.stub(), job->id(), v1::RUNNING).state(), v1::RUNNING);
  const std::vector<pid_t> workers = ChildrenOf(server.pid());
  ASSERT_EQ(workers.size(), 1u);
  kill(workers[0], SIGKILL);
  ASSERT_EQ(WaitForState(server.stub(), job->id(), v1::RETRYING).state(), v1::RETRYING);
  const auto start = Clock::now();
  grpc::ClientContext ctx;
  v1::CancelJobRequest req;
  req.set_job_id(job->id());
  v1::Job cancelled;
  ASSERT_TRUE(server.stub()->CancelJob(&ctx, req, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::CANCELLED);
  const std::vector<v1::JobEvent> events = Watch(server.stub(), job->id());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  ExpectGaplessOnce(events);
  EXPECT_EQ(events.back().state_change().state(), v1::CANCELLED);
}

}  // namespace
}  // namespace logit
