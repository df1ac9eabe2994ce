#include "server/catalog.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/time_util.h"
#include "worker/common/sha256.h"
#include "worker/common/status.h"
#include "worker/data/limits.h"
#include "worker/data/readers.h"
#include "worker/model/model_io.h"
#include "worker/model/predict.h"

namespace logit {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Keeps the name's extension (the readers infer the format from it) and nothing dangerous.
std::string SafeFileName(const std::string& name) {
  std::string base = fs::path(name).filename().string();
  for (char& c : base) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_')) c = '_';
  }
  if (base.empty() || base == "." || base == "..") base = "data";
  return base;
}

// Orders records newest first: by created time, then by the number in the id ("model-12"
// after "model-9"), so records created in the same instant keep their upload order.
bool NewerThan(const google::protobuf::Timestamp& a_created, const std::string& a_id,
               const google::protobuf::Timestamp& b_created, const std::string& b_id) {
  const int64_t a = google::protobuf::util::TimeUtil::TimestampToNanoseconds(a_created);
  const int64_t b = google::protobuf::util::TimeUtil::TimestampToNanoseconds(b_created);
  if (a != b) return a > b;
  if (a_id.size() != b_id.size()) return a_id.size() > b_id.size();
  return a_id > b_id;
}

// Predict's model loading: the model file at `path`, ready to serve.
absl::StatusOr<std::shared_ptr<const LinearModel>> LoadServingModel(const std::string& path) {
  ASSIGN_OR_RETURN(LinearModel model, LoadModel(path));
  return std::make_shared<const LinearModel>(std::move(model));
}

// Predict's computation: class probabilities of `rows` (row-major, rows x num_classes).
absl::StatusOr<std::vector<float>> ServingProbabilities(const LinearModel& model,
                                                        const Dataset& rows) {
  return PredictProba(model, rows);
}

}  // namespace

Catalog::Catalog(CatalogOptions options, JobStore* store)
    : options_(std::move(options)), store_(store) {}

void Catalog::Restore(std::vector<DatasetRecord> datasets, std::vector<ModelRecord> models) {
  MutexLock lock(&mu_);
  for (DatasetRecord& d : datasets) datasets_[d.info.id()] = std::move(d);
  for (ModelRecord& m : models) {
    const std::string id = m.info.model_id();
    models_[id] = Model{std::move(m), ++next_generation_};
  }
}

absl::StatusOr<std::string> Catalog::ResolveData(const std::string& field,
                                                 const std::string& ref) const {
  if (absl::StartsWith(ref, "dataset:")) {
    const std::string id = ref.substr(8);
    MutexLock lock(&mu_);
    auto it = datasets_.find(id);
    if (it == datasets_.end()) {
      return absl::NotFoundError(absl::StrCat(field, ": dataset '", id, "' does not exist"));
    }
    return it->second.path;
  }
  if (absl::StartsWith(ref, "server:")) {
    if (options_.data_root.empty()) {
      return absl::PermissionDeniedError(absl::StrCat(
          field, ": '", ref, "': this server has no --data-root, so server: paths are disabled"));
    }
    std::error_code ec;
    const fs::path root = fs::weakly_canonical(options_.data_root, ec);
    const fs::path rel = ref.substr(7);
    if (rel.is_absolute()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": '", ref, "' must be relative to the server's data root"));
    }
    const fs::path full = fs::weakly_canonical(root / rel, ec);
    const std::string r = root.string(), f = full.string();
    if (ec || f.compare(0, r.size(), r) != 0 || (f.size() > r.size() && f[r.size()] != '/')) {
      return absl::PermissionDeniedError(
          absl::StrCat(field, ": '", ref, "' points outside the server's data root"));
    }
    if (!fs::is_regular_file(full, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": '", ref, "': no such file"));
    }
    return f;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": '", ref, "' must be dataset:ID (upload it first: logit upload) or server:PATH"));
}

