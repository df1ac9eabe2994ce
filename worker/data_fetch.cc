#include "worker/data_fetch.h"

#include <dirent.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/common/log.h"
#include "worker/common/sha256.h"
#include "worker/common/status.h"

namespace logit {

namespace {

std::string BaseName(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool IsHex64(const std::string& s) {
  return s.size() == 64 &&
         std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(c) && !std::isupper(c); });
}

// A cache entry: DIR/SHA256/NAME.
struct Entry {
  std::string dir, file;
  int64_t size = 0;
  int64_t used_ns = 0;  // modification time, refreshed on every use
};

std::vector<Entry> ListEntries(const std::string& root) {
  std::vector<Entry> out;
  DIR* d = opendir(root.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (!IsHex64(e->d_name)) continue;
    const std::string dir = absl::StrCat(root, "/", e->d_name);
    DIR* inner = opendir(dir.c_str());
    if (inner == nullptr) continue;
    while (dirent* f = readdir(inner)) {
      if (f->d_name[0] == '.') continue;
      Entry entry{dir, absl::StrCat(dir, "/", f->d_name)};
      struct stat st;
      if (stat(entry.file.c_str(), &st) != 0) continue;
      entry.size = st.st_size;
      entry.used_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
      out.push_back(std::move(entry));
    }
    closedir(inner);
  }
  closedir(d);
  return out;
}

void RemoveEntry(const Entry& e) {
  unlink(e.file.c_str());
  rmdir(e.dir.c_str());  // only when empty
}

}  // namespace

absl::StatusOr<DataCacheOptions::Access> ParseDataAccess(const std::string& name) {
  if (name == "auto") return DataCacheOptions::Access::kAuto;
  if (name == "direct") return DataCacheOptions::Access::kDirect;
  if (name == "fetch") return DataCacheOptions::Access::kFetch;
  return absl::InvalidArgumentError(
      absl::StrCat("--data-access: '", name, "' is not auto, direct or fetch"));
}

DataFetcher::DataFetcher(std::shared_ptr<v1::WorkerService::Stub> stub, DataCacheOptions options)
    : stub_(std::move(stub)), options_(std::move(options)) {}

absl::StatusOr<v1::DataFileInfo> DataFetcher::Describe(const v1::RankIdentity& rank,
                                                       const std::string& path,
                                                       bool skip_sha256) {
  v1::FetchDataRequest req;
  *req.mutable_from() = rank;
  req.set_path(path);
  req.set_info_only(true);
  req.set_skip_sha256(skip_sha256);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));  // hashing
  auto reader = stub_->FetchData(&ctx, req);
  v1::FetchDataResponse msg;
  v1::DataFileInfo info;
  bool got = false;
  while (reader->Read(&msg)) {
    if (msg.has_info()) {
      info = msg.info();
      got = true;
    }
  }
  const grpc::Status st = reader->Finish();
  if (!st.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                        absl::StrCat("data: ", BaseName(path), ": ", st.error_message()));
  }
  if (!got || (!skip_sha256 && !IsHex64(info.sha256()))) {
    return absl::DataLossError(absl::StrCat("data: ", BaseName(path),
                                            ": the coordinator sent no content hash"));
  }
  return info;
}

