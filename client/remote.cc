#include "client/remote.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <mutex>
#include <optional>
#include <thread>
#include <ostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli.h"
#include "client/manage.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "logit/v1/training.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "worker/common/sha256.h"
#include "worker/common/status.h"
#include "worker/data/readers.h"
#include "worker/job_cli.h"
#include "worker/job_spec.h"
#include "worker/model/model_io.h"
#include "worker/summary.h"

namespace logit {

namespace {

using google::protobuf::util::TimeUtil;

constexpr size_t kChunkBytes = 1 << 20;

// The watch being followed, for DetachFollow (Ctrl-C).
std::mutex g_follow_mu;
grpc::ClientContext* g_follow_ctx = nullptr;
bool g_detached = false;

bool Unreachable(const grpc::Status& st) {
  return st.error_code() == grpc::StatusCode::UNAVAILABLE ||
         st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// The dataset on the server that holds the bytes of the file at `path` under the same name,
// found by the file's SHA-256 (read in 1 MiB pieces). None when there is no such dataset, or
// the file cannot be read or the server cannot be asked (the upload then reports it).
std::optional<v1::Dataset> FindUploaded(v1::TrainingService::Stub* stub, const std::string& path,
                                        const std::string& name) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  Sha256 hash;
  std::string buf(kChunkBytes, '\0');
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.bad()) return std::nullopt;
    hash.Update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  v1::ListDatasetsRequest req;
  req.set_sha256(hash.HexDigest());
  v1::ListDatasetsResponse resp;
  grpc::ClientContext ctx;
  if (!stub->ListDatasets(&ctx, req, &resp).ok()) return std::nullopt;
  for (const v1::Dataset& d : resp.datasets()) {
    if (d.name() == name && d.sha256() == req.sha256()) return d;
  }
  return std::nullopt;
}

// Uploads a local file, or reuses the server's dataset with the same name and bytes (saying so
// on `err`); returns "dataset:ID".
grpc::Status Upload(v1::TrainingService::Stub* stub, const std::string& path, std::string* ref,
                    std::ostream& err, bool tty) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("--data: cannot read ", path));
  }
  const std::string name = std::filesystem::path(path).filename().string();
  if (std::optional<v1::Dataset> known = FindUploaded(stub, path, name)) {
    err << "reusing " << known->id() << " for " << path
        << ": the server has a dataset with the same name and SHA-256 (not uploaded again)\n";
    *ref = "dataset:" + known->id();
    return grpc::Status::OK;
  }
  grpc::ClientContext ctx;
  v1::Dataset resp;
  auto writer = stub->UploadDataset(&ctx, &resp);
  v1::UploadDatasetRequest head;
  head.mutable_info()->set_name(name);
  bool ok = writer->Write(head);
  std::string buf(kChunkBytes, '\0');
  int64_t sent = 0;
  std::error_code ec;
  const double total = static_cast<double>(std::filesystem::file_size(path, ec));
  while (ok && in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    v1::UploadDatasetRequest chunk;
    chunk.set_chunk(buf.data(), static_cast<size_t>(n));
    ok = writer->Write(chunk);
    sent += n;
    if (tty && total > 0) {  // a progress bar on terminals (stderr)
      const int width = 24, filled = static_cast<int>(width * sent / total);
      err << "\r\033[Kuploading " << std::filesystem::path(path).filename().string() << " ["
          << std::string(filled, '#') << std::string(width - filled, '.') << "] "
          << Fixed(100.0 * sent / total, 0) << "% of " << Fixed(total / 1048576.0, 1) << " MiB"
          << std::flush;
    }
  }
  if (tty && total > 0) err << "\n";
  writer->WritesDone();
  grpc::Status st = writer->Finish();
  if (!st.ok()) return st;
  err << "uploaded " << path << " (" << sent << " bytes) as " << resp.id() << "\n";
  *ref = "dataset:" + resp.id();
  return grpc::Status::OK;
}

std::string StateName(v1::JobState s) { return v1::JobState_Name(s); }

std::string Throughput(double samples_per_second) {
  if (samples_per_second <= 0) return "";
  return absl::StrCat("  ", static_cast<int64_t>(samples_per_second), " samples/s");
}

// Redraws the progress line: "epoch 3/10 [#######.........] <text>" ("iter 3/1000" for L-BFGS).
void DrawBar(std::ostream& out, bool iterations, int64_t epoch, int64_t total, double fraction,
             const std::string& text) {
  const int width = 24;
  const int filled = static_cast<int>(width * std::min(1.0, std::max(0.0, fraction)));
  out << "\r\033[K" << (iterations ? "iter " : "epoch ") << epoch << "/" << total << " ["
      << std::string(filled, '#')
      << std::string(width - filled, '.') << "] " << text << std::flush;
}

