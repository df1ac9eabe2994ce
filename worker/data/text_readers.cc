// CSV and LibSVM readers over a memory-mapped file.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "worker/common/status.h"
#include "worker/common/utf8.h"
#include "worker/data/limits.h"
#include "worker/data/mapped_file.h"
#include "worker/data/reader_internal.h"

namespace logit {
namespace internal {

namespace {

// Iterates the lines of a buffer, tracking 1-based line numbers; strips a trailing '\r'.
class LineCursor {
 public:
  explicit LineCursor(absl::string_view text) : text_(text) {}
  // Returns false at the end of the buffer.
  bool Next(absl::string_view* line) {
    if (pos_ >= text_.size()) return false;
    const char* start = text_.data() + pos_;
    const void* nl = std::memchr(start, '\n', text_.size() - pos_);
    size_t len = nl ? static_cast<const char*>(nl) - start : text_.size() - pos_;
    pos_ += len + 1;
    ++line_no_;
    if (len > 0 && start[len - 1] == '\r') --len;
    *line = absl::string_view(start, len);
    return true;
  }
  int64_t line_no() const { return line_no_; }
  // Offset of the next line's first byte.
  size_t pos() const { return std::min(pos_, text_.size()); }

 private:
  absl::string_view text_;
  size_t pos_ = 0;
  int64_t line_no_ = 0;
};

bool IsBlank(absl::string_view line) { return absl::StripAsciiWhitespace(line).empty(); }

// Parses a finite float; false on garbage, trailing characters, NaN or Inf.
bool ParseFinite(absl::string_view s, float* out, bool* non_finite) {
  s = absl::StripAsciiWhitespace(s);
  *non_finite = false;
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  if (ec != std::errc() || ptr != s.data() + s.size()) {
    // from_chars gives out_of_range for denormals; accept those as tiny numbers.
    double dv;
    if (!absl::SimpleAtod(s, &dv)) return false;
    if (!std::isfinite(dv)) {
      *non_finite = true;
      return false;
    }
    *out = static_cast<float>(dv);
  }
  if (!std::isfinite(*out)) {
    *non_finite = true;
    return false;
  }
  return true;
}

std::string Where(const std::string& path, int64_t line) { return absl::StrCat(path, ":", line); }

absl::string_view Unquote(absl::string_view s) {
  s = absl::StripAsciiWhitespace(s);
  if (s.size() >= 2 && (s.front() == '"' || s.front() == '\'') && s.back() == s.front()) {
    s = s.substr(1, s.size() - 2);
  }
  return s;
}

// True when a CSV field holds a number (NaN and Inf included: those are numbers, refused
// later with their own message).
bool LooksNumeric(absl::string_view field) {
  float v;
  bool non_finite;
  return ParseFinite(field, &v, &non_finite) || non_finite;
}

// The field at 0-based `col` of a CSV line; empty when the line has fewer fields.
absl::string_view FieldAt(absl::string_view line, int64_t col) {
  size_t start = 0;
  for (int64_t c = 0; c < col; ++c) {
    const size_t comma = line.find(',', start);
    if (comma == absl::string_view::npos) return absl::string_view();
    start = comma + 1;
  }
  const size_t end = line.find(',', start);
  return line.substr(start, end == absl::string_view::npos ? end : end - start);
}

// "a, b, c" (the first 10 names, then "... (N in all)").
std::string NameList(const std::vector<std::string>& names) {
  constexpr size_t kShown = 10;
  std::string out;
  for (size_t i = 0; i < names.size() && i < kShown; ++i) {
    absl::StrAppend(&out, i ? ", " : "", names[i]);
  }
  if (names.size() > kShown) absl::StrAppend(&out, ", ... (", names.size(), " in all)");
  return out;
}

// The distinct values of a CSV's label column over the whole file, sorted by byte order (the
// order of scikit-learn's classes_ for strings: NumPy sorts by code point, which UTF-8 bytes
// keep). Errors for an empty label and for more than kMaxClasses distinct values.
absl::StatusOr<std::vector<std::string>> DistinctLabels(absl::string_view text, bool header,
                                                        int64_t label_col, int64_t columns,
                                                        const std::string& path) {
  absl::flat_hash_set<absl::string_view> seen;
  std::u32string code_points;
  LineCursor scan(text);
  absl::string_view line;
  bool skip = header;
  while (scan.Next(&line)) {
    if (IsBlank(line)) continue;
    if (skip) {
      skip = false;
      continue;
    }
    const int64_t fields = static_cast<int64_t>(std::count(line.begin(), line.end(), ',')) + 1;
    if (fields != columns) {
      return absl::InvalidArgumentError(absl::StrCat(Where(path, scan.line_no()), ": expected ",
                                                     columns, " fields, found ", fields,
                                                     " (ragged row)"));
    }
    const absl::string_view label = Unquote(FieldAt(line, label_col));
    if (label.find('\0') != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(Where(path, scan.line_no()), ": column ",
                                                     label_col + 1, ": the label holds a NUL byte"));
    }
    if (label.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(Where(path, scan.line_no()), ": column ",
                                                     label_col + 1, ": empty label"));
    }
    const bool is_new = seen.insert(label).second;
    if (is_new && !DecodeUtf8(label, &code_points)) {
      return absl::InvalidArgumentError(absl::StrCat(Where(path, scan.line_no()), ": column ",
                                                     label_col + 1,
                                                     ": the label is not valid UTF-8"));
    }
    if (is_new && static_cast<int64_t>(seen.size()) > kMaxClasses) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(path, scan.line_no()), ": more than ", kMaxClasses,
                       " distinct labels in column ", label_col + 1, " (is it the label column?)"));
    }
  }
  std::vector<std::string> names(seen.begin(), seen.end());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

