#include "server/grpc_services.h"

#include <fstream>

#include "absl/strings/str_cat.h"

namespace logit {

namespace {

constexpr size_t kChunkBytes = 1 << 20;  // well under the 4 MiB message limit

template <typename T>
grpc::Status Reply(const absl::StatusOr<T>& result, T* out) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *out = *result;
  return grpc::Status::OK;
}

// Streams `info`, then the file at `path` in chunks (DATA_LOSS naming `what` if it is missing).
template <typename Response, typename Info>
grpc::Status StreamFile(grpc::ServerContext* ctx, const std::string& path, const std::string& what,
                        const Info& info, grpc::ServerWriter<Response>* writer) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return grpc::Status(grpc::StatusCode::DATA_LOSS, what + ": its file is missing");
  Response head;
  *head.mutable_info() = info;
  if (!writer->Write(head)) return grpc::Status::CANCELLED;
  std::string buf(kChunkBytes, '\0');
  while (in && !ctx->IsCancelled()) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    Response chunk;
    chunk.set_chunk(buf.data(), static_cast<size_t>(n));
    if (!writer->Write(chunk)) return grpc::Status::CANCELLED;
  }
  return grpc::Status::OK;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbers.
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

grpc::Status ObservePredict(ServerMetrics& metrics, const char* protocol,
                            std::chrono::steady_clock::time_point start, grpc::Status status,
                            int64_t rows) {
  metrics.Predict(protocol, ServerMetrics::CodeName(status.error_code()), status.ok() ? rows : 0,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return status;
}

grpc::Status TrainingServiceImpl::SubmitJob(grpc::ServerContext* ctx,
                                            const v1::SubmitJobRequest* req, v1::Job* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  return Reply(c_->SubmitJob(req->spec()), resp);
}

grpc::Status TrainingServiceImpl::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                                         v1::Job* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  return Reply(c_->GetJob(req->job_id()), resp);
}

grpc::Status TrainingServiceImpl::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                           v1::ListJobsResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  for (v1::Job& j : c_->ListJobs(*req)) *resp->add_jobs() = std::move(j);
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::CancelJob(grpc::ServerContext* ctx,
                                            const v1::CancelJobRequest* req, v1::Job* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  return Reply(c_->CancelJob(req->job_id()), resp);
}

grpc::Status TrainingServiceImpl::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                           grpc::ServerWriter<v1::JobEvent>* writer) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  absl::Status st = c_->WatchJob(
      req->job_id(), req->from_sequence(),
      [writer](const v1::JobEvent& e) { return writer->Write(e); },
      [ctx] { return ctx->IsCancelled(); });
  return ToGrpcStatus(st);
}

grpc::Status TrainingServiceImpl::UploadDataset(
    grpc::ServerContext* ctx, grpc::ServerReader<v1::UploadDatasetRequest>* reader,
    v1::Dataset* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  v1::UploadDatasetRequest msg;
  if (!reader->Read(&msg) || !msg.has_info()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "info: the first message of an upload must carry DatasetInfo");
  }
  const v1::DatasetInfo info = msg.info();
  auto next = [reader, &msg](std::string* chunk) -> absl::StatusOr<bool> {
    if (!reader->Read(&msg)) return false;
    if (!msg.has_chunk() && msg.has_info()) {
      return absl::InvalidArgumentError("info: DatasetInfo may only come first");
    }
    *chunk = msg.chunk();
    return true;
  };
  return Reply(c_->UploadDataset(info, next), resp);
}

grpc::Status TrainingServiceImpl::ListDatasets(grpc::ServerContext* ctx,
                                               const v1::ListDatasetsRequest* req,
                                               v1::ListDatasetsResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  auto datasets = c_->ListDatasets(req->sha256());
  if (!datasets.ok()) return ToGrpcStatus(datasets.status());
  for (v1::Dataset& d : *datasets) *resp->add_datasets() = std::move(d);
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::DeleteDataset(grpc::ServerContext* ctx,
                                                const v1::DeleteDatasetRequest* req,
                                                v1::DeleteDatasetResponse*) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  return ToGrpcStatus(c_->DeleteDataset(req->dataset_id()));
}

