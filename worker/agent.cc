#include "worker/agent.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <fstream>
#include <ostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "logit/v1/worker.grpc.pb.h"
#include "proto/connect.h"
#include "worker/agent_metrics.h"
#include "worker/checkpoint.h"
#include "worker/common/log.h"
#include "worker/common/status.h"
#include "worker/common/mutex.h"
#include "worker/dist/coordinator_kv.h"
#include "worker/dist/process_group.h"
#include "worker/job.h"
#include "worker/job_spec.h"
#include "worker/kernel/collective.h"
#include "worker/model/model_io.h"
#include "worker/summary.h"

namespace logit {

namespace {

// A rank's progress reports, sent in order from a thread of their own so that training never
// waits on the coordinator. Best effort and bounded: a report that fails (a coordinator that is
// down or slow) drops those queued behind it, and at most kMaxQueued wait; the rank's outcome is
// sent apart, after Close.
class ReportQueue {
 public:
  // `send` returns whether the report went through.
  explicit ReportQueue(std::function<bool(v1::ReportProgressRequest)> send)
      : send_(std::move(send)), thread_([this] { Loop(); }) {}
  ~ReportQueue() { Close(); }

  void Post(v1::ReportProgressRequest req) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.size() >= kMaxQueued) return;
      queue_.push_back(std::move(req));
    }
    cv_.notify_one();
  }

  // Sends what is queued (until a send fails), then stops the thread. Idempotent.
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  static constexpr size_t kMaxQueued = 1000;

  void Loop() {
    while (true) {
      v1::ReportProgressRequest req;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return closed_ || !queue_.empty(); });
        if (queue_.empty()) return;  // closed and drained
        req = std::move(queue_.front());
        queue_.pop_front();
      }
      if (!send_(std::move(req))) {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.clear();
      }
    }
  }

  std::function<bool(v1::ReportProgressRequest)> send_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::ReportProgressRequest> queue_;  // guarded by mu_
  bool closed_ = false;                          // guarded by mu_
  std::thread thread_;
};

// Rank 0's checkpoints, written and uploaded from a thread of their own so that training does
// not wait for them, and no more often than keeps their cost within ~5% of the wall time: after
// an upload that took u seconds the next starts 19 u later at the earliest. (Every 10 L-BFGS
// iterations, a Fashion-MNIST job's 12.7 MB state cost 30% of its training time: on two cores
// even a background upload takes the trainer's CPU.) Meanwhile the newest offered waits; an
// older waiting one is dropped (a resume needs only the newest).
class CheckpointUploader {
 public:
  explicit CheckpointUploader(std::function<void(const TrainingCheckpoint&)> upload)
      : upload_(std::move(upload)), thread_([this] { Loop(); }) {}
  ~CheckpointUploader() { Close(/*upload_waiting=*/false); }

  void Offer(const TrainingCheckpoint& checkpoint) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      waiting_ = checkpoint;
    }
    cv_.notify_one();
  }

  // Waits for the upload in progress (and the waiting checkpoint when `upload_waiting`), then
  // stops the thread. Idempotent.
  void Close(bool upload_waiting) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!upload_waiting) waiting_.reset();
      closed_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    while (true) {
      TrainingCheckpoint next;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return closed_ || waiting_.has_value(); });
        if (!waiting_) return;  // closed, nothing left
        // Not before the throttle allows (Close uploads the waiting one at once).
        if (!closed_ && cv_.wait_until(lock, next_allowed_, [this] { return closed_; })) {
          if (!waiting_) return;
        }
        next = std::move(*waiting_);
        waiting_.reset();
      }
      const auto start = std::chrono::steady_clock::now();
      upload_(next);
      const auto end = std::chrono::steady_clock::now();
      std::lock_guard<std::mutex> lock(mu_);
      next_allowed_ = end + kCostRatio * (end - start);
    }
  }

  static constexpr int kCostRatio = 19;  // idle time per upload time: uploads ~5% of the time

  std::function<void(const TrainingCheckpoint&)> upload_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<TrainingCheckpoint> waiting_;  // guarded by mu_
  std::chrono::steady_clock::time_point next_allowed_;  // guarded by mu_
  bool closed_ = false;                        // guarded by mu_
  std::thread thread_;
};

