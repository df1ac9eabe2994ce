// libFuzzer target: the IDX reader on plain files (see idx_fuzz.inc).
#define LOGIT_FUZZ_IDX_GZIP 0
#include "tests/fuzz/idx_fuzz.inc"