absl::StatusOr<int64_t> ToClassIndex(double value, int64_t classes, const std::string& where) {
  if (!std::isfinite(value) || value != std::floor(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": label ", value, " is not an integer class"));
  }
  if (value >= static_cast<double>(kMaxClasses)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": label ", value, " is past the largest supported class ", kMaxClasses - 1));
  }
  if (value < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": label ", value, " is negative (classes are 0..K-1, or -1/+1)"));
  }
  int64_t y = static_cast<int64_t>(value);  // in [-1, kMaxClasses): the cast is exact
  if (y == -1) y = 0;                       // -1/+1 binary labels
  if (classes > 0 && y >= classes) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": label ", value, " is out of range for classes=", classes));
  }
  return y;
}

absl::StatusOr<Dataset> ReadCsv(const ReadOptions& opt) {
  auto file = MappedFile::Open(opt.path);
  if (!file.ok()) return file.status();
  const absl::string_view text = file->data();

  // The first two non-blank lines decide the column count, the label column and whether the
  // first line is a header.
  absl::string_view line, first_line, second_line;
  int64_t lines = 0;  // non-blank lines
  {
    LineCursor cursor(text);
    while (cursor.Next(&line)) {
      if (IsBlank(line)) continue;
      if (lines == 0) first_line = line;
      if (lines == 1) second_line = line;
      ++lines;
    }
  }
  if (lines == 0) {
    return absl::InvalidArgumentError(absl::StrCat(opt.path, ": empty CSV file"));
  }
  const int64_t columns =
      static_cast<int64_t>(std::count(first_line.begin(), first_line.end(), ',')) + 1;
  if (columns - 1 > kMaxFeatures) {
    return absl::InvalidArgumentError(
        absl::StrCat(opt.path, ":1: ", columns, " columns (at most ", kMaxFeatures, " features)"));
  }
  const bool unlabeled = !opt.require_labels && opt.num_features > 0 && columns == opt.num_features;
  if (columns < 2 && !unlabeled) {
    return absl::InvalidArgumentError(
        absl::StrCat(opt.path, ":1: a CSV needs at least one feature column and a label column"));
  }

  // Which column holds the label: a header name, a number counting from 1, or the last. A name
  // is looked up only when the first line holds text (could be a header).
  bool first_has_text = false;
  for (absl::string_view f : absl::StrSplit(first_line, ',')) {
    if (!LooksNumeric(f)) first_has_text = true;
  }
  int64_t label_col = unlabeled ? -1 : columns - 1;
  bool named_label = false;
  if (!opt.label_column.empty() && !unlabeled) {
    int64_t at = 0;
    for (absl::string_view f : absl::StrSplit(first_line, ',')) {
      if (first_has_text && Unquote(f) == opt.label_column) {
        label_col = at;
        named_label = true;
        break;
      }
      ++at;
    }
    int64_t idx;
    if (!named_label && !absl::SimpleAtoi(opt.label_column, &idx)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label_column: no column named '", opt.label_column, "' in the header of ", opt.path));
    }
    if (!named_label) {
      // Columns count from 1, as the messages' "column N" do; -1 is the last.
      if (idx == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "label_column: columns count from 1 (the first is 1, the last -1), not 0, in ",
            opt.path));
      }
      idx = idx > 0 ? idx - 1 : idx + columns;
      if (idx < 0 || idx >= columns) {
        return absl::InvalidArgumentError(absl::StrCat("label_column: column ", opt.label_column,
                                                       " is out of range for ", opt.path, " with ",
                                                       columns, " columns"));
      }
      label_col = idx;
    }
  }
  // The first line is a header when a feature field is not a number, when the label column
  // was named in it, or when its label is not a number but the next line's label is (string
  // labels put a name in the label column of every row, not only the header's).
  bool header = named_label;
  if (!header) {
    int64_t at = 0;
    for (absl::string_view f : absl::StrSplit(first_line, ',')) {
      if (at++ != label_col && !LooksNumeric(f)) header = true;
    }
  }
  if (!header && label_col >= 0 && lines > 1 && !LooksNumeric(FieldAt(first_line, label_col)) &&
      LooksNumeric(FieldAt(second_line, label_col))) {
    header = true;
  }
  const int64_t total = lines - (header ? 1 : 0);

  // Every row holds `columns` non-empty fields and columns - 1 commas, so rows x columns is
  // bounded by the file size; a file that breaks the bound has a short row, found and named
  // here before rows x columns floats are allocated.
  const auto min_bytes = CheckedMul(total, 2 * columns - 1);
  if (!min_bytes || *min_bytes > static_cast<int64_t>(text.size())) {
    LineCursor scan(text);
    bool in_header = header;
    while (scan.Next(&line)) {
      if (IsBlank(line)) continue;
      if (in_header) {
        in_header = false;
        continue;
      }
      const int64_t fields = static_cast<int64_t>(std::count(line.begin(), line.end(), ',')) + 1;
      if (fields != columns) {
        return absl::InvalidArgumentError(absl::StrCat(Where(opt.path, scan.line_no()),
                                                       ": expected ", columns, " fields, found ",
                                                       fields, " (ragged row)"));
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(opt.path, ": ", total, " rows of ", columns,
                                                   " columns cannot fit in ", text.size(),
                                                   " bytes (empty fields?)"));
  }
  const int64_t d = unlabeled ? columns : columns - 1;
  if (opt.num_features > 0 && opt.num_features != d) {
    return absl::InvalidArgumentError(absl::StrCat(
        opt.path, ": has ", d, " feature columns, expected features=", opt.num_features));
  }

  // Labels are names when names are given or the first row's label is not a number.
  std::vector<std::string> names = opt.class_names;
  const absl::string_view first_row = header ? second_line : first_line;
  if (names.empty() && label_col >= 0 && total > 0 &&
      !LooksNumeric(FieldAt(first_row, label_col))) {
    ASSIGN_OR_RETURN(names, DistinctLabels(text, header, label_col, columns, opt.path));
  }
  const bool string_labels = !names.empty();
  if (string_labels && opt.class_names.empty() && opt.classes > 0 &&
      static_cast<int64_t>(names.size()) != opt.classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        opt.path, ": the label column holds ", names.size(), " distinct labels (",
        NameList(names), ") but classes=", opt.classes,
        "; string labels define the classes (leave classes unset)"));
  }
  absl::flat_hash_map<absl::string_view, int64_t> class_of;
  for (size_t k = 0; k < names.size(); ++k) class_of.emplace(names[k], static_cast<int64_t>(k));

  Dataset out;
  out.source = opt.path;
  out.storage = FeatureStorage::kDenseFloat32;
  out.num_features = d;
  out.has_labels = !unlabeled;
  out.total_rows = total;
  if (string_labels) out.class_names = names;
  const int64_t begin = ShardBegin(total, opt.rank, opt.world);
  const int64_t end = ShardBegin(total, opt.rank + 1, opt.world);
  out.first_row = begin;
  out.num_rows = end - begin;
  out.dense_f32.resize(out.num_rows * d);
  out.labels.resize(out.num_rows);

  // Parse only this shard's rows.
  LineCursor parse(text);
  int64_t row = -1;
  bool skipped_header = !header;
  while (row + 1 < end && parse.Next(&line)) {
    if (IsBlank(line)) continue;
    if (!skipped_header) {
      skipped_header = true;
      continue;
    }
    ++row;
    if (row < begin) continue;
    const std::string where = Where(opt.path, parse.line_no());
    float* dst = out.dense_f32.data() + (row - begin) * d;
    int64_t col = 0;
    for (absl::string_view field : absl::StrSplit(line, ',')) {
      if (col >= columns) {
        ++col;
        continue;
      }
      if (col == label_col && string_labels) {
        const auto it = class_of.find(Unquote(field));
        if (it == class_of.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": column ", col + 1, ": label '", Unquote(field),
                           "' is not one of the classes (", NameList(names), ")"));
        }
        out.labels[row - begin] = it->second;
        ++col;
        continue;
      }
      float v;
      bool non_finite;
      if (!ParseFinite(field, &v, &non_finite)) {
        if (col == label_col && !non_finite) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": column ", col + 1, ": label '", Unquote(field),
              "' is not a number, but the first row's label is (a file's labels are all "
              "numbers or all names)"));
        }
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": column ", col + 1, ": ",
                         non_finite ? "non-finite value '" : "not a number: '", field, "'"));
      }
      if (col == label_col) {
        auto y = ToClassIndex(v, opt.classes, where);
        if (!y.ok()) return y.status();
        out.labels[row - begin] = *y;
      } else {
        dst[(label_col < 0 || col < label_col) ? col : col - 1] = v;
      }
      ++col;
    }
    if (col != columns) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": expected ", columns, " fields, found ", col, " (ragged row)"));
    }
  }
  return out;
}