constexpr size_t kChunkBytes = 1 << 20;

void SetDeadline(grpc::ClientContext* ctx, int seconds) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

// Writes the file at `path` to a client stream in chunks of kChunkBytes; false when the stream
// broke (Finish then tells why) or the file could not be read.
template <typename Request>
bool WriteFileChunks(grpc::ClientWriter<Request>* writer, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::string buf(kChunkBytes, '\0');
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    Request chunk;
    chunk.set_chunk(buf.data(), static_cast<size_t>(n));
    if (!writer->Write(chunk)) return false;
  }
  return true;
}

// A per-process temporary file for a job attempt. POSIX rather than std::filesystem, which a
// pip LibTorch interposes (see test_util.h).
std::string TempPath(const v1::Assignment& a, const std::string& what) {
  const char* tmp = std::getenv("TMPDIR");
  return absl::StrCat(tmp != nullptr && *tmp != 0 ? tmp : "/tmp", "/logit-", getpid(), "-",
                      a.job_id(), "-", a.attempt(), "-", a.rank(), "-", what);
}

class Agent {
 public:
  Agent(const AgentOptions& options, std::shared_ptr<grpc::Channel> channel)
      : options_(options),
        own_metrics_(options.metrics == nullptr ? std::make_unique<AgentMetrics>() : nullptr),
        metrics_(options.metrics != nullptr ? options.metrics : own_metrics_.get()),
        stub_(v1::WorkerService::NewStub(channel)),
        data_(stub_, options.data) {}
  // (stub_ is shared: the attempt's rendezvous store calls through it too.)

  int Run(const std::atomic<bool>& stop) {
    // Failed registrations and heartbeats back off exponentially (up to kMaxBackoff), so that a
    // restarting coordinator is not flooded; the first success resets it.
    int failures = 0;
    while (!stop) {
      // A rank dropped by a re-registration must stop before this worker offers itself again:
      // a new registration is idle at once, and the next assignment must not wait for it.
      if (Identity().first.empty() && job_running_) {
        Sleep(stop, std::chrono::milliseconds(50));
        continue;
      }
      const bool ok = Identity().first.empty() ? Register() : Beat();
      failures = ok ? 0 : failures + 1;
      if (job_thread_.joinable() && !job_running_) job_thread_.join();
      Sleep(stop, ok ? interval_ : Backoff(failures));
    }
    cancel_ = true;
    if (job_thread_.joinable()) job_thread_.join();
    return 0;
  }

 private:
  std::chrono::milliseconds Backoff(int failures) const {
    std::chrono::milliseconds d = interval_;
    for (int i = 0; i < failures && d < kMaxBackoff; ++i) d *= 2;
    return std::min(d, kMaxBackoff);
  }

