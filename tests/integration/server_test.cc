// The coordinator with real worker processes on loopback: jobs, scheduling, events, cancel,
// datasets, models, predictions, errors, restarts. Each test starts its own logit-server.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "logit/v1/training.grpc.pb.h"
#include "tests/integration/subprocess.h"
#include "tests/unit/test_util.h"
#include "worker/job.h"
#include "worker/model_io.h"

namespace logit {
namespace {

using ::logit::testing::FashionDir;
using ::logit::testing::ReadWholeFile;
using ::logit::testing::Subprocess;
using ::logit::testing::TempDir;
using ::logit::testing::TestData;
using Clock = std::chrono::steady_clock;

std::string Binary(const char* env, const char* fallback) {
  const char* p = std::getenv(env);
  return p ? p : fallback;
}

// A logit-server process with `workers` local workers and its own data dir.
class Server {
 public:
  Server(const TempDir& dir, int workers, const std::string& data_dir_name = "data",
         const std::string& tag = "server") {
    const std::string out = dir.Path(tag + ".out");
    proc_ = std::make_unique<Subprocess>(
        std::vector<std::string>{
            Binary("LOGIT_SERVER_BIN", "logit-server"), "--listen", "127.0.0.1:0",
            "--local-workers", std::to_string(workers), "--worker-binary",
            Binary("LOGIT_WORKER", "logit-worker"), "--data-dir", dir.Path(data_dir_name),
            "--data-root", "/usr/share/datasets", "--worker-timeout", "3", "--heartbeat-ms", "100"},
        out, dir.Path(tag + ".err"));
    const auto deadline = Clock::now() + std::chrono::seconds(90);
    while (Clock::now() < deadline && address_.empty() && proc_->running()) {
      const std::string text = ReadWholeFile(out);
      const std::string key = "listening on ";
      const size_t at = text.find(key);
      if (at != std::string::npos) {
        address_ = text.substr(at + key.size(), text.find(' ', at + key.size()) - at - key.size());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    stub_ = v1::TrainingService::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }
  ~Server() { Stop(); }
  // SIGTERM, then the process must exit (it stops its workers first).
  void Stop() {
    if (!proc_->running()) return;
    proc_->Kill(SIGTERM);
    EXPECT_TRUE(proc_->Wait(std::chrono::seconds(30))) << "logit-server did not stop";
    EXPECT_EQ(proc_->exit_code(), 0) << proc_->err();
  }
  const std::string& address() const { return address_; }
  pid_t pid() const { return proc_->pid(); }
  v1::TrainingService::Stub* stub() { return stub_.get(); }
  std::string err() const { return proc_->err(); }

 private:
  std::unique_ptr<Subprocess> proc_;
  std::string address_;
  std::unique_ptr<v1::TrainingService::Stub> stub_;
};

grpc::Status Upload(v1::TrainingService::Stub* stub, const std::string& name,
                    const std::string& bytes, v1::Dataset* out) {
  grpc::ClientContext ctx;
  auto w = stub->UploadDataset(&ctx, out);
  v1::UploadDatasetRequest head;
  head.mutable_info()->set_name(name);
  w->Write(head);
  for (size_t i = 0; i < bytes.size(); i += 1000) {  // many chunks
    v1::UploadDatasetRequest c;
    c.set_chunk(bytes.substr(i, 1000));
    w->Write(c);
  }
  w->WritesDone();
  return w->Finish();
}

absl::StatusOr<v1::Job> Submit(v1::TrainingService::Stub* stub, const v1::JobSpec& spec) {
  grpc::ClientContext ctx;
  v1::SubmitJobRequest req;
  *req.mutable_spec() = spec;
  v1::Job job;
  grpc::Status st = stub->SubmitJob(&ctx, req, &job);
  if (!st.ok())
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
  return job;
}

std::vector<v1::JobEvent> Watch(v1::TrainingService::Stub* stub, const std::string& id,
                                int64_t from = 1) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(240));
  v1::WatchJobRequest req;
  req.set_job_id(id);
  req.set_from_sequence(from);
  auto reader = stub->WatchJob(&ctx, req);
  std::vector<v1::JobEvent> events;
  v1::JobEvent ev;
  while (reader->Read(&ev)) events.push_back(ev);
  EXPECT_TRUE(reader->Finish().ok());
  return events;
}

v1::Job Get(v1::TrainingService::Stub* stub, const std::string& id) {
  grpc::ClientContext ctx;
  v1::GetJobRequest req;
  req.set_job_id(id);
  v1::Job job;
  EXPECT_TRUE(stub->GetJob(&ctx, req, &job).ok());
  return job;
}

v1::Job WaitForState(v1::TrainingService::Stub* stub, const std::string& id, v1::JobState s,
                     std::chrono::seconds timeout = std::chrono::seconds(60)) {
  const auto deadline = Clock::now() + timeout;
  v1::Job job;
  while (Clock::now() < deadline) {
    job = Get(stub, id);
    if (job.state() == s) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return job;
}

std::string DownloadModel(v1::TrainingService::Stub* stub, const std::string& id,
                          v1::ModelInfo* info) {
  grpc::ClientContext ctx;
  v1::GetModelRequest req;
  req.set_model_id(id);
  auto reader = stub->GetModel(&ctx, req);
  v1::GetModelResponse part;
  std::string bytes;
  while (reader->Read(&part)) {
    if (part.has_info()) *info = part.info();
    bytes += part.chunk();
  }
  EXPECT_TRUE(reader->Finish().ok());
  return bytes;
}

v1::JobSpec IrisSpec(const std::string& dataset, int workers) {
  v1::JobSpec s;
  s.set_data("dataset:" + dataset);
  s.set_label_column("target");
  s.set_l2(0.01);
  s.set_tol(1e-10);
  s.set_workers(workers);
  return s;
}

v1::JobSpec FashionSpec(int workers, int64_t epochs) {
  v1::JobSpec s;
  s.set_data("server:fashion-mnist/train-images-idx3-ubyte.gz");
  s.set_labels("server:fashion-mnist/train-labels-idx1-ubyte.gz");
  s.set_optimizer("adam");
  s.set_epochs(epochs);
  s.set_workers(workers);
  return s;
}

TEST(Server, IrisWithOneAndTwoWorkersSucceedsAndServesItsModel) {
  TempDir dir;
  Server server(dir, 2);
  ASSERT_FALSE(server.address().empty()) << server.err();
  v1::Dataset iris;
  ASSERT_TRUE(Upload(server.stub(), "iris.csv", ReadWholeFile(TestData("iris.csv")), &iris).ok());

  // The in-process kernel on the same data is the reference.
  DataConfig dc;
  dc.train.path = TestData("iris.csv");
  dc.train.label_column = "target";
  TrainOptions opts;
  opts.l2 = 0.01;
  opts.tol = 1e-10;
  auto local = RunTrainingJob(dc, opts);
  ASSERT_TRUE(local.ok()) << local.status();

  for (int workers : {1, 2}) {
    SCOPED_TRACE(absl::StrCat(workers, " workers"));
    auto job = Submit(server.stub(), IrisSpec(iris.id(), workers));
    ASSERT_TRUE(job.ok()) << job.status();
    const std::vector<v1::JobEvent> events = Watch(server.stub(), job->id());
    ASSERT_GE(events.size(), 4u);
    for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].sequence(), int64_t(i + 1));
    EXPECT_EQ(events[0].state_change().state(), v1::QUEUED);
    EXPECT_EQ(events[1].state_change().state(), v1::RUNNING);
    int64_t last_epoch = 0;
    for (size_t i = 2; i + 1 < events.size(); ++i) {
      ASSERT_TRUE(events[i].has_epoch());
      EXPECT_EQ(events[i].epoch().epoch(), last_epoch + 1);
      last_epoch = events[i].epoch().epoch();
      EXPECT_GT(events[i].epoch().train_loss(), 0);
    }
    const v1::JobEvent& last = events.back();
    ASSERT_EQ(last.state_change().state(), v1::SUCCEEDED) << last.state_change().reason();
    ASSERT_TRUE(last.has_job());
    const std::string model_id = last.job().model_id();
    ASSERT_FALSE(model_id.empty());
    EXPECT_NEAR(last.job().result().objective(), local->result.objective, 1e-9);

    // The downloaded model is the workers' model: it equals the local kernel's and predicts
    // like it, locally and through the server.
    v1::ModelInfo info;
    const std::string bytes = DownloadModel(server.stub(), model_id, &info);
    EXPECT_EQ(info.num_features(), 4);
    EXPECT_EQ(info.num_classes(), 3);
    EXPECT_EQ(static_cast<int64_t>(bytes.size()), info.size_bytes());
    const std::string path = dir.Write(model_id + ".npz", bytes);
    auto model = LoadModel(path);
    ASSERT_TRUE(model.ok()) << model.status();
    for (size_t i = 0; i < model->weights.size(); ++i) {
      EXPECT_NEAR(model->weights[i], local->result.model.weights[i], 1e-5);
    }
    ReadOptions ro;
    ro.path = TestData("iris.csv");
    ro.label_column = "target";
    auto data = ReadDataset(ro);
    ASSERT_TRUE(data.ok());
    auto local_p = PredictProba(*model, *data);
    ASSERT_TRUE(local_p.ok());
    grpc::ClientContext ctx;
    v1::PredictRequest preq;
    preq.set_model_id(model_id);
    preq.mutable_features()->Add(data->dense_f32.begin(), data->dense_f32.end());
    v1::PredictResponse presp;
    ASSERT_TRUE(server.stub()->Predict(&ctx, preq, &presp).ok());
    ASSERT_EQ(presp.probabilities_size(), static_cast<int>(local_p->size()));
    for (size_t i = 0; i < local_p->size(); ++i) {
      EXPECT_NEAR(presp.probabilities(i), (*local_p)[i], 1e-6);
    }
    EXPECT_EQ(presp.labels(0), 0);
  }
}

class FashionMnistJob : public ::testing::TestWithParam<int> {};

TEST_P(FashionMnistJob, SucceedsAndReportsAccuracy) {
  TempDir dir;
  Server server(dir, 2);
  v1::JobSpec spec = FashionSpec(GetParam(), 2);
  spec.set_test_data("server:fashion-mnist/t10k-images-idx3-ubyte.gz");
  spec.set_test_labels("server:fashion-mnist/t10k-labels-idx1-ubyte.gz");
  spec.set_val_split(0.1);
  auto job = Submit(server.stub(), spec);
  ASSERT_TRUE(job.ok()) << job.status();
  const auto events = Watch(server.stub(), job->id());
  ASSERT_EQ(events.back().state_change().state(), v1::SUCCEEDED)
      << events.back().state_change().reason();
  const v1::Job& done = events.back().job();
  EXPECT_TRUE(done.result().has_test_accuracy());
  EXPECT_GT(done.result().test_accuracy(), 0.78);
  int epochs = 0;
  for (const auto& e : events) {
    if (!e.has_epoch()) continue;
    ++epochs;
    EXPECT_TRUE(e.epoch().has_validation());
    EXPECT_GT(e.epoch().val_accuracy(), 0.7);
  }
  EXPECT_EQ(epochs, 2);
}

INSTANTIATE_TEST_SUITE_P(Server, FashionMnistJob, ::testing::Values(1, 2),
                         [](const auto& info) { return std::to_string(info.param) + "_workers"; });

TEST(Server, OpenInferenceProtocolServesTheModel) {
  TempDir dir;
  Server server(dir, 1);
  v1::Dataset iris;
  ASSERT_TRUE(Upload(server.stub(), "iris.csv", ReadWholeFile(TestData("iris.csv")), &iris).ok());
  auto job = Submit(server.stub(), IrisSpec(iris.id(), 1));
  ASSERT_TRUE(job.ok());
  const std::string model = Watch(server.stub(), job->id()).back().job().model_id();
  ASSERT_FALSE(model.empty());
  auto oip = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext ctx;
    inference::ServerLiveResponse live;
    ASSERT_TRUE(oip->ServerLive(&ctx, {}, &live).ok());
    EXPECT_TRUE(live.live());
  }
  {
    grpc::ClientContext ctx;
    inference::ModelReadyRequest r;
    r.set_name(model);
    inference::ModelReadyResponse ready;
    ASSERT_TRUE(oip->ModelReady(&ctx, r, &ready).ok());
    EXPECT_TRUE(ready.ready());
    grpc::ClientContext ctx2;
    r.set_name("model-404");
    ASSERT_TRUE(oip->ModelReady(&ctx2, r, &ready).ok());
    EXPECT_FALSE(ready.ready());
  }
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest r;
    r.set_name(model);
    inference::ModelMetadataResponse meta;
    ASSERT_TRUE(oip->ModelMetadata(&ctx, r, &meta).ok());
    ASSERT_EQ(meta.inputs_size(), 1);
    EXPECT_EQ(meta.inputs(0).datatype(), "FP32");
    EXPECT_EQ(meta.inputs(0).shape(1), 4);
    ASSERT_EQ(meta.outputs_size(), 2);
    EXPECT_EQ(meta.outputs(0).name(), "probabilities");
    EXPECT_EQ(meta.outputs(0).shape(1), 3);
    EXPECT_EQ(meta.outputs(1).name(), "label");
    EXPECT_EQ(meta.outputs(1).datatype(), "INT64");
  }
  const std::vector<float> rows = {5.1f, 3.5f, 1.4f, 0.2f, 6.7f, 3.0f, 5.2f, 2.3f};
  v1::PredictResponse expected;
  {
    grpc::ClientContext ctx;
    v1::PredictRequest p;
    p.set_model_id(model);
    p.mutable_features()->Add(rows.begin(), rows.end());
    ASSERT_TRUE(server.stub()->Predict(&ctx, p, &expected).ok());
  }
  for (bool raw : {false, true}) {
    SCOPED_TRACE(raw ? "raw_input_contents" : "typed contents");
    inference::ModelInferRequest r;
    r.set_model_name(model);
    r.set_id("req-1");
    auto* in = r.add_inputs();
    in->set_name("input");
    in->set_datatype("FP32");
    in->add_shape(2);
    in->add_shape(4);
    if (raw) {
      r.add_raw_input_contents(
          std::string(reinterpret_cast<const char*>(rows.data()), rows.size() * 4));
    } else {
      in->mutable_contents()->mutable_fp32_contents()->Add(rows.begin(), rows.end());
    }
    inference::ModelInferResponse out;
    grpc::ClientContext ctx;
    ASSERT_TRUE(oip->ModelInfer(&ctx, r, &out).ok());
    EXPECT_EQ(out.id(), "req-1");
    ASSERT_EQ(out.outputs_size(), 2);
    EXPECT_EQ(out.outputs(0).shape(0), 2);
    EXPECT_EQ(out.outputs(0).shape(1), 3);
    std::vector<float> p(6);
    std::vector<int64_t> labels(2);
    if (raw) {
      ASSERT_EQ(out.raw_output_contents_size(), 2);
      std::memcpy(p.data(), out.raw_output_contents(0).data(), 24);
      std::memcpy(labels.data(), out.raw_output_contents(1).data(), 16);
    } else {
      for (int i = 0; i < 6; ++i) p[i] = out.outputs(0).contents().fp32_contents(i);
      for (int i = 0; i < 2; ++i) labels[i] = out.outputs(1).contents().int64_contents(i);
    }
    for (int i = 0; i < 6; ++i) EXPECT_NEAR(p[i], expected.probabilities(i), 1e-6);
    EXPECT_EQ(labels[0], 0);
    EXPECT_EQ(labels[1], 2);
  }
  inference::ModelInferRequest bad;
  bad.set_model_name(model);
  auto* in = bad.add_inputs();
  in->set_datatype("FP32");
  in->add_shape(2);
  in->add_shape(4);
  in->mutable_contents()->add_fp32_contents(1);
  inference::ModelInferResponse out;
  grpc::ClientContext ctx;
  const grpc::Status st = oip->ModelInfer(&ctx, bad, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("inputs[0]"), std::string::npos) << st.error_message();
}

