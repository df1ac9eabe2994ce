// The coordinator's service logic on the in-memory store, driven like its gRPC handlers would
// drive it: fake workers register, heartbeat, report and upload by calling the Coordinator
// directly. No processes, no network beyond the per-job c10d TCPStore on loopback.
#include "server/coordinator.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"
#include "server/memory_store.h"
#include "worker/common/sha256.h"
#include "tests/integration/subprocess.h"
#include "tests/unit/test_util.h"
#include "worker/model/model_io.h"

namespace logit {
namespace {

using ::logit::testing::ReadWholeFile;
using ::logit::testing::StatusIs;
using ::logit::testing::TempDir;
using ::logit::testing::TestData;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// Feeds `bytes` to an upload in 4 KiB chunks.
std::function<absl::StatusOr<bool>(std::string*)> Chunks(const std::string& bytes) {
  auto offset = std::make_shared<size_t>(0);
  return [bytes, offset](std::string* chunk) -> absl::StatusOr<bool> {
    if (*offset >= bytes.size()) return false;
    *chunk = bytes.substr(*offset, 4096);
    *offset += chunk->size();
    return true;
  };
}

struct FakeWorker {
  std::string id;
  std::string secret;
};

class CoordinatorTest : public ::testing::Test {
 protected:
  void Start(CoordinatorConfig cfg = {}) {
    cfg.data_dir = dir_.Path("data");
    cfg.heartbeat_interval = std::chrono::milliseconds(5);
    cfg.storage_probe_interval = std::chrono::milliseconds(20);
    cfg.monitor_interval = std::chrono::milliseconds(10);
    auto store = std::make_unique<MemoryJobStore>();
    store_ = store.get();
    auto c = Coordinator::Create(cfg, std::move(store));
    ASSERT_TRUE(c.ok()) << c.status();
    c_ = std::move(*c);
    v1::DatasetInfo info;
    info.set_name("iris.csv");
    auto iris = c_->UploadDataset(info, Chunks(ReadWholeFile(TestData("iris.csv"))));
    ASSERT_TRUE(iris.ok()) << iris.status();
    dataset_ = iris->id();
    LinearModel m;
    m.num_features = 4;
    m.num_classes = 3;
    m.weights.assign(12, 0.1f);
    m.bias.assign(3, 0.0f);
    ASSERT_TRUE(SaveModel(m, dir_.Path("m.npz")).ok());
    model_bytes_ = ReadWholeFile(dir_.Path("m.npz"));
  }

  absl::StatusOr<v1::Job> Submit(int workers, const std::function<void(v1::JobSpec*)>& edit = {}) {
    v1::JobSpec spec;
    spec.set_data("dataset:" + dataset_);
    spec.set_label_column("target");
    spec.set_workers(workers);
    if (edit) edit(&spec);
    return c_->SubmitJob(spec);
  }
  FakeWorker Register() {
    v1::RegisterWorkerRequest reg;
    reg.set_hostname("fake");
    const v1::RegisterWorkerResponse r = c_->RegisterWorker(reg).value();
    return FakeWorker{r.worker_id(), r.worker_secret()};
  }
  v1::HeartbeatResponse Beat(const FakeWorker& w, const std::string& running_job = "") {
    v1::HeartbeatRequest hb;
    hb.set_worker_id(w.id);
    hb.set_worker_secret(w.secret);
    hb.set_job_id(running_job);
    auto r = c_->Heartbeat(hb);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : v1::HeartbeatResponse();
  }
  v1::ReportProgressRequest Report(const FakeWorker& w, const v1::Assignment& a) {
    v1::ReportProgressRequest r;
    r.set_worker_id(w.id);
    r.set_worker_secret(w.secret);
    r.set_job_id(a.job_id());
    r.set_attempt(a.attempt());
    r.set_rank(a.rank());
    return r;
  }
  absl::StatusOr<v1::ReportProgressResponse> ReportEpoch(const FakeWorker& w,
                                                         const v1::Assignment& a, int epoch) {
    v1::ReportProgressRequest r = Report(w, a);
    r.mutable_epoch()->set_epoch(epoch);
    r.mutable_epoch()->set_train_loss(0.5);
    return c_->ReportProgress(r);
  }
  absl::StatusOr<v1::UploadModelResponse> Upload(const FakeWorker& w, const v1::Assignment& a) {
    v1::ModelUpload header;
    header.set_worker_id(w.id);
    header.set_worker_secret(w.secret);
    header.set_job_id(a.job_id());
    header.set_attempt(a.attempt());
    return c_->UploadModel(header, Chunks(model_bytes_));
  }
  absl::StatusOr<v1::ReportProgressResponse> Fail(const FakeWorker& w, const v1::Assignment& a,
                                                  absl::StatusCode code, const std::string& msg) {
    v1::ReportProgressRequest r = Report(w, a);
    r.mutable_outcome()->set_ok(false);
    r.mutable_outcome()->set_code(static_cast<int>(code));
    r.mutable_outcome()->set_message(msg);
    return c_->ReportProgress(r);
  }
  absl::StatusOr<v1::UploadCheckpointResponse> SendCheckpoint(const FakeWorker& w,
                                                              const v1::Assignment& a, int epoch,
                                                              const std::string& bytes) {
    v1::CheckpointUpload header;
    header.mutable_from()->set_worker_id(w.id);
    header.mutable_from()->set_worker_secret(w.secret);
    header.mutable_from()->set_job_id(a.job_id());
    header.mutable_from()->set_attempt(a.attempt());
    header.mutable_from()->set_rank(a.rank());
    header.set_epoch(epoch);
    header.set_size_bytes(static_cast<int64_t>(bytes.size()));
    return c_->UploadCheckpoint(header, Chunks(bytes));
  }
  absl::StatusOr<CheckpointRecord> FindCheckpoint(const FakeWorker& w, const v1::Assignment& a) {
    v1::FetchCheckpointRequest r;
    r.mutable_from()->set_worker_id(w.id);
    r.mutable_from()->set_worker_secret(w.secret);
    r.mutable_from()->set_job_id(a.job_id());
    r.mutable_from()->set_attempt(a.attempt());
    r.mutable_from()->set_rank(a.rank());
    r.set_number(a.resume_checkpoint());
    return c_->FindCheckpoint(r);
  }
  // Heartbeats `w` (acknowledging what it runs) until it gets an assignment.
  std::optional<v1::Assignment> NextAssignment(const FakeWorker& w) {
    std::optional<v1::Assignment> got;
    Eventually([&] {
      v1::HeartbeatResponse b = Beat(w);
      if (b.has_assignment()) got = b.assignment();
      return got.has_value();
    });
    return got;
  }
  absl::StatusOr<v1::ReportProgressResponse> Finish(const FakeWorker& w, const v1::Assignment& a) {
    v1::ReportProgressRequest r = Report(w, a);
    r.mutable_outcome()->set_ok(true);
    v1::TrainingSummary* s = r.mutable_outcome()->mutable_summary();
    s->set_epochs_run(3);
    s->set_train_loss(0.25);
    s->set_stop_reason(v1::OBJECTIVE_TOL);
    return c_->ReportProgress(r);
  }
  v1::JobState State(const std::string& id) {
    auto j = c_->GetJob(id);
    EXPECT_TRUE(j.ok()) << j.status();
    return j.ok() ? j->state() : v1::JOB_STATE_UNSPECIFIED;
  }
  // Waits up to `timeout` for `done`.
  template <typename F>
  static bool Eventually(F done, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return done();
  }