  static void Sleep(const std::atomic<bool>& stop, std::chrono::milliseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    while (!stop && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  bool Register() {
    v1::RegisterWorkerRequest req;
    req.set_hostname(LocalHostName());
    req.set_device(options_.device);
    req.set_threads(options_.threads);
    req.set_pid(getpid());
    v1::RegisterWorkerResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 3);
    ctx.set_wait_for_ready(true);  // a reconnecting channel is waited for, not failed at once
    grpc::Status st = stub_->RegisterWorker(&ctx, req, &resp);
    if (!st.ok()) {
      logging::Warn("cannot register",
                    {{"server", options_.server}, {"error", st.error_message()}});
      return false;
    }
    {
      MutexLock lock(&mu_);
      worker_id_ = resp.worker_id();
      worker_secret_ = resp.worker_secret();
    }
    interval_ = std::chrono::milliseconds(std::max<int64_t>(50, resp.heartbeat_interval_ms()));
    metrics_->SetRegistered(true);
    logging::Info("registered", {{"server", options_.server}, {"worker", resp.worker_id()}});
    return true;
  }

  // (worker id, secret) of the current registration; ("", "") before one.
  std::pair<std::string, std::string> Identity() {
    MutexLock lock(&mu_);
    return {worker_id_, worker_secret_};
  }

  // Returns false when the coordinator could not be reached.
  bool Beat() {
    v1::HeartbeatRequest req;
    {
      MutexLock lock(&mu_);
      req.set_worker_id(worker_id_);
      req.set_worker_secret(worker_secret_);
      if (job_running_) {
        req.set_job_id(job_id_);
        req.set_attempt(attempt_);
      }
    }
    v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 3);
    ctx.set_wait_for_ready(true);  // a reconnecting channel is waited for, not failed at once
    grpc::Status st = stub_->Heartbeat(&ctx, req, &resp);
    if (!st.ok()) {
      // The coordinator may be restarting: the running rank goes on (its collective fails on
      // its own if the attempt is gone) and the heartbeat is retried with backoff.
      metrics_->HeartbeatFailed();
      logging::Warn("heartbeat failed", {{"worker", req.worker_id()},
                                         {"server", options_.server},
                                         {"error", st.error_message()}});
      return false;
    }
    if (resp.reregister()) {
      // The coordinator forgot this worker (it was lost, or the coordinator restarted): the
      // rank it may still run belongs to no one now, so it stops.
      metrics_->SetRegistered(false);
      logging::Warn("the coordinator no longer knows this worker; registering again",
                    {{"worker", req.worker_id()}, {"job", req.job_id()}});
      MutexLock lock(&mu_);
      worker_id_.clear();
      worker_secret_.clear();
      cancel_ = true;
      return true;
    }
    if (resp.cancel()) cancel_ = true;
    // Assignments come at least once: one this worker runs or ran already is ignored.
    if (resp.has_assignment()) {
      const v1::Assignment& a = resp.assignment();
      const std::string key = absl::StrCat(a.job_id(), "/", a.attempt(), "/", a.rank());
      if (key == last_assignment_) return true;
      last_assignment_ = key;
    }
    if (resp.has_assignment()) {
      // The coordinator assigns only after this worker reported the previous rank's outcome,
      // so a job thread still alive is just returning: wait for it, never drop the assignment.
      if (job_thread_.joinable()) job_thread_.join();
      MutexLock lock(&mu_);
      job_id_ = resp.assignment().job_id();
      attempt_ = resp.assignment().attempt();
      cancel_ = false;
      job_running_ = true;
      job_thread_ = std::thread([this, a = resp.assignment()] {
        // Whatever a job throws (an allocation failure on a huge shard) fails that job and
        // leaves this worker serving the next one.
        try {
          RunAssignment(a);
        } catch (const std::bad_alloc&) {
          ReportOutcome(a, absl::ResourceExhaustedError("out of memory on this worker"), {});
        } catch (const std::exception& e) {
          ReportOutcome(a, absl::InternalError(absl::StrCat("worker: ", e.what())), {});
        }
        job_running_ = false;
      });
    }
    return true;
  }