// grpc.health.v1.Health/Check through a generic stub: the request (service "") is empty and
// a SERVING reply is the bytes 08 01 (field 1 = 1).
TEST(Server, HealthCheckSaysServing) {
  TempDir dir;
  Server server(dir, 0);
  grpc::GenericStub stub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  grpc::ByteBuffer request, response;
  grpc::Slice empty;
  request = grpc::ByteBuffer(&empty, 1);
  auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
  cq.Shutdown();
}

TEST(Server, GangSchedulingRunsJobsInTurnAndWaitsForEnoughWorkers) {
  TempDir dir;
  Server server(dir, 2);
  auto first = Submit(server.stub(), FashionSpec(2, 3));
  auto second = Submit(server.stub(), FashionSpec(2, 1));
  auto big = Submit(server.stub(), FashionSpec(3, 1));
  ASSERT_TRUE(first.ok() && second.ok() && big.ok());
  // The second starts only after the first has finished (2 workers, 2 needed each).
  const auto ev1 = Watch(server.stub(), first->id());
  const auto ev2 = Watch(server.stub(), second->id());
  ASSERT_EQ(ev1.back().state_change().state(), v1::SUCCEEDED);
  ASSERT_EQ(ev2.back().state_change().state(), v1::SUCCEEDED);
  const v1::Job j1 = Get(server.stub(), first->id());
  const v1::Job j2 = Get(server.stub(), second->id());
  EXPECT_GE(google::protobuf::util::TimeUtil::TimestampToNanoseconds(j2.started()),
            google::protobuf::util::TimeUtil::TimestampToNanoseconds(j1.finished()));
  // The 3-worker job waits, saying why, until a third worker registers.
  v1::Job waiting = Get(server.stub(), big->id());
  EXPECT_EQ(waiting.state(), v1::QUEUED);
  EXPECT_NE(waiting.reason().find("waiting for 3 idle workers"), std::string::npos)
      << waiting.reason();
  Subprocess third({Binary("LOGIT_WORKER", "logit-worker"), "--server", server.address()},
                   dir.Path("third.out"), dir.Path("third.err"));
  const auto ev3 = Watch(server.stub(), big->id());
  EXPECT_EQ(ev3.back().state_change().state(), v1::SUCCEEDED) << third.err();
  third.Kill(SIGTERM);
  EXPECT_TRUE(third.Wait(std::chrono::seconds(10)));
}

