#include "worker/checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace logit {

namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "checkpoint files hold little-endian arrays, written as they are in memory");

constexpr char kVersion[] = "1";
constexpr char kRealPrefix[] = "real/";
constexpr char kIntPrefix[] = "int/";
// The header holds the history (~170 bytes per epoch): half a million epochs. The reference
// safetensors reader has the same limit; its JSON is parsed into memory.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kMaxNameBytes = 256;

using Json = nlohmann::json;

// A double of the history as JSON: NaN as null, infinities as strings (JSON has neither).
Json Number(double v) {
  if (std::isnan(v)) return nullptr;
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

bool ReadNumber(const Json& j, double* v) {
  if (j.is_null()) {
    *v = std::numeric_limits<double>::quiet_NaN();
  } else if (j.is_number()) {
    *v = j.get<double>();
  } else if (j == "inf" || j == "-inf") {
    *v = j == "inf" ? std::numeric_limits<double>::infinity()
                    : -std::numeric_limits<double>::infinity();
  } else {
    return false;
  }
  return true;
}

Json HistoryJson(const std::vector<EpochRecord>& history) {
  Json out = Json::array();
  for (const EpochRecord& r : history) {
    out.push_back({{"epoch", r.epoch},
                   {"train_loss", Number(r.train_loss)},
                   {"objective", Number(r.objective)},
                   {"val_loss", Number(r.val_loss)},
                   {"val_accuracy", Number(r.val_accuracy)},
                   {"seconds", Number(r.seconds)},
                   {"samples", r.samples}});
  }
  return out;
}

// One array of the data section, as the header describes it.
struct TensorEntry {
  std::string name;  // without the prefix
  bool integer = false;
  uint64_t count = 0, begin = 0, end = 0;
};

class CheckpointReader {
 public:
  CheckpointReader(std::istream& in, uint64_t size, const std::string& name)
      : in_(in), size_(size), name_(name) {}

  absl::StatusOr<TrainingCheckpoint> Read();

 private:
  absl::Status Bad(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": not a valid checkpoint: ", what));
  }
  absl::Status ReadAt(uint64_t offset, char* out, uint64_t bytes);
  absl::StatusOr<TensorEntry> ParseTensor(const std::string& key, const Json& t,
                                          uint64_t data_bytes) const;
  absl::Status ParseMetadata(const Json& meta, TrainingCheckpoint* checkpoint) const;
  absl::Status ParseHistory(const std::string& text, std::vector<EpochRecord>* history) const;

  std::istream& in_;
  const uint64_t size_;
  const std::string name_;
};

absl::Status CheckpointReader::ReadAt(uint64_t offset, char* out, uint64_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  in_.clear();
  in_.seekg(static_cast<std::streamoff>(offset));
  in_.read(out, static_cast<std::streamsize>(bytes));
  if (!in_ || static_cast<uint64_t>(in_.gcount()) != bytes) {
    return Bad(absl::StrCat("cannot read ", bytes, " bytes at offset ", offset,
                            " (the file is truncated or unreadable)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorEntry> CheckpointReader::ParseTensor(const std::string& key, const Json& t,
                                                          uint64_t data_bytes) const {
  TensorEntry e;
  std::string want_dtype;
  if (key.rfind(kRealPrefix, 0) == 0) {
    e.name = key.substr(std::strlen(kRealPrefix));
    want_dtype = "F64";
  } else if (key.rfind(kIntPrefix, 0) == 0) {
    e.name = key.substr(std::strlen(kIntPrefix));
    e.integer = true;
    want_dtype = "I64";
  } else {
    return Bad(absl::StrCat("unexpected tensor '", key.substr(0, kMaxNameBytes),
                            "' (names start with 'real/' or 'int/')"));
  }
  auto bad = [&](absl::string_view why) { return Bad(absl::StrCat("tensor '", key, "': ", why)); };
  if (e.name.empty() || e.name.size() > kMaxNameBytes) {
    return Bad(absl::StrCat("tensor name '", key.substr(0, kMaxNameBytes),
                            "' is empty or longer than ", kMaxNameBytes, " bytes"));
  }
  if (!t.is_object()) return bad("is not a JSON object");
  const auto dtype = t.find("dtype");
  if (dtype == t.end() || *dtype != want_dtype)
    return bad(absl::StrCat("dtype is not ", want_dtype));
  const auto shape = t.find("shape");
  if (shape == t.end() || !shape->is_array() || shape->size() != 1 ||
      !(*shape)[0].is_number_unsigned()) {
    return bad("shape must be [count]");
  }
  e.count = (*shape)[0].get<uint64_t>();
  const auto off = t.find("data_offsets");
  if (off == t.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    return bad("data_offsets must be [begin, end]");
  }
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.count > data_bytes / 8 || e.end < e.begin || e.end > data_bytes ||
      e.end - e.begin != e.count * 8) {
    return bad(absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] do not hold ", e.count,
                            " 8-byte values within the ", data_bytes, " data bytes"));
  }
  return e;
}