// How long a watch keeps reconnecting to a server that went away (a restarting coordinator).
constexpr auto kReconnectFor = std::chrono::seconds(120);

// Fewer rows per rank per SGD/Adam step than this: a distributed job likely runs slower than one
// worker (each step's allreduce outweighs its arithmetic).
constexpr int64_t kMinRowsPerRankStep = 64;

// At most about this much of a local file is read to check it before upload.
constexpr int64_t kCheckBytes = int64_t{64} << 20;

bool IsRemoteRef(const std::string& p) {
  return absl::StartsWith(p, "dataset:") || absl::StartsWith(p, "server:");
}

// The user's local data files checked by the readers a worker will use, before anything is
// uploaded or scheduled: header, label column, labels against --classes, feature count, each
// error naming the file and line. A file larger than kCheckBytes is checked on its first rows
// (shard 0 of enough shards). Warns when a declared class has no rows in a file read whole.
absl::Status CheckLocalData(const JobPlan& plan, std::ostream& err) {
  ReadOptions train = plan.data.train;
  if (plan.train.classes > 0) train.classes = plan.train.classes;
  int64_t features = 0;
  const std::pair<std::string, std::string> files[] = {
      {train.path, train.labels_path},
      {plan.data.val_path, plan.data.val_labels},
      {plan.data.test_path, plan.data.test_labels}};
  for (size_t i = 0; i < 3; ++i) {
    const auto& [path, labels] = files[i];
    if (path.empty() || IsRemoteRef(path) || (!labels.empty() && IsRemoteRef(labels))) continue;
    ReadOptions o = train;
    o.path = path;
    o.labels_path = labels;
    if (i > 0 && features > 0) o.num_features = features;
    if (i > 0 && o.format == DataFormat::kAuto && !InferDataFormat(path).ok()) {
      auto f = InferDataFormat(train.path);  // as the job reads an extra file
      if (f.ok()) o.format = *f;
    }
    std::error_code ec;
    const uintmax_t size = std::filesystem::file_size(path, ec);
    o.world = ec ? 1 : static_cast<int>(std::max<uintmax_t>(1, size / kCheckBytes + 1));
    o.rank = 0;
    ASSIGN_OR_RETURN(const Dataset d, ReadDataset(o));
    if (i == 0 && d.storage != FeatureStorage::kSparseCsr) features = d.num_features;
    if (o.world == 1 && train.classes > 0) {
      std::vector<int64_t> count(static_cast<size_t>(train.classes), 0);
      for (int64_t y : d.labels) {
        if (y >= 0 && y < train.classes) ++count[static_cast<size_t>(y)];
      }
      std::vector<std::string> empty;
      for (int64_t k = 0; k < train.classes; ++k) {
        if (count[static_cast<size_t>(k)] == 0) empty.push_back(absl::StrCat(k));
      }
      if (!empty.empty()) {
        err << "logit train: warning: " << path << ": no rows of class"
            << (empty.size() > 1 ? "es " : " ") << absl::StrJoin(empty, ", ") << " of --classes "
            << train.classes << "\n";
      }
    }
  }
  return absl::OkStatus();
}

// `text` naming the user's local files where it names the files they uploaded ("bad.csv:3:"
// becomes "data/bad.csv:3:"; the server names an uploaded dataset by its file name).
std::string LocalNames(const RemoteOptions& o, std::string text) {
  for (const auto& [ref, local] : o.local_names) {
    const std::string name = std::filesystem::path(local).filename().string();
    if (name.empty() || name == local) continue;
    std::string out;
    size_t at = 0;
    while (true) {
      const size_t hit = text.find(name + ":", at);
      if (hit == std::string::npos) break;
      // A whole name only: not the tail of a longer one, nor already a path.
      const bool whole = hit == 0 || text[hit - 1] == ' ' || text[hit - 1] == '\'' ||
                         text[hit - 1] == '(';
      out += text.substr(at, hit - at) + (whole ? local : name);
      at = hit + name.size();
    }
    text = out + text.substr(at);
  }
  return text;
}

