#include "server/checkpoint_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "server/chunk_file.h"
#include "worker/common/status.h"

namespace logit {

namespace fs = std::filesystem;

namespace {

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat("checkpoint: ", what, ": ", std::strerror(errno)));
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno(absl::StrCat("open ", dir));
  const int rc = fsync(fd);
  close(fd);
  if (rc != 0) return Errno(absl::StrCat("fsync ", dir));
  return absl::OkStatus();
}

std::string RandomSuffix() {
  std::random_device rd;
  return absl::StrCat(rd(), rd());
}

}  // namespace

std::string CheckpointFiles::JobDir(const std::string& job_id) const {
  return (fs::path(dir_) / job_id).string();
}

absl::StatusOr<std::string> CheckpointFiles::Receive(const std::string& job_id,
                                                     int64_t expected_size, int64_t max_bytes,
                                                     const ChunkSource& next) {
  if (expected_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("size_bytes: a checkpoint has at least one byte, got ", expected_size));
  }
  if (max_bytes > 0 && expected_size > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("size_bytes: ", expected_size, " is over --max-checkpoint-bytes=", max_bytes));
  }
  const std::string dir = JobDir(job_id);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("checkpoint: cannot create ", dir, ": ", ec.message()));
  const std::string temp = absl::StrCat(dir, "/.upload-", RandomSuffix());
  int64_t received = 0;
  auto bounded = [&](std::string* chunk) -> absl::StatusOr<bool> {
    ASSIGN_OR_RETURN(const bool more, next(chunk));
    received += more ? static_cast<int64_t>(chunk->size()) : 0;
    if (received > expected_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "size_bytes: the checkpoint's header announced ", expected_size, " bytes; more came"));
    }
    return more;
  };
  ChunkWriteOptions options;
  options.sync = true;
  ASSIGN_OR_RETURN(const int64_t written, WriteChunks(temp, bounded, options));
  if (written != expected_size) {
    unlink(temp.c_str());
    return absl::InvalidArgumentError(absl::StrCat("size_bytes: the checkpoint's header announced ",
                                                   expected_size, " bytes, ", written,
                                                   " came (upload cut short?)"));
  }
  return temp;
}

absl::StatusOr<std::string> CheckpointFiles::Publish(const std::string& temp,
                                                     const std::string& job_id, int64_t number) {
  const std::string dir = JobDir(job_id);
  const std::string path = absl::StrCat(dir, "/ckpt-", number, ".safetensors");
  if (rename(temp.c_str(), path.c_str()) != 0) {
    absl::Status st = Errno(absl::StrCat("rename ", temp, " to ", path));
    unlink(temp.c_str());
    return st;
  }
  absl::Status synced = SyncDirectory(dir);
  if (!synced.ok()) {
    unlink(path.c_str());
    return synced;
  }
  return path;
}

void CheckpointFiles::Remove(const std::string& path) {
  if (path.empty()) return;
  unlink(path.c_str());
  // The job's directory goes with its last file.
  std::error_code ec;
  const fs::path dir = fs::path(path).parent_path();
  if (fs::is_empty(dir, ec) && !ec) fs::remove(dir, ec);
}

int CheckpointFiles::RemoveOrphans(const std::vector<CheckpointRecord>& known) {
  std::set<std::string> keep;
  for (const CheckpointRecord& r : known) keep.insert(fs::path(r.path).lexically_normal().string());
  std::error_code ec;
  fs::create_directories(dir_, ec);
  int removed = 0;
  std::vector<fs::path> dirs;
  for (auto it = fs::directory_iterator(dir_, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    if (it->is_directory()) dirs.push_back(it->path());
  }
  for (const fs::path& d : dirs) {
    std::vector<fs::path> files;
    for (auto it = fs::directory_iterator(d, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      files.push_back(it->path());
    }
    for (const fs::path& f : files) {
      if (keep.count(f.lexically_normal().string()) == 0) {
        fs::remove(f, ec);
        ++removed;
      }
    }
    if (fs::is_empty(d, ec) && !ec) fs::remove(d, ec);
  }
  return removed;
}

}  // namespace logit
