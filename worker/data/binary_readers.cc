// NumPy .npy and IDX (MNIST-style, optionally gzip-compressed) readers.
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "worker/data/limits.h"
#include "worker/data/mapped_file.h"
#include "worker/data/npy.h"
#include "worker/data/reader_internal.h"

namespace logit {
namespace internal {

namespace {

template <typename T>
T LoadLe(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Reads labels [begin, end) of a 1-D (or n x 1) integer or integral-float .npy file.
absl::Status ReadNpyLabels(const std::string& path, int64_t expected_rows, int64_t begin,
                           int64_t end, int64_t classes, std::vector<int64_t>* labels) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  auto h = ParseNpyHeader(file->data(), path);
  if (!h.ok()) return h.status();
  if (h->fortran_order && h->shape.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": Fortran-order arrays are not supported"));
  }
  if (h->shape.empty() || h->shape.size() > 2 || (h->shape.size() == 2 && h->shape[1] != 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": labels must have shape (n,) or (n, 1)"));
  }
  if (h->shape[0] != expected_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": has ", h->shape[0], " labels but the features have ", expected_rows, " rows"));
  }
  const char kind = h->descr[1];
  const size_t item = h->item_size;
  const bool integer =
      (kind == 'i' || kind == 'u') && (item == 1 || item == 2 || item == 4 || item == 8);
  const bool floating = kind == 'f' && (item == 4 || item == 8);
  if (!integer && !floating) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": labels must be integers (or integral floats), dtype is '", h->descr, "'"));
  }
  if (file->data().size() < h->data_offset + h->NumElements() * h->item_size) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated data"));
  }
  const char* base = file->data().data() + h->data_offset;
  labels->resize(end - begin);
  for (int64_t i = begin; i < end; ++i) {
    const char* p = base + i * h->item_size;
    double v;
    switch (h->item_size * (kind == 'f' ? 10 : 1) + (kind == 'u' ? 100 : 0)) {
      case 1:
        v = LoadLe<int8_t>(p);
        break;
      case 2:
        v = LoadLe<int16_t>(p);
        break;
      case 4:
        v = LoadLe<int32_t>(p);
        break;
      case 8:
        v = static_cast<double>(LoadLe<int64_t>(p));
        break;
      case 101:
        v = LoadLe<uint8_t>(p);
        break;
      case 102:
        v = LoadLe<uint16_t>(p);
        break;
      case 104:
        v = LoadLe<uint32_t>(p);
        break;
      case 108:
        v = static_cast<double>(LoadLe<uint64_t>(p));
        break;
      case 40:
        v = LoadLe<float>(p);
        break;
      case 80:
        v = LoadLe<double>(p);
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": unsupported label dtype '", h->descr, "'"));
    }
    auto y = ToClassIndex(v, classes, absl::StrCat(path, ": element ", i));
    if (!y.ok()) return y.status();
    (*labels)[i - begin] = *y;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Dataset> ReadNpy(const ReadOptions& opt) {
  if (opt.labels_path.empty() && opt.require_labels) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels: a .npy feature file (", opt.path, ") needs a labels file"));
  }
  auto file = MappedFile::Open(opt.path);
  if (!file.ok()) return file.status();
  auto h = ParseNpyHeader(file->data(), opt.path);
  if (!h.ok()) return h.status();
  if (h->shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        opt.path, ": features must be a 2-D array, shape has ", h->shape.size(), " dimensions"));
  }
  if (h->fortran_order) {
    return absl::InvalidArgumentError(absl::StrCat(
        opt.path, ": Fortran-order arrays are not supported (use np.ascontiguousarray)"));
  }
  const std::string& dt = h->descr;
  const bool f4 = dt == "<f4", f8 = dt == "<f8", u1 = dt == "|u1" || dt == "<u1";
  if (!f4 && !f8 && !u1) {
    return absl::InvalidArgumentError(absl::StrCat(opt.path, ": unsupported feature dtype '", dt,
                                                   "' (float32, float64 or uint8)"));
  }
  const int64_t n = h->shape[0], d = h->shape[1];
  if (d < 1 || d > kMaxFeatures) {
    return absl::InvalidArgumentError(
        absl::StrCat(opt.path, ": rows have ", d, " features (1 to ", kMaxFeatures, " supported)"));
  }
  if (opt.num_features > 0 && d != opt.num_features) {
    return absl::InvalidArgumentError(
        absl::StrCat(opt.path, ": has ", d, " features, expected features=", opt.num_features));
  }
  if (file->data().size() < h->data_offset + static_cast<size_t>(n * d) * h->item_size) {
    return absl::InvalidArgumentError(absl::StrCat(opt.path, ": truncated data: expected ",
                                                   n * d * h->item_size, " bytes after offset ",
                                                   h->data_offset));
  }
  Dataset out;
  out.source = opt.path;
  out.num_features = d;
  out.total_rows = n;
  const int64_t begin = ShardBegin(n, opt.rank, opt.world);
  const int64_t end = ShardBegin(n, opt.rank + 1, opt.world);
  out.first_row = begin;
  out.num_rows = end - begin;
  const char* src = file->data().data() + h->data_offset + begin * d * h->item_size;
  const int64_t count = out.num_rows * d;
  // float32 rows can be used in place when stored as this CPU stores floats, 4-byte aligned.
  const bool f4_in_place = f4 && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ &&
                           reinterpret_cast<uintptr_t>(src) % alignof(float) == 0;
  if (u1) {
    out.storage = FeatureStorage::kDenseUint8;
    out.u8_scale = opt.pixel_scale ? 1.0f / 255.0f : 1.0f;
    if (opt.map_rows) {
      out.mapped_u8 = reinterpret_cast<const uint8_t*>(src);
    } else {
      out.dense_u8.assign(reinterpret_cast<const uint8_t*>(src),
                          reinterpret_cast<const uint8_t*>(src) + count);
    }
  } else if (opt.map_rows && f4_in_place) {
    out.storage = FeatureStorage::kDenseFloat32;
    const float* rows = reinterpret_cast<const float*>(src);
    for (int64_t i = 0; i < count; ++i) {
      if (!std::isfinite(rows[i])) {
        return absl::InvalidArgumentError(absl::StrCat(opt.path, ": non-finite value at row ",
                                                       begin + i / d, ", column ", i % d));
      }
    }
    out.mapped_f32 = rows;
  } else {
    out.storage = FeatureStorage::kDenseFloat32;
    out.dense_f32.resize(count);
    for (int64_t i = 0; i < count; ++i) {
      const double v = f4 ? LoadLe<float>(src + 4 * i) : LoadLe<double>(src + 8 * i);
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat(opt.path, ": non-finite value at row ",
                                                       begin + i / d, ", column ", i % d));
      }
      // A finite float64 past float32's range would become inf.
      if (std::abs(v) > std::numeric_limits<float>::max()) {
        return absl::InvalidArgumentError(absl::StrCat(opt.path, ": value ", v, " at row ",
                                                       begin + i / d, ", column ", i % d,
                                                       " is outside float32's range"));
      }
      out.dense_f32[i] = static_cast<float>(v);
    }
  }
  if (out.mapped_u8 != nullptr || out.mapped_f32 != nullptr) {
    out.mapping = std::make_shared<const MappedFile>(std::move(*file));  // keeps the rows mapped
  }
  if (opt.labels_path.empty()) {
    out.labels.assign(out.num_rows, 0);
    out.has_labels = false;
    return out;
  }
  absl::Status st = ReadNpyLabels(opt.labels_path, n, begin, end, opt.classes, &out.labels);
  if (!st.ok()) return st;
  return out;
}