// Prints a job's events from `from` until it finishes; the exit code follows its state. A lost
// connection is re-established with backoff, resuming after the last event seen, so each event
// is printed once, in order.
int FollowJob(v1::TrainingService::Stub* stub, const RemoteOptions& o, const std::string& job_id,
              int64_t from, std::ostream& out, std::ostream& err, v1::Job* finished = nullptr) {
  std::unique_ptr<grpc::ClientContext> ctx_holder;
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader;
  int64_t next = std::max<int64_t>(1, from);
  // Opens (or re-opens) the watch from `next`. Ctrl-C detaches (see DetachFollow): the watch is
  // cancelled, the job keeps running.
  auto open = [&] {
    auto ctx = std::make_unique<grpc::ClientContext>();
    {
      std::lock_guard<std::mutex> lock(g_follow_mu);
      g_follow_ctx = ctx.get();
    }
    v1::WatchJobRequest wr;
    wr.set_job_id(job_id);
    wr.set_from_sequence(next);
    reader = stub->WatchJob(ctx.get(), wr);
    ctx_holder = std::move(ctx);
  };
  {
    std::lock_guard<std::mutex> lock(g_follow_mu);
    g_detached = false;
  }
  open();
  v1::JobEvent ev;
  v1::Job final_job;
  final_job.set_id(job_id);
  bool bar_open = false;
  double epoch_seconds = 0;
  int64_t epochs_seen = 0;
  auto close_bar = [&] {
    if (bar_open) out << "\n";
    bar_open = false;
  };
  auto reconnect_until = std::chrono::steady_clock::now() + kReconnectFor;
  auto backoff = std::chrono::milliseconds(250);
  while (true) {
  while (reader->Read(&ev)) {
    if (!ev.has_progress()) next = ev.sequence() + 1;  // progress repeats the latest sequence
    if (o.structured() && o.events) PrintStructured(MessageJson(ev), o.output, out);
    if (ev.has_checkpoint() && !o.structured()) {
      close_bar();
      out << "[" << job_id << "] checkpoint " << ev.checkpoint().number() << " stored after epoch "
          << ev.checkpoint().epoch() << std::endl;
    }
    if (ev.has_state_change() && !o.structured()) {
      close_bar();
      out << "[" << job_id << "] " << StateName(ev.state_change().state()) << ": "
          << LocalNames(o, ev.state_change().reason()) << std::endl;
    }
    if (ev.has_epoch() && !o.structured()) {
      const v1::EpochMetrics& m = ev.epoch();
      EpochRecord r;
      r.epoch = m.epoch();
      r.train_loss = m.train_loss();
      r.objective = m.objective();
      if (m.has_validation()) {
        r.val_loss = m.val_loss();
        r.val_accuracy = m.val_accuracy();
      }
      r.seconds = m.seconds();
      ++epochs_seen;
      epoch_seconds += m.seconds();
      if (o.tty && bar_open) out << "\r\033[K";  // the bar gives way to the finished epoch
      bar_open = false;
      // One kept line per finished epoch (as Keras and Lightning print); on a terminal the
      // live bar of the next one is drawn below it by the progress events.
      out << EpochLine(r, m.total_epochs(), o.iterations) << std::endl;
    }
    if (ev.has_progress() && !o.structured() && o.tty) {
      // Inside an epoch: the bar advances by steps; the last epoch's figures stay shown.
      const v1::StepProgress& p = ev.progress();
      const int64_t total = std::max<int64_t>(1, p.total_epochs());
      const double done =
          (static_cast<double>(p.epoch() - 1) +
           static_cast<double>(p.step()) / std::max<int64_t>(1, p.steps_per_epoch())) /
          total;
      std::string eta;
      if (epochs_seen > 0) {
        eta = "  ETA " + Fixed(epoch_seconds / epochs_seen * total * (1 - done), 1) + "s";
      }
      DrawBar(out, o.iterations, p.epoch(), total, done,
              absl::StrCat("step ", p.step(), "/", p.steps_per_epoch(),
                           Throughput(p.samples_per_second()), eta));
      bar_open = true;
    }
    if (ev.has_job()) final_job = ev.job();
  }
  close_bar();
  bool detached = false;
  {
    std::lock_guard<std::mutex> lock(g_follow_mu);
    g_follow_ctx = nullptr;
    detached = g_detached;
  }
  if (detached) {
    reader->Finish();
    err << "detached from " << job_id << "; it keeps running. Re-attach with: logit watch "
        << job_id << "\n";
    return kExitOk;
  }
  grpc::Status st = reader->Finish();
  // The server went away (a restart): watch again from the next event, for a while.
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE &&
      std::chrono::steady_clock::now() < reconnect_until) {
    err << "logit: lost the server (" << st.error_message() << "); reconnecting from event "
        << next << std::endl;
    std::this_thread::sleep_for(backoff);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(5));
    open();
    continue;
  }
  if (!st.ok()) {
    err << "logit: watching " << job_id << ": " << st.error_message() << "\n";
    return ExitCodeOf(st);
  }
  break;
  }
  if (finished != nullptr) *finished = final_job;
  const v1::JobResult& r = final_job.result();
  if (o.structured()) {
    PrintStructured(JobJson(final_job), o.output, out);
  } else if (final_job.state() == v1::SUCCEEDED) {
    out << "stopped: " << r.stop_reason() << " after " << r.epochs_run() << " epochs, "
        << Fixed(r.wall_seconds(), 2) << "s\n";
    out << "objective " << Fixed(r.objective(), 8) << "  train_loss " << Fixed(r.train_loss(), 6)
        << "\n";
    if (r.has_val_accuracy()) out << "val: accuracy " << Fixed(100 * r.val_accuracy(), 2) << "%\n";
    if (r.has_test_accuracy()) {
      out << "test: accuracy " << Fixed(100 * r.test_accuracy(), 2) << "%\n";
    }
    PrintMetricsTable(r.summary(), out);
    out << "model " << final_job.model_id() << "\n";
    for (const std::string& w : r.summary().warnings()) err << "logit: warning: " << w << "\n";
  } else {
    out << final_job.id() << " " << StateName(final_job.state()) << ": "
        << LocalNames(o, final_job.reason()) << "\n";
  }
  return final_job.state() == v1::SUCCEEDED ? kExitOk : kExitJobFailed;
}

}  // namespace