grpc::Status TrainingServiceImpl::GetModel(grpc::ServerContext* ctx, const v1::GetModelRequest* req,
                                           grpc::ServerWriter<v1::GetModelResponse>* writer) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  auto rec = c_->GetModel(req->model_id());
  if (!rec.ok()) return ToGrpcStatus(rec.status());
  if (req->info_only()) {
    v1::GetModelResponse head;
    *head.mutable_info() = rec->info;
    writer->Write(head);
    return grpc::Status::OK;
  }
  std::ifstream in(rec->path, std::ios::binary);
  if (!in) {
    return grpc::Status(grpc::StatusCode::DATA_LOSS,
                        absl::StrCat("model '", req->model_id(), "': its file is missing"));
  }
  v1::GetModelResponse head;
  *head.mutable_info() = rec->info;
  if (!writer->Write(head)) return grpc::Status::CANCELLED;
  std::string buf(kChunkBytes, '\0');
  while (in && !ctx->IsCancelled()) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    v1::GetModelResponse chunk;
    chunk.set_chunk(buf.data(), static_cast<size_t>(n));
    if (!writer->Write(chunk)) return grpc::Status::CANCELLED;
  }
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                                             v1::ListModelsResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  for (v1::ModelInfo& m : c_->ListModels()) *resp->add_models() = std::move(m);
  return grpc::Status::OK;
}

grpc::Status TrainingServiceImpl::DeleteModel(grpc::ServerContext* ctx,
                                              const v1::DeleteModelRequest* req,
                                              v1::DeleteModelResponse*) {
  if (absl::Status st = auth_->Check(*ctx, Role::kClient); !st.ok()) return ToGrpcStatus(st);
  return ToGrpcStatus(c_->DeleteModel(req->model_id()));
}

grpc::Status TrainingServiceImpl::Predict(grpc::ServerContext* ctx, const v1::PredictRequest* req,
                                          v1::PredictResponse* resp) {
  const auto start = std::chrono::steady_clock::now();
  grpc::Status status = ToGrpcStatus(auth_->Check(*ctx, Role::kClient));
  if (status.ok()) status = Reply(c_->Predict(*req), resp);
  return ObservePredict(c_->metrics(), "logit", start, std::move(status), resp->labels_size());
}

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext* ctx,
                                               const v1::RegisterWorkerRequest* req,
                                               v1::RegisterWorkerResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kWorker); !st.ok()) return ToGrpcStatus(st);
  return Reply(c_->RegisterWorker(*req), resp);
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                          v1::HeartbeatResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kWorker); !st.ok()) return ToGrpcStatus(st);
  return Reply(c_->Heartbeat(*req), resp);
}

grpc::Status WorkerServiceImpl::ReportProgress(grpc::ServerContext* ctx,
                                               const v1::ReportProgressRequest* req,
                                               v1::ReportProgressResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kWorker); !st.ok()) return ToGrpcStatus(st);
  return Reply(c_->ReportProgress(*req), resp);
}

grpc::Status WorkerServiceImpl::UploadModel(grpc::ServerContext* ctx,
                                            grpc::ServerReader<v1::UploadModelRequest>* reader,
                                            v1::UploadModelResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kWorker); !st.ok()) return ToGrpcStatus(st);
  v1::UploadModelRequest msg;
  if (!reader->Read(&msg) || !msg.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "header: the first message of a model upload must carry ModelUpload");
  }
  const v1::ModelUpload header = msg.header();
  auto next = [reader, &msg](std::string* chunk) -> absl::StatusOr<bool> {
    if (!reader->Read(&msg)) return false;
    *chunk = msg.chunk();
    return true;
  };
  return Reply(c_->UploadModel(header, next), resp);
}

