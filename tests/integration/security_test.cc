// Who may do what, and how much: bearer tokens and roles, TLS and mutual TLS (throw-away
// certificates made with openssl), and the server's limits, through raw gRPC clients, the real
// `logit` CLI and real local workers.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "logit/v1/training.grpc.pb.h"
#include "logit/v1/worker.grpc.pb.h"
#include "tests/integration/server_fixture.h"

namespace logit {
namespace {

using namespace ::logit::testing;  // NOLINT: the fixture's helpers

constexpr char kClientToken[] = "client-token-4d1c8a0f9e";
constexpr char kWorkerToken[] = "worker-token-77b0e3c2aa";

struct Cli {
  int code = -1;
  std::string out, err;
};

// Runs the logit CLI with `args` (and `env` assignments before it, as a shell would).
Cli Logit(const TempDir& dir, const std::string& args, const std::string& env = "") {
  const std::string cmd =
      absl::StrCat(env, " ", Binary("LOGIT_CLI", "logit"), " ", args, " > ", dir.Path("cli.out"),
                   " 2> ", dir.Path("cli.err"), " < /dev/null");
  const int st = std::system(cmd.c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, ReadWholeFile(dir.Path("cli.out")),
          ReadWholeFile(dir.Path("cli.err"))};
}

void WithToken(grpc::ClientContext* ctx, const std::string& token) {
  ctx->AddMetadata("authorization", "Bearer " + token);
}

grpc::StatusCode ListJobsCode(const std::string& address, const std::string& token) {
  auto stub = v1::TrainingService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  if (!token.empty()) WithToken(&ctx, token);
  v1::ListJobsResponse resp;
  return stub->ListJobs(&ctx, {}, &resp).error_code();
}

grpc::Status RegisterWorker(const std::string& address, const std::string& token) {
  auto stub =
      v1::WorkerService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  if (!token.empty()) WithToken(&ctx, token);
  v1::RegisterWorkerResponse resp;
  return stub->RegisterWorker(&ctx, {}, &resp);
}

grpc::StatusCode CallCode(const std::string& address, const std::string& method,
                          const std::string& token) {
  return GenericCall(address, method, "", token).first.error_code();
}

TEST(Security, EveryMethodOfEveryServiceNeedsTheTokenOfItsRole) {
  TempDir dir;
  const std::string client_file = dir.Write("client.token", kClientToken);
  const std::string worker_file = dir.Write("worker.token", kWorkerToken);
  Server server(dir, 0, "data", "server",
                {"--auth-token-file", client_file, "--worker-token-file", worker_file});
  ASSERT_FALSE(server.address().empty()) << server.err();
  const std::vector<std::string> client_methods = {"/logit.v1.TrainingService/SubmitJob",
                                                   "/logit.v1.TrainingService/GetJob",
                                                   "/logit.v1.TrainingService/ListJobs",
                                                   "/logit.v1.TrainingService/CancelJob",
                                                   "/logit.v1.TrainingService/WatchJob",
                                                   "/logit.v1.TrainingService/UploadDataset",
                                                   "/logit.v1.TrainingService/ListDatasets",
                                                   "/logit.v1.TrainingService/DeleteDataset",
                                                   "/logit.v1.TrainingService/GetModel",
                                                   "/logit.v1.TrainingService/ListModels",
                                                   "/logit.v1.TrainingService/DeleteModel",
                                                   "/logit.v1.TrainingService/Predict",
                                                   "/inference.GRPCInferenceService/ServerLive",
                                                   "/inference.GRPCInferenceService/ServerReady",
                                                   "/inference.GRPCInferenceService/ModelReady",
                                                   "/inference.GRPCInferenceService/ServerMetadata",
                                                   "/inference.GRPCInferenceService/ModelMetadata",
                                                   "/inference.GRPCInferenceService/ModelInfer"};
  const std::vector<std::string> worker_methods = {
      "/logit.v1.WorkerService/RegisterWorker", "/logit.v1.WorkerService/Heartbeat",
      "/logit.v1.WorkerService/ReportProgress", "/logit.v1.WorkerService/UploadModel"};
  for (const auto& [methods, own, other] :
       {std::tuple{&client_methods, kClientToken, kWorkerToken},
        std::tuple{&worker_methods, kWorkerToken, kClientToken}}) {
    for (const std::string& m : *methods) {
      SCOPED_TRACE(m);
      EXPECT_EQ(CallCode(server.address(), m, ""), grpc::StatusCode::UNAUTHENTICATED);
      EXPECT_EQ(CallCode(server.address(), m, "guess"), grpc::StatusCode::UNAUTHENTICATED);
      EXPECT_EQ(CallCode(server.address(), m, other), grpc::StatusCode::PERMISSION_DENIED);
      // With its own token the call gets past authorization (an empty request may still be
      // refused for what it lacks, e.g. a worker secret).
      const grpc::Status with_own = GenericCall(server.address(), m, "", own).first;
      EXPECT_NE(with_own.error_code(), grpc::StatusCode::UNAUTHENTICATED);
      EXPECT_EQ(with_own.error_message().find("authorization:"), std::string::npos)
          << with_own.error_message();
    }
  }
  // A registered worker's calls need its secret too.
  auto stub = v1::WorkerService::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  v1::RegisterWorkerResponse reg;
  {
    grpc::ClientContext ctx;
    WithToken(&ctx, kWorkerToken);
    ASSERT_TRUE(stub->RegisterWorker(&ctx, {}, &reg).ok());
  }
  for (const std::string& secret : {std::string(), std::string(64, 'a'), reg.worker_secret()}) {
    grpc::ClientContext hctx;
    WithToken(&hctx, kWorkerToken);
    v1::HeartbeatRequest hb;
    hb.set_worker_id(reg.worker_id());
    hb.set_worker_secret(secret);
    v1::HeartbeatResponse hr;
    const grpc::StatusCode code = stub->Heartbeat(&hctx, hb, &hr).error_code();
    EXPECT_EQ(code, secret == reg.worker_secret() ? grpc::StatusCode::OK
                                                  : grpc::StatusCode::PERMISSION_DENIED);
    grpc::ClientContext rctx;
    WithToken(&rctx, kWorkerToken);
    v1::ReportProgressRequest rp;
    rp.set_worker_id(reg.worker_id());
    rp.set_worker_secret(secret);
    rp.set_job_id("job-1");
    rp.mutable_outcome()->set_ok(true);
    v1::ReportProgressResponse rr;
    // Even with its secret, a worker may not report for a rank it does not hold.
    EXPECT_EQ(stub->ReportProgress(&rctx, rp, &rr).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
}

TEST(Security, TokensGateEveryServiceByRoleAndNeverReachTheLogs) {
  TempDir dir;
  const std::string client_file = dir.Write("client.token", std::string(kClientToken) + "\n");
  const std::string worker_file = dir.Write("worker.token", kWorkerToken);
  Server server(dir, 1, "data", "server",
                {"--auth-token-file", client_file, "--worker-token-file", worker_file});
  ASSERT_FALSE(server.address().empty()) << server.err();

  EXPECT_EQ(ListJobsCode(server.address(), ""), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListJobsCode(server.address(), "not-the-token"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListJobsCode(server.address(), kWorkerToken), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ListJobsCode(server.address(), kClientToken), grpc::StatusCode::OK);
  EXPECT_EQ(RegisterWorker(server.address(), "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(RegisterWorker(server.address(), kClientToken).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  {
    auto oip = inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    inference::ModelInferResponse out;
    const grpc::Status st = oip->ModelInfer(&ctx, {}, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_NE(st.error_message().find("Bearer"), std::string::npos) << st.error_message();
  }
  // Probes need no token.
  EXPECT_EQ(HealthCheck(server.address()), "SERVING");

  // With the client token, a job runs on the local worker, which got the worker token from its
  // server.
  auto stub = v1::TrainingService::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  v1::Dataset iris;
  {
    grpc::ClientContext ctx;
    WithToken(&ctx, kClientToken);
    auto w = stub->UploadDataset(&ctx, &iris);
    v1::UploadDatasetRequest head;
    head.mutable_info()->set_name("iris.csv");
    w->Write(head);
    v1::UploadDatasetRequest chunk;
    chunk.set_chunk(ReadWholeFile(TestData("iris.csv")));
    w->Write(chunk);
    w->WritesDone();
    ASSERT_TRUE(w->Finish().ok());
  }
  v1::Job job;
  {
    grpc::ClientContext ctx;
    WithToken(&ctx, kClientToken);
    v1::SubmitJobRequest req;
    *req.mutable_spec() = IrisSpec(iris.id(), 1);
    ASSERT_TRUE(stub->SubmitJob(&ctx, req, &job).ok());
  }
  v1::Job done;
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    grpc::ClientContext ctx;
    WithToken(&ctx, kClientToken);
    v1::GetJobRequest req;
    req.set_job_id(job.id());
    ASSERT_TRUE(stub->GetJob(&ctx, req, &done).ok());
    if (done.state() == v1::SUCCEEDED || done.state() == v1::FAILED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(done.state(), v1::SUCCEEDED) << done.reason();
  server.Stop();
  const std::string logs = ReadWholeFile(dir.Path("server.out")) + server.err();
  EXPECT_EQ(logs.find(kClientToken), std::string::npos);
  EXPECT_EQ(logs.find(kWorkerToken), std::string::npos);
}

TEST(Security, TheCliSendsItsTokenFromAFileOrTheEnvironmentAndSaysWhenItHasNone) {
  TempDir dir;
  const std::string client_file = dir.Write("client.token", kClientToken);
  Server server(dir, 1, "data", "server", {"--auth-token-file", client_file});
  ASSERT_FALSE(server.address().empty()) << server.err();
  const std::string flags = "--server " + server.address() + " ";

  Cli none = Logit(dir, flags + "jobs", "LOGIT_TOKEN=");
  EXPECT_EQ(none.code, 3) << none.err;  // credentials refused
  EXPECT_NE(none.err.find("--token-file or LOGIT_TOKEN"), std::string::npos) << none.err;

  Cli file = Logit(dir, flags + "--token-file " + client_file + " jobs");
  EXPECT_EQ(file.code, 0) << file.err;

  Cli env = Logit(
      dir,
      flags + "-o json train --data " + TestData("iris.csv") + " --label-column target --l2 0.01",
      absl::StrCat("LOGIT_TOKEN=", kClientToken));
  EXPECT_EQ(env.code, 0) << env.err;
  EXPECT_NE(env.out.find("\"SUCCEEDED\""), std::string::npos) << env.out;

  Cli missing = Logit(dir, flags + "--token-file " + dir.Path("nope") + " jobs");
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.err.find("--token-file: cannot read"), std::string::npos) << missing.err;
}

// A CA, a server certificate for 127.0.0.1 and a client certificate, all throw-away.
struct Certificates {
  explicit Certificates(const TempDir& dir) {
    const std::string d = dir.Path("");
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    dir.Write("server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    const std::string script = absl::StrCat(
        "set -e; cd ", d, "; ", "openssl req -x509 ", ec,
        " -days 2 -subj /CN=logit-test-ca -keyout ca.key -out ca.pem; ", "openssl req ", ec,
        " -subj /CN=127.0.0.1 -keyout server.key -out server.csr; ",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile server.ext -out server.crt; ",
        "cat server.crt ca.pem > server.pem; ", "openssl req ", ec,
        " -subj /CN=logit-client -keyout client.key -out client.csr; ",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-out client.pem",
        " > openssl.log 2>&1");
    ok = std::system(script.c_str()) == 0;
    ca = dir.Path("ca.pem");
    server_cert = dir.Path("server.pem");
    server_key = dir.Path("server.key");
    client_cert = dir.Path("client.pem");
    client_key = dir.Path("client.key");
  }
  bool ok = false;
  std::string ca, server_cert, server_key, client_cert, client_key;
};

std::shared_ptr<grpc::ChannelCredentials> Tls(const Certificates& c, bool client_cert) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ReadWholeFile(c.ca);
  if (client_cert) {
    o.pem_cert_chain = ReadWholeFile(c.client_cert);
    o.pem_private_key = ReadWholeFile(c.client_key);
  }
  return grpc::SslCredentials(o);
}

grpc::StatusCode ListJobsOver(const std::string& address,
                              std::shared_ptr<grpc::ChannelCredentials> creds) {
  auto stub = v1::TrainingService::NewStub(grpc::CreateChannel(address, creds));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ListJobsResponse resp;
  return stub->ListJobs(&ctx, {}, &resp).error_code();
}

TEST(Security, TlsServesOnlyTlsClientsAndLocalWorkersTrainOverIt) {
  TempDir dir;
  Certificates certs(dir);
  ASSERT_TRUE(certs.ok) << ReadWholeFile(dir.Path("openssl.log"));
  Server server(dir, 1, "data", "server",
                {"--tls-cert", certs.server_cert, "--tls-key", certs.server_key});
  ASSERT_FALSE(server.address().empty()) << server.err();
  EXPECT_NE(ListJobsOver(server.address(), grpc::InsecureChannelCredentials()),
            grpc::StatusCode::OK);
  EXPECT_EQ(ListJobsOver(server.address(), Tls(certs, false)), grpc::StatusCode::OK);
  EXPECT_EQ(HealthCheck(server.address(), Tls(certs, false)), "SERVING");
  Cli train = Logit(dir, "--server " + server.address() + " --tls-ca " + certs.ca +
                             " -o json train --data " + TestData("iris.csv") +
                             " --label-column target --l2 0.01");
  EXPECT_EQ(train.code, 0) << train.err;
  EXPECT_NE(train.out.find("\"SUCCEEDED\""), std::string::npos) << train.out;
  Cli plain = Logit(dir, "--server " + server.address() + " jobs");
  EXPECT_EQ(plain.code, 3) << plain.err;  // no TLS: the server cannot be reached
}

TEST(Security, MutualTlsRequiresAClientCertificateSignedByTheClientCa) {
  TempDir dir;
  Certificates certs(dir);
  ASSERT_TRUE(certs.ok) << ReadWholeFile(dir.Path("openssl.log"));
  Server server(dir, 1, "data", "server",
                {"--tls-cert", certs.server_cert, "--tls-key", certs.server_key, "--tls-client-ca",
                 certs.ca});
  ASSERT_FALSE(server.address().empty()) << server.err();
  EXPECT_NE(ListJobsOver(server.address(), Tls(certs, false)), grpc::StatusCode::OK);
  EXPECT_EQ(ListJobsOver(server.address(), Tls(certs, true)), grpc::StatusCode::OK);
  Cli train = Logit(dir, "--server " + server.address() + " --tls-ca " + certs.ca + " --tls-cert " +
                             certs.client_cert + " --tls-key " + certs.client_key +
                             " -o json train --data " + TestData("iris.csv") +
                             " --label-column target --l2 0.01");
  EXPECT_EQ(train.code, 0) << train.err;
  EXPECT_NE(train.out.find("\"SUCCEEDED\""), std::string::npos) << train.out;
}

TEST(Security, LimitsRefuseWithResourceExhaustedNamingTheFlag) {
  TempDir dir;
  Server server(dir, 0, "data", "server",
                {"--max-queued-jobs", "1", "--max-workers-per-job", "2", "--max-upload-bytes",
                 "2000", "--max-watchers-per-job", "1"});
  ASSERT_FALSE(server.address().empty()) << server.err();
  v1::Dataset ds;
  grpc::Status st = Upload(server.stub(), "iris.csv", ReadWholeFile(TestData("iris.csv")), &ds);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("--max-upload-bytes=2000"), std::string::npos);
  // Nothing of the refused upload is left on disk.
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir.Path("data/datasets"))) {
    EXPECT_FALSE(e.is_regular_file()) << e.path();
  }
  ASSERT_TRUE(Upload(server.stub(), "small.csv", "x,y\n0.1,0\n0.9,1\n", &ds).ok());

  v1::JobSpec spec;
  spec.set_data("dataset:" + ds.id());
  spec.set_workers(3);
  auto refused = Submit(server.stub(), spec);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("--max-workers-per-job=2"), std::string::npos);

  spec.set_workers(1);
  auto queued = Submit(server.stub(), spec);  // no workers: it stays queued
  ASSERT_TRUE(queued.ok()) << queued.status();
  auto second = Submit(server.stub(), spec);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(second.status().message().find("--max-queued-jobs=1"), std::string::npos);

  // One watcher holds the only slot; the second is refused; cancelling ends the first.
  grpc::ClientContext first_ctx;
  v1::WatchJobRequest wreq;
  wreq.set_job_id(queued->id());
  auto first = server.stub()->WatchJob(&first_ctx, wreq);
  v1::JobEvent ev;
  ASSERT_TRUE(first->Read(&ev));  // the watch is live on the server now
  {
    grpc::ClientContext ctx;
    auto reader = server.stub()->WatchJob(&ctx, wreq);
    while (reader->Read(&ev)) {
    }
    const grpc::Status ws = reader->Finish();
    EXPECT_EQ(ws.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << ws.error_message();
    EXPECT_NE(ws.error_message().find("--max-watchers-per-job=1"), std::string::npos);
  }
  {
    grpc::ClientContext ctx;
    v1::CancelJobRequest creq;
    creq.set_job_id(queued->id());
    v1::Job cancelled;
    ASSERT_TRUE(server.stub()->CancelJob(&ctx, creq, &cancelled).ok());
  }
  while (first->Read(&ev)) {
  }
  EXPECT_TRUE(first->Finish().ok());
}

TEST(Security, ADeadlineFailsAQueuedOrRunningJobAndFreesItsWorker) {
  TempDir dir;
  Server server(dir, 1);
  ASSERT_FALSE(server.address().empty()) << server.err();
  v1::JobSpec endless;
  endless.set_data("server:fashion-mnist/train-images-idx3-ubyte.gz");
  endless.set_labels("server:fashion-mnist/train-labels-idx1-ubyte.gz");
  endless.set_optimizer(v1::ADAM);
  endless.set_epochs(1000);
  endless.set_deadline_seconds(4);
  auto running = Submit(server.stub(), endless);
  ASSERT_TRUE(running.ok()) << running.status();
  v1::JobSpec waiting = endless;  // needs two workers: never placed
  waiting.set_workers(2);
  waiting.set_deadline_seconds(1);
  auto queued = Submit(server.stub(), waiting);
  ASSERT_TRUE(queued.ok()) << queued.status();
  for (const auto& job : {*running, *queued}) {
    const v1::Job done =
        WaitForState(server.stub(), job.id(), v1::FAILED, std::chrono::seconds(60));
    EXPECT_EQ(done.state(), v1::FAILED) << job.id();
    EXPECT_NE(done.reason().find("deadline exceeded"), std::string::npos) << done.reason();
  }
  v1::JobSpec bad = endless;
  bad.set_deadline_seconds(-1);
  EXPECT_EQ(Submit(server.stub(), bad).status().code(), absl::StatusCode::kInvalidArgument);
  // The worker stopped the job's rank and trains the next job.
  EXPECT_FALSE(TrainIrisModel(server).empty());
}

}  // namespace
}  // namespace logit

namespace logit {
namespace {

using namespace ::logit::testing;  // NOLINT: the fixture's helpers

std::string WaitForHealth(const std::string& address, const std::string& want) {
  std::string got;
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline && (got = HealthCheck(address)) != want) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return got;
}

TEST(Security, HealthSaysNotServingWhileTheDataDirCannotBeWritten) {
  TempDir dir;
  Server server(dir, 0);
  ASSERT_FALSE(server.address().empty()) << server.err();
  EXPECT_EQ(WaitForHealth(server.address(), "SERVING"), "SERVING");
  // Root ignores permissions, so the data dir is moved away and a plain file takes its path:
  // nothing can be created under it. The store keeps its open database, the probe fails.
  const std::string data = dir.Path("data");
  std::filesystem::rename(data, dir.Path("data.away"));
  dir.Write("data", "not a directory");
  EXPECT_EQ(WaitForHealth(server.address(), "NOT_SERVING"), "NOT_SERVING");
  EXPECT_NE(server.err().find("ERROR logit-server: storage probe failed"), std::string::npos)
      << server.err();
  std::filesystem::remove(data);
  std::filesystem::rename(dir.Path("data.away"), data);
  EXPECT_EQ(WaitForHealth(server.address(), "SERVING"), "SERVING");
}

}  // namespace
}  // namespace logit
