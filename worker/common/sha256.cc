#include "worker/common/sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace logit {

struct Sha256::Impl {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr);
}

Sha256::~Sha256() = default;

void Sha256::Update(const void* data, size_t size) { EVP_DigestUpdate(impl_->ctx, data, size); }

std::string Sha256::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(impl_->ctx, digest, &n);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (unsigned int i = 0; i < n; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

std::string Sha256Of(const void* data, size_t size) {
  Sha256 hash;
  hash.Update(data, size);
  return hash.HexDigest();
}

int64_t BlockBytesFor(int64_t size) {
  int64_t block = int64_t{1} << 20;
  while ((size + block - 1) / block > 16384) block *= 2;
  return block;
}

absl::StatusOr<FileDigests> DigestFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat(path, ": cannot stat: ", std::strerror(err)));
  }
  FileDigests out;
  out.size = st.st_size;
  out.block_bytes = BlockBytesFor(st.st_size);
  Sha256 whole;
  std::vector<char> buf(static_cast<size_t>(out.block_bytes));
  int64_t total = 0;
  while (true) {
    // One block per pass: fill the buffer unless the file ends first.
    size_t filled = 0;
    while (filled < buf.size()) {
      const ssize_t n = read(fd, buf.data() + filled, buf.size() - filled);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        close(fd);
        return absl::InternalError(absl::StrCat(path, ": read failed: ", std::strerror(err)));
      }
      if (n == 0) break;
      filled += static_cast<size_t>(n);
    }
    if (filled == 0) break;
    whole.Update(buf.data(), filled);
    out.blocks.push_back(Sha256Of(buf.data(), filled));
    total += static_cast<int64_t>(filled);
    if (filled < buf.size()) break;
  }
  close(fd);
  if (total != out.size) {
    return absl::DataLossError(
        absl::StrCat(path, ": changed while it was hashed (", total, " of ", out.size, " bytes)"));
  }
  out.sha256 = whole.HexDigest();
  return out;
}

}  // namespace logit
