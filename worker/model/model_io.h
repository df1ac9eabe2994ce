// Reading and writing model files. LibTorch-free.
//   .npz: NumPy archive with W (d x K, or d for binary), b (K, or 1 for binary), classes
//         (int64 scalar), n_features (int64 scalar), and summary_json (uint8 bytes of the
//         training summary JSON, when given).
//   .safetensors: W and b as F32 tensors (same shapes), metadata classes, n_features and
//         summary_json (strings), per the public safetensors layout.
//   .onnx: an opset 13 graph: input "input" float [N, d]; Gemm with the initializers W (d x K,
//         d x 1 for binary) and b; Softmax, or for binary Sigmoid + Sub + Concat giving
//         [1 - p, p], as "probabilities" [N, K]; ArgMax as "label" int64 [N]; metadata_props
//         classes, n_features and summary_json. Only that graph is read back.
#ifndef LOGIT_WORKER_MODEL_MODEL_IO_H_
#define LOGIT_WORKER_MODEL_MODEL_IO_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/model.h"

namespace logit {

// Writes `model` to `path`; the format follows the extension (.npz, .safetensors, .onnx).
// `summary_json` may be empty. InvalidArgument for an unknown extension, Internal for I/O failures.
absl::Status SaveModel(const LinearModel& model, const std::string& path,
                       const std::string& summary_json = "");

// Reads a model written by SaveModel (or any .npz with W and b of matching shapes); the format
// follows the extension. InvalidArgument (naming the file) for a malformed or degenerate model:
// no features, fewer than 2 classes, W and b that disagree, more than kMaxParameters
// parameters; for an .onnx file whose graph is not the one SaveModel writes, "FILE: not a logit
// model: expected ..." naming the part that differs. NotFound when the file does not exist.
absl::StatusOr<LinearModel> LoadModel(const std::string& path);

// The same from the bytes of a model file; `name` gives the format by its extension (.npz,
// .safetensors or .onnx) and names the model in errors. Never reads outside `bytes`.
absl::StatusOr<LinearModel> ParseModel(const std::string& bytes, const std::string& name);

// OK when `model` is usable: 1..kMaxFeatures features, 2..kMaxClasses classes, at most
// kMaxParameters parameters, weights d x OutputColumns() and bias OutputColumns() values.
// InvalidArgument naming `where` otherwise.
absl::Status ValidateModel(const LinearModel& model, const std::string& where);

// The training summary JSON stored with a model of any of the three formats (NotFound when the
// file has none; an .onnx or .safetensors file must also be a readable model).
absl::StatusOr<std::string> LoadModelSummary(const std::string& path);

}  // namespace logit

#endif  // LOGIT_WORKER_MODEL_MODEL_IO_H_
