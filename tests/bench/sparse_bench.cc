// The CSR kernel's full pass (a command, not a test): one loss + gradient pass over a LibSVM
// file's rows per instruction set, best of N, as JSON: seconds, stored values per second and
// the bytes a pass must read (values, indices, row offsets), for the roofline.
//   sparse_bench FILE [--classes K] [--reps N]
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/data/readers.h"
#include "worker/kernel/cpu_isa.h"
#include "worker/kernel/sparse_cpu.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: sparse_bench FILE.svm [--classes K] [--reps N]\n";
    return 2;
  }
  int64_t classes = 2;
  int reps = 20;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--classes") == 0) classes = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
  }
  logit::ReadOptions ro;
  ro.path = argv[1];
  ro.format = logit::DataFormat::kLibSvm;
  const auto t0 = std::chrono::steady_clock::now();
  auto data = logit::ReadDataset(ro);
  if (!data.ok()) {
    std::cerr << data.status() << "\n";
    return 1;
  }
  const double load = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t d = data->num_features, c = classes == 2 ? 1 : classes, n = data->num_rows;
  const int64_t nnz = static_cast<int64_t>(data->csr_indices.size());
  logit::sparse::CsrRows x;
  x.indptr = data->csr_indptr.data();
  x.indices = data->csr_indices.data();
  x.values = data->CsrValuesOrNull();  // null: all ones, not stored
  x.labels = data->labels.data();
  std::vector<double> w(d * c, 0.001), b(c, 0.0), sums(d * c + c + 2);
  nlohmann::json out = {{"rows", n}, {"features", d}, {"nnz", nnz}, {"load_seconds", load},
                        {"implicit_ones", x.values == nullptr},
                        {"pass_bytes", nnz * (x.values == nullptr ? 4 : 8) + (n + 1) * 8 + n * 8}};
  for (const char* isa : {"portable", "avx2", "avx512"}) {
    if (!logit::cpu::UseKernelIsa(isa)) continue;
    logit::sparse::SparseKernel kernel(d, c);
    double best = 1e9;
    for (int r = 0; r < reps; ++r) {
      std::fill(sums.begin(), sums.end(), 0.0);
      const auto t = std::chrono::steady_clock::now();
      kernel.Accumulate(x, nullptr, n, w.data(), b.data(), sums.data());
      best = std::min(best,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
    }
    out["pass_seconds"][isa] = best;
    out["values_per_second"][isa] = nnz / best;
  }
  std::cout << out.dump() << "\n";
  return 0;
}
