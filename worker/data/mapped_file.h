// A read-only memory map of a whole file (internal to the readers).
#ifndef LOGIT_WORKER_DATA_MAPPED_FILE_H_
#define LOGIT_WORKER_DATA_MAPPED_FILE_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace logit {

class MappedFile {
 public:
  // NotFound when the file does not exist, InvalidArgument when it is not a regular file.
  static absl::StatusOr<MappedFile> Open(const std::string& path);
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) = delete;
  MappedFile(const MappedFile&) = delete;
  ~MappedFile();

  absl::string_view data() const { return {data_, size_}; }

  // Drops the pages of bytes [0, end) from this process's memory (they are read again from the
  // page cache if touched later): a reader that walks a large file once keeps its resident size
  // to what it parsed into, not the file's size.
  void ReleaseBefore(size_t end) const;

 private:
  MappedFile(const char* data, size_t size) : data_(data), size_(size) {}
  const char* data_;
  size_t size_;
};

}  // namespace logit

#endif  // LOGIT_WORKER_DATA_MAPPED_FILE_H_