TEST(Server, CancelsQueuedAndRunningJobsAndFreesTheWorkers) {
  TempDir dir;
  Server server(dir, 2);
  auto queued = Submit(server.stub(), FashionSpec(3, 1));  // never fits on 2 workers
  ASSERT_TRUE(queued.ok());
  grpc::ClientContext c1;
  v1::CancelJobRequest creq;
  creq.set_job_id(queued->id());
  v1::Job cancelled;
  ASSERT_TRUE(server.stub()->CancelJob(&c1, creq, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::CANCELLED);

  auto running = Submit(server.stub(), FashionSpec(2, 1000));
  ASSERT_TRUE(running.ok());
  // Wait for the first epoch, then cancel.
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline && Get(server.stub(), running->id()).last_sequence() < 3) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // A live watcher also gets transient in-epoch progress (about twice a second).
  {
    grpc::ClientContext wctx;
    wctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::WatchJobRequest wreq;
    wreq.set_job_id(running->id());
    wreq.set_from_sequence(1);
    auto reader = server.stub()->WatchJob(&wctx, wreq);
    v1::JobEvent ev;
    bool progress = false;
    while (!progress && reader->Read(&ev)) {
      if (!ev.has_progress()) continue;
      progress = true;
      EXPECT_GT(ev.progress().step(), 0);
      EXPECT_EQ(ev.progress().steps_per_epoch(), (30000 + 127) / 128);  // per rank: 128 rows
      EXPECT_GT(ev.progress().samples_per_second(), 0);
    }
    EXPECT_TRUE(progress);
    wctx.TryCancel();
  }
  grpc::ClientContext c2;
  creq.set_job_id(running->id());
  const auto cancel_at = Clock::now();
  ASSERT_TRUE(server.stub()->CancelJob(&c2, creq, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::CANCELLED);
  // The ranks stop and the workers take the next job.
  auto next = Submit(server.stub(), FashionSpec(2, 1));
  ASSERT_TRUE(next.ok());
  const v1::Job started = WaitForState(server.stub(), next->id(), v1::RUNNING);
  EXPECT_EQ(started.state(), v1::RUNNING);
  EXPECT_LT(Clock::now() - cancel_at, std::chrono::seconds(5));
  EXPECT_EQ(Watch(server.stub(), next->id()).back().state_change().state(), v1::SUCCEEDED);
}

TEST(Server, WatchersOfAFinishedJobGetItsHistoryFromAnyEvent) {
  TempDir dir;
  Server server(dir, 1);
  v1::Dataset iris;
  ASSERT_TRUE(Upload(server.stub(), "iris.csv", ReadWholeFile(TestData("iris.csv")), &iris).ok());
  auto job = Submit(server.stub(), IrisSpec(iris.id(), 1));
  ASSERT_TRUE(job.ok());
  const auto live = Watch(server.stub(), job->id());
  const auto again = Watch(server.stub(), job->id());
  ASSERT_EQ(live.size(), again.size());
  const auto tail = Watch(server.stub(), job->id(), 3);
  ASSERT_EQ(tail.size(), live.size() - 2);
  EXPECT_EQ(tail.front().sequence(), 3);
  // Concurrent watchers all see the same stream.
  std::vector<std::thread> threads;
  std::vector<size_t> sizes(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { sizes[i] = Watch(server.stub(), job->id()).size(); });
  }
  for (auto& t : threads) t.join();
  for (size_t s : sizes) EXPECT_EQ(s, live.size());
}

