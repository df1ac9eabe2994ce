// The fused dense kernel's full pass (a command, not a test): one loss + gradient pass over all
// rows of a dense dataset per instruction set and precision, best of N, as JSON: seconds, the
// pass's floating-point operations (4 n d c: the logits and the gradient products) and the bytes
// it must read (the rows as stored), for the roofline (tests/bench/scale/roofline.cc).
//   dense_bench FEATURES LABELS [--classes K] [--reps N] [--isa portable|avx2|avx512]
// e.g. dense_bench /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
//                  /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/data/readers.h"
#include "worker/kernel/cpu_isa.h"
#include "worker/kernel/fused_cpu.h"

namespace {

// Best-of-`reps` seconds of one full pass with kernel type T.
template <typename T>
double BestPass(const logit::fused::DenseRows& rows, const std::vector<int64_t>& all, int64_t d,
                int64_t c, bool double_sums, int reps) {
  std::vector<T> wt(d * c, T(0.001)), b(c, T(0));
  std::vector<double> sums(d * c + c + 2);
  logit::fused::FusedKernel<T> kernel(d, c, double_sums);
  kernel.SetParams(wt.data(), b.data(), nullptr, nullptr);
  double best = 1e9;
  for (int r = 0; r <= reps; ++r) {  // the first is a warm-up
    const auto t = std::chrono::steady_clock::now();
    kernel.Accumulate(rows, all.data(), static_cast<int64_t>(all.size()));
    kernel.FlushDouble(sums.data());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    if (r > 0) best = std::min(best, s);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: dense_bench FEATURES LABELS [--classes K] [--reps N] "
                 "[--isa portable|avx2|avx512]\n";
    return 2;
  }
  int64_t classes = 0;
  int reps = 10;
  std::string only_isa;
  for (int i = 3; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--classes") == 0) classes = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--isa") == 0) only_isa = argv[i + 1];
  }
  logit::ReadOptions ro;
  ro.path = argv[1];
  ro.labels_path = argv[2];
  auto data = logit::ReadDataset(ro);
  if (!data.ok()) {
    std::cerr << data.status() << "\n";
    return 1;
  }
  if (classes == 0) {
    classes = 1 + *std::max_element(data->labels.begin(), data->labels.end());
  }
  const int64_t n = data->num_rows, d = data->num_features, c = classes == 2 ? 1 : classes;
  logit::fused::DenseRows rows;
  const bool u8 = data->storage == logit::FeatureStorage::kDenseUint8;
  if (u8) {
    rows.u8 = data->U8Rows();
    rows.scale = static_cast<float>(data->u8_scale);
  } else {
    rows.f32 = data->F32Rows();
  }
  rows.d = d;
  rows.labels = data->labels.data();
  std::vector<int64_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  nlohmann::json out = {{"rows", n},
                        {"features", d},
                        {"outputs", c},
                        {"storage", u8 ? "uint8" : "float32"},
                        {"pass_flops", 4.0 * n * d * c},
                        {"pass_bytes", n * d * (u8 ? 1 : 4) + n * 8},
                        {"threads", logit::cpu::MaxThreads()}};
  for (const char* isa : {"portable", "avx2", "avx512"}) {
    if (!only_isa.empty() && only_isa != isa) continue;
    if (!logit::cpu::UseKernelIsa(isa)) continue;
    out["float64_seconds"][isa] = BestPass<double>(rows, all, d, c, false, reps);
    out["mixed_seconds"][isa] = BestPass<float>(rows, all, d, c, true, reps);
    out["float32_seconds"][isa] = BestPass<float>(rows, all, d, c, false, reps);
  }
  std::cout << out.dump() << "\n";
  return 0;
}
