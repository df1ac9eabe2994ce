// Checkpoint files: a TrainingCheckpoint (worker/kernel/training_checkpoint.h) in the public
// safetensors layout, so that any safetensors reader can inspect one. LibTorch-free.
//
//   8 bytes     little-endian length n of the header
//   n bytes     JSON header, padded with spaces to a multiple of 8: for every entry of the
//               optimizer state a tensor "real/<name>" (dtype F64) or "int/<name>" (I64), shape
//               [count], data_offsets [begin, end) into the data; and "__metadata__" (strings):
//               format "logit-checkpoint", version "1", optimizer, epoch, and history (a JSON
//               array of the epoch records; NaN as null, infinities as "inf" / "-inf")
//   data        the arrays, little-endian, back to back in the header's order
//
// Written and read as streams, so a state of many GB never sits in one buffer (nor in a
// protobuf message).
#ifndef LOGIT_WORKER_CHECKPOINT_H_
#define LOGIT_WORKER_CHECKPOINT_H_

#include <istream>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/kernel/training_checkpoint.h"

namespace logit {

// The "format" of a checkpoint file's metadata.
inline constexpr char kCheckpointFormat[] = "logit-checkpoint";

// Writes `checkpoint` to `path` (replacing it). Internal naming the path when the file cannot be
// written; a failed write may leave a partial file, which ReadCheckpointFile refuses.
absl::Status WriteCheckpointFile(const TrainingCheckpoint& checkpoint, const std::string& path);

// Reads a file WriteCheckpointFile wrote. NotFound when it cannot be opened; InvalidArgument
// naming the file and the fault for anything else: a truncated or padded file, a header that is
// not the layout above, another format or version, a tensor of another dtype or shape, offsets
// outside the data or overlapping. Never allocates more than the file's size.
absl::StatusOr<TrainingCheckpoint> ReadCheckpointFile(const std::string& path);

// The same on a stream of `size` bytes; `name` names it in errors.
absl::Status WriteCheckpoint(const TrainingCheckpoint& checkpoint, std::ostream& out);
absl::StatusOr<TrainingCheckpoint> ReadCheckpoint(std::istream& in, uint64_t size,
                                                  const std::string& name);

}  // namespace logit

#endif  // LOGIT_WORKER_CHECKPOINT_H_