int ExitCodeOf(const grpc::Status& st) {
  switch (st.error_code()) {
    case grpc::StatusCode::OK:
      return kExitOk;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return kExitUnreachable;
    case grpc::StatusCode::NOT_FOUND:
      return kExitNotFound;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::PERMISSION_DENIED:  // a path outside the data root, a worker's token
      return kExitUsage;
    default:
      return kExitJobFailed;
  }
}

bool DetachFollow() {
  std::lock_guard<std::mutex> lock(g_follow_mu);
  if (g_follow_ctx == nullptr) return false;
  g_detached = true;
  g_follow_ctx->TryCancel();
  return true;
}

namespace {

// REQUIRES: Dial(o.connect) succeeds (RunCli checked the TLS files).
std::shared_ptr<grpc::Channel> Channel(const ConnectOptions& o) {
  auto channel = Dial(o);
  return channel.ok() ? *channel
                      : grpc::CreateChannel(o.server, grpc::InsecureChannelCredentials());
}

}  // namespace

std::unique_ptr<v1::TrainingService::Stub> Connect(const RemoteOptions& o) {
  return v1::TrainingService::NewStub(Channel(o.connect));
}

int RpcError(const RemoteOptions& o, const std::string& what, const grpc::Status& st,
             std::ostream& err) {
  if (Unreachable(st)) {
    err << "logit " << what << ": cannot reach the server at " << o.connect.server << ": "
        << st.error_message() << "\n";
    return kExitUnreachable;
  }
  err << "logit " << what << ": " << st.error_message() << "\n";
  return ExitCodeOf(st);
}

bool NeedServer(const RemoteOptions& o, const std::string& what, std::ostream& err) {
  if (!o.connect.server.empty()) return true;
  err << "logit " << what << ": --server (or LOGIT_SERVER) is required\n";
  return false;
}

namespace {

std::string Accuracy(const v1::Job& j) {
  return j.result().has_test_accuracy()  ? Fixed(100 * j.result().test_accuracy(), 2) + "%"
         : j.result().has_val_accuracy() ? Fixed(100 * j.result().val_accuracy(), 2) + "% (val)"
                                         : "-";
}

}  // namespace

