// Data readers: CSV, LibSVM/svmlight, NumPy .npy and IDX (optionally gzip-compressed).
// Each reader can return one contiguous shard of rows (`rank` of `world`) without parsing or
// holding the rows of other shards. Errors are InvalidArgument / NotFound statuses whose message
// names the file and the line (text formats) or byte offset / element (binary formats).
#ifndef LOGIT_WORKER_DATA_READERS_H_
#define LOGIT_WORKER_DATA_READERS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/data/dataset.h"

namespace logit {

enum class DataFormat { kAuto, kCsv, kLibSvm, kNpy, kIdx };

// Parses "csv", "libsvm" (or "svmlight"), "npy", "idx"; "" or "auto" is kAuto.
absl::StatusOr<DataFormat> ParseDataFormat(const std::string& name);
// Infers the format from a file name (".csv", ".libsvm", ".svm", ".txt" with ':' pairs is not
// sniffed), ".npy", "-ubyte", ".idx", optionally followed by ".gz").
absl::StatusOr<DataFormat> InferDataFormat(const std::string& path);

struct ReadOptions {
  std::string path;         // features (and, for CSV/LibSVM, labels)
  std::string labels_path;  // .npy / IDX: the label file; required for those formats
  DataFormat format = DataFormat::kAuto;
  // CSV: the label column, by header name or by number counting from 1 (as messages count
  // columns; negative counts from the end, -1 = the last); empty = the last column.
  std::string label_column;
  // Number of classes when known (labels >= classes are rejected); 0 = not known yet.
  int64_t classes = 0;
  // CSV: the class names string labels map to (class k = class_names[k]), e.g. a model's or
  // the training file's; a label not among them is an error naming the file and line. Empty:
  // when the first labelled row's label is not a number, the reader scans the whole label
  // column (every shard reads the same names) and takes its distinct values sorted by byte
  // order, as scikit-learn's classes_ sorts them; numeric labels are class indices.
  std::vector<std::string> class_names;
  // Feature count when known: LibSVM rows with a larger index are rejected, and the sparse
  // matrix gets exactly this many columns; dense formats must match it. 0 = infer.
  int64_t num_features = 0;
  // uint8 features (IDX, uint8 .npy) are scaled by 1/255 when true (like torchvision ToTensor).
  bool pixel_scale = true;
  // Shard to return: rows [total*rank/world, total*(rank+1)/world).
  int rank = 0;
  int world = 1;
  // When false (prediction input), rows may come without labels: a CSV with exactly
  // num_features columns, a .npy / IDX file without a label file. Such rows get label 0.
  bool require_labels = true;
  // .npy rows of uint8 or float32 (little-endian, aligned) are read in place from a mapping of
  // the file (Dataset::mapping) instead of copied: training reads them so, and a file larger
  // than memory trains from the page cache. float32 rows are still checked to be finite.
  bool map_rows = false;
};

// Reads the shard described by `options`. Labels are returned as class indices: numeric labels
// are the index (-1 is mapped to 0, so -1/+1 binary labels work; other negative or non-integer
// labels are errors); CSV string labels are the index of their name in Dataset::class_names.
// A file's labels are all numbers or all names: which, its first labelled row decides.
absl::StatusOr<Dataset> ReadDataset(const ReadOptions& options);

// Bytes [offset, offset + length) of a file.
struct ByteRange {
  int64_t offset = 0;
  int64_t length = 0;
};

// The bytes of a data file that ReadDataset reads for shard `rank` of `world`, judged from the
// file's first bytes `head` and its size: for an uncompressed .npy or IDX file (features, or
// labels when `labels`), its header and the shard's rows. nullopt when the reader needs the
// whole file: text formats, gzip, a header longer than `head`, or one the reader would refuse
// (it then reports why from the whole file). A worker that fetches data through the
// coordinator fetches only these bytes.
std::optional<std::vector<ByteRange>> ShardByteRanges(absl::string_view head, int64_t file_size,
                                                      bool labels, int rank, int world);

// The first row of shard `rank` of `world` among `total` rows.
inline int64_t ShardBegin(int64_t total, int rank, int world) { return total * rank / world; }

}  // namespace logit

#endif  // LOGIT_WORKER_DATA_READERS_H_
