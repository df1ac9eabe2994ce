// libFuzzer target: ParseModel on .npz archives (libzip over memory, the W/b .npy members).
#define LOGIT_FUZZ_MODEL_NAME "fuzz.npz"
#include "tests/fuzz/model_fuzz.inc"