  TempDir dir_;
  MemoryJobStore* store_ = nullptr;  // owned by c_
  std::unique_ptr<Coordinator> c_;
  std::string dataset_;
  std::string model_bytes_;
};

TEST_F(CoordinatorTest, JobQueuesUntilAWorkerRegistersAndItsAssignmentComesWithTheHeartbeat) {
  Start();
  auto job = Submit(1);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::QUEUED);
  EXPECT_EQ(job->reason(), "waiting for 1 idle workers (0 idle, 0 registered)");
  const FakeWorker w = Register();
  EXPECT_EQ(State(job->id()), v1::RUNNING);
  const v1::HeartbeatResponse beat = Beat(w);
  ASSERT_TRUE(beat.has_assignment());
  EXPECT_EQ(beat.assignment().job_id(), job->id());
  EXPECT_EQ(beat.assignment().rank(), 0);
  EXPECT_EQ(beat.assignment().world_size(), 1);
  EXPECT_EQ(beat.assignment().store_port(), 0);  // the store is the coordinator's Rendezvous
  EXPECT_EQ(beat.assignment().store_prefix(), job->id() + "/attempt-0");
  EXPECT_FALSE(Beat(w, job->id()).has_assignment());  // acknowledged
  EXPECT_EQ(c_->WorkerCounts()["busy"], 1);
}

TEST_F(CoordinatorTest, GangJobStartsOnlyWhenAllItsWorkersAreIdleAndGivesEachOneRank) {
  Start();
  auto job = Submit(2);
  ASSERT_TRUE(job.ok()) << job.status();
  const FakeWorker a = Register();
  EXPECT_EQ(State(job->id()), v1::QUEUED);
  EXPECT_EQ(c_->GetJob(job->id())->reason(), "waiting for 2 idle workers (1 idle, 1 registered)");
  EXPECT_FALSE(Beat(a).has_assignment());
  const FakeWorker b = Register();
  EXPECT_EQ(State(job->id()), v1::RUNNING);
  const v1::HeartbeatResponse ba = Beat(a), bb = Beat(b);
  ASSERT_TRUE(ba.has_assignment());
  ASSERT_TRUE(bb.has_assignment());
  EXPECT_EQ(ba.assignment().rank(), 0);
  EXPECT_EQ(bb.assignment().rank(), 1);
  EXPECT_EQ(ba.assignment().world_size(), 2);
  EXPECT_EQ(ba.assignment().store_port(), bb.assignment().store_port());
  EXPECT_THAT(c_->GetJob(job->id())->workers(), ElementsAre(a.id, b.id));
}

TEST_F(CoordinatorTest, BigJobAtTheHeadIsNotOvertakenBySmallJobsBehindIt) {
  Start();
  const FakeWorker w = Register();
  auto first = Submit(1), big = Submit(2), small = Submit(1);
  ASSERT_TRUE(first.ok() && big.ok() && small.ok());
  EXPECT_EQ(State(first->id()), v1::RUNNING);
  EXPECT_EQ(State(big->id()), v1::QUEUED);
  EXPECT_EQ(State(small->id()), v1::QUEUED);
  // Cancelling the head lets the next one run.
  ASSERT_TRUE(c_->CancelJob(big->id()).ok());
  const v1::Assignment a = Beat(w).assignment();
  ASSERT_TRUE(Finish(w, a).ok());
  EXPECT_EQ(State(small->id()), v1::RUNNING);
}

TEST_F(CoordinatorTest, FinishedRankZeroWithModelSucceedsWithTheResultAndFreesTheWorker) {
  Start();
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  const v1::Assignment a = Beat(w).assignment();
  ASSERT_TRUE(ReportEpoch(w, a, 1).ok());
  auto model = Upload(w, a);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE(Finish(w, a).ok());
  auto done = c_->GetJob(job->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), v1::SUCCEEDED);
  EXPECT_EQ(done->reason(), "objective_tol");
  EXPECT_EQ(done->model_id(), model->model_id());
  EXPECT_EQ(done->result().epochs_run(), 3);
  EXPECT_DOUBLE_EQ(done->result().train_loss(), 0.25);
  EXPECT_EQ(done->last_sequence(), 4);  // QUEUED, RUNNING, epoch 1, SUCCEEDED
  EXPECT_EQ(c_->WorkerCounts()["idle"], 1);
  EXPECT_TRUE(c_->GetModel(model->model_id()).ok());
}

TEST_F(CoordinatorTest, ReportsFromAWorkerNotHoldingTheRankArePermissionDenied) {
  Start();
  ASSERT_TRUE(Submit(1).ok());
  const FakeWorker w = Register();
  const v1::Assignment a = Beat(w).assignment();
  FakeWorker impostor = w;
  impostor.secret = "not-the-secret";
  EXPECT_THAT(ReportEpoch(impostor, a, 1),
              StatusIs(absl::StatusCode::kPermissionDenied, "not the secret issued to worker"));
  v1::Assignment other = a;
  other.set_rank(1);
  EXPECT_THAT(ReportEpoch(w, other, 1),
              StatusIs(absl::StatusCode::kPermissionDenied, "does not hold rank 1"));
}

TEST_F(CoordinatorTest, CancelledQueuedJobLeavesTheQueueAndCancelledRunningJobStopsItsWorker) {
  CoordinatorConfig cfg;
  cfg.max_queued_jobs = 1;
  Start(cfg);
  auto queued = Submit(1);
  ASSERT_TRUE(queued.ok());
  EXPECT_THAT(Submit(1), StatusIs(absl::StatusCode::kResourceExhausted, "--max-queued-jobs=1"));
  auto cancelled = c_->CancelJob(queued->id());
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), v1::CANCELLED);
  auto running = Submit(1);  // the queue has room again
  ASSERT_TRUE(running.ok()) << running.status();
  const FakeWorker w = Register();
  const v1::Assignment a = Beat(w).assignment();
  ASSERT_EQ(a.job_id(), running->id());
  ASSERT_TRUE(c_->CancelJob(running->id()).ok());
  EXPECT_TRUE(Beat(w, running->id()).cancel());
  EXPECT_EQ(c_->WorkerCounts()["busy"], 1);  // until the rank says it stopped
  auto report = ReportEpoch(w, a, 1);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->cancel());
  EXPECT_TRUE(Beat(w).cancel());  // restarted worker, idle: freed
  EXPECT_EQ(c_->WorkerCounts()["idle"], 1);
}

