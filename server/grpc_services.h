// The gRPC transport of the coordinator: thin handlers that unpack requests, call the
// Coordinator and map absl::Status to grpc::Status (in ToGrpcStatus, the only place).
#ifndef LOGIT_SERVER_GRPC_SERVICES_H_
#define LOGIT_SERVER_GRPC_SERVICES_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "logit/v1/training.grpc.pb.h"
#include "logit/v1/worker.grpc.pb.h"
#include "server/auth.h"
#include "server/coordinator.h"

namespace logit {

grpc::Status ToGrpcStatus(const absl::Status& status);

// Records a finished Predict / ModelInfer call (protocol "logit" / "oip") begun at `start`:
// its code, rows predicted and latency. Returns `status`.
grpc::Status ObservePredict(ServerMetrics& metrics, const char* protocol,
                            std::chrono::steady_clock::time_point start, grpc::Status status,
                            int64_t rows);

class TrainingServiceImpl final : public v1::TrainingService::Service {
 public:
  // Every call first passes `auth` with the client role.
  TrainingServiceImpl(Coordinator* coordinator, const Authorizer* auth)
      : c_(coordinator), auth_(auth) {}
  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest*, v1::Job*) override;
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest*, v1::Job*) override;
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*,
                        v1::ListJobsResponse*) override;
  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest*, v1::Job*) override;
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest*,
                        grpc::ServerWriter<v1::JobEvent>*) override;
  grpc::Status UploadDataset(grpc::ServerContext*, grpc::ServerReader<v1::UploadDatasetRequest>*,
                             v1::Dataset*) override;
  grpc::Status ListDatasets(grpc::ServerContext*, const v1::ListDatasetsRequest*,
                            v1::ListDatasetsResponse*) override;
  grpc::Status DeleteDataset(grpc::ServerContext*, const v1::DeleteDatasetRequest*,
                             v1::DeleteDatasetResponse*) override;
  grpc::Status GetModel(grpc::ServerContext*, const v1::GetModelRequest*,
                        grpc::ServerWriter<v1::GetModelResponse>*) override;
  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                          v1::ListModelsResponse*) override;
  grpc::Status DeleteModel(grpc::ServerContext*, const v1::DeleteModelRequest*,
                           v1::DeleteModelResponse*) override;
  grpc::Status Predict(grpc::ServerContext*, const v1::PredictRequest*,
                       v1::PredictResponse*) override;

 private:
  Coordinator* c_;
  const Authorizer* auth_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  // Every call first passes `auth` with the worker role.
  WorkerServiceImpl(Coordinator* coordinator, const Authorizer* auth)
      : c_(coordinator), auth_(auth) {}
  grpc::Status RegisterWorker(grpc::ServerContext*, const v1::RegisterWorkerRequest*,
                              v1::RegisterWorkerResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override;
  grpc::Status ReportProgress(grpc::ServerContext*, const v1::ReportProgressRequest*,
                              v1::ReportProgressResponse*) override;
  grpc::Status UploadModel(grpc::ServerContext*, grpc::ServerReader<v1::UploadModelRequest>*,
                           v1::UploadModelResponse*) override;
  grpc::Status UploadCheckpoint(grpc::ServerContext*,
                                grpc::ServerReader<v1::UploadCheckpointRequest>*,
                                v1::UploadCheckpointResponse*) override;
  grpc::Status FetchCheckpoint(grpc::ServerContext*, const v1::FetchCheckpointRequest*,
                               grpc::ServerWriter<v1::FetchCheckpointResponse>*) override;
  grpc::Status FetchData(grpc::ServerContext*, const v1::FetchDataRequest*,
                         grpc::ServerWriter<v1::FetchDataResponse>*) override;
  grpc::Status Rendezvous(grpc::ServerContext*, const v1::RendezvousRequest*,
                          v1::RendezvousResponse*) override;

 private:
  Coordinator* c_;
  const Authorizer* auth_;
};

}  // namespace logit

#endif  // LOGIT_SERVER_GRPC_SERVICES_H_
