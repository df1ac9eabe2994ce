#include "server/chunk_file.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

#include "worker/common/sha256.h"

namespace logit {

int64_t FreeDiskBytes(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return INT64_MAX;
  return static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize);
}

absl::StatusOr<int64_t> WriteChunks(const std::string& path, const ChunkSource& next,
                                    const ChunkWriteOptions& options) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot write ", path));
  auto fail = [&](absl::Status st) {
    close(fd);
    unlink(path.c_str());
    return st;
  };
  const std::string dir = std::filesystem::path(path).parent_path().string();
  int64_t size = 0, checked_disk_at = -1;
  std::string chunk;
  Sha256 hash;
  while (true) {
    auto more = next(&chunk);
    if (!more.ok()) return fail(more.status());
    if (!*more) break;
    if (static_cast<int64_t>(chunk.size()) > options.max_bytes - size) {
      return fail(absl::ResourceExhaustedError(absl::StrCat(
          "upload: more than ", options.max_bytes, " bytes, over the limit ", options.limit_name)));
    }
    if (options.reserve_bytes > 0 &&
        (checked_disk_at < 0 || size - checked_disk_at >= (64 << 20))) {
      checked_disk_at = size;
      const int64_t free = FreeDiskBytes(dir);
      if (free - static_cast<int64_t>(chunk.size()) < options.reserve_bytes) {
        return fail(absl::ResourceExhaustedError(absl::StrCat(
            "upload: the server's disk has ", free,
            " bytes free, and keeps --min-free-disk-bytes=", options.reserve_bytes, " free")));
      }
    }
    for (size_t off = 0; off < chunk.size();) {
      const ssize_t n = write(fd, chunk.data() + off, chunk.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        return fail(
            absl::ResourceExhaustedError(absl::StrCat("writing ", path, " failed (disk full?)")));
      }
      off += static_cast<size_t>(n);
    }
    if (options.sha256 != nullptr) hash.Update(chunk.data(), chunk.size());
    size += static_cast<int64_t>(chunk.size());
  }
  if (options.sync && fsync(fd) != 0) {
    return fail(absl::InternalError(absl::StrCat("fsync ", path, ": ", std::strerror(errno))));
  }
  if (close(fd) != 0) {
    unlink(path.c_str());
    return absl::ResourceExhaustedError(absl::StrCat("writing ", path, " failed (disk full?)"));
  }
  if (options.sha256 != nullptr) *options.sha256 = hash.HexDigest();
  return size;
}

}  // namespace logit
