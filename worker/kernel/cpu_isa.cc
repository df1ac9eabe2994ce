#include "worker/kernel/cpu_isa.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
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
  if (force != nullptr && *force != '\0') {
    if (std::strcmp(force, "portable") != 0 && std::strcmp(force, "avx2") != 0 &&
        std::strcmp(force, "avx512") != 0) {
      std::fprintf(stderr,
                   "logit: LOGIT_CPU_KERNEL=%s is not portable, avx2 or avx512; ignored\n", force);
    }
    best = std::min(best, ParseIsa(force, best));
  }
  return best;
}

// What UseKernelIsa chose; -1: nothing, BestIsa(). Relaxed: switched only by tests and
// benchmarks between passes, read at the start of each. A constant initialiser, so that it is
// valid whatever the order of other files' static initialisers.
std::atomic<int> g_isa{-1};

}  // namespace

Isa BestIsa() {
  static const Isa best = DetectIsa();  // once, on first use (load time in practice)
  return best;
}

Isa CurrentIsa() {
  const int chosen = g_isa.load(std::memory_order_relaxed);
  return chosen < 0 ? BestIsa() : static_cast<Isa>(chosen);
}

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
  const Isa asked = ParseIsa(isa, BestIsa());
  if (asked > BestIsa()) return false;
  g_isa.store(static_cast<int>(asked), std::memory_order_relaxed);
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