TEST_F(CoordinatorTest, SilentWorkerIsLostAndItsJobWithoutRetriesFailsNamingIt) {
  CoordinatorConfig cfg;
  cfg.worker_timeout = std::chrono::milliseconds(100);
  Start(cfg);
  auto job = Submit(1, [](v1::JobSpec* s) { s->set_max_retries(0); });
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  ASSERT_TRUE(Beat(w).has_assignment());
  ASSERT_TRUE(Eventually([&] { return State(job->id()) == v1::FAILED; }));
  EXPECT_THAT(c_->GetJob(job->id())->reason(),
              HasSubstr(absl::StrCat("worker ", w.id, " (rank 0) was lost")));
  EXPECT_EQ(c_->WorkerCounts()["idle"] + c_->WorkerCounts()["busy"], 0);
  EXPECT_TRUE(Beat(w).reregister());
}

TEST_F(CoordinatorTest, WatcherGetsEveryEventInOrderAndIsWokenAtOnce) {
  Start();
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  struct Seen {
    std::mutex mu;
    std::vector<v1::JobEvent> events;
    std::vector<Clock::time_point> at;
  } seen;
  absl::Status watched;
  std::thread watcher([&] {
    watched = c_->WatchJob(
        job->id(), 1,
        [&](const v1::JobEvent& e) {
          std::lock_guard<std::mutex> lock(seen.mu);
          seen.events.push_back(e);
          seen.at.push_back(Clock::now());
          return true;
        },
        [] { return false; });
  });
  auto count = [&] {
    std::lock_guard<std::mutex> lock(seen.mu);
    return seen.events.size();
  };
  ASSERT_TRUE(Eventually([&] { return count() == 1; }));  // QUEUED
  const FakeWorker w = Register();
  ASSERT_TRUE(Eventually([&] { return count() == 2; }));  // RUNNING
  const v1::Assignment a = Beat(w).assignment();
  // Far below the watcher's 200 ms cancellation check: only a wake-up can be this fast.
  const auto sent = Clock::now();
  ASSERT_TRUE(ReportEpoch(w, a, 1).ok());
  ASSERT_TRUE(Eventually([&] { return count() == 3; }));
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    EXPECT_LT(seen.at[2] - sent, std::chrono::milliseconds(100));
  }
  v1::ReportProgressRequest progress = Report(w, a);
  progress.mutable_progress()->set_epoch(2);
  ASSERT_TRUE(c_->ReportProgress(progress).ok());
  ASSERT_TRUE(Eventually([&] { return count() == 4; }));  // transient progress
  ASSERT_TRUE(c_->CancelJob(job->id()).ok());
  watcher.join();
  EXPECT_TRUE(watched.ok()) << watched;
  ASSERT_EQ(seen.events.size(), 5u);
  EXPECT_EQ(seen.events[0].state_change().state(), v1::QUEUED);
  EXPECT_EQ(seen.events[1].state_change().state(), v1::RUNNING);
  EXPECT_EQ(seen.events[2].epoch().epoch(), 1);
  EXPECT_EQ(seen.events[3].progress().epoch(), 2);
  EXPECT_EQ(seen.events[3].sequence(), 3);  // progress carries the last stored sequence
  EXPECT_EQ(seen.events[4].state_change().state(), v1::CANCELLED);
  EXPECT_EQ(seen.events[4].job().state(), v1::CANCELLED);
  for (int i : {0, 1, 2}) EXPECT_EQ(seen.events[i].sequence(), i + 1);
  EXPECT_EQ(seen.events[4].sequence(), 4);
}

TEST_F(CoordinatorTest, WatchersOverTheLimitAreResourceExhausted) {
  CoordinatorConfig cfg;
  cfg.max_watchers_per_job = 1;
  Start(cfg);
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  std::atomic<bool> stop{false};
  std::atomic<bool> watching{false};
  std::thread first([&] {
    (void)c_->WatchJob(
        job->id(), 1,
        [&](const v1::JobEvent&) {
          watching = true;
          return true;
        },
        [&] { return stop.load(); });
  });
  ASSERT_TRUE(Eventually([&] { return watching.load(); }));
  EXPECT_THAT(c_->WatchJob(
                  job->id(), 1, [](const v1::JobEvent&) { return true; }, [] { return false; }),
              StatusIs(absl::StatusCode::kResourceExhausted, "--max-watchers-per-job=1"));
  stop = true;
  first.join();
  EXPECT_THAT(c_->WatchJob(
                  "job-404", 1, [](const v1::JobEvent&) { return true; }, [] { return false; }),
              StatusIs(absl::StatusCode::kNotFound, "job-404"));
}

TEST_F(CoordinatorTest, StoreWriteFailureFailsTheRpcWithTheStoreStatusAndPublishesNothing) {
  Start();
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  store_->FailWrites(absl::UnavailableError("disk on fire"));
  EXPECT_THAT(Submit(1), StatusIs(absl::StatusCode::kUnavailable, "disk on fire"));
  EXPECT_THAT(c_->CancelJob(job->id()), StatusIs(absl::StatusCode::kUnavailable, "disk on fire"));
  EXPECT_EQ(State(job->id()), v1::QUEUED);
  EXPECT_EQ(c_->GetJob(job->id())->last_sequence(), 1);
  v1::DatasetInfo info;
  info.set_name("iris.csv");
  EXPECT_THAT(c_->UploadDataset(info, Chunks("a,b\n1,2\n")),
              StatusIs(absl::StatusCode::kUnavailable, "disk on fire"));
  EXPECT_EQ(c_->ListJobs(v1::JOB_STATE_UNSPECIFIED, 10).size(), 1u);
  store_->FailWrites(absl::OkStatus());
  auto cancelled = c_->CancelJob(job->id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->last_sequence(), 2);  // no gap where the failed write was
}