absl::Status CheckpointReader::ParseHistory(const std::string& text,
                                            std::vector<EpochRecord>* history) const {
  const Json h = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!h.is_array()) return Bad("metadata 'history' is not a JSON array");
  history->reserve(h.size());
  for (size_t i = 0; i < h.size(); ++i) {
    const Json& e = h[i];
    auto bad = [&](absl::string_view field) {
      return Bad(absl::StrCat("history record ", i, ": '", field, "' is missing or not a number"));
    };
    if (!e.is_object()) return Bad(absl::StrCat("history record ", i, " is not a JSON object"));
    EpochRecord r;
    for (const auto& [field, into] :
         {std::pair<const char*, int64_t*>{"epoch", &r.epoch}, {"samples", &r.samples}}) {
      const auto it = e.find(field);
      if (it == e.end() || !it->is_number_integer()) return bad(field);
      *into = it->get<int64_t>();
    }
    for (const auto& [field, into] : {std::pair<const char*, double*>{"train_loss", &r.train_loss},
                                      {"objective", &r.objective},
                                      {"val_loss", &r.val_loss},
                                      {"val_accuracy", &r.val_accuracy},
                                      {"seconds", &r.seconds}}) {
      const auto it = e.find(field);
      if (it == e.end() || !ReadNumber(*it, into)) return bad(field);
    }
    history->push_back(r);
  }
  return absl::OkStatus();
}

absl::Status CheckpointReader::ParseMetadata(const Json& meta,
                                             TrainingCheckpoint* checkpoint) const {
  if (!meta.is_object()) return Bad("no __metadata__ object");
  auto field = [&](const char* key) -> absl::StatusOr<std::string> {
    const auto it = meta.find(key);
    if (it == meta.end() || !it->is_string()) {
      return Bad(absl::StrCat("metadata '", key, "' is missing or not a string"));
    }
    return it->get<std::string>();
  };
  auto format = field("format");
  if (!format.ok()) return format.status();
  if (*format != kCheckpointFormat) {
    return Bad(absl::StrCat("format is '", format->substr(0, kMaxNameBytes), "', not '",
                            kCheckpointFormat, "'"));
  }
  auto version = field("version");
  if (!version.ok()) return version.status();
  if (*version != kVersion) {
    return Bad(absl::StrCat("version '", version->substr(0, kMaxNameBytes),
                            "' is not supported (this build reads version ", kVersion, ")"));
  }
  auto optimizer = field("optimizer");
  if (!optimizer.ok()) return optimizer.status();
  if (optimizer->empty() || optimizer->size() > kMaxNameBytes) {
    return Bad("metadata 'optimizer' is empty or too long");
  }
  checkpoint->state.optimizer = *optimizer;
  auto epoch = field("epoch");
  if (!epoch.ok()) return epoch.status();
  if (!absl::SimpleAtoi(*epoch, &checkpoint->epoch) || checkpoint->epoch < 0) {
    return Bad(
        absl::StrCat("metadata 'epoch' ('", epoch->substr(0, kMaxNameBytes), "') is not a count"));
  }
  auto history = field("history");
  if (!history.ok()) return history.status();
  return ParseHistory(*history, &checkpoint->history);
}

