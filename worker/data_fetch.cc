#include "worker/data_fetch.h"

#include <dirent.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/common/log.h"
#include "worker/common/sha256.h"
#include "worker/common/status.h"
#include "worker/data/readers.h"

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
struct CachedFile {
  std::string dir, file;
  int64_t size = 0;
  int64_t used_ns = 0;  // modification time, refreshed on every use
};

std::vector<CachedFile> ListEntries(const std::string& root) {
  std::vector<CachedFile> out;
  DIR* d = opendir(root.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (!IsHex64(e->d_name)) continue;
    const std::string dir = absl::StrCat(root, "/", e->d_name);
    DIR* inner = opendir(dir.c_str());
    if (inner == nullptr) continue;
    while (dirent* f = readdir(inner)) {
      if (f->d_name[0] == '.') continue;
      CachedFile entry{dir, absl::StrCat(dir, "/", f->d_name)};
      struct stat st;
      if (stat(entry.file.c_str(), &st) != 0) continue;
      entry.size = int64_t{st.st_blocks} * 512;  // on disk: holes take nothing
      entry.used_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
      out.push_back(std::move(entry));
    }
    closedir(inner);
  }
  closedir(d);
  return out;
}

std::string MapPath(const std::string& file) {
  const size_t slash = file.rfind('/');
  return absl::StrCat(file.substr(0, slash + 1), ".", file.substr(slash + 1), ".have");
}

void RemoveEntry(const CachedFile& e) {
  unlink(e.file.c_str());
  unlink(MapPath(e.file).c_str());
  rmdir(e.dir.c_str());  // only when empty
}

