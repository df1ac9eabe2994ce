// libFuzzer target: ParseModel on .safetensors files (length prefix, JSON header, F32 data).
#define LOGIT_FUZZ_MODEL_NAME "fuzz.safetensors"
#include "tests/fuzz/model_fuzz.inc"