absl::StatusOr<Dataset> ReadLibSvm(const ReadOptions& opt) {
  auto file = MappedFile::Open(opt.path);
  if (!file.ok()) return file.status();
  const absl::string_view text = file->data();
  // Pages already walked are dropped every this many bytes (see MappedFile::ReleaseBefore).
  constexpr size_t kReleaseEvery = size_t{8} << 20;

  // Indices are 1-based unless the file uses index 0 anywhere (then 0-based).
  const bool zero_based =
      text.find(" 0:") != absl::string_view::npos || text.find("\t0:") != absl::string_view::npos;
  const int64_t base = zero_based ? 0 : 1;
  file->ReleaseBefore(text.size());

  auto is_row = [](absl::string_view line) {
    return !IsBlank(line.substr(0, line.find('#')));
  };
  LineCursor cursor(text);
  absl::string_view line;
  int64_t total = 0;
  size_t released = 0;
  while (cursor.Next(&line)) {
    if (is_row(line)) ++total;
    if (cursor.pos() - released > kReleaseEvery) file->ReleaseBefore(released = cursor.pos());
  }
  file->ReleaseBefore(text.size());

  Dataset out;
  out.source = opt.path;
  out.storage = FeatureStorage::kSparseCsr;
  out.total_rows = total;
  const int64_t begin = ShardBegin(total, opt.rank, opt.world);
  const int64_t end = ShardBegin(total, opt.rank + 1, opt.world);
  out.first_row = begin;
  out.num_rows = end - begin;

  // The shard's bytes: skip to its first row, find its end; every stored value has a ':', so
  // counting them reserves the arrays once (no growth, no copies).
  LineCursor parse(text);
  int64_t row = 0;
  size_t shard_begin = text.size();
  while (out.num_rows > 0) {
    const size_t at = parse.pos();
    if (!parse.Next(&line)) break;
    if (!is_row(line)) continue;
    if (row++ == begin) {
      shard_begin = at;
      break;
    }
  }
  LineCursor scan = parse;
  int64_t rows_seen = 1;
  for (absl::string_view ahead; rows_seen < out.num_rows && scan.Next(&ahead);) {
    if (is_row(ahead)) ++rows_seen;
  }
  const size_t shard_end = out.num_rows > 0 ? scan.pos() : shard_begin;
  const int64_t colons =
      shard_end > shard_begin
          ? std::count(text.begin() + shard_begin, text.begin() + std::min(shard_end, text.size()),
                       ':')
          : 0;
  out.labels.reserve(out.num_rows);
  out.csr_indptr.reserve(out.num_rows + 1);
  out.csr_indptr.push_back(0);
  // A stored value takes at least 4 bytes of text (" j:v"); colons in comments do not count.
  const int64_t values_bound =
      std::min<int64_t>(colons, static_cast<int64_t>(shard_end - shard_begin) / 4 + 1);
  out.csr_indices.reserve(values_bound);
  // Values are kept only once one is not 1 (then the earlier ones are filled in): a file of
  // binary features holds no values array at all.
  bool unit_values = true;
  int64_t max_index = -1;

  // Parse the shard's rows from its first line (already read by `parse`).
  bool have = out.num_rows > 0;
  released = shard_begin;
  for (int64_t r = 0; r < out.num_rows && have; ++r) {
    if (r > 0) {
      do {
        have = parse.Next(&line);
      } while (have && !is_row(line));
      if (!have) break;
    }
    if (parse.pos() - released > kReleaseEvery) file->ReleaseBefore(released = parse.pos());
    auto where = [&] { return Where(opt.path, parse.line_no()); };
    absl::string_view content = line.substr(0, line.find('#'));
    bool first_token = true;
    int64_t prev = -1;
    size_t at = 0;
    while (true) {
      while (at < content.size() && (content[at] == ' ' || content[at] == '\t')) ++at;
      if (at >= content.size()) break;
      size_t stop = at;
      while (stop < content.size() && content[stop] != ' ' && content[stop] != '\t') ++stop;
      const absl::string_view tok = content.substr(at, stop - at);
      at = stop;
      if (first_token) {
        first_token = false;
        float v;
        bool nf;
        if (!ParseFinite(tok, &v, &nf)) {
          return absl::InvalidArgumentError(absl::StrCat(where(), ": bad label '", tok, "'"));
        }
        const double dv = v;
        if (dv == std::floor(dv) && dv >= -1 && dv < (opt.classes > 0 ? opt.classes : kMaxClasses)) {
          out.labels.push_back(dv == -1 ? 0 : static_cast<int64_t>(dv));  // -1/+1 binary labels
        } else {
          auto y = ToClassIndex(v, opt.classes, where());  // the error
          if (!y.ok()) return y.status();
          out.labels.push_back(*y);
        }
        continue;
      }
      if (absl::StartsWith(tok, "qid:")) continue;
      const size_t colon = tok.find(':');
      int64_t idx = 0;
      float v;
      bool non_finite = false;
      const char* idx_end = colon == absl::string_view::npos ? nullptr : tok.data() + colon;
      const std::from_chars_result parsed =
          idx_end == nullptr ? std::from_chars_result{} : std::from_chars(tok.data(), idx_end, idx);
      if (idx_end == nullptr || parsed.ec != std::errc() || parsed.ptr != idx_end || colon == 0 ||
          !ParseFinite(tok.substr(colon + 1), &v, &non_finite)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where(), ": ", non_finite ? "non-finite value in '" : "expected index:value, got '",
            tok, "'"));
      }
      if (idx < base) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), ": feature index ", idx, " is below ", base));
      }
      idx -= base;
      if (idx >= kMaxFeatures) {
        return absl::InvalidArgumentError(absl::StrCat(where(), ": feature index ", idx + base,
                                                       " is past the largest supported feature ",
                                                       kMaxFeatures - 1 + base));
      }
      if (opt.num_features > 0 && idx >= opt.num_features) {
        return absl::InvalidArgumentError(absl::StrCat(where(), ": feature index ", idx + base,
                                                       " exceeds features=", opt.num_features));
      }
      if (idx <= prev) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), ": feature indices must increase (", tok, ")"));
      }
      prev = idx;
      max_index = std::max(max_index, idx);
      if (unit_values && v != 1.0f) {
        unit_values = false;
        out.csr_values.reserve(values_bound);
        out.csr_values.assign(out.csr_indices.size(), 1.0f);
      }
      out.csr_indices.push_back(static_cast<int32_t>(idx));  // < kMaxFeatures = 2^31
      if (!unit_values) out.csr_values.push_back(v);
    }
    out.csr_indptr.push_back(static_cast<int64_t>(out.csr_indices.size()));
  }
  file->ReleaseBefore(text.size());
  out.num_features = opt.num_features > 0 ? opt.num_features : max_index + 1;
  return out;
}

}  // namespace internal
}  // namespace logit