namespace {

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzPtr = std::unique_ptr<gzFile_s, GzCloser>;

// An IDX file opened through zlib (which reads plain files transparently).
struct IdxFile {
  GzPtr file;
  uint8_t type = 0;
  std::vector<int64_t> dims;
  int64_t header_bytes = 0;
  bool gzipped = false;  // the header's promise is only bounded by deflate's ratio
};

absl::StatusOr<IdxFile> OpenIdx(const std::string& path) {
  IdxFile idx;
  FILE* probe = std::fopen(path.c_str(), "rb");
  if (probe == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  // The most bytes the file can hold once decompressed: its size, or for gzip deflate's
  // largest expansion of it. Header dimensions promising more are refused before allocating.
  unsigned char gz_magic[2] = {0, 0};
  const bool gzipped =
      std::fread(gz_magic, 1, 2, probe) == 2 && gz_magic[0] == 0x1f && gz_magic[1] == 0x8b;
  std::fseek(probe, 0, SEEK_END);
  const int64_t file_bytes = std::max<int64_t>(0, std::ftell(probe));
  std::fclose(probe);
  const int64_t max_bytes =
      gzipped ? CheckedMul(file_bytes, kMaxGzipRatio).value_or(INT64_MAX) : file_bytes;
  idx.file.reset(gzopen(path.c_str(), "rb"));
  if (!idx.file) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open"));
  gzbuffer(idx.file.get(), 1 << 20);
  unsigned char magic[4];
  if (gzread(idx.file.get(), magic, 4) != 4 || magic[0] != 0 || magic[1] != 0 || magic[3] == 0 ||
      magic[3] > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not an IDX file (bad magic at offset 0)"));
  }
  idx.type = magic[2];
  for (int i = 0; i < magic[3]; ++i) {
    unsigned char b[4];
    if (gzread(idx.file.get(), b, 4) != 4) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": truncated IDX header at offset ", 4 + 4 * i));
    }
    idx.dims.push_back((int64_t{b[0]} << 24) | (b[1] << 16) | (b[2] << 8) | b[3]);
  }
  idx.header_bytes = 4 + 4 * magic[3];
  auto elements = CheckedProduct(idx.dims, std::max<int64_t>(0, max_bytes - idx.header_bytes),
                                 absl::StrCat(path, ": IDX header"));
  if (!elements.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(elements.status().message(), ": more than the file can hold (",
                     gzipped ? "gzip-compressed, " : "", file_bytes, " bytes)"));
  }
  idx.gzipped = gzipped;
  return idx;
}