absl::StatusOr<v1::DataFileInfo> Catalog::DescribeDataFile(const std::string& path, bool hash,
                                                           bool blocks) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file on the coordinator"));
  }
  const int64_t mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  v1::DataFileInfo info;
  info.set_size_bytes(st.st_size);
  std::string recorded;  // the hash recorded at upload, if this is an uploaded dataset's file
  {
    MutexLock lock(&mu_);
    for (const auto& [id, d] : datasets_) {
      if (d.path != path || d.info.sha256().empty()) continue;
      if (d.info.size_bytes() != st.st_size) {
        return absl::DataLossError(absl::StrCat(path, ": has ", st.st_size, " bytes, not the ",
                                                d.info.size_bytes(), " recorded at upload"));
      }
      recorded = d.info.sha256();
    }
    auto it = file_hashes_.find(path);
    const bool cached = it != file_hashes_.end() && it->second.size == st.st_size &&
                        it->second.mtime_ns == mtime_ns;
    if (cached && (!blocks || it->second.block_bytes > 0)) {
      info.set_sha256(it->second.sha256);
      if (blocks) {
        info.set_block_bytes(it->second.block_bytes);
        for (const std::string& b : it->second.blocks) info.add_block_sha256(b);
      }
      return info;
    }
    if (!recorded.empty() && !blocks) {
      info.set_sha256(recorded);
      return info;
    }
  }
  if (!hash && !blocks) return info;
  // Hashed outside the lock: a large file takes a while, once.
  ASSIGN_OR_RETURN(FileDigests digests, DigestFile(path));
  if (!recorded.empty() && digests.sha256 != recorded) {
    return absl::DataLossError(absl::StrCat(path, ": its SHA-256 is now ", digests.sha256,
                                            ", not the ", recorded, " recorded at upload"));
  }
  info.set_sha256(digests.sha256);
  if (blocks) {
    info.set_block_bytes(digests.block_bytes);
    for (const std::string& b : digests.blocks) info.add_block_sha256(b);
  }
  MutexLock lock(&mu_);
  file_hashes_[path] = FileHash{st.st_size, mtime_ns, std::move(digests.sha256),
                                digests.block_bytes, std::move(digests.blocks)};
  return info;
}

absl::StatusOr<v1::Dataset> Catalog::UploadDataset(const v1::DatasetInfo& info,
                                                   const ChunkSource& next) {
  if (info.name().empty()) return absl::InvalidArgumentError("info.name: no file name given");
  if (!info.format().empty() && !ParseDataFormat(info.format()).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("info.format: '", info.format(), "' is not csv, libsvm, npy or idx"));
  }
  // The most this upload may write: the per-dataset limit, what the all-datasets limit leaves,
  // and the disk space above the reserve; checked again as chunks arrive.
  int64_t allowed = options_.max_upload_bytes > 0 ? options_.max_upload_bytes : INT64_MAX;
  std::string limit_name = absl::StrCat("--max-upload-bytes=", options_.max_upload_bytes);
  if (options_.max_dataset_bytes > 0) {
    int64_t used = 0;
    {
      MutexLock lock(&mu_);
      for (const auto& [id, d] : datasets_) used += d.info.size_bytes();
    }
    if (options_.max_dataset_bytes - used < allowed) {
      allowed = std::max<int64_t>(0, options_.max_dataset_bytes - used);
      limit_name = absl::StrCat("--max-dataset-bytes=", options_.max_dataset_bytes, " (", used,
                                " bytes used)");
    }
  }
  ASSIGN_OR_RETURN(const int64_t n, store_->NextId("dataset"));
  const std::string id = absl::StrCat("dataset-", n);
  const fs::path dir = fs::path(options_.data_dir) / "datasets" / id;
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string path = (dir / SafeFileName(info.name())).string();
  std::string sha256;
  ChunkWriteOptions write;
  write.max_bytes = allowed;
  write.limit_name = limit_name;
  write.reserve_bytes = options_.min_free_disk_bytes;
  write.sha256 = &sha256;
  auto size = WriteChunks(path, next, write);
  if (!size.ok()) {
    fs::remove_all(dir, ec);
    return size.status();
  }
  MutexLock publish(&datasets_mu_);
  {
    MutexLock lock(&mu_);
    for (const auto& [other_id, d] : datasets_) {
      if (d.info.sha256() == sha256 && d.info.name() == info.name() &&
          d.info.size_bytes() == *size) {
        fs::remove_all(dir, ec);
        return d.info;
      }
    }
  }
  DatasetRecord rec;
  rec.info.set_id(id);
  rec.info.set_name(info.name());
  rec.info.set_size_bytes(*size);
  rec.info.set_sha256(sha256);
  *rec.info.mutable_created() = google::protobuf::util::TimeUtil::GetCurrentTime();
  rec.path = path;
  absl::Status st = store_->PutDataset(rec);
  if (!st.ok()) {
    fs::remove_all(dir, ec);
    return st;
  }
  MutexLock lock(&mu_);
  datasets_[id] = rec;
  return rec.info;
}

