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
#include "tests/integration/server_fixture.h"
#include "tests/integration/subprocess.h"
#include "tests/unit/test_util.h"
#include "worker/model/predict.h"
#include "worker/job.h"
#include "worker/model/model_io.h"

namespace logit {
namespace {

using namespace ::logit::testing;  // NOLINT: the fixture's helpers
using ::logit::testing::FashionDir;
using ::logit::testing::ReadWholeFile;
using ::logit::testing::Subprocess;
using ::logit::testing::TempDir;
using ::logit::testing::TestData;
v1::JobSpec FashionSpec(int workers, int64_t epochs) {
  v1::JobSpec s;
  s.set_data("server:fashion-mnist/train-images-idx3-ubyte.gz");
  s.set_labels("server:fashion-mnist/train-labels-idx1-ubyte.gz");
  s.set_optimizer(v1::ADAM);
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
      if (events[i].has_checkpoint()) {  // the server's default period: every 10 iterations
        EXPECT_EQ(events[i].checkpoint().epoch() % 10, 0);
        continue;
      }
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
  const std::string model = TrainIrisModel(server);
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

TEST(Server, HealthCheckSaysServing) {
  TempDir dir;
  Server server(dir, 0);
  EXPECT_EQ(HealthCheck(server.address()), "SERVING");
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