int RunRemoteTrain(const v1::JobSpec& flags, const RemoteOptions& options, std::ostream& out,
                   std::ostream& err) {
  RemoteOptions o = options;
  if (o.connect.server.empty()) {
    err << "logit train: --server (or LOGIT_SERVER) is required without --local\n";
    return kExitUsage;
  }
  if (!o.save_model.empty()) {
    if (o.detach) {
      err << "logit train: --save-model needs train to follow the job; with --detach, fetch the "
             "model later with 'logit model get MODEL FILE'\n";
      return kExitUsage;
    }
    if (!absl::EndsWith(o.save_model, ".npz") && !absl::EndsWith(o.save_model, ".safetensors") &&
        !absl::EndsWith(o.save_model, ".onnx")) {
      err << "logit train: --save-model: '" << o.save_model
          << "': the extension picks the format: .npz, .safetensors or .onnx\n";
      return kExitUsage;
    }
  }
  // Flag values are checked here first (a 0 in the JobSpec means "default" on the server).
  auto plan = PlanJob(flags);
  if (!plan.ok()) {
    err << "logit train: " << FlagMessage(plan.status()) << "\n";
    return kExitUsage;
  }
  o.iterations = plan->train.optimizer == OptimizerKind::kLbfgs;
  if (absl::Status checked = CheckLocalData(*plan, err); !checked.ok()) {
    std::string message = FlagMessage(checked);  // nothing was uploaded
    if (absl::StartsWith(message, "label_column:")) message = "--label-column:" + message.substr(13);
    err << "logit train: " << message << "\n";
    // A flag naming what the file lacks (a label column) is a usage error; bad rows fail the job
    // as they would on a worker (and as --local does).
    const bool flag = ErrorField(checked).has_value() ||
                      absl::StartsWith(checked.message(), "label_column:") ||
                      absl::StartsWith(checked.message(), "labels:");
    return flag ? kExitUsage : kExitJobFailed;
  }
  // Each SGD/Adam step ends in an allreduce of the whole gradient: with few rows per rank per
  // step, that costs more than the step's arithmetic and more workers only make it slower.
  const int64_t rows_per_rank = plan->train.batch_size / std::max(1, plan->workers);
  if (plan->workers > 1 && !o.iterations && rows_per_rank < kMinRowsPerRankStep) {
    err << "logit train: warning: --batch-size " << plan->train.batch_size << " over --workers "
        << plan->workers << " is " << rows_per_rank
        << " rows per rank per step; each step's gradient allreduce then costs more than its "
           "arithmetic, so this job will likely run slower than on one worker (raise "
           "--batch-size to at least "
        << kMinRowsPerRankStep * plan->workers << ", or use --workers 1)\n";
  }
  auto stub = Connect(o);
  v1::SubmitJobRequest req;
  v1::JobSpec& f = *req.mutable_spec();
  f = flags;
  for (std::string* p : {f.mutable_data(), f.mutable_labels(), f.mutable_val_data(),
                         f.mutable_val_labels(), f.mutable_test_data(), f.mutable_test_labels()}) {
    if (p->empty() || absl::StartsWith(*p, "dataset:") || absl::StartsWith(*p, "server:")) {
      continue;
    }
    const std::string local = *p;
    grpc::Status st = Upload(stub.get(), local, p, err, o.tty);
    if (st.ok()) o.local_names.emplace_back(*p, local);
    if (!st.ok()) {
      err << "logit train: "
          << (Unreachable(st) ? absl::StrCat("server ", o.connect.server, ": ") : "")
          << st.error_message() << "\n";
      return Unreachable(st) ? kExitUnreachable : kExitUsage;
    }
  }
  v1::Job job;
  {
    grpc::ClientContext ctx;
    grpc::Status st = stub->SubmitJob(&ctx, req, &job);
    if (!st.ok()) return RpcError(o, "train", st, err);
  }
  if (o.detach) {
    if (o.structured()) {
      PrintStructured(JobJson(job), o.output, out);
    } else {
      out << job.id() << "\n";
    }
    return kExitOk;
  }
  err << "submitted " << job.id()
      << "; following it (Ctrl-C detaches; re-attach with "
         "'logit watch "
      << job.id() << "')\n";
  v1::Job finished;
  const int code = FollowJob(stub.get(), o, job.id(), 1, out, err, &finished);
  if (code != kExitOk || o.save_model.empty() || finished.model_id().empty()) return code;
  // --save-model: the trained model, downloaded as `logit model get` would (its line goes to
  // stderr under -o json|yaml, so that stdout's last line stays the job).
  RemoteOptions get = o;
  get.output = OutputFormat::kTable;
  return RunModelGet(get, finished.model_id(), o.save_model, o.structured() ? err : out, err);
}

int RunJobs(const RemoteOptions& o, const JobsFilter& filter, std::ostream& out,
            std::ostream& err) {
  if (!NeedServer(o, "jobs", err)) return kExitUsage;
  v1::ListJobsRequest req;
  if (!filter.state.empty()) {
    v1::JobState s;
    if (!v1::JobState_Parse(absl::AsciiStrToUpper(filter.state), &s) ||
        s == v1::JOB_STATE_UNSPECIFIED) {
      err << "logit jobs: --state: '" << filter.state
          << "' is not QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED or RETRYING\n";
      return kExitUsage;
    }
    req.set_state(s);
  }
  for (const std::string& item : filter.selector) {
    auto pairs = ParseLabelPairs(item);
    if (!pairs.ok()) {
      err << "logit jobs: --selector: " << pairs.status().message() << "\n";
      return kExitUsage;
    }
    for (const auto& [key, value] : *pairs) (*req.mutable_label_selector())[key] = value;
  }
  req.set_name(filter.name);
  req.set_limit(filter.limit);
  v1::ListJobsResponse resp;
  grpc::ClientContext ctx;
  grpc::Status st = Connect(o)->ListJobs(&ctx, req, &resp);
  if (!st.ok()) return RpcError(o, "jobs", st, err);
  if (o.structured()) {
    nlohmann::json jobs = nlohmann::json::array();
    for (const v1::Job& j : resp.jobs()) jobs.push_back(JobJson(j));
    PrintStructured(nlohmann::json{{"jobs", std::move(jobs)}}, o.output, out);
    return kExitOk;
  }
  const int64_t now = absl::ToUnixNanos(absl::Now());
  auto since = [now](const google::protobuf::Timestamp& from, int64_t to) {
    return HumanDuration(static_cast<double>(to - TimeUtil::TimestampToNanoseconds(from)) / 1e9);
  };
  std::vector<std::vector<std::string>> rows = {{"JOB", "NAME", "STATE", "WORKERS", "EPOCHS",
                                                 "ACCURACY", "MODEL", "AGE", "DURATION", "REASON"}};
  for (const v1::Job& j : resp.jobs()) {
    const bool started = j.has_started() && TimeUtil::TimestampToNanoseconds(j.started()) > 0;
    const bool finished = j.has_finished() && TimeUtil::TimestampToNanoseconds(j.finished()) > 0;
    rows.push_back({j.id(), j.spec().name().empty() ? "-" : j.spec().name(), StateName(j.state()),
                    absl::StrCat(j.spec().workers()), absl::StrCat(j.result().epochs_run()),
                    Accuracy(j), j.model_id().empty() ? "-" : j.model_id(), since(j.created(), now),
                    started ? since(j.started(),
                                    finished ? TimeUtil::TimestampToNanoseconds(j.finished()) : now)
                            : "-",
                    j.reason()});
  }
  PrintTable(rows, out);
  return kExitOk;
}

