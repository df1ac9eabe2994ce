// libFuzzer target: the LibSVM/svmlight reader (ReadDataset with DataFormat::kLibSvm) on
// arbitrary file bytes: labels, index:value pairs, qid, comments, 0/1-based indices, a given
// feature count, a class count and sharding (rank 1 of world 2). Every successful result must
// satisfy CheckDataset's invariants (CSR structure, indices below num_features).
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/fuzz_util.h"
#include "worker/data/readers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = logit_fuzz::TempPath("data.libsvm");
  logit_fuzz::WriteFile(path, data, size);

  logit::ReadOptions o;
  o.path = path;
  o.format = logit::DataFormat::kLibSvm;
  logit::Dataset first;
  const bool ok = logit_fuzz::ReadAndCheck(o, &first);
  if (ok && first.num_features > 0) {
    logit::ReadOptions f = o;
    f.num_features = first.num_features;
    f.classes = 2;
    logit_fuzz::ReadAndCheck(f);
    // One feature fewer: rows using the last feature must be rejected, not accepted.
    if (first.num_features > 1) {
      f.num_features = first.num_features - 1;
      f.classes = 0;
      logit_fuzz::ReadAndCheck(f);
    }
  }
  logit_fuzz::ReadVariants(o, 3);
  return 0;
}
