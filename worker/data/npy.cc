#include "worker/data/npy.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "worker/data/limits.h"

namespace logit {

namespace {
// Value of `key` in the header dict: the text after "'key':" up to the next top-level ',' or '}'.
bool DictValue(absl::string_view dict, absl::string_view key, absl::string_view* value) {
  const std::string pattern = absl::StrCat("'", key, "'");
  size_t p = dict.find(pattern);
  if (p == absl::string_view::npos) return false;
  p = dict.find(':', p + pattern.size());
  if (p == absl::string_view::npos) return false;
  size_t q = p + 1;
  int depth = 0;
  while (q < dict.size()) {
    const char c = dict[q];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
    if (depth < 0) break;
    ++q;
  }
  if (q < dict.size() && dict[q] == ')') ++q;
  *value = absl::StripAsciiWhitespace(dict.substr(p + 1, q - p - 1));
  return true;
}
}  // namespace

absl::StatusOr<NpyHeader> ParseNpyHeader(absl::string_view bytes, const std::string& path,
                                         int64_t file_size) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a valid .npy file: ", why));
  };
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) {
    return bad("missing magic \\x93NUMPY at offset 0");
  }
  const uint8_t major = static_cast<uint8_t>(bytes[6]);
  size_t header_len, start;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return bad("truncated header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= size_t{static_cast<uint8_t>(bytes[8 + i])} << (8 * i);
    start = 12;
  } else {
    return bad(absl::StrCat("unsupported version ", major));
  }
  if (bytes.size() < start + header_len) return bad("truncated header");
  const absl::string_view dict = bytes.substr(start, header_len);
  NpyHeader h;
  h.data_offset = start + header_len;
  absl::string_view v;
  if (!DictValue(dict, "descr", &v)) return bad("header has no 'descr'");
  if (v.size() < 2 || (v.front() != '\'' && v.front() != '"') || v.back() != v.front()) {
    return bad("'descr' is not a quoted dtype string");
  }
  h.descr = std::string(v.substr(1, v.size() - 2));
  if (!DictValue(dict, "fortran_order", &v)) return bad("header has no 'fortran_order'");
  h.fortran_order = (v == "True");
  if (!DictValue(dict, "shape", &v) || v.size() < 2 || v.front() != '(' || v.back() != ')') {
    return bad("header has no 'shape' tuple");
  }
  for (absl::string_view dim :
       absl::StrSplit(v.substr(1, v.size() - 2), ',', absl::SkipWhitespace())) {
    int64_t n;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(dim), &n) || n < 0) {
      return bad(absl::StrCat("bad dimension '", dim, "' in shape"));
    }
    h.shape.push_back(n);
  }
  if (h.descr.size() < 3 || (h.descr[0] != '<' && h.descr[0] != '|' && h.descr[0] != '=')) {
    return bad(absl::StrCat("unsupported dtype '", h.descr, "' (need little-endian)"));
  }
  int64_t item = 0;
  if (!absl::SimpleAtoi(h.descr.substr(2), &item) || item <= 0 || item > (int64_t{1} << 40)) {
    return bad(absl::StrCat("unsupported dtype '", h.descr, "'"));
  }
  if (h.descr[1] == 'U') item *= 4;  // '<Un': n UTF-32 code units
  h.item_size = static_cast<size_t>(item);
  const int64_t size = file_size >= 0 ? file_size : static_cast<int64_t>(bytes.size());
  if (size < static_cast<int64_t>(h.data_offset)) return bad("truncated header");
  const int64_t available = size - static_cast<int64_t>(h.data_offset);
  auto count = CheckedProduct(h.shape, available, absl::StrCat(path, ": shape"));
  auto data_bytes = count.ok() ? CheckedMul(*count, item) : std::nullopt;
  if (!data_bytes || *data_bytes > available) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": truncated data: the shape (", absl::StrJoin(h.shape, ", "), ") of '",
                     h.descr, "' needs more than the ", available, " bytes after the header"));
  }
  h.num_elements = *count;
  return h;
}

std::string EncodeNpy(const std::string& descr, const std::vector<int64_t>& shape, const void* data,
                      size_t bytes) {
  std::string shape_text = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) shape_text += ",";
  std::string dict = absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (",
                                  shape_text, "), }");
  // Pad so that the data starts on a 64-byte boundary, header ends with '\n'.
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>((dict.size() >> 8) & 0xff));
  out += dict;
  out.append(static_cast<const char*>(data), bytes);
  return out;
}

}  // namespace logit
