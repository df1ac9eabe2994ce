// roofline_bench: this machine's ceilings for the scale benchmark's roofline fractions.
//   roofline_bench [--threads N] [--bytes B] [--reps R]
// Prints one JSON object:
//   read bandwidth (GB/s) summing a buffer much larger than the caches (default 1 GiB), with
//   all threads and with one, best of R repetitions;
//   float32 / float64 FMA peak (GFLOP/s, an FMA counted as 2 FLOPs) on one core and on N,
//   from independent FMA chains (enough accumulators to hide the FMA latency).
// The hot loops are compiled per ISA (AVX-512F, AVX2+FMA, baseline SSE2) and the best one the
// CPU supports is picked at run time; "isa" names it. Standard library and pthreads only.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// ---- Read kernels: the sum of n doubles (n a multiple of 32), several independent sums so
// that the adds never limit the loads.

__attribute__((target("avx512f"))) double SumAvx512(const double* p, size_t n) {
  __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 32) {
    a0 = _mm512_add_pd(a0, _mm512_load_pd(p + i));
    a1 = _mm512_add_pd(a1, _mm512_load_pd(p + i + 8));
    a2 = _mm512_add_pd(a2, _mm512_load_pd(p + i + 16));
    a3 = _mm512_add_pd(a3, _mm512_load_pd(p + i + 24));
  }
  alignas(64) double t[8];
  _mm512_store_pd(t, _mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(a2, a3)));
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

__attribute__((target("avx2,fma"))) double SumAvx2(const double* p, size_t n) {
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 16) {
    a0 = _mm256_add_pd(a0, _mm256_load_pd(p + i));
    a1 = _mm256_add_pd(a1, _mm256_load_pd(p + i + 4));
    a2 = _mm256_add_pd(a2, _mm256_load_pd(p + i + 8));
    a3 = _mm256_add_pd(a3, _mm256_load_pd(p + i + 12));
  }
  alignas(32) double t[4];
  _mm256_store_pd(t, _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
  return t[0] + t[1] + t[2] + t[3];
}

double SumBase(const double* p, size_t n) {
  __m128d a0 = _mm_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 8) {
    a0 = _mm_add_pd(a0, _mm_load_pd(p + i));
    a1 = _mm_add_pd(a1, _mm_load_pd(p + i + 2));
    a2 = _mm_add_pd(a2, _mm_load_pd(p + i + 4));
    a3 = _mm_add_pd(a3, _mm_load_pd(p + i + 6));
  }
  alignas(16) double t[2];
  _mm_store_pd(t, _mm_add_pd(_mm_add_pd(a0, a1), _mm_add_pd(a2, a3)));
  return t[0] + t[1];
}

// ---- FMA kernels: `iters` rounds of kAcc independent chains acc = acc * m + c; returns the
// FLOPs done (2 per lane per FMA; the baseline's separate multiply and add count 2 as well).
constexpr int kAcc = 12;  // >= FMA latency (4-5 cycles) x FMA ports (2), with slack

#define FMA_KERNEL(NAME, TARGET, VEC, SET1, FMA, ADD, LANES, SCALAR)                 \
  TARGET double NAME(int64_t iters, SCALAR* sink) {                                  \
    VEC acc[kAcc];                                                                   \
    for (int k = 0; k < kAcc; ++k) acc[k] = SET1(static_cast<SCALAR>(1 + 0.01 * k)); \
    const VEC m = SET1(static_cast<SCALAR>(0.999999));                               \
    const VEC c = SET1(static_cast<SCALAR>(1e-6));                                   \
    for (int64_t i = 0; i < iters; ++i) {                                            \
      for (int k = 0; k < kAcc; ++k) acc[k] = FMA(acc[k], m, c);                     \
    }                                                                                \
    VEC s = acc[0];                                                                  \
    for (int k = 1; k < kAcc; ++k) s = ADD(s, acc[k]);                               \
    SCALAR out[LANES];                                                               \
    std::memcpy(out, &s, sizeof(out));                                               \
    *sink = out[0];                                                                  \
    return 2.0 * LANES * kAcc * static_cast<double>(iters);                          \
  }

#define ATTR_512 __attribute__((target("avx512f")))
#define ATTR_256 __attribute__((target("avx2,fma")))
#define ATTR_BASE
#define MULADD_PS(a, b, c) _mm_add_ps(_mm_mul_ps(a, b), c)
#define MULADD_PD(a, b, c) _mm_add_pd(_mm_mul_pd(a, b), c)

FMA_KERNEL(FmaF32Avx512, ATTR_512, __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, 16,
           float)
FMA_KERNEL(FmaF64Avx512, ATTR_512, __m512d, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd, 8,
           double)
