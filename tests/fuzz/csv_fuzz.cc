// libFuzzer target: the CSV reader (ReadDataset with DataFormat::kCsv) on arbitrary file bytes.
// Covers header detection, the row/column size bound, label columns, unlabeled prediction input
// (require_labels=false) and sharding (rank 1 of world 2). Every successful result must satisfy
// CheckDataset's invariants.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/fuzz_util.h"
#include "worker/data/readers.h"

// Fields of the first non-blank line (what the reader takes as the column count).
static int64_t FirstLineColumns(const uint8_t* data, size_t size) {
  const char* p = reinterpret_cast<const char*>(data);
  const char* end = p + size;
  while (p < end) {
    const char* nl = std::find(p, end, '\n');
    bool blank = true;
    for (const char* q = p; q < nl; ++q) {
      if (*q != ' ' && *q != '\t' && *q != '\r' && *q != '\v' && *q != '\f') blank = false;
    }
    if (!blank) return std::count(p, nl, ',') + 1;
    p = nl == end ? end : nl + 1;
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = logit_fuzz::TempPath("data.csv");
  logit_fuzz::WriteFile(path, data, size);

  logit::ReadOptions o;
  o.path = path;
  o.format = logit::DataFormat::kCsv;
  logit::Dataset first;
  const bool ok = logit_fuzz::ReadAndCheck(o, &first);

  // The same with the feature count it found, two classes, and the first column as the label.
  if (ok) {
    logit::ReadOptions f = o;
    f.num_features = first.num_features;
    f.classes = 2;
    logit_fuzz::ReadAndCheck(f);
  }
  {
    logit::ReadOptions f = o;
    f.label_column = "1";
    logit_fuzz::ReadAndCheck(f);
  }
  // Prediction input (rows of exactly the first line's width, no label) and rank 1 of 2.
  logit_fuzz::ReadVariants(o, std::max<int64_t>(0, FirstLineColumns(data, size)));
  return 0;
}