TEST_F(CoordinatorTest, FailingStoreMakesStorageUnhealthyAndALostWorkerIsRecordedOnceItRecovers) {
  CoordinatorConfig cfg;
  cfg.worker_timeout = std::chrono::milliseconds(100);
  Start(cfg);
  auto job = Submit(1, [](v1::JobSpec* s) { s->set_max_retries(0); });
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  ASSERT_TRUE(Beat(w).has_assignment());
  store_->FailWrites(absl::UnavailableError("disk on fire"));
  ASSERT_TRUE(Eventually([&] { return !c_->StorageStatus().ok(); }));
  EXPECT_THAT(c_->StorageStatus(), StatusIs(absl::StatusCode::kUnavailable, "disk on fire"));
  ASSERT_TRUE(Eventually([&] { return c_->WorkerCounts()["busy"] == 0; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(State(job->id()), v1::RUNNING);  // its failure could not be written yet
  store_->FailWrites(absl::OkStatus());
  ASSERT_TRUE(Eventually([&] { return State(job->id()) == v1::FAILED; }));
  EXPECT_THAT(c_->GetJob(job->id())->reason(), HasSubstr("was lost"));
  ASSERT_TRUE(Eventually([&] { return c_->StorageStatus().ok(); }));
}

TEST_F(CoordinatorTest, PredictDoesNotRecacheAModelDeletedWhileItWasLoading) {
  Start();
  Catalog& catalog = c_->catalog_for_test();
  auto id = catalog.AddModel("job-1", v1::TrainingSummary(), Chunks(model_bytes_));
  ASSERT_TRUE(id.ok()) << id.status();
  v1::PredictRequest p;
  p.set_model_id(*id);
  for (float v : {5.1f, 3.5f, 1.4f, 0.2f}) p.add_features(v);
  absl::Status deleted = absl::UnknownError("hook not called");
  catalog.SetAfterLoadHookForTest(
      [&](const std::string& model_id) { deleted = c_->DeleteModel(model_id); });
  auto served = c_->Predict(p);  // the request came before the delete: it is answered
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(served->labels_size(), 1);
  EXPECT_TRUE(deleted.ok()) << deleted;
  EXPECT_FALSE(catalog.IsCached(*id));
  catalog.SetAfterLoadHookForTest(nullptr);
  EXPECT_THAT(c_->Predict(p), StatusIs(absl::StatusCode::kNotFound, *id));
  EXPECT_THAT(c_->DeleteModel(*id), StatusIs(absl::StatusCode::kNotFound, *id));
}

TEST_F(CoordinatorTest, PredictCacheKeepsTheMostRecentlyUsedModels) {
  CoordinatorConfig cfg;
  cfg.max_cached_models = 2;
  Start(cfg);
  Catalog& catalog = c_->catalog_for_test();
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto id = catalog.AddModel("job-1", v1::TrainingSummary(), Chunks(model_bytes_));
    ASSERT_TRUE(id.ok()) << id.status();
    ids.push_back(*id);
  }
  auto predict = [&](const std::string& id) {
    v1::PredictRequest p;
    p.set_model_id(id);
    for (float v : {5.1f, 3.5f, 1.4f, 0.2f}) p.add_features(v);
    ASSERT_TRUE(c_->Predict(p).ok());
  };
  predict(ids[0]);
  predict(ids[1]);
  predict(ids[0]);  // ids[1] is now the least recently used
  predict(ids[2]);
  EXPECT_TRUE(catalog.IsCached(ids[0]));
  EXPECT_FALSE(catalog.IsCached(ids[1]));
  EXPECT_TRUE(catalog.IsCached(ids[2]));
  ASSERT_TRUE(c_->DeleteModel(ids[0]).ok());
  EXPECT_FALSE(catalog.IsCached(ids[0]));
}

TEST(CoordinatorRestart, RunningJobsRetryFirstQueuedOnesQueueAgainAndEventsHaveNoGaps) {
  TempDir dir;
  CoordinatorConfig cfg;
  cfg.data_dir = dir.Path("data");
  std::string queued_id, running_id;
  {
    auto c = Coordinator::Create(cfg);  // SQLite
    ASSERT_TRUE(c.ok()) << c.status();
    v1::DatasetInfo info;
    info.set_name("iris.csv");
    auto iris = (*c)->UploadDataset(info, Chunks(ReadWholeFile(TestData("iris.csv"))));
    ASSERT_TRUE(iris.ok()) << iris.status();
    v1::JobSpec spec;
    spec.set_data("dataset:" + iris->id());
    spec.set_label_column("target");
    auto running = (*c)->SubmitJob(spec);
    ASSERT_TRUE(running.ok()) << running.status();
    running_id = running->id();
    v1::RegisterWorkerRequest reg;
    ASSERT_EQ((*c)->RegisterWorker(reg)->worker_id(), "w-1");
    auto queued = (*c)->SubmitJob(spec);
    ASSERT_TRUE(queued.ok()) << queued.status();
    queued_id = queued->id();
    ASSERT_EQ((*c)->GetJob(running_id)->state(), v1::RUNNING);
    ASSERT_EQ((*c)->GetJob(queued_id)->state(), v1::QUEUED);
  }
  auto c = Coordinator::Create(cfg);
  ASSERT_TRUE(c.ok()) << c.status();
  auto running = (*c)->GetJob(running_id);
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(running->state(), v1::RETRYING);
  EXPECT_THAT(running->reason(), HasSubstr("attempt 0 ended: the coordinator restarted"));
  EXPECT_EQ(running->attempt(), 1);
  EXPECT_EQ(running->retries(), 0);  // a restart is not charged
  ASSERT_EQ(running->failed_attempts_size(), 1);
  EXPECT_FALSE(running->failed_attempts(0).charged());
  std::vector<int64_t> sequences;
  (void)(*c)->WatchJob(
      running_id, 1,
      [&](const v1::JobEvent& e) {
        sequences.push_back(e.sequence());
        return e.sequence() < 3;
      },
      [] { return false; });
  EXPECT_THAT(sequences, ElementsAre(1, 2, 3));  // QUEUED, RUNNING, RETRYING
  EXPECT_EQ(running->last_sequence(), 3);
  EXPECT_EQ((*c)->GetJob(queued_id)->state(), v1::QUEUED);
  // Worker ids never repeat across restarts; the interrupted job runs before the queued one.
  v1::RegisterWorkerRequest reg;
  ASSERT_EQ((*c)->RegisterWorker(reg)->worker_id(), "w-2");
  EXPECT_EQ((*c)->GetJob(running_id)->state(), v1::RUNNING);
  EXPECT_EQ((*c)->GetJob(queued_id)->state(), v1::QUEUED);
}

TEST(CoordinatorRestart, StoreFailureWhileFailingInterruptedJobsFailsCreate) {
  TempDir dir;
  CoordinatorConfig cfg;
  cfg.data_dir = dir.Path("data");
  auto store = std::make_unique<MemoryJobStore>();
  v1::Job job;
  job.set_id("job-1");
  job.set_state(v1::RUNNING);
  ASSERT_TRUE(store->PutJob(job).ok());
  store->FailWrites(absl::DataLossError("sector gone"));
  EXPECT_THAT(Coordinator::Create(cfg, std::move(store)),
              StatusIs(absl::StatusCode::kDataLoss, "sector gone"));
}

TEST_F(CoordinatorTest, AssignmentIsRepeatedWithEveryHeartbeatUntilOneNamesIt) {
  Start();
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  const v1::HeartbeatResponse first = Beat(w);
  ASSERT_TRUE(first.has_assignment());
  // The reply was lost: the worker still says it runs nothing.
  const v1::HeartbeatResponse again = Beat(w);
  ASSERT_TRUE(again.has_assignment());
  EXPECT_EQ(again.assignment().job_id(), first.assignment().job_id());
  EXPECT_FALSE(Beat(w, job->id()).has_assignment());
  EXPECT_FALSE(Beat(w, job->id()).has_assignment());
}

TEST_F(CoordinatorTest, LostWorkerMakesTheJobRetryOnAnotherWorkerFromItsLatestCheckpoint) {
  CoordinatorConfig cfg;
  cfg.worker_timeout = std::chrono::milliseconds(150);
  cfg.retry_backoff = std::chrono::milliseconds(1);
  Start(cfg);
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  const FakeWorker a = Register();
  const std::optional<v1::Assignment> first = NextAssignment(a);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->resume_checkpoint(), 0);
  auto ckpt = SendCheckpoint(a, *first, 4, "state after epoch 4");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->checkpoint().number(), 1);
  EXPECT_EQ(c_->GetJob(job->id())->latest_checkpoint().epoch(), 4);
  // a goes silent; b registers and keeps beating.
  const FakeWorker b = Register();
  const std::optional<v1::Assignment> second = NextAssignment(b);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->attempt(), 1);
  EXPECT_EQ(second->resume_checkpoint(), 1);
  const v1::Job retried = *c_->GetJob(job->id());
  EXPECT_EQ(retried.state(), v1::RUNNING);
  EXPECT_EQ(retried.retries(), 1);
  ASSERT_EQ(retried.failed_attempts_size(), 1);
  EXPECT_THAT(retried.failed_attempts(0).reason(),
              HasSubstr(absl::StrCat("worker ", a.id, " (rank 0) was lost")));
  EXPECT_THAT(retried.reason(), HasSubstr("resumed from checkpoint 1 at epoch 4"));
  auto rec = FindCheckpoint(b, *second);
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(ReadWholeFile(rec->path), "state after epoch 4");
  // The events say what happened, in order: ... checkpoint, RETRYING, RUNNING.
  std::vector<std::string> kinds;
  (void)c_->WatchJob(
      job->id(), 1,
      [&](const v1::JobEvent& e) {
        kinds.push_back(e.has_checkpoint() ? "checkpoint"
                                           : v1::JobState_Name(e.state_change().state()));
        return e.sequence() < retried.last_sequence();  // stops the watch after the last one
      },
      [] { return false; });
  EXPECT_THAT(kinds, ElementsAre("QUEUED", "RUNNING", "checkpoint", "RETRYING", "RUNNING"));
  // The old attempt's checkpoints are refused; the job finishes and its checkpoints go.
  EXPECT_THAT(SendCheckpoint(a, *first, 5, "late").status(),
              StatusIs(absl::StatusCode::kPermissionDenied, ""));
  ASSERT_TRUE(Upload(b, *second).ok());
  ASSERT_TRUE(Finish(b, *second).ok());
  EXPECT_EQ(State(job->id()), v1::SUCCEEDED);
  EXPECT_FALSE(c_->GetJob(job->id())->has_latest_checkpoint());
  EXPECT_FALSE(std::ifstream(rec->path).good());
}

