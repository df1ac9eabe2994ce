// The NumPy .npy format (version 1.0/2.0/3.0 headers, little-endian, C order).
#ifndef LOGIT_WORKER_DATA_NPY_H_
#define LOGIT_WORKER_DATA_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace logit {

struct NpyHeader {
  std::string descr;  // e.g. "<f4", "|u1", "<i8"
  bool fortran_order = false;
  std::vector<int64_t> shape;
  size_t data_offset = 0;    // bytes from the start of the file to the first element
  size_t item_size = 0;      // bytes per element
  int64_t num_elements = 0;  // product of `shape` (checked: never overflows)
  int64_t NumElements() const { return num_elements; }
};

// Parses the header at the start of `bytes` (the whole file); errors name `path`. Checks that
// the shape's element count and byte size do not overflow and that the data fits in `bytes`,
// or in `file_size` bytes when `bytes` holds only the file's first bytes (file_size >= 0).
absl::StatusOr<NpyHeader> ParseNpyHeader(absl::string_view bytes, const std::string& path,
                                         int64_t file_size = -1);

// Serialises a C-order array: `descr` (e.g. "<f4"), shape, raw little-endian bytes.
std::string EncodeNpy(const std::string& descr, const std::vector<int64_t>& shape, const void* data,
                      size_t bytes);

}  // namespace logit

#endif  // LOGIT_WORKER_DATA_NPY_H_
