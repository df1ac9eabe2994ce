// libFuzzer target: the IDX reader on gzip-compressed files (*.gz; see idx_fuzz.inc). The input
// is the uncompressed pair; the harness compresses each part, so the reader's gzip size bound
// (kMaxGzipRatio) and zlib path are what is exercised.
#define LOGIT_FUZZ_IDX_GZIP 1
#include "tests/fuzz/idx_fuzz.inc"