TEST_F(CoordinatorTest, RankErrorThatARetryCannotFixFailsAtOnce) {
  Start();
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  const std::optional<v1::Assignment> a = NextAssignment(w);
  ASSERT_TRUE(a);
  ASSERT_TRUE(Fail(w, *a, absl::StatusCode::kInvalidArgument, "data: line 7: bad value").ok());
  const v1::Job failed = *c_->GetJob(job->id());
  EXPECT_EQ(failed.state(), v1::FAILED);
  EXPECT_EQ(failed.retries(), 0);
  EXPECT_THAT(failed.reason(), HasSubstr("data: line 7: bad value"));
}

TEST_F(CoordinatorTest, ExhaustedRetriesFailWithEveryAttemptsReason) {
  CoordinatorConfig cfg;
  cfg.retry_backoff = std::chrono::milliseconds(1);
  Start(cfg);
  auto job = Submit(1, [](v1::JobSpec* s) { s->set_max_retries(1); });
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  for (int attempt = 0; attempt < 2; ++attempt) {
    const std::optional<v1::Assignment> a = NextAssignment(w);
    ASSERT_TRUE(a);
    ASSERT_EQ(a->attempt(), attempt);
    ASSERT_TRUE(
        Fail(w, *a, absl::StatusCode::kUnavailable, absl::StrCat("lost rank 1 (try ", attempt, ")"))
            .ok());
  }
  const v1::Job failed = *c_->GetJob(job->id());
  EXPECT_EQ(failed.state(), v1::FAILED);
  EXPECT_THAT(failed.reason(), HasSubstr("gave up after 1 retries (max_retries 1)"));
  EXPECT_THAT(failed.reason(), HasSubstr("attempt 0: rank 0"));
  EXPECT_THAT(failed.reason(), HasSubstr("lost rank 1 (try 0)"));
  EXPECT_THAT(failed.reason(), HasSubstr("attempt 1: rank 0"));
  EXPECT_EQ(failed.failed_attempts_size(), 2);
}

TEST_F(CoordinatorTest, RetryShrinksToMinWorkersWhenNoMoreAreIdle) {
  CoordinatorConfig cfg;
  cfg.retry_backoff = std::chrono::milliseconds(1);
  Start(cfg);
  auto job = Submit(2, [](v1::JobSpec* s) { s->set_min_workers(1); });
  ASSERT_TRUE(job.ok());
  const FakeWorker a = Register();
  const FakeWorker b = Register();
  const std::optional<v1::Assignment> ra = NextAssignment(a);
  const std::optional<v1::Assignment> rb = NextAssignment(b);
  ASSERT_TRUE(ra && rb);
  EXPECT_EQ(ra->world_size(), 2);
  // b's rank fails; a is still busy with the old attempt until it reports.
  ASSERT_TRUE(Fail(b, *rb, absl::StatusCode::kUnavailable, "lost rank 0").ok());
  const std::optional<v1::Assignment> retry = NextAssignment(b);
  ASSERT_TRUE(retry);
  EXPECT_EQ(retry->attempt(), 1);
  EXPECT_EQ(retry->world_size(), 1);
  // The old attempt's rank is told to stop.
  EXPECT_TRUE(Beat(a, job->id()).cancel());
}

TEST_F(CoordinatorTest, CancelDuringTheRetryBackoffCancelsTheJob) {
  CoordinatorConfig cfg;
  cfg.retry_backoff = std::chrono::seconds(30);
  Start(cfg);
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  const std::optional<v1::Assignment> a = NextAssignment(w);
  ASSERT_TRUE(a);
  ASSERT_TRUE(Fail(w, *a, absl::StatusCode::kDeadlineExceeded, "collective timed out").ok());
  EXPECT_EQ(State(job->id()), v1::RETRYING);
  EXPECT_THAT(c_->GetJob(job->id())->reason(), HasSubstr("starting over (no checkpoint yet)"));
  auto cancelled = c_->CancelJob(job->id());
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), v1::CANCELLED);
  EXPECT_FALSE(Beat(w).has_assignment());
}

TEST_F(CoordinatorTest, OnlyTheNewestCheckpointsAreKept) {
  CoordinatorConfig cfg;
  cfg.keep_checkpoints = 2;
  Start(cfg);
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  const std::optional<v1::Assignment> a = NextAssignment(w);
  ASSERT_TRUE(a);
  std::vector<std::string> paths;
  for (int e = 1; e <= 3; ++e) {
    ASSERT_TRUE(SendCheckpoint(w, *a, e * 10, absl::StrCat("epoch ", e * 10)).ok());
  }
  const std::string dir = dir_.Path("data/checkpoints/" + job->id());
  EXPECT_FALSE(std::ifstream(dir + "/ckpt-1.safetensors").good());
  EXPECT_TRUE(std::ifstream(dir + "/ckpt-2.safetensors").good());
  EXPECT_TRUE(std::ifstream(dir + "/ckpt-3.safetensors").good());
  EXPECT_EQ(c_->GetJob(job->id())->latest_checkpoint().number(), 3);
  // A short upload is refused and leaves nothing behind.
  v1::CheckpointUpload header;
  header.mutable_from()->set_worker_id(w.id);
  header.mutable_from()->set_worker_secret(w.secret);
  header.mutable_from()->set_job_id(a->job_id());
  header.set_epoch(40);
  header.set_size_bytes(100);
  EXPECT_THAT(c_->UploadCheckpoint(header, Chunks("too short")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "size_bytes"));
  EXPECT_EQ(c_->GetJob(job->id())->latest_checkpoint().number(), 3);
}