  // Sends one report; false when it did not go through or the rank was told to stop.
  bool Report(const v1::Assignment& a, v1::ReportProgressRequest req) {
    const auto [id, secret] = Identity();
    req.set_worker_id(id);
    req.set_worker_secret(secret);
    req.set_job_id(a.job_id());
    req.set_attempt(a.attempt());
    req.set_rank(a.rank());
    v1::ReportProgressResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 10);
    const grpc::Status st = stub_->ReportProgress(&ctx, req, &resp);
    // Refused (this registration no longer holds the rank) or told to: the rank stops.
    if ((st.ok() && resp.cancel()) || st.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
        st.error_code() == grpc::StatusCode::NOT_FOUND) {
      cancel_ = true;
    }
    return st.ok() && !cancel_;
  }

  void ReportOutcome(const v1::Assignment& a, const absl::Status& st,
                     const v1::TrainingSummary& summary) {
    v1::ReportProgressRequest req;
    v1::RankOutcome* out = req.mutable_outcome();
    out->set_ok(st.ok());
    out->set_code(static_cast<int>(st.code()));
    out->set_message(std::string(st.message()));
    if (st.ok()) *out->mutable_summary() = summary;
    Report(a, std::move(req));
    const std::string outcome = st.ok()                                     ? "succeeded"
                                : st.code() == absl::StatusCode::kCancelled ? "cancelled"
                                                                            : "failed";
    metrics_->RankFinished(a.job_id(), a.rank(), outcome);
    logging::Log(outcome == "failed" ? logging::Level::kWarn : logging::Level::kInfo,
                 "rank finished",
                 {{"worker", Identity().first},
                  {"job", a.job_id()},
                  {"attempt", a.attempt()},
                  {"rank", a.rank()},
                  {"outcome", outcome},
                  {"error", st.message()}});
  }

  absl::Status Upload(const v1::Assignment& a, const std::string& path,
                      const v1::TrainingSummary& summary) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 600);
    v1::UploadModelResponse resp;
    auto writer = stub_->UploadModel(&ctx, &resp);
    v1::UploadModelRequest head;
    const auto [id, secret] = Identity();
    head.mutable_header()->set_worker_id(id);
    head.mutable_header()->set_worker_secret(secret);
    head.mutable_header()->set_job_id(a.job_id());
    head.mutable_header()->set_attempt(a.attempt());
    *head.mutable_header()->mutable_summary() = summary;
    if (writer->Write(head)) WriteFileChunks(writer.get(), path);
    writer->WritesDone();
    grpc::Status st = writer->Finish();
    if (!st.ok()) return absl::UnavailableError(absl::StrCat("model upload: ", st.error_message()));
    return absl::OkStatus();
  }

  // Replaces each data file of `data` by the path this worker reads it from.
  absl::Status LocalizeData(const v1::Assignment& a, DataConfig* data) {
    // Each rank reads its shard of every file (RunTrainingJob), so it fetches only that.
    const std::pair<std::string*, bool> files[] = {
        {&data->train.path, false}, {&data->train.labels_path, true}, {&data->val_path, false},
        {&data->val_labels, true},  {&data->test_path, false},        {&data->test_labels, true}};
    for (const auto& [path, labels] : files) {
      if (path->empty()) continue;
      ASSIGN_OR_RETURN(*path, data_.Localize(Me(a), *path,
                                             DataShard{a.rank(), a.world_size(), labels}));
    }
    return absl::OkStatus();
  }

  v1::RankIdentity Me(const v1::Assignment& a) {
    v1::RankIdentity me;
    const auto [id, secret] = Identity();
    me.set_worker_id(id);
    me.set_worker_secret(secret);
    me.set_job_id(a.job_id());
    me.set_attempt(a.attempt());
    me.set_rank(a.rank());
    return me;
  }

  // Streams a checkpoint file (rank 0); OK once the coordinator has it durably.
  absl::Status SendCheckpoint(const v1::Assignment& a, const std::string& path, int64_t epoch) {
    struct stat st_buf;
    if (stat(path.c_str(), &st_buf) != 0) {
      return absl::InternalError(absl::StrCat("checkpoint: cannot stat ", path));
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 600);
    v1::UploadCheckpointResponse resp;
    auto writer = stub_->UploadCheckpoint(&ctx, &resp);
    v1::UploadCheckpointRequest head;
    *head.mutable_header()->mutable_from() = Me(a);
    head.mutable_header()->set_epoch(epoch);
    head.mutable_header()->set_size_bytes(static_cast<int64_t>(st_buf.st_size));
    if (writer->Write(head)) WriteFileChunks(writer.get(), path);
    writer->WritesDone();
    grpc::Status st = writer->Finish();
    if (!st.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                          absl::StrCat("checkpoint upload: ", st.error_message()));
    }
    return absl::OkStatus();
  }

  // Downloads the checkpoint the assignment resumes from into `path`.
  absl::Status FetchCheckpoint(const v1::Assignment& a, const std::string& path) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 600);
    v1::FetchCheckpointRequest req;
    *req.mutable_from() = Me(a);
    req.set_number(a.resume_checkpoint());
    auto reader = stub_->FetchCheckpoint(&ctx, req);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    v1::FetchCheckpointResponse msg;
    int64_t expected = -1, got = 0;
    while (reader->Read(&msg)) {
      if (msg.has_info()) {
        expected = msg.info().size_bytes();
      } else {
        out.write(msg.chunk().data(), static_cast<std::streamsize>(msg.chunk().size()));
        got += static_cast<int64_t>(msg.chunk().size());
      }
    }
    out.close();
    grpc::Status st = reader->Finish();
    if (!st.ok()) {
      // A missing checkpoint is as retryable as the network: another attempt may have it.
      return absl::UnavailableError(absl::StrCat("checkpoint ", a.resume_checkpoint(),
                                                 ": download failed: ", st.error_message()));
    }
    if (!out || got != expected) {
      return absl::UnavailableError(absl::StrCat("checkpoint ", a.resume_checkpoint(), ": got ",
                                                 got, " of ", expected, " bytes"));
    }
    return absl::OkStatus();
  }

  void RunAssignment(const v1::Assignment& a) {
    metrics_->RankStarted(a.job_id(), a.rank());
    logging::Info("rank started", {{"worker", Identity().first},
                                   {"job", a.job_id()},
                                   {"attempt", a.attempt()},
                                   {"rank", a.rank()},
                                   {"world_size", a.world_size()},
                                   {"resume_checkpoint", a.resume_checkpoint()}});
    auto plan = PlanJob(a.spec());
    if (!plan.ok()) return ReportOutcome(a, plan.status(), {});
    const DataConfig& dc = plan->data;
    TrainOptions& opts = plan->train;
    RendezvousOptions ro;
    ro.store_host = a.store_host();
    ro.store_port = a.store_port();
    ro.prefix = a.store_prefix();
    ro.rank = a.rank();
    ro.world_size = a.world_size();
    ro.timeout = std::chrono::milliseconds(std::max<int64_t>(1000, a.timeout_ms()));
    ro.device = opts.device;
    ro.on_allreduce = [m = metrics_](double seconds, int64_t bytes) {
      m->Allreduce(seconds, bytes);
    };
    if (a.store_port() == 0) {
      // The coordinator serves the attempt's store over this channel: its loss is an error, not
      // a crash (a c10d TCPStore client whose server vanishes terminates the process).
      ro.kv = std::make_shared<CoordinatorKv>(
          stub_, Me(a), std::min<std::chrono::milliseconds>(ro.timeout, std::chrono::seconds(5)));
    }
    auto conn = ConnectProcessGroup(ro);
    if (!conn.ok()) return ReportOutcome(a, conn.status(), {});
    // The job's data files: read where they are, or fetched into this worker's cache. Every
    // rank stops with the first failure's reason.
    absl::Status localized = conn->collective->Agree(LocalizeData(a, &plan->data));
    if (!localized.ok()) {
      conn->collective.reset();
      return ReportOutcome(a, localized, {});
    }
    // A resumed attempt: every rank loads the checkpoint; the ranks agree that all have it.
    std::optional<TrainingCheckpoint> resume;
    if (a.resume_checkpoint() > 0) {
      const std::string path = TempPath(a, "resume.safetensors");
      absl::Status fetched = FetchCheckpoint(a, path);
      if (fetched.ok()) {
        absl::StatusOr<TrainingCheckpoint> loaded = ReadCheckpointFile(path);
        if (loaded.ok()) {
          resume = std::move(*loaded);
        } else {
          fetched = loaded.status();
        }
      }
      unlink(path.c_str());
      fetched = conn->collective->Agree(fetched);
      if (!fetched.ok()) {
        conn->collective.reset();
        return ReportOutcome(a, fetched, {});
      }
    }
    opts.device = conn->device;
    if (opts.threads == 0) {
      opts.threads = options_.threads > 0 ? options_.threads : ThreadsPerRank(conn->local_ranks);
    }
    const int64_t total = EffectiveEpochs(opts);
    ReportQueue reports([&](v1::ReportProgressRequest req) { return Report(a, std::move(req)); });
    auto on_epoch = [&](const EpochRecord& e) {
      const double sps = e.seconds > 0 ? static_cast<double>(e.samples) / e.seconds : 0.0;
      metrics_->Epoch(a.job_id(), a.rank(), e.epoch, e.seconds, e.local_samples, sps);
      if (a.rank() != 0) return;
      v1::ReportProgressRequest req;
      v1::EpochMetrics* m = req.mutable_epoch();
      m->set_epoch(e.epoch);
      m->set_total_epochs(total);
      m->set_train_loss(e.train_loss);
      m->set_objective(e.objective);
      if (!std::isnan(e.val_loss)) {
        m->set_has_validation(true);
        m->set_val_loss(e.val_loss);
        m->set_val_accuracy(e.val_accuracy);
      }
      m->set_seconds(e.seconds);
      m->set_samples_per_second(sps);
      reports.Post(std::move(req));
    };
    // Rank 0 reports progress inside epochs about twice a second.
    auto last_report = std::chrono::steady_clock::now();
    auto epoch_start = last_report;
    int64_t current_epoch = 0;
    auto last_step = std::chrono::steady_clock::now();
    int64_t last_step_epoch = -1;
    auto on_step = [&](int64_t epoch, int64_t step, int64_t steps, int64_t rows_per_step) {
      const auto now = std::chrono::steady_clock::now();
      // The first step of an epoch would also time the previous epoch's evaluation.
      if (epoch == last_step_epoch) {
        metrics_->Step(std::chrono::duration<double>(now - last_step).count());
      }
      last_step = now;
      last_step_epoch = epoch;
      if (a.rank() != 0) return;
      if (epoch != current_epoch) {
        current_epoch = epoch;
        epoch_start = now;
      }
      if (now - last_report < std::chrono::milliseconds(500)) return;
      last_report = now;
      v1::ReportProgressRequest req;
      v1::StepProgress* p = req.mutable_progress();
      p->set_epoch(epoch);
      p->set_total_epochs(total);
      p->set_step(step);
      p->set_steps_per_epoch(steps);
      const double secs = std::chrono::duration<double>(now - epoch_start).count();
      if (secs > 0) p->set_samples_per_second(static_cast<double>(step * rows_per_step) / secs);
      reports.Post(std::move(req));
    };
    JobHooks hooks;
    hooks.on_epoch = on_epoch;
    hooks.on_step = on_step;
    hooks.stop = &cancel_;
    hooks.resume = resume ? &*resume : nullptr;
    hooks.checkpoint_every = plan->checkpoint_every.value_or(0);
    auto upload = [&](const TrainingCheckpoint& c) {
      // Best effort: a checkpoint that cannot be stored costs only progress on a retry.
      const auto start = std::chrono::steady_clock::now();
      const std::string path = TempPath(a, "checkpoint.safetensors");
      absl::Status st = WriteCheckpointFile(c, path);
      if (st.ok()) st = SendCheckpoint(a, path, c.epoch);
      unlink(path.c_str());
      if (st.ok()) {
        metrics_->CheckpointUploaded(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        logging::Info("checkpoint uploaded", {{"worker", Identity().first},
                                              {"job", a.job_id()},
                                              {"attempt", a.attempt()},
                                              {"epoch", c.epoch}});
      } else {
        logging::Warn("checkpoint not stored", {{"worker", Identity().first},
                                                {"job", a.job_id()},
                                                {"attempt", a.attempt()},
                                                {"epoch", c.epoch},
                                                logging::Field::Error(st)});
      }
    };
    // The server's default period: in the background, throttled; the job's own: every one,
    // stored before training goes on.
    CheckpointUploader checkpoints(upload);
    if (a.throttle_checkpoints()) {
      hooks.on_checkpoint = [&](const TrainingCheckpoint& c) { checkpoints.Offer(c); };
    } else {
      hooks.on_checkpoint = upload;
    }
    auto outcome = RunTrainingJob(dc, opts, conn->collective.get(), hooks);
    reports.Close();  // every epoch event reaches the coordinator before the outcome
    // A failed attempt's retry resumes from the newest checkpoint: upload it; a finished job
    // needs none.
    checkpoints.Close(/*upload_waiting=*/!outcome.ok() && !cancel_);
    // Leave the process group before reporting: the coordinator drops the attempt's store once
    // it has the outcome.
    conn->collective.reset();
    if (!outcome.ok()) return ReportOutcome(a, outcome.status(), {});
    const v1::TrainingSummary summary = MakeSummary(*outcome, opts);
    if (a.rank() == 0) {
      const std::string path = TempPath(a, "model.npz");
      absl::Status st = SaveModel(outcome->result.model, path, SummaryToJson(summary).dump());
      if (st.ok()) st = Upload(a, path, summary);
      unlink(path.c_str());
      if (!st.ok()) return ReportOutcome(a, st, {});
    }
    ReportOutcome(a, absl::OkStatus(), summary);
  }

  const AgentOptions options_;
  const std::unique_ptr<AgentMetrics> own_metrics_;
  AgentMetrics* const metrics_;
  std::shared_ptr<v1::WorkerService::Stub> stub_;
  DataFetcher data_;
  // Each failed call already waited up to its 3 s deadline for the channel to be ready.
  static constexpr std::chrono::milliseconds kMaxBackoff{2000};
  std::chrono::milliseconds interval_{500};
  std::string last_assignment_;  // "job/attempt/rank" of the latest assignment taken
  // Threads: the heartbeat thread (Run, Beat, Register) and one job thread at a time
  // (RunAssignment). mu_ guards the registration, which both read; the job thread's own state is
  // its Assignment; the flags below are atomics.
  Mutex mu_;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);
  std::string worker_secret_ ABSL_GUARDED_BY(mu_);  // never logged
  std::string job_id_ ABSL_GUARDED_BY(mu_);         // the running rank's job, for heartbeats
  int attempt_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread job_thread_;  // heartbeat thread only
  std::atomic<bool> job_running_{false};
  std::atomic<bool> cancel_{false};
};

}  // namespace

int RunAgent(const AgentOptions& options, const std::atomic<bool>& stop, std::ostream& log) {
  ConnectOptions connect;
  connect.server = options.server;
  connect.token = options.token;
  connect.tls_ca_file = options.tls_ca_file;
  connect.tls_cert_file = options.tls_cert_file;
  connect.tls_key_file = options.tls_key_file;
  auto channel = Dial(connect);
  if (!channel.ok()) {
    log << "logit-worker: " << channel.status().message() << std::endl;
    logging::Error("cannot connect",
                   {{"server", options.server}, logging::Field::Error(channel.status())});
    return 2;
  }
  Agent agent(options, *channel);
  return agent.Run(stop);
}

}  // namespace logit
