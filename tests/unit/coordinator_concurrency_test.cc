// The coordinator's service logic under concurrent clients and workers, in one process and
// without gRPC: submitters, cancellers, watchers, readers and fake workers (register,
// heartbeat, report, upload) all at once. Its value is under ThreadSanitizer
// (tests/sanitize/run_sanitizers.sh tsan), where any data race in Coordinator fails it; in the
// normal build it checks that every job still ends in a final state with its events in order.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/coordinator.h"
#include "tests/integration/subprocess.h"
#include "tests/unit/test_util.h"
#include "worker/model/model_io.h"

namespace logit {
namespace {

using ::logit::testing::ReadWholeFile;
using ::logit::testing::TempDir;
using ::logit::testing::TestData;
using Clock = std::chrono::steady_clock;

bool Finished(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

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

// A worker that takes assignments and finishes them at once with a fixed model.
void FakeWorker(Coordinator* c, const std::string& model_bytes, const std::atomic<bool>& stop) {
  v1::RegisterWorkerRequest reg;
  reg.set_hostname("fake");
  const v1::RegisterWorkerResponse me = c->RegisterWorker(reg).value();
  while (!stop) {
    v1::HeartbeatRequest hb;
    hb.set_worker_id(me.worker_id());
    hb.set_worker_secret(me.worker_secret());
    auto beat = c->Heartbeat(hb);
    ASSERT_TRUE(beat.ok()) << beat.status();
    if (!beat->has_assignment()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    const v1::Assignment& a = beat->assignment();
    v1::ReportProgressRequest epoch;
    epoch.set_worker_id(me.worker_id());
    epoch.set_worker_secret(me.worker_secret());
    epoch.set_job_id(a.job_id());
    epoch.set_attempt(a.attempt());
    epoch.set_rank(a.rank());
    epoch.mutable_epoch()->set_epoch(1);
    epoch.mutable_epoch()->set_train_loss(0.5);
    (void)c->ReportProgress(epoch);
    v1::ModelUpload header;
    header.set_worker_id(me.worker_id());
    header.set_worker_secret(me.worker_secret());
    header.set_job_id(a.job_id());
    header.set_attempt(a.attempt());
    (void)c->UploadModel(header, Chunks(model_bytes));  // refused once the job was cancelled
    v1::ReportProgressRequest done = epoch;
    done.clear_epoch();
    done.mutable_outcome()->set_ok(true);
    done.mutable_outcome()->mutable_summary()->set_epochs_run(1);
    done.mutable_outcome()->mutable_summary()->set_train_loss(0.5);
    (void)c->ReportProgress(done);
  }
}

TEST(CoordinatorConcurrency, ClientsAndWorkersAtOnceLeaveEveryJobFinishedWithOrderedEvents) {
  TempDir dir;
  CoordinatorConfig cfg;
  cfg.data_dir = dir.Path("data");
  cfg.heartbeat_interval = std::chrono::milliseconds(5);
  cfg.storage_probe_interval = std::chrono::milliseconds(20);
  auto coordinator = Coordinator::Create(cfg);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  Coordinator* c = coordinator->get();

  v1::DatasetInfo info;
  info.set_name("iris.csv");
  auto iris = c->UploadDataset(info, Chunks(ReadWholeFile(TestData("iris.csv"))));
  ASSERT_TRUE(iris.ok()) << iris.status();
  LinearModel m;
  m.num_features = 4;
  m.num_classes = 3;
  m.weights.assign(12, 0.1f);
  m.bias.assign(3, 0.0f);
  ASSERT_TRUE(SaveModel(m, dir.Path("m.npz")).ok());
  const std::string model_bytes = ReadWholeFile(dir.Path("m.npz"));

  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < 3; ++w) {
    threads.emplace_back([&] { FakeWorker(c, model_bytes, stop); });
  }
  constexpr int kJobs = 60;
  std::vector<std::string> ids(kJobs);
  std::atomic<int> submitted{0};
  threads.emplace_back([&] {
    for (int i = 0; i < kJobs; ++i) {
      v1::JobSpec spec;
      spec.set_data("dataset:" + iris->id());
      spec.set_label_column("target");
      spec.set_workers(1 + i % 2);
      auto job = c->SubmitJob(spec);
      ASSERT_TRUE(job.ok()) << job.status();
      ids[i] = job->id();
      submitted = i + 1;
    }
  });
  threads.emplace_back([&] {  // cancels every fifth job, wherever it is
    for (int i = 0; i < kJobs; i += 5) {
      while (submitted <= i) std::this_thread::yield();
      (void)c->CancelJob(ids[i]);
    }
  });
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {  // watchers, each following jobs to their end
      for (int i = w; i < kJobs; i += 4) {
        while (submitted <= i) std::this_thread::yield();
        int64_t last = 0;
        const absl::Status st = c->WatchJob(
            ids[i], 1,
            [&](const v1::JobEvent& e) {
              if (!e.has_progress()) {
                EXPECT_EQ(e.sequence(), last + 1) << ids[i];
                last = e.sequence();
              }
              return true;
            },
            [&] { return stop.load(); });
        EXPECT_TRUE(st.ok() || absl::IsCancelled(st) || absl::IsUnavailable(st)) << st;
      }
    });
  }
  threads.emplace_back([&] {  // readers
    while (!stop) {
      (void)c->ListJobs(v1::JOB_STATE_UNSPECIFIED, 20);
      (void)c->WorkerCounts();
      (void)c->StorageStatus();
      if (submitted > 0) {
        auto j = c->GetJob(ids[submitted - 1]);
        if (j.ok() && !j->model_id().empty()) {
          v1::PredictRequest p;
          p.set_model_id(j->model_id());
          for (float v : {5.1f, 3.5f, 1.4f, 0.2f}) p.add_features(v);
          (void)c->Predict(p);
          if (submitted % 7 == 0) (void)c->DeleteModel(j->model_id());
        }
      }
    }
  });

  const auto deadline = Clock::now() + std::chrono::seconds(120);
  int finished = 0;
  while (Clock::now() < deadline) {
    finished = 0;
    if (submitted == kJobs) {
      for (const std::string& id : ids) {
        auto j = c->GetJob(id);
        finished += j.ok() && Finished(j->state());
      }
    }
    if (finished == kJobs) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(finished, kJobs);
}

}  // namespace
}  // namespace logit
