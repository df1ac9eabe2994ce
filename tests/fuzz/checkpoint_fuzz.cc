// libFuzzer target: ReadCheckpoint on arbitrary bytes (a checkpoint file, worker/checkpoint.h).
// It refuses with InvalidArgument only; a checkpoint it accepts must survive WriteCheckpoint +
// ReadCheckpoint unchanged (bit for bit).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>

#include "tests/fuzz/fuzz_util.h"
#include "worker/checkpoint.h"

static bool SameBits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

static bool SameBits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

static bool SameHistory(const logit::TrainingCheckpoint& a, const logit::TrainingCheckpoint& b) {
  if (a.history.size() != b.history.size()) return false;
  for (size_t i = 0; i < a.history.size(); ++i) {
    const logit::EpochRecord &x = a.history[i], &y = b.history[i];
    if (x.epoch != y.epoch || x.samples != y.samples || !SameBits(x.train_loss, y.train_loss) ||
        !SameBits(x.objective, y.objective) || !SameBits(x.val_loss, y.val_loss) ||
        !SameBits(x.val_accuracy, y.val_accuracy) || !SameBits(x.seconds, y.seconds)) {
      return false;
    }
  }
  return true;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  auto c = logit::ReadCheckpoint(in, size, "fuzz.ckpt");
  logit_fuzz::Report("ReadCheckpoint", c.status());
  if (!c.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(c.status()), "refused with another code: %s",
               c.status().ToString().c_str());
    return 0;
  }
  std::ostringstream out;
  const absl::Status written = logit::WriteCheckpoint(*c, out);
  // The history is written in its own spelling, which may be longer than the input's.
  if (absl::IsResourceExhausted(written)) return 0;
  FUZZ_CHECK(written.ok(), "WriteCheckpoint failed: %s", written.ToString().c_str());
  const std::string bytes = out.str();
  std::istringstream again_in(bytes);
  auto again = logit::ReadCheckpoint(again_in, bytes.size(), "again.ckpt");
  FUZZ_CHECK(again.ok(), "ReadCheckpoint rejects what WriteCheckpoint wrote: %s",
             again.status().ToString().c_str());
  bool reals = again->state.reals.size() == c->state.reals.size();
  for (const auto& [name, values] : c->state.reals) {
    auto it = again->state.reals.find(name);
    reals = reals && it != again->state.reals.end() && SameBits(it->second, values);
  }
  FUZZ_CHECK(again->epoch == c->epoch && again->state.optimizer == c->state.optimizer &&
                 again->state.integers == c->state.integers && reals && SameHistory(*c, *again),
             "the checkpoint changed in a write/read round trip (epoch %lld)", (long long)c->epoch);
  return 0;
}
