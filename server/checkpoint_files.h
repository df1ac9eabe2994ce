// Checkpoint files of unfinished jobs, under DATA_DIR/checkpoints/JOB/ckpt-NUMBER.safetensors.
// A checkpoint is made durable before the coordinator records it: the upload goes to a
// temporary file that is fsynced, renamed to its final name, and the directory fsynced. Files
// without a record (an upload interrupted by a crash, a record whose commit failed) are
// removed at start-up.
//
// Thread-safety: stateless apart from the directory; concurrent calls for different files are
// safe. The coordinator serialises the numbering and the records.
#ifndef LOGIT_SERVER_CHECKPOINT_FILES_H_
#define LOGIT_SERVER_CHECKPOINT_FILES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/chunk_file.h"
#include "server/job_store.h"

namespace logit {

class CheckpointFiles {
 public:
  // `dir` is DATA_DIR/checkpoints (created when missing).
  explicit CheckpointFiles(std::string dir) : dir_(std::move(dir)) {}

  // Writes the chunks `next` yields (false at the end) to a fsynced temporary file in the job's
  // directory and returns its path. INVALID_ARGUMENT when the bytes are not `expected_size`,
  // RESOURCE_EXHAUSTED over `max_bytes` (0: no limit); the temporary file is gone on error.
  absl::StatusOr<std::string> Receive(const std::string& job_id, int64_t expected_size,
                                      int64_t max_bytes, const ChunkSource& next);
  // Renames a received file to the checkpoint's final name and fsyncs the directory.
  absl::StatusOr<std::string> Publish(const std::string& temp, const std::string& job_id,
                                      int64_t number);
  // Removes one file (missing files are fine).
  static void Remove(const std::string& path);
  // Removes every file under the directory that is not one of `known`, and empty job
  // directories. Returns how many files it removed.
  int RemoveOrphans(const std::vector<CheckpointRecord>& known);

 private:
  std::string JobDir(const std::string& job_id) const;
  const std::string dir_;
};

}  // namespace logit

#endif  // LOGIT_SERVER_CHECKPOINT_FILES_H_