namespace {

void PrintJob(const v1::Job& j, std::ostream& out) {
  const v1::Optimizer optimizer =
      j.spec().optimizer() == v1::OPTIMIZER_UNSPECIFIED ? v1::LBFGS : j.spec().optimizer();
  out << "job       " << j.id() << "\n";
  if (!j.spec().name().empty()) out << "name      " << j.spec().name() << "\n";
  out << "state     " << StateName(j.state()) << "\nreason    " << j.reason() << "\nworkers   "
      << j.spec().workers() << "\ndata      " << j.spec().data() << "\noptimizer "
      << absl::AsciiStrToLower(v1::Optimizer_Name(optimizer)) << "\nepochs    "
      << j.result().epochs_run() << "\naccuracy  " << Accuracy(j) << "\nmodel     "
      << (j.model_id().empty() ? "-" : j.model_id()) << "\nevents    " << j.last_sequence() << "\n";
  out << "attempt   " << j.attempt() << " (retries " << j.retries() << ")\n";
  if (j.has_latest_checkpoint()) {
    const v1::CheckpointInfo& c = j.latest_checkpoint();
    out << "checkpoint " << c.number() << " after epoch " << c.epoch() << ", "
        << Fixed(c.age_seconds(), 1) << " s old\n";
  }
  for (const v1::AttemptFailure& f : j.failed_attempts()) {
    out << "attempt " << f.attempt() << " ended: " << f.reason() << "\n";
  }
}

}  // namespace

int RunStatus(const RemoteOptions& o, const std::vector<std::string>& job_ids, std::ostream& out,
              std::ostream& err) {
  if (!NeedServer(o, "status", err)) return kExitUsage;
  auto stub = Connect(o);
  int code = kExitOk;
  for (size_t i = 0; i < job_ids.size(); ++i) {
    v1::GetJobRequest req;
    req.set_job_id(job_ids[i]);
    v1::Job j;
    grpc::ClientContext ctx;
    grpc::Status st = stub->GetJob(&ctx, req, &j);
    if (!st.ok()) {
      code = std::max(code, RpcError(o, "status", st, err));
      continue;
    }
    if (o.structured()) {
      PrintStructured(JobJson(j), o.output, out);
    } else {
      if (i > 0) out << "\n";
      PrintJob(j, out);
    }
  }
  return code;
}

int RunWatch(const RemoteOptions& o, const std::string& job_id, int64_t from, std::ostream& out,
             std::ostream& err) {
  if (!NeedServer(o, "watch", err)) return kExitUsage;
  auto stub = Connect(o);
  RemoteOptions watch = o;
  watch.events = true;  // -o json|yaml: every event as it comes (NDJSON)
  {
    v1::GetJobRequest req;
    req.set_job_id(job_id);
    v1::Job job;
    grpc::ClientContext ctx;
    grpc::Status st = stub->GetJob(&ctx, req, &job);
    if (!st.ok()) return RpcError(o, "watch", st, err);
    const v1::Optimizer opt = job.spec().optimizer();
    watch.iterations = opt == v1::LBFGS || opt == v1::OPTIMIZER_UNSPECIFIED;
  }
  return FollowJob(stub.get(), watch, job_id, from, out, err);
}