std::vector<v1::Dataset> Catalog::ListDatasets(const std::string& sha256) const {
  std::vector<v1::Dataset> out;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, d] : datasets_) {
      if (sha256.empty() || d.info.sha256() == sha256) out.push_back(d.info);
    }
  }
  std::sort(out.begin(), out.end(), [](const v1::Dataset& a, const v1::Dataset& b) {
    return NewerThan(a.created(), a.id(), b.created(), b.id());
  });
  return out;
}

absl::Status Catalog::DeleteDataset(const std::string& dataset_id) {
  MutexLock publish(&datasets_mu_);
  std::string path;
  {
    MutexLock lock(&mu_);
    auto it = datasets_.find(dataset_id);
    if (it == datasets_.end()) {
      return absl::NotFoundError(absl::StrCat("dataset '", dataset_id, "' not found"));
    }
    path = it->second.path;
  }
  RETURN_IF_ERROR(store_->DeleteDataset(dataset_id));
  {
    MutexLock lock(&mu_);
    datasets_.erase(dataset_id);
    file_hashes_.erase(path);
  }
  // An upload's file lives alone in datasets/ID/; anything else only loses the file.
  std::error_code ec;
  const fs::path dir = fs::path(path).parent_path();
  if (dir.filename() == dataset_id && dir.parent_path().filename() == "datasets") {
    fs::remove_all(dir, ec);
  } else {
    fs::remove(path, ec);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Catalog::AddModel(const std::string& job_id,
                                              const v1::TrainingSummary& summary,
                                              const ChunkSource& next) {
  ASSIGN_OR_RETURN(const int64_t n, store_->NextId("model"));
  const std::string id = absl::StrCat("model-", n);
  const std::string path = (fs::path(options_.data_dir) / "models" / (id + ".npz")).string();
  ASSIGN_OR_RETURN(
      const int64_t size,
      WriteChunks(path + ".part", next,
                  {kMaxModelFileBytes, absl::StrCat("of a model (", kMaxParameters, " parameters)"),
                   options_.min_free_disk_bytes}));
  std::error_code ec;
  fs::rename(path + ".part", path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot store ", path, ": ", ec.message()));
  auto model = LoadModel(path);
  if (!model.ok()) {
    fs::remove(path, ec);
    return absl::InvalidArgumentError(
        absl::StrCat("model: the uploaded file is not a model: ", model.status().message()));
  }
  ModelRecord rec;
  rec.path = path;
  rec.info.set_model_id(id);
  rec.info.set_job_id(job_id);
  rec.info.set_num_features(model->num_features);
  rec.info.set_num_classes(model->num_classes);
  rec.info.set_size_bytes(size);
  *rec.info.mutable_summary() = summary;
  *rec.info.mutable_created() =
      google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
  absl::Status st = store_->PutModel(rec);
  if (!st.ok()) {
    fs::remove(path, ec);
    return st;
  }
  MutexLock lock(&mu_);
  models_[id] = Model{std::move(rec), ++next_generation_};
  return id;
}

absl::StatusOr<ModelRecord> Catalog::GetModel(const std::string& model_id) const {
  MutexLock lock(&mu_);
  auto it = models_.find(model_id);
  if (it == models_.end()) {
    return absl::NotFoundError(absl::StrCat("model '", model_id, "' not found"));
  }
  return it->second.record;
}

std::vector<v1::ModelInfo> Catalog::ListModels() const {
  std::vector<v1::ModelInfo> out;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, m] : models_) {
      out.push_back(m.record.info);
      out.back().mutable_summary()->clear_history();
    }
  }
  std::sort(out.begin(), out.end(), [](const v1::ModelInfo& a, const v1::ModelInfo& b) {
    return NewerThan(a.created(), a.model_id(), b.created(), b.model_id());
  });
  return out;
}