// The exposition text of the coordinator's metrics, as /metrics serves it.
std::string Exposition(ServerMetrics& metrics) {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& weak : metrics.collectables()) {
    auto c = weak.lock();
    std::vector<prometheus::MetricFamily> more = c->Collect();
    families.insert(families.end(), more.begin(), more.end());
  }
  return prometheus::TextSerializer().Serialize(families);
}

TEST_F(CoordinatorTest, MetricsFollowAJobFromSubmitToSuccessAndDropItsSeriesAfterTheGrace) {
  CoordinatorConfig cfg;
  cfg.metrics_job_grace = std::chrono::milliseconds(1000);
  Start(cfg);
  ServerMetrics& m = c_->metrics();
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  std::string text = Exposition(m);
  EXPECT_THAT(text, HasSubstr("logit_jobs_submitted_total 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_jobs{state=\"queued\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_queue_jobs 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_job_attempt{job=\"" + job->id() + "\"} 0\n"));

  const FakeWorker w = Register();
  const v1::Assignment a = Beat(w).assignment();
  v1::ReportProgressRequest epoch = Report(w, a);
  epoch.mutable_epoch()->set_epoch(1);
  epoch.mutable_epoch()->set_total_epochs(3);
  epoch.mutable_epoch()->set_train_loss(0.75);
  epoch.mutable_epoch()->set_has_validation(true);
  epoch.mutable_epoch()->set_val_accuracy(0.5);
  ASSERT_TRUE(c_->ReportProgress(epoch).ok());
  text = Exposition(m);
  const std::string id = "{job=\"" + job->id() + "\"}";
  EXPECT_THAT(text, HasSubstr("logit_jobs{state=\"running\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_workers{state=\"busy\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_queue_jobs 0\n"));
  EXPECT_THAT(text, HasSubstr("logit_job_loss" + id + " 0.75\n"));
  EXPECT_THAT(text, HasSubstr("logit_job_epoch" + id + " 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_job_total_epochs" + id + " 3\n"));
  EXPECT_THAT(text, HasSubstr("logit_job_workers" + id + " 1\n"));
  EXPECT_THAT(
      text, HasSubstr("logit_job_accuracy{job=\"" + job->id() + "\",split=\"validation\"} 0.5\n"));
  // Checkpointing (the default period): the age counts from the attempt's start.
  EXPECT_THAT(text, HasSubstr("logit_job_checkpoint_age_seconds" + id));
  EXPECT_THAT(text, HasSubstr("logit_job_queue_wait_seconds_count 1\n"));

  ASSERT_TRUE(SendCheckpoint(w, a, 1, "0123456789").ok());
  ASSERT_TRUE(Upload(w, a).ok());
  ASSERT_TRUE(Finish(w, a).ok());
  text = Exposition(m);
  EXPECT_THAT(text, HasSubstr("logit_checkpoints_stored_total 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_checkpoint_bytes_total 10\n"));
  EXPECT_THAT(text, HasSubstr("logit_upload_bytes_total{kind=\"checkpoint\"} 10\n"));
  EXPECT_THAT(text, HasSubstr("logit_upload_bytes_total{kind=\"model\"} " +
                              std::to_string(model_bytes_.size()) + "\n"));
  EXPECT_THAT(text, HasSubstr("logit_jobs_finished_total{state=\"succeeded\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_job_duration_seconds_count{state=\"succeeded\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_jobs{state=\"succeeded\"} 1\n"));
  // A finished job shows its final figures (Finish: 3 epochs, loss 0.25) and no checkpoint age.
  EXPECT_THAT(text, HasSubstr("logit_job_loss" + id + " 0.25\n"));
  EXPECT_THAT(text, HasSubstr("logit_job_epoch" + id + " 3\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("logit_job_checkpoint_age_seconds" + id)));
  // After the grace period, no series names the job; the counters stay.
  EXPECT_TRUE(Eventually([&] {
    return Exposition(m).find("\"" + job->id() + "\"") == std::string::npos;
  })) << Exposition(m);
  text = Exposition(m);
  EXPECT_THAT(text, HasSubstr("logit_jobs_finished_total{state=\"succeeded\"} 1\n"));
}

TEST_F(CoordinatorTest, MetricsCountRetriesLostWorkersAndMissedHeartbeats) {
  CoordinatorConfig cfg;
  cfg.worker_timeout = std::chrono::milliseconds(200);
  cfg.retry_backoff = std::chrono::milliseconds(0);
  Start(cfg);
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  const v1::Assignment a = Beat(w).assignment();
  ASSERT_TRUE(Fail(w, a, absl::StatusCode::kUnavailable, "collective failed").ok());
  std::string text = Exposition(c_->metrics());
  EXPECT_THAT(text, HasSubstr("logit_job_retries_total 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_job_retries{job=\"" + job->id() + "\"} 1\n"));
  // 20 ms between beats is 4 periods of 5 ms: 3 missed.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  Beat(w);
  text = Exposition(c_->metrics());
  EXPECT_THAT(text, ::testing::Not(HasSubstr("logit_worker_heartbeats_missed_total 0\n")));
  // Silent past the timeout: lost.
  ASSERT_TRUE(
      Eventually([&] { return c_->WorkerCounts()["idle"] + c_->WorkerCounts()["busy"] == 0; }));
  text = Exposition(c_->metrics());
  EXPECT_THAT(text, HasSubstr("logit_workers_lost_total 1\n"));
  EXPECT_THAT(text, HasSubstr("logit_worker_registrations_total 1\n"));
}


TEST_F(CoordinatorTest, RanksMayFetchOnlyTheDataFilesTheirJobNamesWithTheUploadHash) {
  Start();
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  const v1::Assignment a = Beat(w).assignment();
  const std::string iris = ReadWholeFile(TestData("iris.csv"));
  v1::FetchDataRequest req;
  req.mutable_from()->set_worker_id(w.id);
  req.mutable_from()->set_worker_secret(w.secret);
  req.mutable_from()->set_job_id(a.job_id());
  req.mutable_from()->set_attempt(a.attempt());
  req.set_path(a.spec().data());
  auto file = c_->OpenDataFile(req);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->second.size_bytes(), static_cast<int64_t>(iris.size()));
  Sha256 hash;
  hash.Update(iris.data(), iris.size());
  const std::string digest = hash.HexDigest();
  EXPECT_EQ(file->second.sha256(), digest);        // recorded at upload
  EXPECT_EQ(file->second.block_sha256_size(), 0);  // only when asked for
  // Block hashes: 1 MiB blocks, so the whole of iris is block 0.
  v1::FetchDataRequest blocks = req;
  blocks.set_with_blocks(true);
  auto described = c_->OpenDataFile(blocks);
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_EQ(described->second.block_bytes(), int64_t{1} << 20);
  ASSERT_EQ(described->second.block_sha256_size(), 1);
  EXPECT_EQ(described->second.block_sha256(0), digest);
  // An uploaded file changed behind the coordinator's back is never served as the upload.
  std::string changed = iris;
  changed[10] ^= 1;
  {
    std::ofstream out(described->first, std::ios::binary | std::ios::trunc);
    out << changed;
  }
  EXPECT_THAT(c_->OpenDataFile(blocks).status(),
              StatusIs(absl::StatusCode::kDataLoss, "not the " + digest));
  {
    std::ofstream out(described->first, std::ios::binary | std::ios::app);
    out << "1,2,3,4,0\n";
  }
  EXPECT_THAT(c_->OpenDataFile(req).status(),
              StatusIs(absl::StatusCode::kDataLoss, "recorded at upload"));
  // A file the job does not name, and a caller that does not hold the rank, are refused.
  v1::FetchDataRequest other = req;
  other.set_path("/etc/passwd");
  EXPECT_THAT(c_->OpenDataFile(other).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, "names no data file"));
  v1::FetchDataRequest stranger = req;
  stranger.mutable_from()->set_worker_secret("not the secret");
  EXPECT_EQ(c_->OpenDataFile(stranger).status().code(), absl::StatusCode::kPermissionDenied);
}

