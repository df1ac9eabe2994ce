// Format-specific readers behind ReadDataset (internal).
#ifndef LOGIT_WORKER_DATA_READER_INTERNAL_H_
#define LOGIT_WORKER_DATA_READER_INTERNAL_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/data/readers.h"

namespace logit {
namespace internal {

absl::StatusOr<Dataset> ReadCsv(const ReadOptions& opt);
absl::StatusOr<Dataset> ReadLibSvm(const ReadOptions& opt);
absl::StatusOr<Dataset> ReadNpy(const ReadOptions& opt);
absl::StatusOr<Dataset> ReadIdx(const ReadOptions& opt);

// Maps a numeric label to a class index (-1 -> 0); errors name `where`.
absl::StatusOr<int64_t> ToClassIndex(double value, int64_t classes, const std::string& where);

}  // namespace internal
}  // namespace logit

#endif  // LOGIT_WORKER_DATA_READER_INTERNAL_H_
