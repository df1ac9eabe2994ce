// A logit-server process with local workers on loopback, and the raw-gRPC helpers the
// integration tests share (upload, submit, watch, health).
#ifndef LOGIT_TESTS_INTEGRATION_SERVER_FIXTURE_H_
#define LOGIT_TESTS_INTEGRATION_SERVER_FIXTURE_H_

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "logit/v1/training.grpc.pb.h"
#include "tests/integration/subprocess.h"
#include "tests/unit/test_util.h"

namespace logit::testing {

using Clock = std::chrono::steady_clock;

inline std::string Binary(const char* env, const char* fallback) {
  const char* p = std::getenv(env);
  return p ? p : fallback;
}

// A logit-server process with `workers` local workers and its own data dir.
class Server {
 public:
  // `extra` flags follow the defaults (auth, TLS, limits).
  Server(const TempDir& dir, int workers, const std::string& data_dir_name = "data",
         const std::string& tag = "server", const std::vector<std::string>& extra = {}) {
    const std::string out = dir.Path(tag + ".out");
    std::vector<std::string> argv = {Binary("LOGIT_SERVER_BIN", "logit-server"),
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--local-workers",
                                     std::to_string(workers),
                                     "--worker-binary",
                                     Binary("LOGIT_WORKER", "logit-worker"),
                                     "--data-dir",
                                     dir.Path(data_dir_name),
                                     "--data-root",
                                     "/usr/share/datasets",
                                     "--worker-timeout",
                                     "3",
                                     "--heartbeat-ms",
                                     "100"};
    for (size_t i = 0; i < extra.size(); ++i) {
      if (extra[i] == "--listen" && i + 1 < extra.size()) {
        argv[2] = extra[++i];  // a fixed address (a restarted server keeps its port)
      } else {
        argv.push_back(extra[i]);
      }
    }
    proc_ = std::make_unique<Subprocess>(argv, out, dir.Path(tag + ".err"));
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
  // SIGKILL: the server gets no chance to stop its workers.
  void Kill() {
    proc_->Kill(SIGKILL);
    proc_->Wait(std::chrono::seconds(10));
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

inline grpc::Status Upload(v1::TrainingService::Stub* stub, const std::string& name,
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

inline absl::StatusOr<v1::Job> Submit(v1::TrainingService::Stub* stub, const v1::JobSpec& spec) {
  grpc::ClientContext ctx;
  v1::SubmitJobRequest req;
  *req.mutable_spec() = spec;
  v1::Job job;
  grpc::Status st = stub->SubmitJob(&ctx, req, &job);
  if (!st.ok())
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
  return job;
}

inline std::vector<v1::JobEvent> Watch(v1::TrainingService::Stub* stub, const std::string& id,
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

inline v1::Job Get(v1::TrainingService::Stub* stub, const std::string& id) {
  grpc::ClientContext ctx;
  v1::GetJobRequest req;
  req.set_job_id(id);
  v1::Job job;
  EXPECT_TRUE(stub->GetJob(&ctx, req, &job).ok());
  return job;
}

inline v1::Job WaitForState(v1::TrainingService::Stub* stub, const std::string& id, v1::JobState s,
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

inline std::string DownloadModel(v1::TrainingService::Stub* stub, const std::string& id,
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

inline v1::JobSpec IrisSpec(const std::string& dataset, int workers) {
  v1::JobSpec s;
  s.set_data("dataset:" + dataset);
  s.set_label_column("target");
  s.set_l2(0.01);
  s.set_tol(1e-10);
  s.set_workers(workers);
  return s;
}

// Child processes of `parent` (from /proc).
inline std::vector<pid_t> ChildrenOf(pid_t parent) {
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

// Uploads Iris, trains it on one worker and returns the model id ("" when the job failed).
inline std::string TrainIrisModel(Server& server) {
  v1::Dataset iris;
  if (!Upload(server.stub(), "iris.csv", ReadWholeFile(TestData("iris.csv")), &iris).ok()) {
    return "";
  }
  auto job = Submit(server.stub(), IrisSpec(iris.id(), 1));
  if (!job.ok()) return "";
  const std::vector<v1::JobEvent> events = Watch(server.stub(), job->id());
  return events.empty() ? "" : events.back().job().model_id();
}

// Calls `method` ("/package.Service/Method") with the serialized `request` through a generic
// stub, as a unary call (streaming methods too: the server's checks come before any message),
// optionally with a bearer token; returns the status and the reply's bytes.
inline std::pair<grpc::Status, std::string> GenericCall(
    const std::string& address, const std::string& method, const std::string& request_bytes = "",
    const std::string& token = "",
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials()) {
  grpc::GenericStub stub(grpc::CreateChannel(address, creds));
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  auto call = stub.PrepareUnaryCall(&ctx, method, request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  std::string bytes;
  std::vector<grpc::Slice> slices;
  if (status.ok() && response.Dump(&slices).ok()) {
    for (const auto& sl : slices)
      bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  }
  return {status, bytes};
}

// grpc.health.v1.Health/Check (service ""): "SERVING", "NOT_SERVING", or the RPC's error.
// A SERVING reply is the bytes 08 01 (field 1 = 1).
inline std::string HealthCheck(
    const std::string& address,
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials()) {
  const auto [status, bytes] = GenericCall(address, "/grpc.health.v1.Health/Check", "", "", creds);
  if (!status.ok()) return "error: " + status.error_message();
  if (bytes == std::string("\x08\x01", 2)) return "SERVING";
  if (bytes == std::string("\x08\x02", 2)) return "NOT_SERVING";
  return "unknown";
}

}  // namespace logit::testing

#endif  // LOGIT_TESTS_INTEGRATION_SERVER_FIXTURE_H_