TEST(Server, InvalidSpecsAndUnknownIdsGetClearErrors) {
  TempDir dir;
  Server server(dir, 1);
  v1::Dataset iris;
  ASSERT_TRUE(Upload(server.stub(), "iris.csv", ReadWholeFile(TestData("iris.csv")), &iris).ok());
  struct Bad {
    std::function<void(v1::JobSpec*)> edit;
    absl::StatusCode code;
    const char* names;
  };
  const std::vector<Bad> cases = {
      {[](v1::JobSpec* s) { s->set_batch_size(-1); }, absl::StatusCode::kInvalidArgument,
       "batch_size"},
      {[](v1::JobSpec* s) { s->set_lr(-1); }, absl::StatusCode::kInvalidArgument, "lr"},
      {[](v1::JobSpec* s) { s->set_l2(-1); }, absl::StatusCode::kInvalidArgument, "l2"},
      {[](v1::JobSpec* s) { s->set_l1(-0.5); }, absl::StatusCode::kInvalidArgument, "l1"},
      {[](v1::JobSpec* s) { s->set_optimizer("newton"); }, absl::StatusCode::kInvalidArgument,
       "optimizer"},
      {[](v1::JobSpec* s) { s->set_classes(1); }, absl::StatusCode::kInvalidArgument, "classes"},
      {[](v1::JobSpec* s) {
         s->set_val_split(0.6);
         s->set_test_split(0.5);
       },
       absl::StatusCode::kInvalidArgument, "val_split"},
      {[](v1::JobSpec* s) { s->set_workers(-2); }, absl::StatusCode::kInvalidArgument, "workers"},
      {[](v1::JobSpec* s) { s->set_data("/etc/passwd"); }, absl::StatusCode::kInvalidArgument,
       "data"},
      {[](v1::JobSpec* s) { s->set_data("server:../../etc/passwd"); },
       absl::StatusCode::kPermissionDenied, "data"},
      {[](v1::JobSpec* s) { s->set_test_data("server:fashion-mnist/nope.gz"); },
       absl::StatusCode::kInvalidArgument, "test_data"},
      {[](v1::JobSpec* s) { s->set_data("dataset:dataset-999"); }, absl::StatusCode::kNotFound,
       "data"},
  };
  for (const Bad& b : cases) {
    v1::JobSpec spec = IrisSpec(iris.id(), 1);
    b.edit(&spec);
    auto job = Submit(server.stub(), spec);
    EXPECT_THAT(job, ::logit::testing::StatusIs(b.code, b.names));
  }
  grpc::ClientContext c1;
  v1::GetJobRequest g;
  g.set_job_id("job-404");
  v1::Job j;
  EXPECT_EQ(server.stub()->GetJob(&c1, g, &j).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext c2;
  v1::PredictRequest p;
  p.set_model_id("model-404");
  p.add_features(1);
  v1::PredictResponse pr;
  EXPECT_EQ(server.stub()->Predict(&c2, p, &pr).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext c3;
  v1::DeleteModelRequest d;
  d.set_model_id("model-404");
  v1::DeleteModelResponse dr;
  EXPECT_EQ(server.stub()->DeleteModel(&c3, d, &dr).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::ModelInfo info;
  grpc::ClientContext c4;
  v1::GetModelRequest gm;
  gm.set_model_id("model-404");
  auto reader = server.stub()->GetModel(&c4, gm);
  v1::GetModelResponse part;
  while (reader->Read(&part)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(Server, MalformedUploadedDataFailsTheJobNamingTheLine) {
  TempDir dir;
  Server server(dir, 2);
  v1::Dataset bad;
  ASSERT_TRUE(
      Upload(server.stub(), "bad.csv", "x,y\n0.1,0\n0.9,1\n0.2,0\n0.8,oops\n0.4,1\n", &bad).ok());
  v1::JobSpec spec;
  spec.set_data("dataset:" + bad.id());
  spec.set_workers(2);
  auto job = Submit(server.stub(), spec);
  ASSERT_TRUE(job.ok()) << job.status();
  const auto events = Watch(server.stub(), job->id());
  const v1::JobEvent& last = events.back();
  EXPECT_EQ(last.state_change().state(), v1::FAILED);
  EXPECT_NE(last.state_change().reason().find("bad.csv:5"), std::string::npos)
      << last.state_change().reason();
}

// Child processes of `parent` (from /proc).
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = ReadWholeFile(entry.path().string() + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent && state != 'Z') out.push_back(std::stoi(name));
  }
  return out;
}

TEST(Server, ALostWorkerFailsItsJobWithAReasonAndIsReplaced) {
  TempDir dir;
  Server server(dir, 2);
  auto job = Submit(server.stub(), FashionSpec(2, 1000));
  ASSERT_TRUE(job.ok());
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline && Get(server.stub(), job->id()).last_sequence() < 3) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::vector<pid_t> workers = ChildrenOf(server.pid());
  ASSERT_EQ(workers.size(), 2u);
  kill(workers[0], SIGKILL);
  const auto events = Watch(server.stub(), job->id());
  const v1::JobEvent& last = events.back();
  EXPECT_EQ(last.state_change().state(), v1::FAILED);
  const std::string reason = last.state_change().reason();
  EXPECT_TRUE(reason.find("lost") != std::string::npos) << reason;
  // The pool starts a replacement; 2-worker jobs run again.
  auto next = Submit(server.stub(), FashionSpec(2, 1));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(Watch(server.stub(), next->id()).back().state_change().state(), v1::SUCCEEDED);
  EXPECT_NE(server.err().find("starting another"), std::string::npos);
}

TEST(Server, RestartKeepsJobsEventsModelsAndDatasets) {
  TempDir dir;
  std::string job_id, model_id, dataset_id;
  size_t events = 0;
  {
    Server server(dir, 1, "data", "first");
    v1::Dataset iris;
    ASSERT_TRUE(Upload(server.stub(), "iris.csv", ReadWholeFile(TestData("iris.csv")), &iris).ok());
    dataset_id = iris.id();
    auto job = Submit(server.stub(), IrisSpec(iris.id(), 1));
    ASSERT_TRUE(job.ok());
    const auto ev = Watch(server.stub(), job->id());
    ASSERT_EQ(ev.back().state_change().state(), v1::SUCCEEDED);
    job_id = job->id();
    model_id = ev.back().job().model_id();
    events = ev.size();
    server.Stop();
  }
  Server server(dir, 1, "data", "second");
  const v1::Job job = Get(server.stub(), job_id);
  EXPECT_EQ(job.state(), v1::SUCCEEDED);
  EXPECT_EQ(job.model_id(), model_id);
  EXPECT_EQ(Watch(server.stub(), job_id).size(), events);
  v1::ModelInfo info;
  EXPECT_FALSE(DownloadModel(server.stub(), model_id, &info).empty());
  auto again = Submit(server.stub(), IrisSpec(dataset_id, 1));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NE(again->id(), job_id);  // ids keep counting
  EXPECT_EQ(Watch(server.stub(), again->id()).back().state_change().state(), v1::SUCCEEDED);
  grpc::ClientContext ctx;
  v1::DeleteModelRequest d;
  d.set_model_id(model_id);
  v1::DeleteModelResponse dr;
  EXPECT_TRUE(server.stub()->DeleteModel(&ctx, d, &dr).ok());
}

}  // namespace
}  // namespace logit