int RunCancel(const RemoteOptions& o, const std::vector<std::string>& job_ids, std::ostream& out,
              std::ostream& err) {
  if (!NeedServer(o, "cancel", err)) return kExitUsage;
  auto stub = Connect(o);
  int code = kExitOk;
  for (const std::string& id : job_ids) {
    v1::CancelJobRequest req;
    req.set_job_id(id);
    v1::Job j;
    grpc::ClientContext ctx;
    grpc::Status st = stub->CancelJob(&ctx, req, &j);
    if (!st.ok()) {
      code = std::max(code, RpcError(o, "cancel", st, err));
      continue;
    }
    if (o.structured()) {
      PrintStructured(JobJson(j), o.output, out);
    } else {
      out << j.id() << " " << StateName(j.state()) << ": " << j.reason() << "\n";
    }
  }
  return code;
}

int RunUpload(const RemoteOptions& o, const std::string& file, std::ostream& out,
              std::ostream& err) {
  if (!NeedServer(o, "upload", err)) return kExitUsage;
  std::string ref;
  grpc::Status st = Upload(Connect(o).get(), file, &ref, err, o.tty);
  if (!st.ok()) return RpcError(o, "upload", st, err);
  if (o.structured()) {
    PrintStructured(nlohmann::json{{"dataset", ref}}, o.output, out);
  } else {
    out << ref << "\n";
  }
  return kExitOk;
}

int RunModelGet(const RemoteOptions& o, const std::string& model_id, const std::string& file,
                std::ostream& out, std::ostream& err) {
  if (!NeedServer(o, "model get", err)) return kExitUsage;
  const bool convert = absl::EndsWith(file, ".safetensors") || absl::EndsWith(file, ".onnx");
  if (!absl::EndsWith(file, ".npz") && !convert) {
    err << "logit model get: FILE: '" << file
        << "': the extension picks the format: .npz, .safetensors or .onnx\n";
    return kExitUsage;
  }
  grpc::ClientContext ctx;
  v1::GetModelRequest req;
  req.set_model_id(model_id);
  auto reader = Connect(o)->GetModel(&ctx, req);
  const std::string part = file + ".part";
  std::ofstream f(part, std::ios::binary | std::ios::trunc);
  if (!f) {
    err << "logit model get: FILE: cannot write " << file << "\n";
    return kExitUsage;
  }
  v1::GetModelResponse msg;
  v1::ModelInfo info;
  int64_t bytes = 0;
  while (reader->Read(&msg)) {
    if (msg.has_info()) info = msg.info();
    f.write(msg.chunk().data(), static_cast<std::streamsize>(msg.chunk().size()));
    bytes += static_cast<int64_t>(msg.chunk().size());
  }
  f.close();
  grpc::Status st = reader->Finish();
  if (!st.ok() || bytes != info.size_bytes()) {
    std::filesystem::remove(part);
    if (st.ok()) {
      err << "logit model get: received " << bytes << " of " << info.size_bytes() << " bytes\n";
      return kExitJobFailed;
    }
    return RpcError(o, "model get", st, err);
  }
  if (convert) {  // the server streams .npz; other formats are written from it here
    const std::string npz = part + ".npz";
    std::filesystem::rename(part, npz);
    auto model = LoadModel(npz);
    auto summary = LoadModelSummary(npz);
    absl::Status cst =
        model.ok() ? SaveModel(*model, file, summary.ok() ? *summary : "") : model.status();
    std::filesystem::remove(npz);
    if (!cst.ok()) {
      err << "logit model get: " << cst.message() << "\n";
      return kExitJobFailed;
    }
  } else {
    std::filesystem::rename(part, file);
  }
  if (o.structured()) {
    PrintStructured(MessageJson(info), o.output, out);
  } else {
    out << "wrote " << file << " (" << model_id << " of " << info.job_id() << ", "
        << info.num_features() << " features, " << info.num_classes() << " classes, " << bytes
        << " bytes)\n";
  }
  return kExitOk;
}

namespace {

void AppendVarint(uint64_t v, std::string* out) {
  do {
    out->push_back(static_cast<char>((v & 0x7f) | (v > 0x7f ? 0x80 : 0)));
    v >>= 7;
  } while (v != 0);
}

// The `status` (field 1, an enum) of a grpc.health.v1.HealthCheckResponse; 0 (UNKNOWN) when
// absent. The two-field messages are coded here: no generated code for grpc/health/v1.
int HealthStatusOf(const std::string& bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const uint8_t key = static_cast<uint8_t>(bytes[i++]);
    if ((key & 7) != 0) return 0;  // only varint fields are expected
    uint64_t v = 0;
    for (int shift = 0; i < bytes.size() && shift < 64; shift += 7) {
      const uint8_t b = static_cast<uint8_t>(bytes[i++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) break;
    }
    if ((key >> 3) == 1) return static_cast<int>(v);
  }
  return 0;
}

}  // namespace

