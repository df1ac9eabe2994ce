#include "worker/kernel/cpu_isa.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace logit::cpu {

namespace {

// Parses an ISA name; `fallback` for anything else.
Isa ParseIsa(const char* name, Isa fallback) {
  if (std::strcmp(name, "portable") == 0) return Isa::kPortable;
  if (std::strcmp(name, "avx2") == 0) return Isa::kAvx2;
  if (std::strcmp(name, "avx512") == 0) return Isa::kAvx512;
  return fallback;
}

Isa DetectIsa() {
  Isa best = Isa::kPortable;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
  if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw")) {
    best = Isa::kAvx512;
  }
#endif
  const char* force = std::getenv("LOGIT_CPU_KERNEL");
  if (force != nullptr) best = std::min(best, ParseIsa(force, best));
  return best;
}

const Isa kBestIsa = DetectIsa();
// Relaxed: switched only by tests and benchmarks between passes, read at the start of each.
std::atomic<Isa> g_isa{kBestIsa};

}  // namespace

Isa BestIsa() { return kBestIsa; }

Isa CurrentIsa() { return g_isa.load(std::memory_order_relaxed); }

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kPortable:
      break;
  }
  return "portable";
}

const char* KernelIsa() { return IsaName(CurrentIsa()); }

bool UseKernelIsa(const char* isa) {
  const Isa asked = ParseIsa(isa, kBestIsa);
  if (asked > kBestIsa) return false;
  g_isa.store(asked, std::memory_order_relaxed);
  return true;
}

int MaxThreads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

int ThreadNum() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

int TeamSize() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

}  // namespace logit::cpu