// The ids of `datasets`, in order.
std::vector<std::string> DatasetIds(const std::vector<v1::Dataset>& datasets) {
  std::vector<std::string> ids;
  for (const v1::Dataset& d : datasets) ids.push_back(d.id());
  return ids;
}

std::string Sha256Hex(const std::string& bytes) {
  Sha256 hash;
  hash.Update(bytes.data(), bytes.size());
  return hash.HexDigest();
}

TEST_F(CoordinatorTest, ListDatasetsIsNewestFirstAndFiltersBySha256) {
  Start();
  v1::DatasetInfo info;
  info.set_name("tiny.csv");
  auto tiny = c_->UploadDataset(info, Chunks("a,y\n1,0\n2,1\n"));
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  auto all = c_->ListDatasets("");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(DatasetIds(*all), ElementsAre(tiny->id(), dataset_));
  EXPECT_EQ((*all)[1].name(), "iris.csv");
  const std::string iris_sha = Sha256Hex(ReadWholeFile(TestData("iris.csv")));
  EXPECT_EQ((*all)[1].sha256(), iris_sha);
  auto iris = c_->ListDatasets(iris_sha);
  ASSERT_TRUE(iris.ok()) << iris.status();
  EXPECT_THAT(DatasetIds(*iris), ElementsAre(dataset_));
  EXPECT_TRUE(c_->ListDatasets(std::string(64, '0'))->empty());
  EXPECT_THAT(c_->ListDatasets("ABC"), StatusIs(absl::StatusCode::kInvalidArgument, "sha256:"));
}

TEST_F(CoordinatorTest, UploadOfTheSameBytesAndNameReturnsTheStoredDatasetWithoutACopy) {
  Start();
  const std::string iris = ReadWholeFile(TestData("iris.csv"));
  v1::DatasetInfo info;
  info.set_name("iris.csv");
  auto again = c_->UploadDataset(info, Chunks(iris));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id(), dataset_);
  int dirs = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_.Path("data/datasets"))) {
    (void)e;
    ++dirs;
  }
  EXPECT_EQ(dirs, 1);  // the second copy was removed
  // The same bytes under another name are another dataset (the name picks the format).
  info.set_name("flowers.csv");
  auto renamed = c_->UploadDataset(info, Chunks(iris));
  ASSERT_TRUE(renamed.ok()) << renamed.status();
  EXPECT_NE(renamed->id(), dataset_);
  EXPECT_EQ(c_->ListDatasets("")->size(), 2u);
}

TEST_F(CoordinatorTest, DeleteDatasetIsRefusedNamingTheJobsThatNeedItThenRemovesItsFile) {
  Start();
  auto queued = Submit(1);
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_THAT(c_->DeleteDataset(dataset_),
              StatusIs(absl::StatusCode::kFailedPrecondition, queued->id() + " (QUEUED)"));
  ASSERT_TRUE(c_->CancelJob(queued->id()).ok());
  const std::string file = dir_.Path("data/datasets/" + dataset_ + "/iris.csv");
  ASSERT_TRUE(std::filesystem::exists(file));
  ASSERT_TRUE(c_->DeleteDataset(dataset_).ok());
  EXPECT_FALSE(std::filesystem::exists(file));
  EXPECT_FALSE(std::filesystem::exists(dir_.Path("data/datasets/" + dataset_)));
  EXPECT_TRUE(c_->ListDatasets("")->empty());
  EXPECT_THAT(c_->DeleteDataset(dataset_), StatusIs(absl::StatusCode::kNotFound, dataset_));
  EXPECT_THAT(Submit(1), StatusIs(absl::StatusCode::kNotFound, dataset_));
}

TEST_F(CoordinatorTest, DeleteDatasetIsRefusedWhileAJobRunsOnItAndAStoreFailureKeepsIt) {
  Start();
  auto job = Submit(1);
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  const v1::Assignment a = Beat(w).assignment();
  EXPECT_THAT(c_->DeleteDataset(dataset_),
              StatusIs(absl::StatusCode::kFailedPrecondition, job->id() + " (RUNNING)"));
  ASSERT_TRUE(Finish(w, a).ok());
  store_->FailWrites(absl::UnavailableError("disk on fire"));
  EXPECT_THAT(c_->DeleteDataset(dataset_),
              StatusIs(absl::StatusCode::kUnavailable, "disk on fire"));
  store_->FailWrites(absl::OkStatus());
  EXPECT_EQ(c_->ListDatasets("")->size(), 1u);
  EXPECT_TRUE(c_->DeleteDataset(dataset_).ok());  // a finished job does not hold it
}

TEST_F(CoordinatorTest, ListModelsIsNewestFirstWithTheJobNameAndWithoutHistory) {
  Start();
  auto job = Submit(1, [](v1::JobSpec* s) { s->set_name("nightly"); });
  ASSERT_TRUE(job.ok());
  const FakeWorker w = Register();
  const v1::Assignment a = Beat(w).assignment();
  v1::ModelUpload header;
  header.set_worker_id(w.id);
  header.set_worker_secret(w.secret);
  header.set_job_id(a.job_id());
  header.set_attempt(a.attempt());
  header.mutable_summary()->add_history()->set_epoch(1);
  auto first = c_->UploadModel(header, Chunks(model_bytes_));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(Finish(w, a).ok());
  auto second =
      c_->catalog_for_test().AddModel("job-404", v1::TrainingSummary(), Chunks(model_bytes_));
  ASSERT_TRUE(second.ok()) << second.status();
  const std::vector<v1::ModelInfo> models = c_->ListModels();
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0].model_id(), *second);
  EXPECT_EQ(models[0].job_name(), "");  // its job is unknown
  EXPECT_EQ(models[1].model_id(), first->model_id());
  EXPECT_EQ(models[1].job_id(), job->id());
  EXPECT_EQ(models[1].job_name(), "nightly");
  EXPECT_EQ(models[1].num_features(), 4);
  EXPECT_EQ(models[1].num_classes(), 3);
  EXPECT_EQ(models[1].size_bytes(), static_cast<int64_t>(model_bytes_.size()));
  EXPECT_TRUE(models[1].has_created());
  EXPECT_EQ(models[1].summary().history_size(), 0);
  EXPECT_EQ(c_->GetModel(first->model_id())->info.summary().history_size(), 1);
  EXPECT_EQ(c_->GetModel(first->model_id())->info.job_name(), "nightly");
  ASSERT_TRUE(c_->DeleteModel(*second).ok());
  ASSERT_EQ(c_->ListModels().size(), 1u);
  EXPECT_EQ(c_->ListModels()[0].model_id(), first->model_id());
}

