// UTF-8 decoding for the few places that need code points: class names must be valid UTF-8
// (they travel in protobuf strings) and are stored in .npz files as NumPy's '<U' (UTF-32LE).
#ifndef LOGIT_WORKER_COMMON_UTF8_H_
#define LOGIT_WORKER_COMMON_UTF8_H_

#include <string>

#include "absl/strings/string_view.h"

namespace logit {

// Decodes `text` into code points; false (and `out` unspecified) when it is not valid UTF-8
// (a bad lead or continuation byte, an overlong form, a surrogate, a value past U+10FFFF).
bool DecodeUtf8(absl::string_view text, std::u32string* out);

// The UTF-8 encoding of code points that DecodeUtf8 accepts; false for a surrogate or a value
// past U+10FFFF.
bool EncodeUtf8(const std::u32string& code_points, std::string* out);

}  // namespace logit

#endif  // LOGIT_WORKER_COMMON_UTF8_H_
