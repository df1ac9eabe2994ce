#include "worker/data/readers.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/common/status.h"
#include "worker/data/reader_internal.h"

namespace logit {

absl::StatusOr<DataFormat> ParseDataFormat(const std::string& name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n.empty() || n == "auto") return DataFormat::kAuto;
  if (n == "csv") return DataFormat::kCsv;
  if (n == "libsvm" || n == "svmlight" || n == "svm") return DataFormat::kLibSvm;
  if (n == "npy") return DataFormat::kNpy;
  if (n == "idx") return DataFormat::kIdx;
  return FieldError("format",
                    absl::StrCat("unknown data format '", name, "' (csv, libsvm, npy, idx)"));
}

absl::StatusOr<DataFormat> InferDataFormat(const std::string& path) {
  std::string p = absl::AsciiStrToLower(path);
  if (absl::EndsWith(p, ".gz")) p.resize(p.size() - 3);
  if (absl::EndsWith(p, ".csv")) return DataFormat::kCsv;
  if (absl::EndsWith(p, ".libsvm") || absl::EndsWith(p, ".svm") || absl::EndsWith(p, ".svmlight")) {
    return DataFormat::kLibSvm;
  }
  if (absl::EndsWith(p, ".npy")) return DataFormat::kNpy;
  if (absl::EndsWith(p, "-ubyte") || absl::EndsWith(p, ".idx") || absl::StrContains(p, "-idx")) {
    return DataFormat::kIdx;
  }
  return FieldError("format", absl::StrCat("cannot infer the data format of '", path,
                                           "'; pass --format csv|libsvm|npy|idx"));
}

absl::StatusOr<Dataset> ReadDataset(const ReadOptions& options) {
  if (options.path.empty()) return FieldError("data", "no data file given");
  if (options.world < 1 || options.rank < 0 || options.rank >= options.world) {
    return FieldError("rank",
                      absl::StrCat(options.rank, " is not in [0, world=", options.world, ")"));
  }
  DataFormat format = options.format;
  if (format == DataFormat::kAuto) {
    auto inferred = InferDataFormat(options.path);
    if (!inferred.ok()) return inferred.status();
    format = *inferred;
  }
  switch (format) {
    case DataFormat::kCsv:
      return internal::ReadCsv(options);
    case DataFormat::kLibSvm:
      return internal::ReadLibSvm(options);
    case DataFormat::kNpy:
      return internal::ReadNpy(options);
    case DataFormat::kIdx:
      return internal::ReadIdx(options);
    case DataFormat::kAuto:
      break;
  }
  return absl::InternalError("unreachable");
}

}  // namespace logit