TEST_F(CoordinatorTest, ListJobsSelectsByEveryLabelOfTheSelectorAndByName) {
  Start();
  auto labelled = [&](const std::string& name, std::map<std::string, std::string> labels) {
    return Submit(1, [&](v1::JobSpec* s) {
      s->set_name(name);
      for (const auto& [k, v] : labels) (*s->mutable_job_labels())[k] = v;
    });
  };
  auto search_prod = labelled("a", {{"team", "search"}, {"env", "prod"}});
  auto search_dev = labelled("b", {{"team", "search"}, {"env", "dev"}});
  auto ads = labelled("a", {{"team", "ads"}});
  ASSERT_TRUE(search_prod.ok() && search_dev.ok() && ads.ok());
  auto ids = [&](const v1::ListJobsRequest& req) {
    std::vector<std::string> out;
    for (const v1::Job& j : c_->ListJobs(req)) out.push_back(j.id());
    return out;
  };
  v1::ListJobsRequest req;
  (*req.mutable_label_selector())["team"] = "search";
  EXPECT_THAT(ids(req), ElementsAre(search_dev->id(), search_prod->id()));
  (*req.mutable_label_selector())["env"] = "prod";
  EXPECT_THAT(ids(req), ElementsAre(search_prod->id()));
  (*req.mutable_label_selector())["env"] = "staging";
  EXPECT_TRUE(ids(req).empty());
  req.clear_label_selector();
  req.set_name("a");
  EXPECT_THAT(ids(req), ElementsAre(ads->id(), search_prod->id()));
  req.set_limit(1);  // the limit counts jobs that pass the filters
  EXPECT_THAT(ids(req), ElementsAre(ads->id()));
  req.set_limit(0);
  req.set_state(v1::RUNNING);
  EXPECT_TRUE(ids(req).empty());
  EXPECT_EQ(c_->GetJob(search_prod->id())->spec().job_labels().at("env"), "prod");
}

TEST_F(CoordinatorTest, SubmitWithAnInvalidLabelIsInvalidArgumentNamingLabels) {
  Start();
  EXPECT_THAT(Submit(1, [](v1::JobSpec* s) { (*s->mutable_job_labels())["has space"] = "x"; }),
              StatusIs(absl::StatusCode::kInvalidArgument, "job_labels: key 'has space'"));
  EXPECT_THAT(
      Submit(1, [](v1::JobSpec* s) { (*s->mutable_job_labels())["k"] = std::string(64, 'v'); }),
      StatusIs(absl::StatusCode::kInvalidArgument, "job_labels: the value of 'k'"));
  EXPECT_TRUE(c_->ListJobs(v1::JOB_STATE_UNSPECIFIED, 0).empty());
}

TEST(CoordinatorRestart, DeletedDatasetsStayDeletedAndModelsAndLabelsAreListedAgain) {
  TempDir dir;
  CoordinatorConfig cfg;
  cfg.data_dir = dir.Path("data");
  LinearModel m;
  m.num_features = 4;
  m.num_classes = 3;
  m.weights.assign(12, 0.1f);
  m.bias.assign(3, 0.0f);
  ASSERT_TRUE(SaveModel(m, dir.Path("m.npz")).ok());
  std::string kept, deleted, model, job_id;
  {
    auto c = Coordinator::Create(cfg);  // SQLite
    ASSERT_TRUE(c.ok()) << c.status();
    v1::DatasetInfo info;
    info.set_name("iris.csv");
    auto iris = (*c)->UploadDataset(info, Chunks(ReadWholeFile(TestData("iris.csv"))));
    ASSERT_TRUE(iris.ok()) << iris.status();
    kept = iris->id();
    info.set_name("tiny.csv");
    auto tiny = (*c)->UploadDataset(info, Chunks("a,y\n1,0\n2,1\n"));
    ASSERT_TRUE(tiny.ok()) << tiny.status();
    deleted = tiny->id();
    ASSERT_TRUE((*c)->DeleteDataset(deleted).ok());
    v1::JobSpec spec;
    spec.set_data("dataset:" + kept);
    spec.set_label_column("target");
    (*spec.mutable_job_labels())["team"] = "search";
    auto job = (*c)->SubmitJob(spec);
    ASSERT_TRUE(job.ok()) << job.status();
    job_id = job->id();
    auto added = (*c)->catalog_for_test().AddModel(job_id, v1::TrainingSummary(),
                                                   Chunks(ReadWholeFile(dir.Path("m.npz"))));
    ASSERT_TRUE(added.ok()) << added.status();
    model = *added;
  }
  auto c = Coordinator::Create(cfg);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(DatasetIds((*c)->ListDatasets("").value()), ElementsAre(kept));
  EXPECT_THAT((*c)->DeleteDataset(deleted), StatusIs(absl::StatusCode::kNotFound, deleted));
  // The job still names its dataset after the restart.
  EXPECT_THAT((*c)->DeleteDataset(kept), StatusIs(absl::StatusCode::kFailedPrecondition, job_id));
  const std::vector<v1::ModelInfo> models = (*c)->ListModels();
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0].model_id(), model);
  EXPECT_TRUE(models[0].has_created());
  v1::ListJobsRequest req;
  (*req.mutable_label_selector())["team"] = "search";
  ASSERT_EQ((*c)->ListJobs(req).size(), 1u);
  EXPECT_EQ((*c)->ListJobs(req)[0].id(), job_id);
}

TEST(FailureReasons, NameTheFailingRankOnceAndTheUsersOwnFiles) {
  EXPECT_EQ(RankFailureReason(0, "w-1", "rank 0: x.csv:3: bad"), "rank 0 (w-1): x.csv:3: bad");
  EXPECT_EQ(RankFailureReason(1, "w-2", "rank 0: x.csv:3: bad"),
            "rank 0 (reported by rank 1 on w-2): x.csv:3: bad");
  EXPECT_EQ(RankFailureReason(2, "w-3", "out of memory"), "rank 2 (w-3): out of memory");
  EXPECT_EQ(RankFailureReason(0, "w-1", "rank zero: odd"), "rank 0 (w-1): rank zero: odd");
  v1::JobSpec spec, resolved;
  spec.set_data("dataset:dataset-3");
  resolved.set_data("/var/lib/logit/datasets/dataset-3/bad.csv");
  spec.set_labels("server:y.npy");
  resolved.set_labels("/srv/data/y.npy");
  EXPECT_EQ(UserPaths(spec, resolved,
                      "/var/lib/logit/datasets/dataset-3/bad.csv:3: no; /srv/data/y.npy: short"),
            "bad.csv:3: no; server:y.npy: short");
}

}  // namespace
}  // namespace logit