// Holds the cache directory's lock file: processes sharing a cache take turns.
class CacheLock {
 public:
  explicit CacheLock(const std::string& dir) {
    fd_ = open(absl::StrCat(dir, "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ >= 0) {
      while (flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
    }
  }
  ~CacheLock() {
    if (fd_ >= 0) close(fd_);  // releases the lock
  }
  CacheLock(const CacheLock&) = delete;
  CacheLock& operator=(const CacheLock&) = delete;
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

absl::Status PWriteAll(int fd, const char* data, size_t size, int64_t offset,
                       const std::string& file) {
  for (size_t done = 0; done < size;) {
    const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "data cache: writing ", file, " failed: ", n < 0 ? std::strerror(errno) : "no space"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
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

// A cache entry being localized: its file (full size, the blocks not fetched yet are holes)
// and the list of blocks it holds, kept in MapPath(file).
class DataFetcher::Entry {
 public:
  ~Entry() {
    if (fd_ >= 0) close(fd_);
  }

  static absl::StatusOr<std::unique_ptr<Entry>> Open(const std::string& file,
                                                     const v1::DataFileInfo& info) {
    auto e = std::unique_ptr<Entry>(new Entry(file, info));
    const bool existed = access(file.c_str(), F_OK) == 0;
    e->fd_ = open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (e->fd_ < 0) {
      return absl::InternalError(
          absl::StrCat("data cache: cannot open ", file, ": ", std::strerror(errno)));
    }
    struct stat st;
    const bool sized = fstat(e->fd_, &st) == 0 && st.st_size == info.size_bytes();
    const int64_t blocks = e->blocks();
    // A file of the right size without a list (written whole by an older logit) may hold
    // everything: its blocks are verified before use like any others.
    e->have_.assign(blocks, existed && sized ? '1' : '0');
    std::ifstream in(e->map_);
    std::string header, have;
    if (in && std::getline(in, header) && std::getline(in, have) && header == e->MapHeader() &&
        static_cast<int64_t>(have.size()) == blocks && sized) {
      e->have_ = have;
    } else if (!sized && (ftruncate(e->fd_, 0) != 0 || ftruncate(e->fd_, info.size_bytes()) != 0)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("data cache: cannot size ", file, ": ", std::strerror(errno)));
    }
    return e;
  }

  const std::string& file() const { return file_; }
  int64_t blocks() const { return info_.block_sha256_size(); }
  int64_t Offset(int64_t block) const { return block * info_.block_bytes(); }
  int64_t Length(int64_t block) const {
    return std::min(info_.block_bytes(), info_.size_bytes() - Offset(block));
  }
  const std::string& Hash(int64_t block) const { return info_.block_sha256(block); }
  bool Has(int64_t block) const { return have_[block] == '1'; }
  void Set(int64_t block, bool has) { have_[block] = has ? '1' : '0'; }

  // Writes the list of blocks held (a new file renamed into place).
  absl::Status Save() {
    const std::string temp = absl::StrCat(map_, ".tmp");
    {
      std::ofstream out(temp, std::ios::trunc);
      out << MapHeader() << "\n" << have_ << "\n";
      out.flush();
      if (!out) {
        return absl::ResourceExhaustedError(absl::StrCat("data cache: cannot write ", temp));
      }
    }
    if (fdatasync(fd_) != 0 || rename(temp.c_str(), map_.c_str()) != 0) {
      return absl::InternalError(
          absl::StrCat("data cache: cannot update ", map_, ": ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Read(int64_t offset, int64_t length) const {
    std::string out(static_cast<size_t>(length), '\0');
    for (int64_t done = 0; done < length;) {
      const ssize_t n = pread(fd_, out.data() + done, length - done, offset + done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        return absl::InternalError(absl::StrCat("data cache: cannot read ", file_, ": ",
                                                n < 0 ? std::strerror(errno) : "short file"));
      }
      done += n;
    }
    return out;
  }

  absl::Status Write(int64_t offset, const char* data, size_t size) {
    return PWriteAll(fd_, data, size, offset, file_);
  }

 private:
  Entry(std::string file, const v1::DataFileInfo& info)
      : file_(std::move(file)), map_(MapPath(file_)), info_(info) {}
  std::string MapHeader() const {
    return absl::StrCat("logit-data-cache 1 ", info_.size_bytes(), " ", info_.block_bytes(), " ",
                        info_.sha256());
  }

  const std::string file_, map_;
  const v1::DataFileInfo info_;
  int fd_ = -1;
  std::string have_;  // '1' per block held
};

absl::StatusOr<v1::DataFileInfo> DataFetcher::Describe(const v1::RankIdentity& rank,
                                                       const std::string& path,
                                                       bool skip_sha256, bool with_blocks) {
  v1::FetchDataRequest req;
  *req.mutable_from() = rank;
  req.set_path(path);
  req.set_info_only(true);
  req.set_skip_sha256(skip_sha256);
  req.set_with_blocks(with_blocks);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(30));  // hashing
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
  if (with_blocks) {
    const int64_t size = info.size_bytes(), block = info.block_bytes();
    const bool sane = size >= 0 && block > 0 && info.block_sha256_size() == (size + block - 1) / block &&
                      std::all_of(info.block_sha256().begin(), info.block_sha256().end(), IsHex64);
    if (!sane) {
      return absl::DataLossError(absl::StrCat("data: ", BaseName(path),
                                              ": the coordinator sent no valid block hashes"));
    }
  }
  return info;
}

absl::Status DataFetcher::FetchBlocks(const v1::RankIdentity& rank, const std::string& path,
                                      Entry* entry, int64_t first, int64_t last) {
  v1::FetchDataRequest req;
  *req.mutable_from() = rank;
  req.set_path(path);
  req.set_offset(entry->Offset(first));
  req.set_length(entry->Offset(last) + entry->Length(last) - entry->Offset(first));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::hours(6));
  auto reader = stub_->FetchData(&ctx, req);
  absl::Status failed;
  int64_t block = first, in_block = 0;  // the block being received, its bytes so far
  auto hash = std::make_unique<Sha256>();
  v1::FetchDataResponse msg;
  while (failed.ok() && reader->Read(&msg)) {
    if (msg.has_info()) continue;
    const std::string& chunk = msg.chunk();
    for (size_t at = 0; at < chunk.size() && failed.ok();) {
      if (block > last) {
        failed = absl::DataLossError(
            absl::StrCat("data: ", BaseName(path), ": the coordinator sent more than asked"));
        break;
      }
      const size_t n = static_cast<size_t>(
          std::min<int64_t>(entry->Length(block) - in_block, static_cast<int64_t>(chunk.size() - at)));
      failed = entry->Write(entry->Offset(block) + in_block, chunk.data() + at, n);
      hash->Update(chunk.data() + at, n);
      at += n;
      in_block += static_cast<int64_t>(n);
      if (failed.ok() && in_block == entry->Length(block)) {
        const std::string digest = hash->HexDigest();
        if (digest != entry->Hash(block)) {
          failed = absl::DataLossError(absl::StrCat(
              "data: ", BaseName(path), ": block ", block, " (bytes ", entry->Offset(block),
              "..) has SHA-256 ", digest, ", expected ", entry->Hash(block)));
          break;
        }
        entry->Set(block, true);
        ++block;
        in_block = 0;
        hash = std::make_unique<Sha256>();
      }
    }
  }
  if (!failed.ok()) ctx.TryCancel();
  const grpc::Status st = reader->Finish();
  RETURN_IF_ERROR(entry->Save());  // keep the verified blocks whatever happened after them
  RETURN_IF_ERROR(failed);
  if (!st.ok()) {
    return absl::UnavailableError(
        absl::StrCat("data: ", BaseName(path), ": download failed: ", st.error_message()));
  }
  if (block <= last) {
    return absl::DataLossError(absl::StrCat("data: ", BaseName(path),
                                            ": the coordinator sent less than asked (block ",
                                            block, " incomplete)"));
  }
  return absl::OkStatus();
}

absl::Status DataFetcher::Ensure(const v1::RankIdentity& rank, const std::string& path,
                                 Entry* entry, const std::vector<int64_t>& needed,
                                 int64_t* fetched_bytes) {
  std::vector<int64_t> missing;
  int64_t missing_bytes = 0;
  for (const int64_t b : needed) {
    if (entry->Has(b)) {  // verified again: a disk or another program may have changed it
      ASSIGN_OR_RETURN(const std::string bytes, entry->Read(entry->Offset(b), entry->Length(b)));
      if (Sha256Of(bytes.data(), bytes.size()) == entry->Hash(b)) continue;
      logging::Warn("data cache block corrupt, fetching it again",
                    {{"file", entry->file()}, {"block", b}});
      entry->Set(b, false);
    }
    missing.push_back(b);
    missing_bytes += entry->Length(b);
  }
  if (missing.empty()) return absl::OkStatus();
  MakeRoom(missing_bytes, entry->file());
  for (size_t i = 0; i < missing.size();) {
    size_t j = i;
    while (j + 1 < missing.size() && missing[j + 1] == missing[j] + 1) ++j;
    RETURN_IF_ERROR(FetchBlocks(rank, path, entry, missing[i], missing[j]));
    i = j + 1;
  }
  *fetched_bytes += missing_bytes;
  return absl::OkStatus();
}

void DataFetcher::MakeRoom(int64_t incoming, const std::string& keep) {
  std::vector<CachedFile> entries = ListEntries(options_.dir);
  int64_t total = 0;
  for (const CachedFile& e : entries) total += e.size;
  std::sort(entries.begin(), entries.end(),
            [](const CachedFile& a, const CachedFile& b) { return a.used_ns < b.used_ns; });
  for (const CachedFile& e : entries) {
    if (total + incoming <= options_.max_bytes) break;
    if (e.file == keep) continue;
    RemoveEntry(e);
    total -= e.size;
    logging::Info("data cache evicted", {{"file", e.file}, {"bytes", e.size}});
  }
}

absl::StatusOr<std::string> DataFetcher::Localize(const v1::RankIdentity& rank,
                                                  const std::string& path, const DataShard& shard,
                                                  int64_t* fetched_bytes) {
  int64_t fetched = 0;
  if (fetched_bytes != nullptr) *fetched_bytes = 0;
  if (options_.access == DataCacheOptions::Access::kDirect) return path;
  const bool automatic = options_.access == DataCacheOptions::Access::kAuto;
  struct stat st;
  if (automatic) {
    // Comparing sizes needs no hash: the coordinator reads the whole file only to serve a copy.
    ASSIGN_OR_RETURN(const v1::DataFileInfo size_only,
                     Describe(rank, path, /*skip_sha256=*/true, /*with_blocks=*/false));
    if (stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        st.st_size == size_only.size_bytes()) {
      return path;  // the same file system as the coordinator
    }
  }
  ASSIGN_OR_RETURN(const v1::DataFileInfo info,
                   Describe(rank, path, /*skip_sha256=*/false, /*with_blocks=*/true));
  const std::string dir = absl::StrCat(options_.dir, "/", info.sha256());
  const std::string dest = absl::StrCat(dir, "/", BaseName(path));
  mkdir(options_.dir.c_str(), 0755);
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InternalError(
        absl::StrCat("data cache: cannot create ", dir, ": ", std::strerror(errno)));
  }
  const auto start = std::chrono::steady_clock::now();
  CacheLock lock(options_.dir);
  if (!lock.ok()) {
    return absl::InternalError(absl::StrCat("data cache: cannot lock ", options_.dir, "/.lock: ",
                                            std::strerror(errno)));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Entry> entry, Entry::Open(dest, info));
  // The first block holds the header that tells which bytes the shard needs.
  std::vector<int64_t> needed;
  if (entry->blocks() > 0) {
    RETURN_IF_ERROR(Ensure(rank, path, entry.get(), {0}, &fetched));
    ASSIGN_OR_RETURN(const std::string head, entry->Read(0, entry->Length(0)));
    const auto ranges =
        ShardByteRanges(head, info.size_bytes(), shard.labels, shard.rank, shard.world);
    if (!ranges.has_value()) {
      for (int64_t b = 0; b < entry->blocks(); ++b) needed.push_back(b);
    } else {
      for (const ByteRange& r : *ranges) {
        if (r.length <= 0) continue;
        const int64_t first = r.offset / info.block_bytes();
        const int64_t last = (r.offset + r.length - 1) / info.block_bytes();
        for (int64_t b = first; b <= last; ++b) needed.push_back(b);
      }
      std::sort(needed.begin(), needed.end());
      needed.erase(std::unique(needed.begin(), needed.end()), needed.end());
    }
  }
  int64_t needed_bytes = 0;
  for (const int64_t b : needed) needed_bytes += entry->Length(b);
  if (needed_bytes > options_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "data: ", BaseName(path), ": the shard needs ", needed_bytes,
        " bytes, more than this worker's --cache-max-bytes=", options_.max_bytes));
  }
  RETURN_IF_ERROR(Ensure(rank, path, entry.get(), needed, &fetched));
  utime(dest.c_str(), nullptr);  // most recently used
  if (fetched_bytes != nullptr) *fetched_bytes = fetched;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (fetched == 0) {
    logging::Info("data cache hit", {{"file", dest}, {"sha256", info.sha256()},
                                     {"verified_bytes", needed_bytes}, {"seconds", seconds}});
  } else {
    logging::Info("data fetched", {{"file", dest},
                                   {"bytes", fetched},
                                   {"shard_bytes", needed_bytes},
                                   {"file_bytes", info.size_bytes()},
                                   {"sha256", info.sha256()},
                                   {"seconds", seconds}});
  }
  return dest;
}

}  // namespace logit