void Catalog::UncacheLocked(const std::string& model_id) {
  auto c = cache_.find(model_id);
  if (c == cache_.end()) return;
  lru_.erase(c->second.lru);
  cache_.erase(c);
}

absl::Status Catalog::DeleteModel(const std::string& model_id) {
  uint64_t generation = 0;
  {
    MutexLock lock(&mu_);
    auto it = models_.find(model_id);
    if (it == models_.end()) {
      return absl::NotFoundError(absl::StrCat("model '", model_id, "' not found"));
    }
    generation = it->second.generation;
  }
  RETURN_IF_ERROR(store_->DeleteModel(model_id));
  std::string path;
  {
    MutexLock lock(&mu_);
    auto it = models_.find(model_id);
    // A concurrent DeleteModel of the same model got here first.
    if (it == models_.end() || it->second.generation != generation) {
      return absl::NotFoundError(absl::StrCat("model '", model_id, "' not found"));
    }
    path = it->second.record.path;
    models_.erase(it);
    UncacheLocked(model_id);
  }
  std::error_code ec;
  fs::remove(path, ec);
  return absl::OkStatus();
}

absl::StatusOr<v1::PredictResponse> Catalog::Predict(const v1::PredictRequest& request) {
  const auto start = Clock::now();
  const std::string& id = request.model_id();
  std::shared_ptr<const LinearModel> model;
  std::string path;
  uint64_t generation = 0;
  std::function<void(const std::string&)> hook;
  {
    MutexLock lock(&mu_);
    auto it = models_.find(id);
    if (it == models_.end()) {
      return absl::NotFoundError(absl::StrCat("model '", id, "' not found"));
    }
    path = it->second.record.path;
    generation = it->second.generation;
    auto c = cache_.find(id);
    if (c != cache_.end()) {
      model = c->second.model;
      lru_.splice(lru_.begin(), lru_, c->second.lru);
    }
    hook = after_load_hook_;
  }
  if (!model) {
    ASSIGN_OR_RETURN(model, LoadServingModel(path));
    if (hook) hook(id);
    MutexLock lock(&mu_);
    auto it = models_.find(id);
    // Deleted (or deleted and re-added) while loading: serve this request, cache nothing.
    if (it != models_.end() && it->second.generation == generation && !cache_.count(id)) {
      lru_.push_front(id);
      cache_[id] = Cached{model, lru_.begin()};
      while (options_.max_cached_models > 0 &&
             static_cast<int>(cache_.size()) > options_.max_cached_models) {
        cache_.erase(lru_.back());
        lru_.pop_back();
      }
    }
  }
  ASSIGN_OR_RETURN(
      const Dataset rows,
      RowsFromPredict(request, model->num_features, model->num_classes, options_.predict_limits));
  ASSIGN_OR_RETURN(const std::vector<float> proba, ServingProbabilities(*model, rows));
  v1::PredictResponse resp;
  const int64_t k = model->num_classes;
  resp.set_num_classes(k);
  for (const std::string& name : model->class_names) resp.add_class_names(name);
  resp.mutable_probabilities()->Add(proba.begin(), proba.end());
  for (int64_t i = 0; i < rows.num_rows; ++i) {
    const float* p = proba.data() + i * k;
    resp.add_labels(std::max_element(p, p + k) - p);
  }
  resp.set_server_nanos(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
  return resp;
}

bool Catalog::IsCached(const std::string& model_id) const {
  MutexLock lock(&mu_);
  return cache_.count(model_id) > 0;
}

void Catalog::SetAfterLoadHookForTest(std::function<void(const std::string& model_id)> hook) {
  MutexLock lock(&mu_);
  after_load_hook_ = std::move(hook);
}

}  // namespace logit