absl::StatusOr<TrainingCheckpoint> CheckpointReader::Read() {
  if (size_ < 8) return Bad(absl::StrCat("truncated: ", size_, " bytes"));
  unsigned char len[8];
  absl::Status st = ReadAt(0, reinterpret_cast<char*>(len), 8);
  if (!st.ok()) return st;
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(len[i]) << (8 * i);
  if (n > size_ - 8 || n > kMaxHeaderBytes) {
    return Bad(absl::StrCat("header length ", n, " exceeds the file's ", size_, " bytes",
                            n > kMaxHeaderBytes ? " (or the header limit)" : ""));
  }
  std::string text(n, '\0');
  st = ReadAt(8, text.data(), n);
  if (!st.ok()) return st;
  const Json header = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  text.clear();
  if (!header.is_object()) return Bad("the header is not a JSON object");
  const uint64_t data_bytes = size_ - 8 - n;
  TrainingCheckpoint checkpoint;
  std::vector<TensorEntry> tensors;
  const Json* meta = nullptr;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      meta = &value;
      continue;
    }
    auto t = ParseTensor(key, value, data_bytes);
    if (!t.ok()) return t.status();
    tensors.push_back(std::move(*t));
  }
  if (meta == nullptr) return Bad("no __metadata__ (not a logit checkpoint)");
  st = ParseMetadata(*meta, &checkpoint);
  if (!st.ok()) return st;
  // The arrays tile the data exactly: no overlap, no gap, nothing after the last.
  std::vector<const TensorEntry*> by_offset;
  for (const TensorEntry& t : tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t next = 0;
  for (const TensorEntry* t : by_offset) {
    if (t->begin != next) {
      return Bad(absl::StrCat("tensor '", t->name, "' starts at data byte ", t->begin,
                              t->begin < next ? ", inside the previous tensor" : ", after a gap",
                              " (expected ", next, ")"));
    }
    next = t->end;
  }
  if (next != data_bytes) {
    return Bad(absl::StrCat("the tensors hold ", next, " data bytes, the file has ", data_bytes));
  }
  for (const TensorEntry* t : by_offset) {
    const uint64_t offset = 8 + n + t->begin;
    if (t->integer) {
      std::vector<int64_t>& v = checkpoint.state.integers[t->name];
      v.resize(t->count);
      st = ReadAt(offset, reinterpret_cast<char*>(v.data()), t->count * 8);
    } else {
      std::vector<double>& v = checkpoint.state.reals[t->name];
      v.resize(t->count);
      st = ReadAt(offset, reinterpret_cast<char*>(v.data()), t->count * 8);
    }
    if (!st.ok()) return st;
  }
  // "real/x" and "int/x" may both exist; a name twice within one kind cannot (JSON object keys).
  return checkpoint;
}

}  // namespace

absl::Status WriteCheckpoint(const TrainingCheckpoint& checkpoint, std::ostream& out) {
  const OptimizerState& state = checkpoint.state;
  Json header = Json::object();
  uint64_t offset = 0;
  auto describe = [&](const std::string& key, const char* dtype, size_t count) {
    header[key] = {{"dtype", dtype},
                   {"shape", Json::array({static_cast<uint64_t>(count)})},
                   {"data_offsets", Json::array({offset, offset + 8 * count})}};
    offset += 8 * count;
  };
  // The data follow the header's (sorted) key order: "int/..." before "real/...".
  for (const auto& [name, values] : state.integers)
    describe(kIntPrefix + name, "I64", values.size());
  for (const auto& [name, values] : state.reals) describe(kRealPrefix + name, "F64", values.size());
  header["__metadata__"] = {{"format", kCheckpointFormat},
                            {"version", kVersion},
                            {"optimizer", state.optimizer},
                            {"epoch", std::to_string(checkpoint.epoch)},
                            {"history", HistoryJson(checkpoint.history).dump()}};
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');  // the data start 8-byte aligned
  if (text.size() > kMaxHeaderBytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("checkpoint: the header (", text.size(), " bytes for ",
                     checkpoint.history.size(), " epochs) exceeds ", kMaxHeaderBytes, " bytes"));
  }
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(uint64_t{text.size()} >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, values] : state.integers) {
    out.write(reinterpret_cast<const char*>(values.data()),
              static_cast<std::streamsize>(values.size() * 8));
  }
  for (const auto& [name, values] : state.reals) {
    out.write(reinterpret_cast<const char*>(values.data()),
              static_cast<std::streamsize>(values.size() * 8));
  }
  out.flush();
  if (!out) return absl::InternalError("checkpoint: writing the stream failed");
  return absl::OkStatus();
}

absl::Status WriteCheckpointFile(const TrainingCheckpoint& checkpoint, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("checkpoint: cannot write ", path));
  absl::Status st = WriteCheckpoint(checkpoint, out);
  out.close();
  if (!st.ok() && !absl::IsInternal(st)) return st;
  if (!st.ok() || !out) {
    return absl::InternalError(absl::StrCat("checkpoint: writing ", path, " failed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainingCheckpoint> ReadCheckpoint(std::istream& in, uint64_t size,
                                                  const std::string& name) {
  return CheckpointReader(in, size, name).Read();
}

absl::StatusOr<TrainingCheckpoint> ReadCheckpointFile(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open the checkpoint file: ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the checkpoint file"));
  return ReadCheckpoint(in, static_cast<uint64_t>(st.st_size), path);
}

}  // namespace logit