absl::Status DataFetcher::Download(const v1::RankIdentity& rank, const std::string& path,
                                   const v1::DataFileInfo& info, const std::string& dest) {
  const std::string temp = absl::StrCat(dest, ".part-", getpid());
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("data cache: cannot create ", temp, ": ", std::strerror(errno)));
  }
  v1::FetchDataRequest req;
  *req.mutable_from() = rank;
  req.set_path(path);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::hours(6));
  auto reader = stub_->FetchData(&ctx, req);
  Sha256 hash;
  int64_t got = 0;
  bool write_failed = false;
  v1::FetchDataResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_info()) {
      if (msg.info().sha256() != info.sha256()) write_failed = true;  // changed meanwhile
      continue;
    }
    const std::string& chunk = msg.chunk();
    hash.Update(chunk.data(), chunk.size());
    for (size_t off = 0; off < chunk.size() && !write_failed;) {
      const ssize_t n = write(fd, chunk.data() + off, chunk.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) write_failed = true;
      if (n > 0) off += static_cast<size_t>(n);
    }
    got += static_cast<int64_t>(chunk.size());
    if (write_failed) ctx.TryCancel();
  }
  const grpc::Status st = reader->Finish();
  const bool closed = close(fd) == 0;
  auto fail = [&](absl::Status s) {
    unlink(temp.c_str());
    return s;
  };
  if (write_failed || !closed) {
    return fail(absl::ResourceExhaustedError(
        absl::StrCat("data cache: writing ", temp, " failed (disk full?)")));
  }
  if (!st.ok()) {
    return fail(absl::UnavailableError(
        absl::StrCat("data: ", BaseName(path), ": download failed: ", st.error_message())));
  }
  const std::string digest = hash.HexDigest();
  if (got != info.size_bytes() || digest != info.sha256()) {
    return fail(absl::DataLossError(absl::StrCat(
        "data: ", BaseName(path), ": got ", got, " bytes with SHA-256 ", digest, ", expected ",
        info.size_bytes(), " bytes with SHA-256 ", info.sha256())));
  }
  if (rename(temp.c_str(), dest.c_str()) != 0) {
    return fail(absl::InternalError(
        absl::StrCat("data cache: cannot rename ", temp, ": ", std::strerror(errno))));
  }
  return absl::OkStatus();
}

void DataFetcher::MakeRoom(int64_t incoming, const std::string& keep) {
  std::vector<Entry> entries = ListEntries(options_.dir);
  int64_t total = 0;
  for (const Entry& e : entries) total += e.size;
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.used_ns < b.used_ns; });
  for (const Entry& e : entries) {
    if (total + incoming <= options_.max_bytes) break;
    if (e.file == keep) continue;
    RemoveEntry(e);
    total -= e.size;
    logging::Info("data cache evicted", {{"file", e.file}, {"bytes", e.size}});
  }
}

absl::StatusOr<std::string> DataFetcher::Localize(const v1::RankIdentity& rank,
                                                  const std::string& path, bool* fetched) {
  if (fetched != nullptr) *fetched = false;
  if (options_.access == DataCacheOptions::Access::kDirect) return path;
  const bool automatic = options_.access == DataCacheOptions::Access::kAuto;
  // Comparing sizes needs no hash: the coordinator reads the whole file only to serve a copy.
  ASSIGN_OR_RETURN(v1::DataFileInfo info, Describe(rank, path, /*skip_sha256=*/automatic));
  struct stat st;
  if (automatic && stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
      st.st_size == info.size_bytes()) {
    return path;  // the same file system as the coordinator
  }
  if (info.sha256().empty()) {
    ASSIGN_OR_RETURN(info, Describe(rank, path, /*skip_sha256=*/false));
  }
  if (info.size_bytes() > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "data: ", BaseName(path), " is ", info.size_bytes(),
        " bytes, more than this worker's --cache-max-bytes=", options_.max_bytes));
  }
  const std::string dir = absl::StrCat(options_.dir, "/", info.sha256());
  const std::string dest = absl::StrCat(dir, "/", BaseName(path));
  if (stat(dest.c_str(), &st) == 0 && st.st_size == info.size_bytes()) {
    utime(dest.c_str(), nullptr);  // most recently used
    logging::Info("data cache hit", {{"file", dest}, {"sha256", info.sha256()}});
    return dest;
  }
  mkdir(options_.dir.c_str(), 0755);
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InternalError(
        absl::StrCat("data cache: cannot create ", dir, ": ", std::strerror(errno)));
  }
  MakeRoom(info.size_bytes(), dest);
  const auto start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(Download(rank, path, info, dest));
  if (fetched != nullptr) *fetched = true;
  logging::Info("data fetched",
                {{"file", dest},
                 {"bytes", info.size_bytes()},
                 {"sha256", info.sha256()},
                 {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                           start)
                                 .count()}});
  return dest;
}

}  // namespace logit
