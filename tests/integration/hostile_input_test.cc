// Hostile requests and files through a real logit-server and real worker processes: each one
// gets a clear error or fails its own job with the cause named, and afterwards the server still
// answers health checks and the same workers train the next job.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "logit/v1/training.grpc.pb.h"
#include "logit/v1/worker.grpc.pb.h"
#include "tests/integration/server_fixture.h"
#include "worker/data/npy.h"
#include "worker/model/model_io.h"

namespace logit {
namespace {

using namespace ::logit::testing;  // NOLINT: the fixture's helpers

// Iris trains and serves predictions: the server and its workers are healthy.
void ExpectHealthyAndTrains(Server& server) {
  EXPECT_EQ(HealthCheck(server.address()), "SERVING");
  EXPECT_FALSE(TrainIrisModel(server).empty()) << "Iris did not train after the hostile input";
}

std::string Gzip(const std::string& bytes, const std::string& path) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
  return ReadWholeFile(path);
}

std::string BigEndian32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
}

TEST(HostileInput, ModelInferWithAnOverflowingShapeIsInvalidAndTheServerStaysUp) {
  TempDir dir;
  Server server(dir, 1, "data", "server", {"--max-predict-values", "100"});
  ASSERT_FALSE(server.address().empty()) << server.err();
  const std::string model = TrainIrisModel(server);
  ASSERT_FALSE(model.empty());
  auto oip = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  struct Case {
    std::vector<int64_t> shape;
    std::string raw;  // raw_input_contents[0]
    std::string expect;
  };
  // 2^62 + 4 values of 4 bytes wrap to 16 bytes in 64-bit arithmetic: the crash of old.
  const std::vector<Case> cases = {
      {{(int64_t{1} << 62) + 4}, std::string(16, '\0'), "inputs[0].shape"},
      {{int64_t{1} << 40, int64_t{1} << 40}, std::string(16, '\0'), "inputs[0].shape"},
      {{4, -1}, std::string(16, '\0'), "negative"},
      {{INT64_MAX, 2}, std::string(16, '\0'), "inputs[0].shape"},
      {{2, 2}, std::string(16, '\0'), "inputs[0].shape[1]: 2, but model"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat("shape[0]=", c.shape[0]));
    inference::ModelInferRequest r;
    r.set_model_name(model);
    auto* in = r.add_inputs();
    in->set_name("input");
    in->set_datatype("FP32");
    for (int64_t s : c.shape) in->add_shape(s);
    r.add_raw_input_contents(c.raw);
    inference::ModelInferResponse out;
    grpc::ClientContext ctx;
    const grpc::Status st = oip->ModelInfer(&ctx, r, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find(c.expect), std::string::npos) << st.error_message();
  }
  // Too many probabilities for one response (34 rows x 3 classes > 100): RESOURCE_EXHAUSTED
  // naming the limit, before anything is computed.
  {
    v1::PredictRequest p;
    p.set_model_id(model);
    p.mutable_features()->Resize(4 * 34, 0.5f);
    v1::PredictResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status st = server.stub()->Predict(&ctx, p, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
    EXPECT_NE(st.error_message().find("--max-predict-values=100"), std::string::npos);
  }
  // Too many rows for one request: RESOURCE_EXHAUSTED naming the limit.
  {
    v1::PredictRequest p;
    p.set_model_id(model);
    p.mutable_features()->Resize(4 * ((1 << 20) + 1), 0.5f);
    v1::PredictResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status st = server.stub()->Predict(&ctx, p, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
    EXPECT_NE(st.error_message().find("--max-predict-rows"), std::string::npos);
  }
  ExpectHealthyAndTrains(server);
}

TEST(HostileInput, HostileDataFilesFailTheirJobsNamingTheCauseAndTheWorkerTakesTheNextJob) {
  TempDir dir;
  Server server(dir, 1);
  ASSERT_FALSE(server.address().empty()) << server.err();
  const std::vector<pid_t> workers_before = ChildrenOf(server.pid());

  const int64_t huge_rows = int64_t{1} << 62;
  const std::string npy_overflow = EncodeNpy("<f4", {huge_rows, 4}, "\0\0\0\0", 4);
  const int64_t one = 1;
  const std::string npy_labels = EncodeNpy("<i8", {1}, &one, 8);
  const std::string npy_no_features = EncodeNpy("<f4", {huge_rows, 0}, "", 0);
  // IDX: three dimensions of 2^32 - 1 (the product overflows 64 bits), and a gzip bomb's
  // promise: 60000 x 28 x 28 bytes in a file of a few dozen.
  std::string idx_overflow("\0\0\x08\x03", 4);
  for (int i = 0; i < 3; ++i) idx_overflow += BigEndian32(0xffffffffu);
  idx_overflow += "abcd";
  std::string idx_labels("\0\0\x08\x01", 4);
  idx_labels += BigEndian32(1) + "\x01";
  std::string idx_bomb("\0\0\x08\x03", 4);
  idx_bomb += BigEndian32(60000) + BigEndian32(28) + BigEndian32(28) + "abcd";
  const std::string gz_bomb = Gzip(idx_bomb, dir.Path("bomb.gz"));
  const std::string gz_labels = Gzip(idx_labels, dir.Path("labels.gz"));
  // A CSV whose first row is 200,000 columns wide, then 100,000 short rows: rows x columns
  // would be 80 GB.
  std::string wide_csv;
  for (int c = 0; c < 200000; ++c) wide_csv += c == 0 ? "1" : ",1";
  wide_csv += "\n";
  for (int r = 0; r < 100000; ++r) wide_csv += "1,0\n";
  const std::string iris = ReadWholeFile(TestData("iris.csv"));

  struct Case {
    std::string name;
    std::string data_name, data;
    std::string labels_name, labels;
    std::string expect;  // in the FAILED job's reason
    v1::JobSpec spec;    // data and labels are filled in
  };
  v1::JobSpec diverging;
  diverging.set_optimizer(v1::SGD);
  diverging.set_lr(1e38);
  diverging.set_l2(0.01);
  diverging.set_epochs(5);
  diverging.set_label_column("target");
  std::vector<Case> cases = {
      {"npy shape overflow",
       "x.npy",
       npy_overflow,
       "y.npy",
       npy_labels,
       "x.npy: truncated data",
       {}},
      {"npy rows without features",
       "z.npy",
       npy_no_features,
       "y.npy",
       npy_labels,
       "rows have 0 features",
       {}},
      {"idx dimension overflow",
       "x-ubyte",
       idx_overflow,
       "y-ubyte",
       idx_labels,
       "more than the file can hold",
       {}},
      {"idx.gz bomb header",
       "x-ubyte.gz",
       gz_bomb,
       "y-ubyte.gz",
       gz_labels,
       "more than the file can hold",
       {}},
      {"wide first csv row",
       "wide.csv",
       wide_csv,
       "",
       "",
       "wide.csv:2: expected 200000 fields, found 2 (ragged row)",
       {}},
      {"libsvm index 4e9",
       "big.svm",
       "0 1:1 4000000000:1\n1 2:1\n",
       "",
       "",
       "big.svm:1: feature index 4000000000 is past the largest supported feature",
       {}},
      {"diverged sgd", "iris.csv", iris, "", "", "diverged", diverging},
  };
  for (Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::Dataset data, labels;
    ASSERT_TRUE(Upload(server.stub(), c.data_name, c.data, &data).ok());
    c.spec.set_data("dataset:" + data.id());
    if (!c.labels_name.empty()) {
      ASSERT_TRUE(Upload(server.stub(), c.labels_name, c.labels, &labels).ok());
      c.spec.set_labels("dataset:" + labels.id());
    }
    auto job = Submit(server.stub(), c.spec);
    ASSERT_TRUE(job.ok()) << job.status();
    const auto events = Watch(server.stub(), job->id());
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().state_change().state(), v1::FAILED);
    EXPECT_NE(events.back().state_change().reason().find(c.expect), std::string::npos)
        << events.back().state_change().reason();
  }
  ExpectHealthyAndTrains(server);
  // The same worker process did all of it: none crashed and was replaced.
  EXPECT_EQ(ChildrenOf(server.pid()), workers_before);
  EXPECT_EQ(server.err().find("starting another"), std::string::npos) << server.err();
}

// A client of the worker API acting as a worker (Register, Heartbeat, UploadModel).
class FakeWorker {
 public:
  explicit FakeWorker(const std::string& address)
      : stub_(v1::WorkerService::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {
    grpc::ClientContext ctx;
    v1::RegisterWorkerRequest req;
    req.set_hostname("fake");
    v1::RegisterWorkerResponse resp;
    EXPECT_TRUE(stub_->RegisterWorker(&ctx, req, &resp).ok());
    id_ = resp.worker_id();
    secret_ = resp.worker_secret();
  }
  // Heartbeats until an assignment arrives (or 30 s pass).
  std::optional<v1::Assignment> WaitForAssignment() {
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline) {
      grpc::ClientContext ctx;
      v1::HeartbeatRequest req;
      req.set_worker_id(id_);
      req.set_worker_secret(secret_);
      v1::HeartbeatResponse resp;
      if (stub_->Heartbeat(&ctx, req, &resp).ok() && resp.has_assignment()) {
        return resp.assignment();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return std::nullopt;
  }
  grpc::Status Upload(const v1::Assignment& a, const std::string& bytes,
                      const std::string& secret_override = "") {
    grpc::ClientContext ctx;
    v1::UploadModelResponse resp;
    auto w = stub_->UploadModel(&ctx, &resp);
    v1::UploadModelRequest head;
    head.mutable_header()->set_worker_id(id_);
    head.mutable_header()->set_worker_secret(secret_override.empty() ? secret_ : secret_override);
    head.mutable_header()->set_job_id(a.job_id());
    head.mutable_header()->set_attempt(a.attempt());
    w->Write(head);
    v1::UploadModelRequest chunk;
    chunk.set_chunk(bytes);
    w->Write(chunk);
    w->WritesDone();
    return w->Finish();
  }
  grpc::Status ReportDone(const v1::Assignment& a) {
    grpc::ClientContext ctx;
    v1::ReportProgressRequest req;
    req.set_worker_id(id_);
    req.set_worker_secret(secret_);
    req.set_job_id(a.job_id());
    req.set_attempt(a.attempt());
    req.set_rank(a.rank());
    req.mutable_outcome()->set_ok(true);
    v1::TrainingSummary* summary = req.mutable_outcome()->mutable_summary();
    summary->set_train_loss(std::numeric_limits<double>::quiet_NaN());
    summary->set_epochs_run(-1);
    summary->set_stop_reason(static_cast<v1::StopReason>(99));
    v1::ReportProgressResponse resp;
    return stub_->ReportProgress(&ctx, req, &resp);
  }

  // SET key=value in the attempt's rendezvous store, as rank a.rank() of it.
  grpc::Status StoreSet(const v1::Assignment& a, const std::string& key) {
    grpc::ClientContext ctx;
    v1::RendezvousRequest req;
    req.mutable_from()->set_worker_id(id_);
    req.mutable_from()->set_worker_secret(secret_);
    req.mutable_from()->set_job_id(a.job_id());
    req.mutable_from()->set_attempt(a.attempt());
    req.mutable_from()->set_rank(a.rank());
    req.set_op(v1::RendezvousRequest::SET);
    req.set_key(key);
    req.set_value("v");
    v1::RendezvousResponse resp;
    return stub_->Rendezvous(&ctx, req, &resp);
  }

 private:
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::string id_, secret_;
};

std::string ModelBytes(const LinearModel& m, const TempDir& dir, const std::string& name) {
  EXPECT_TRUE(SaveModel(m, dir.Path(name)).ok());
  return ReadWholeFile(dir.Path(name));
}

TEST(HostileInput, DegenerateOrForeignModelUploadsAreRefusedAndTheJobFails) {
  TempDir dir;
  Server server(dir, 0);
  ASSERT_FALSE(server.address().empty()) << server.err();
  FakeWorker worker(server.address());
  FakeWorker other(server.address());
  v1::Dataset iris;
  ASSERT_TRUE(Upload(server.stub(), "iris.csv", ReadWholeFile(TestData("iris.csv")), &iris).ok());
  auto job = Submit(server.stub(), IrisSpec(iris.id(), 1));
  ASSERT_TRUE(job.ok());
  // Either fake worker may get the rank; the other is the foreigner.
  std::optional<v1::Assignment> a = worker.WaitForAssignment();
  FakeWorker* holder = &worker;
  FakeWorker* foreigner = &other;
  if (!a) {
    a = other.WaitForAssignment();
    std::swap(holder, foreigner);
  }
  ASSERT_TRUE(a.has_value());
  // The attempt's store is the coordinator's, open to its ranks only, while the attempt runs.
  EXPECT_EQ(a->store_port(), 0);
  EXPECT_TRUE(holder->StoreSet(*a, "joined/0").ok());
  EXPECT_EQ(foreigner->StoreSet(*a, "joined/0").error_code(), grpc::StatusCode::PERMISSION_DENIED);

  LinearModel no_features;  // W of shape (0,): Predict once divided by its feature count
  no_features.num_features = 0;
  no_features.num_classes = 2;
  no_features.bias = {0.5f};
  grpc::Status st = holder->Upload(*a, ModelBytes(no_features, dir, "zero.npz"));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("0 features"), std::string::npos) << st.error_message();

  LinearModel good;
  good.num_features = 4;
  good.num_classes = 3;
  good.weights.assign(12, 0.1f);
  good.bias.assign(3, 0.0f);
  const std::string good_bytes = ModelBytes(good, dir, "good.npz");
  st = foreigner->Upload(*a, good_bytes);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  st = holder->Upload(*a, good_bytes, std::string(64, '0'));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_EQ(foreigner->ReportDone(*a).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // The holder reports success (with a summary holding a NaN, a negative count and an unknown
  // stop reason) without a model: the job fails, it is not left RUNNING.
  ASSERT_TRUE(holder->ReportDone(*a).ok());
  const v1::Job done = WaitForState(server.stub(), job->id(), v1::FAILED);
  EXPECT_EQ(done.state(), v1::FAILED);
  EXPECT_NE(done.reason().find("without uploading the model"), std::string::npos) << done.reason();
  // The attempt's store, with every key in it, is gone with the attempt.
  EXPECT_NE(holder->StoreSet(*a, "joined/0").error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(HealthCheck(server.address()), "SERVING");
}

TEST(HostileInput, AKilledServerTakesItsLocalWorkersWithIt) {
  TempDir dir;
  Server server(dir, 2);
  ASSERT_FALSE(server.address().empty()) << server.err();
  std::vector<pid_t> workers;
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < until && (workers = ChildrenOf(server.pid())).size() < 2) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(workers.size(), 2u);
  server.Kill();
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  auto alive = [](pid_t pid) {
    const std::string stat = ReadWholeFile(absl::StrCat("/proc/", pid, "/stat"));
    const size_t close = stat.rfind(')');
    return close != std::string::npos && stat[close + 2] != 'Z';
  };
  for (pid_t pid : workers) {
    while (Clock::now() < deadline && alive(pid)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_FALSE(alive(pid)) << "local worker " << pid << " outlived its killed server";
  }
}

}  // namespace
}  // namespace logit