absl::Status ReadExact(IdxFile& f, const std::string& path, int64_t offset, void* dst,
                       int64_t bytes) {
  if (gzseek(f.file.get(), offset, SEEK_SET) != offset) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated at offset ", offset));
  }
  char* p = static_cast<char*>(dst);
  while (bytes > 0) {
    const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(bytes, 1 << 30));
    const int got = gzread(f.file.get(), p, chunk);
    if (got <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": truncated data at offset ",
                                                     offset + (p - static_cast<char*>(dst))));
    }
    p += got;
    bytes -= got;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Dataset> ReadIdx(const ReadOptions& opt) {
  if (opt.labels_path.empty() && opt.require_labels) {
    return absl::InvalidArgumentError(
        absl::StrCat("labels: an IDX image file (", opt.path, ") needs a labels file"));
  }
  auto images = OpenIdx(opt.path);
  if (!images.ok()) return images.status();
  if (images->type != 0x08) {
    return absl::InvalidArgumentError(absl::StrCat(opt.path, ": unsupported IDX element type 0x",
                                                   absl::Hex(images->type), " (need ubyte 0x08)"));
  }
  if (images->dims.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(opt.path, ": IDX features need at least 2 dimensions"));
  }
  const int64_t n = images->dims[0];
  // Checked on its own: with no rows the product of all dims is 0 whatever the others are.
  auto features = CheckedProduct(absl::MakeConstSpan(images->dims).subspan(1), kMaxFeatures,
                                 absl::StrCat(opt.path, ": IDX row shape"));
  if (!features.ok()) return features.status();
  const int64_t d = *features;
  if (d == 0) {
    return absl::InvalidArgumentError(absl::StrCat(opt.path, ": IDX rows have no features"));
  }
  if (opt.num_features > 0 && d != opt.num_features) {
    return absl::InvalidArgumentError(
        absl::StrCat(opt.path, ": has ", d, " features, expected features=", opt.num_features));
  }
  Dataset out;
  out.source = opt.path;
  out.storage = FeatureStorage::kDenseUint8;
  out.u8_scale = opt.pixel_scale ? 1.0f / 255.0f : 1.0f;
  out.num_features = d;
  out.total_rows = n;
  const int64_t begin = ShardBegin(n, opt.rank, opt.world);
  const int64_t end = ShardBegin(n, opt.rank + 1, opt.world);
  out.first_row = begin;
  out.num_rows = end - begin;
  // A plain file holds what its header promised (checked by OpenIdx), so the shard is read in
  // one go. A gzip stream may end long before its header's promise: its shard grows piece by
  // piece as bytes actually decompress, so a lying header costs at most one piece.
  const int64_t shard_bytes = out.num_rows * d;
  const int64_t piece = images->gzipped ? int64_t{64} << 20 : std::max<int64_t>(shard_bytes, 1);
  absl::Status st;
  for (int64_t done = 0; done < shard_bytes && st.ok(); done += piece) {
    const int64_t n = std::min(piece, shard_bytes - done);
    out.dense_u8.resize(done + n);
    st = ReadExact(*images, opt.path, images->header_bytes + begin * d + done,
                   out.dense_u8.data() + done, n);
  }
  if (!st.ok()) return st;
  if (opt.labels_path.empty()) {
    out.labels.assign(out.num_rows, 0);
    out.has_labels = false;
    return out;
  }
  auto labels = OpenIdx(opt.labels_path);
  if (!labels.ok()) return labels.status();
  if (labels->type != 0x08 || labels->dims.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(opt.labels_path, ": IDX labels must be a 1-D ubyte array"));
  }
  if (labels->dims[0] != n) {
    return absl::InvalidArgumentError(absl::StrCat(opt.labels_path, ": has ", labels->dims[0],
                                                   " labels but ", opt.path, " has ", n, " rows"));
  }
  std::vector<uint8_t> raw(out.num_rows);
  st = ReadExact(*labels, opt.labels_path, labels->header_bytes + begin, raw.data(), out.num_rows);
  if (!st.ok()) return st;
  out.labels.resize(out.num_rows);
  for (int64_t i = 0; i < out.num_rows; ++i) {
    auto y =
        ToClassIndex(raw[i], opt.classes,
                     absl::StrCat(opt.labels_path, ": offset ", labels->header_bytes + begin + i));
    if (!y.ok()) return y.status();
    out.labels[i] = *y;
  }
  return out;
}

}  // namespace internal
std::optional<std::vector<ByteRange>> ShardByteRanges(absl::string_view head, int64_t file_size,
                                                      bool labels, int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world) return std::nullopt;
  int64_t header = 0, item = 1;
  std::vector<int64_t> shape;
  if (head.size() >= 6 && std::memcmp(head.data(), "\x93NUMPY", 6) == 0) {
    auto h = ParseNpyHeader(head, "", file_size);
    if (!h.ok() || h->fortran_order || h->shape.empty()) return std::nullopt;
    if (!labels && h->shape.size() != 2) return std::nullopt;
    header = static_cast<int64_t>(h->data_offset);
    item = static_cast<int64_t>(h->item_size);
    shape = h->shape;
  } else if (head.size() >= 4 && head[0] == 0 && head[1] == 0 && head[2] == 0x08 && head[3] >= 1 &&
             head[3] <= 4) {
    const int dims = head[3];
    header = 4 + 4 * dims;
    if (static_cast<int64_t>(head.size()) < header) return std::nullopt;
    for (int i = 0; i < dims; ++i) {
      const auto* b = reinterpret_cast<const unsigned char*>(head.data() + 4 + 4 * i);
      shape.push_back((int64_t{b[0]} << 24) | (b[1] << 16) | (b[2] << 8) | b[3]);
    }
  } else {
    return std::nullopt;  // text, gzip, or not a file the binary readers accept
  }
  const int64_t rows = shape[0];
  if (rows == 0) return std::vector<ByteRange>{{0, header}};
  // The bytes of one row, bounded by the file: a header promising more is the reader's to refuse.
  auto row_elements =
      CheckedProduct(absl::MakeConstSpan(shape).subspan(1), std::max<int64_t>(file_size, 1), "");
  if (!row_elements.ok() || item < 1 || *row_elements > file_size / item) return std::nullopt;
  const int64_t row_bytes = *row_elements * item;
  if (row_bytes > file_size || rows > file_size || (row_bytes > 0 && rows > file_size / row_bytes) ||
      header + rows * row_bytes > file_size) {
    return std::nullopt;
  }
  const int64_t begin = ShardBegin(rows, rank, world), end = ShardBegin(rows, rank + 1, world);
  std::vector<ByteRange> out{{0, header}};
  if (end > begin && row_bytes > 0) {
    out.push_back({header + begin * row_bytes, (end - begin) * row_bytes});
  }
  return out;
}

}  // namespace logit