int RunHealth(const RemoteOptions& o, const std::string& service, double timeout_s,
              std::ostream& out, std::ostream& err) {
  if (!NeedServer(o, "health", err)) return kExitUsage;
  std::string request;  // HealthCheckRequest{service = 1}
  if (!service.empty()) {
    request.push_back(0x0a);
    AppendVarint(service.size(), &request);
    request += service;
  }
  grpc::GenericStub stub(Channel(o.connect));
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1), response;
  auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request_buffer, &cq);
  call->StartCall();
  grpc::Status st;
  call->Finish(&response, &st, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!st.ok()) {
    if (st.error_code() == grpc::StatusCode::NOT_FOUND) {
      err << "logit health: the server has no service '" << service << "'\n";
      return kExitUsage;
    }
    return RpcError(o, "health", st, err);
  }
  std::string bytes;
  std::vector<grpc::Slice> slices;
  if (response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  static const char* const kNames[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
  const int status = HealthStatusOf(bytes);
  const std::string name = status >= 0 && status < 4 ? kNames[status] : "UNKNOWN";
  if (o.structured()) {
    PrintStructured(nlohmann::json{{"server", o.connect.server}, {"status", name}}, o.output, out);
  } else {
    out << name << "\n";
  }
  return status == 1 ? kExitOk : kExitJobFailed;
}

absl::StatusOr<v1::ModelInfo> RemoteModelInfo(const ConnectOptions& server,
                                              const std::string& model_id) {
  if (server.server.empty()) {
    return absl::InvalidArgumentError("--server (or LOGIT_SERVER) is required with --model");
  }
  auto stub = v1::TrainingService::NewStub(Channel(server));
  v1::GetModelRequest req;
  req.set_model_id(model_id);
  req.set_info_only(true);
  grpc::ClientContext ctx;
  auto reader = stub->GetModel(&ctx, req);
  v1::GetModelResponse head;
  const bool got = reader->Read(&head);
  for (v1::GetModelResponse rest; reader->Read(&rest);) {
  }
  grpc::Status st = reader->Finish();
  if (!st.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                        Unreachable(st) ? absl::StrCat("cannot reach the server at ", server.server,
                                                       ": ", st.error_message())
                                        : st.error_message());
  }
  if (!got || !head.has_info()) {
    return absl::InternalError(absl::StrCat("model '", model_id, "': the server sent no info"));
  }
  return head.info();
}

absl::StatusOr<std::vector<float>> RemotePredict(const ConnectOptions& server,
                                                 const std::string& model_id, const Dataset& data,
                                                 int64_t* num_classes) {
  if (server.server.empty()) {
    return absl::InvalidArgumentError("--server (or LOGIT_SERVER) is required with --model");
  }
  auto stub = v1::TrainingService::NewStub(Channel(server));
  const int64_t d = data.num_features;
  const int64_t per_request = std::max<int64_t>(1, (3 << 20) / (4 * std::max<int64_t>(1, d)));
  std::vector<float> out;
  for (int64_t r0 = 0; r0 < data.num_rows; r0 += per_request) {
    const int64_t m = std::min(per_request, data.num_rows - r0);
    v1::PredictRequest req;
    req.set_model_id(model_id);
    auto* x = req.mutable_features();
    x->Resize(static_cast<int>(m * d), 0.0f);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t row = r0 + i;
      float* dst = x->mutable_data() + i * d;
      switch (data.storage) {
        case FeatureStorage::kDenseFloat32:
          std::copy_n(data.F32Rows() + row * d, d, dst);
          break;
        case FeatureStorage::kDenseUint8:
          for (int64_t j = 0; j < d; ++j) {
            dst[j] = static_cast<float>(data.U8Rows()[row * d + j] * data.u8_scale);
          }
          break;
        case FeatureStorage::kSparseCsr:
          for (int64_t p = data.csr_indptr[row]; p < data.csr_indptr[row + 1]; ++p) {
            dst[data.csr_indices[p]] = data.CsrValue(p);
          }
          break;
      }
    }
    v1::PredictResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = stub->Predict(&ctx, req, &resp);
    if (!st.ok()) {
      const std::string msg =
          Unreachable(st)
              ? absl::StrCat("cannot reach the server at ", server.server, ": ", st.error_message())
              : st.error_message();
      return absl::Status(static_cast<absl::StatusCode>(st.error_code()), msg);
    }
    *num_classes = resp.num_classes();
    out.insert(out.end(), resp.probabilities().begin(), resp.probabilities().end());
  }
  return out;
}

}  // namespace logit