FMA_KERNEL(FmaF32Avx2, ATTR_256, __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, 8, float)
FMA_KERNEL(FmaF64Avx2, ATTR_256, __m256d, _mm256_set1_pd, _mm256_fmadd_pd, _mm256_add_pd, 4, double)
FMA_KERNEL(FmaF32Base, ATTR_BASE, __m128, _mm_set1_ps, MULADD_PS, _mm_add_ps, 4, float)
FMA_KERNEL(FmaF64Base, ATTR_BASE, __m128d, _mm_set1_pd, MULADD_PD, _mm_add_pd, 2, double)

struct Isa {
  const char* name;
  double (*sum)(const double*, size_t);
  double (*fma32)(int64_t, float*);
  double (*fma64)(int64_t, double*);
};

Isa PickIsa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    return {"avx512f", SumAvx512, FmaF32Avx512, FmaF64Avx512};
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return {"avx2+fma", SumAvx2, FmaF32Avx2, FmaF64Avx2};
  }
  return {"sse2 (mul+add, no FMA)", SumBase, FmaF32Base, FmaF64Base};
}

// Runs work(t) on `threads` threads at once; returns the wall seconds of the slowest.
template <typename Work>
double Parallel(int threads, Work work) {
  std::vector<std::thread> pool;
  const auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t) pool.emplace_back(work, t);
  for (auto& th : pool) th.join();
  return Seconds(t0, Clock::now());
}

// Best read bandwidth (bytes/s) over `reps` sums of buf by `threads` threads (contiguous
// slices, each a multiple of 32 doubles).
double ReadBandwidth(const Isa& isa, const double* buf, size_t n, int threads, int reps) {
  const size_t per = n / threads / 32 * 32;
  std::vector<double> sinks(threads);
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const double s = Parallel(threads, [&](int t) { sinks[t] = isa.sum(buf + t * per, per); });
    best = std::max(best, static_cast<double>(per * threads * sizeof(double)) / s);
  }
  if (sinks[0] == 12345.678) std::printf("#");  // keeps the sums alive
  return best;
}

// Best FLOP/s over `reps` runs of an FMA kernel on `threads` threads at once.
template <typename Scalar>
double FmaPeak(double (*kernel)(int64_t, Scalar*), int threads, int reps) {
  constexpr int64_t kIters = 50'000'000;  // ~0.1-0.3 s per thread
  std::vector<Scalar> sinks(threads);
  std::vector<double> flops(threads);
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const double s = Parallel(threads, [&](int t) { flops[t] = kernel(kIters, &sinks[t]); });
    double total = 0;
    for (double f : flops) total += f;
    best = std::max(best, total / s);
  }
  if (sinks[0] == static_cast<Scalar>(12345.678)) std::printf("#");
  return best;
}

[[noreturn]] void Usage() {
  std::fprintf(stderr, "usage: roofline_bench [--threads N] [--bytes B] [--reps R]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  size_t bytes = size_t{1} << 30;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) Usage();
    if (a == "--threads") {
      threads = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--bytes") {
      bytes = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--reps") {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      Usage();
    }
  }
  const Isa isa = PickIsa();
  const size_t n = std::max<size_t>(bytes / sizeof(double) / 32 * 32, 32 * threads);
  double* buf = static_cast<double*>(std::aligned_alloc(64, n * sizeof(double)));
  if (buf == nullptr) {
    std::fprintf(stderr, "roofline_bench: cannot allocate %zu bytes\n", n * sizeof(double));
    return 1;
  }
  // Touch every page from the thread that will read it (first-touch placement).
  const size_t per = n / threads;
  Parallel(threads, [&](int t) {
    const size_t end = t + 1 == threads ? n : (t + 1) * per;
    for (size_t i = t * per; i < end; ++i) buf[i] = 1.0;
  });
  const double bw_all = ReadBandwidth(isa, buf, n, threads, reps);
  const double bw_one = ReadBandwidth(isa, buf, n, 1, reps);
  std::free(buf);
  const double f32_one = FmaPeak(isa.fma32, 1, reps);
  const double f32_all = FmaPeak(isa.fma32, threads, reps);
  const double f64_one = FmaPeak(isa.fma64, 1, reps);
  const double f64_all = FmaPeak(isa.fma64, threads, reps);
  std::printf(
      "{\"isa\": \"%s\", \"threads\": %d, \"buffer_bytes\": %zu, \"repetitions\": %d, "
      "\"read_gb_per_s\": {\"all_threads\": %.2f, \"one_thread\": %.2f}, "
      "\"fma_gflops\": {\"f32\": {\"one_core\": %.1f, \"all_cores\": %.1f}, "
      "\"f64\": {\"one_core\": %.1f, \"all_cores\": %.1f}}}\n",
      isa.name, threads, n * sizeof(double), reps, bw_all / 1e9, bw_one / 1e9, f32_one / 1e9,
      f32_all / 1e9, f64_one / 1e9, f64_all / 1e9);
  return 0;
}
