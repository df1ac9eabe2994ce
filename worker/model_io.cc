#include "worker/model_io.h"

#include <zip.h>

#include <cstring>
#include <list>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/data/npy.h"

namespace logit {

namespace {

absl::Status SaveNpz(const LinearModel& m, const std::string& path, const std::string& summary) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (z == nullptr) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    std::string msg = absl::StrCat(path, ": cannot create: ", zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return absl::InvalidArgumentError(msg);
  }
  // Buffers must stay alive until zip_close.
  std::list<std::string> blobs;
  const int64_t classes = m.num_classes, features = m.num_features;
  std::vector<int64_t> wshape = m.IsBinary() ? std::vector<int64_t>{features}
                                             : std::vector<int64_t>{features, m.OutputColumns()};
  blobs.push_back(EncodeNpy("<f4", wshape, m.weights.data(), m.weights.size() * 4));
  blobs.push_back(
      EncodeNpy("<f4", {static_cast<int64_t>(m.bias.size())}, m.bias.data(), m.bias.size() * 4));
  blobs.push_back(EncodeNpy("<i8", {}, &classes, 8));
  blobs.push_back(EncodeNpy("<i8", {}, &features, 8));
  const char* names[] = {"W.npy", "b.npy", "classes.npy", "n_features.npy", "summary_json.npy"};
  if (!summary.empty()) {
    blobs.push_back(
        EncodeNpy("|u1", {static_cast<int64_t>(summary.size())}, summary.data(), summary.size()));
  }
  int i = 0;
  for (const std::string& blob : blobs) {
    zip_source_t* src = zip_source_buffer(z, blob.data(), blob.size(), 0);
    if (src == nullptr || zip_file_add(z, names[i], src, ZIP_FL_OVERWRITE) < 0) {
      if (src) zip_source_free(src);
      std::string msg = absl::StrCat(path, ": ", zip_strerror(z));
      zip_discard(z);
      return absl::InternalError(msg);
    }
    ++i;
  }
  if (zip_close(z) != 0) {
    std::string msg = absl::StrCat(path, ": cannot write: ", zip_strerror(z));
    zip_discard(z);
    return absl::InternalError(msg);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadMember(zip_t* z, const std::string& path, const char* name) {
  zip_stat_t st;
  if (zip_stat(z, name, 0, &st) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no array '", name, "' in the archive"));
  }
  zip_file_t* f = zip_fopen(z, name, 0);
  if (f == nullptr) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read ", name));
  std::string data(st.size, '\0');
  const zip_int64_t got = zip_fread(f, data.data(), st.size);
  zip_fclose(f);
  if (got != static_cast<zip_int64_t>(st.size)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated member ", name));
  }
  return data;
}

absl::StatusOr<std::vector<float>> FloatArray(const std::string& bytes, const std::string& where,
                                              std::vector<int64_t>* shape) {
  auto h = ParseNpyHeader(bytes, where);
  if (!h.ok()) return h.status();
  const int64_t n = h->NumElements();
  if (bytes.size() < h->data_offset + n * h->item_size) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": truncated data"));
  }
  std::vector<float> out(n);
  const char* p = bytes.data() + h->data_offset;
  if (h->descr == "<f4") {
    std::memcpy(out.data(), p, n * 4);
  } else if (h->descr == "<f8") {
    for (int64_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, p + 8 * i, 8);
      out[i] = static_cast<float>(v);
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": dtype '", h->descr, "' is not float32/float64"));
  }
  *shape = h->shape;
  return out;
}

absl::StatusOr<LinearModel> LoadNpz(const std::string& path) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &err);
  if (z == nullptr) {
    return err == ZIP_ER_NOENT
               ? absl::NotFoundError(absl::StrCat(path, ": no such file"))
               : absl::InvalidArgumentError(absl::StrCat(path, ": not an .npz archive"));
  }
  auto w_bytes = ReadMember(z, path, "W.npy");
  auto b_bytes = ReadMember(z, path, "b.npy");
  auto k_bytes = ReadMember(z, path, "classes.npy");
  zip_discard(z);
  if (!w_bytes.ok()) return w_bytes.status();
  if (!b_bytes.ok()) return b_bytes.status();
  std::vector<int64_t> wshape, bshape;
  auto w = FloatArray(*w_bytes, path + ":W", &wshape);
  if (!w.ok()) return w.status();
  auto b = FloatArray(*b_bytes, path + ":b", &bshape);
  if (!b.ok()) return b.status();
  LinearModel m;
  if (wshape.size() == 1) {
    m.num_features = wshape[0];
    m.num_classes = 2;
  } else if (wshape.size() == 2 && wshape[1] >= 2) {
    m.num_features = wshape[0];
    m.num_classes = wshape[1] == 1 ? 2 : wshape[1];
  } else if (wshape.size() == 2 && wshape[1] == 1) {
    m.num_features = wshape[0];
    m.num_classes = 2;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path, ": W must be d or d x K"));
  }
  if (static_cast<int64_t>(b->size()) != m.OutputColumns()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": b has ", b->size(), " entries, expected ", m.OutputColumns()));
  }
  m.weights = std::move(*w);
  m.bias = std::move(*b);
  return m;
}

}  // namespace

absl::Status SaveModel(const LinearModel& model, const std::string& path,
                       const std::string& summary_json) {
  if (absl::EndsWith(path, ".npz")) return SaveNpz(model, path, summary_json);
  return absl::InvalidArgumentError(
      absl::StrCat("save_model: unsupported model file extension in '", path, "' (use .npz)"));
}

absl::StatusOr<std::string> LoadModelSummary(const std::string& path) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &err);
  if (z == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  auto bytes = ReadMember(z, path, "summary_json.npy");
  zip_discard(z);
  if (!bytes.ok()) return bytes.status();
  auto h = ParseNpyHeader(absl::string_view(*bytes), path + ":summary_json");
  if (!h.ok()) return h.status();
  if (bytes->size() < h->data_offset) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated summary_json"));
  }
  return bytes->substr(h->data_offset);
}

absl::StatusOr<LinearModel> LoadModel(const std::string& path) {
  if (absl::EndsWith(path, ".npz")) return LoadNpz(path);
  return absl::InvalidArgumentError(
      absl::StrCat("model_file: unsupported model file extension in '", path, "' (use .npz)"));
}

}  // namespace logit