grpc::Status WorkerServiceImpl::UploadCheckpoint(
    grpc::ServerContext* ctx, grpc::ServerReader<v1::UploadCheckpointRequest>* reader,
    v1::UploadCheckpointResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kWorker); !st.ok()) return ToGrpcStatus(st);
  v1::UploadCheckpointRequest msg;
  if (!reader->Read(&msg) || !msg.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "header: the first message of a checkpoint upload must carry "
                        "CheckpointUpload");
  }
  const v1::CheckpointUpload header = msg.header();
  auto next = [reader, &msg](std::string* chunk) -> absl::StatusOr<bool> {
    if (!reader->Read(&msg)) return false;
    if (msg.has_header()) {
      return absl::InvalidArgumentError("header: CheckpointUpload may only come first");
    }
    *chunk = msg.chunk();
    return true;
  };
  return Reply(c_->UploadCheckpoint(header, next), resp);
}

grpc::Status WorkerServiceImpl::FetchCheckpoint(
    grpc::ServerContext* ctx, const v1::FetchCheckpointRequest* req,
    grpc::ServerWriter<v1::FetchCheckpointResponse>* writer) {
  if (absl::Status st = auth_->Check(*ctx, Role::kWorker); !st.ok()) return ToGrpcStatus(st);
  auto rec = c_->FindCheckpoint(*req);
  if (!rec.ok()) return ToGrpcStatus(rec.status());
  return StreamFile(ctx, rec->path,
                    absl::StrCat("checkpoint ", req->number(), " of ", req->from().job_id()),
                    rec->info, writer);
}

grpc::Status WorkerServiceImpl::FetchData(grpc::ServerContext* ctx,
                                          const v1::FetchDataRequest* req,
                                          grpc::ServerWriter<v1::FetchDataResponse>* writer) {
  if (absl::Status st = auth_->Check(*ctx, Role::kWorker); !st.ok()) return ToGrpcStatus(st);
  auto file = c_->OpenDataFile(*req);
  if (!file.ok()) return ToGrpcStatus(file.status());
  const auto& [path, info] = *file;
  const int64_t size = info.size_bytes();
  if (req->offset() < 0 || req->offset() > size || req->length() < 0) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("offset: [", req->offset(), ", +", req->length(), ") is not a byte range of ",
                     path, " (", size, " bytes)")));
  }
  v1::FetchDataResponse head;
  *head.mutable_info() = info;
  if (!writer->Write(head)) return grpc::Status::CANCELLED;
  if (req->info_only()) return grpc::Status::OK;
  const int64_t end =
      req->length() == 0 ? size : std::min(size, req->offset() + req->length());
  std::ifstream in(path, std::ios::binary);
  if (!in) return grpc::Status(grpc::StatusCode::DATA_LOSS, path + ": cannot be read");
  in.seekg(req->offset());
  std::string buf(kChunkBytes, '\0');
  for (int64_t at = req->offset(); at < end && !ctx->IsCancelled();) {
    const int64_t want = std::min<int64_t>(static_cast<int64_t>(buf.size()), end - at);
    in.read(buf.data(), static_cast<std::streamsize>(want));
    if (in.gcount() != want) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS, path + ": shorter than it was");
    }
    v1::FetchDataResponse chunk;
    chunk.set_chunk(buf.data(), static_cast<size_t>(want));
    if (!writer->Write(chunk)) return grpc::Status::CANCELLED;
    at += want;
  }
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::Rendezvous(grpc::ServerContext* ctx,
                                           const v1::RendezvousRequest* req,
                                           v1::RendezvousResponse* resp) {
  if (absl::Status st = auth_->Check(*ctx, Role::kWorker); !st.ok()) return ToGrpcStatus(st);
  return Reply(c_->Rendezvous(*req), resp);
}

}  // namespace logit
