#include "worker/kernel/fused_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "worker/kernel/cpu_isa.h"

// Every loop below is compiled three times: portable (baseline x86-64: 32-byte vectors as two SSE
// registers), AVX2 + FMA (32-byte vectors) and AVX-512 (64-byte vectors); the entry point is
// picked per call from cpu::CurrentIsa(), decided at load time (cpu_isa.h).
#if defined(__x86_64__) && defined(__GNUC__)
#define LOGIT_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define LOGIT_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#define LOGIT_HAVE_ISA_CLONES 1
#endif

namespace logit::fused {

namespace {

constexpr int64_t kGroup = 4;   // rows whose logits are computed together (W loaded once)
constexpr int64_t kChunk = 32;  // rows whose gradient sums are added together (x in L2)
// double_sums: float32 sums of at most this many rows are added into the float64 ones (each
// fold costs a pass over the c x d sums; after every chunk it was 7% of a full pass).
constexpr int64_t kFoldRows = 128;

}  // namespace

// Asks for the cache lines of `count` rows ahead of use: minibatch rows are random rows of a
// large matrix, and their loads were the largest cost of a small step.
void PrefetchRows(const DenseRows& data, const int64_t* rows, int64_t count) {
  const int64_t bytes = data.d * (data.u8 != nullptr ? 1 : 4);
  for (int64_t r = 0; r < count; ++r) {
    const char* p = data.u8 != nullptr ? reinterpret_cast<const char*>(data.u8 + rows[r] * data.d)
                                       : reinterpret_cast<const char*>(data.f32 + rows[r] * data.d);
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
  }
}

namespace {

// Vectors of VB bytes (GCC/Clang vector extension): VB = 32 holds 8 floats or 4 doubles (AVX in
// the AVX2 entry points, two SSE registers in the portable ones), VB = 64 holds 16 floats or 8
// doubles (AVX-512). Explicit vectors keep the compiler from vectorising the wrong loop (it did:
// across j, with shuffles, 5x slower).
template <typename T, int VB>
struct Simd {
  typedef T V __attribute__((vector_size(VB)));
};
template <typename T, int VB>
using Vec = typename Simd<T, VB>::V;
template <typename T, int VB>
constexpr int64_t Lanes() {
  return VB / sizeof(T);
}

// The templates below are inlined into the per-instruction-set entry points, so each is compiled
// for every target.
#define LOGIT_INLINE __attribute__((always_inline)) inline

template <int VB, typename T>
LOGIT_INLINE Vec<T, VB> LoadV(const T* p) {
  Vec<T, VB> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <int VB, typename T>
LOGIT_INLINE void StoreV(T* p, Vec<T, VB> v) {
  std::memcpy(p, &v, sizeof(v));
}
// The lanes' sum, adding halves (a tree: the same order on every target of one width).
template <typename V>
LOGIT_INLINE auto SumV(V v) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(v[0])>>;
  constexpr int64_t L = sizeof(V) / sizeof(T);
  T a[L];
  std::memcpy(a, &v, sizeof(v));
  for (int64_t h = L / 2; h >= 1; h /= 2) {
    for (int64_t i = 0; i < h; ++i) a[i] += a[i + h];
  }
  return a[0];
}
// Scalars are broadcast by writing `scalar * vector` (one vbroadcast); a Vec{v, v, ...} literal
// compiled to a chain of inserts.

// Converts `count` rows into dst (count x d).
template <typename T>
LOGIT_INLINE void LoadRowsT(const DenseRows& data, const int64_t* rows, int64_t count, T* dst) {
  const int64_t d = data.d;
  for (int64_t r = 0; r < count; ++r) {
    T* out = dst + r * d;
    if (data.u8 != nullptr) {
      const uint8_t* in = data.u8 + rows[r] * d;
      const T s = static_cast<T>(data.scale);
      for (int64_t j = 0; j < d; ++j) out[j] = static_cast<T>(in[j]) * s;
    } else if constexpr (std::is_same_v<T, float>) {
      std::memcpy(out, data.f32 + rows[r] * d, sizeof(float) * d);
    } else {
      const float* in = data.f32 + rows[r] * d;
      for (int64_t j = 0; j < d; ++j) out[j] = in[j];
    }
  }
}

// z[r * c + k] = b[k] + x_r . w_k for kGroup rows (rows beyond the batch are zeros) and the c
// class rows of W^T. Two classes at a time: 4 rows x 2 classes = 8 independent accumulators hide
// the FMA latency, and each step loads 6 vectors for 8 FMAs (3 classes, 12 accumulators, were
// slower: GCC folds the rows' loads into every FMA that uses them). The features go by blocks of
// 4 KB a row, so that the 4 rows' block stays in L1 while every class's weights over it stream past;
// the accumulators of all classes wait in `acc` (c x kGroup vectors) between blocks.
template <typename T, int VB>
LOGIT_INLINE void LogitsT(const T* x, int64_t d, const T* w, const T* b, int64_t c, T* z,
                          T* acc) {
  constexpr int64_t L = Lanes<T, VB>();
  constexpr int64_t kBlock = 4096 / sizeof(T) / L * L;
  using V = Vec<T, VB>;
  const T* x0 = x;
  const T* x1 = x + d;
  const T* x2 = x + 2 * d;
  const T* x3 = x + 3 * d;
  const int64_t dv = d / L * L;
  // Slot (k, r): the partial sums of class k and row r.
  auto slot = [&](int64_t k, int64_t r) { return acc + (k * kGroup + r) * L; };
  if (dv == 0) std::fill(acc, acc + c * kGroup * L, T(0));
  for (int64_t j0 = 0; j0 < dv; j0 += kBlock) {
    const int64_t j1 = std::min(dv, j0 + kBlock);
    const bool first = j0 == 0;
    int64_t k = 0;
    for (; k + 2 <= c; k += 2) {
      const T* wa = w + k * d;
      const T* wb = wa + d;
      V a0{}, a1{}, a2{}, a3{}, e0{}, e1{}, e2{}, e3{};
      if (!first) {
        a0 = LoadV<VB>(slot(k, 0)), a1 = LoadV<VB>(slot(k, 1));
        a2 = LoadV<VB>(slot(k, 2)), a3 = LoadV<VB>(slot(k, 3));
        e0 = LoadV<VB>(slot(k + 1, 0)), e1 = LoadV<VB>(slot(k + 1, 1));
        e2 = LoadV<VB>(slot(k + 1, 2)), e3 = LoadV<VB>(slot(k + 1, 3));
      }
      for (int64_t j = j0; j < j1; j += L) {
        const V p = LoadV<VB>(wa + j), q = LoadV<VB>(wb + j);
        const V u0 = LoadV<VB>(x0 + j), u1 = LoadV<VB>(x1 + j), u2 = LoadV<VB>(x2 + j),
                u3 = LoadV<VB>(x3 + j);
        a0 += u0 * p;
        e0 += u0 * q;
        a1 += u1 * p;
        e1 += u1 * q;
        a2 += u2 * p;
        e2 += u2 * q;
        a3 += u3 * p;
        e3 += u3 * q;
      }
      StoreV<VB>(slot(k, 0), a0), StoreV<VB>(slot(k, 1), a1);
      StoreV<VB>(slot(k, 2), a2), StoreV<VB>(slot(k, 3), a3);
      StoreV<VB>(slot(k + 1, 0), e0), StoreV<VB>(slot(k + 1, 1), e1);
      StoreV<VB>(slot(k + 1, 2), e2), StoreV<VB>(slot(k + 1, 3), e3);
    }
    if (k < c) {
      const T* wa = w + k * d;
      V a0{}, a1{}, a2{}, a3{};
      if (!first) {
        a0 = LoadV<VB>(slot(k, 0)), a1 = LoadV<VB>(slot(k, 1));
        a2 = LoadV<VB>(slot(k, 2)), a3 = LoadV<VB>(slot(k, 3));
      }
      for (int64_t j = j0; j < j1; j += L) {
        const V p = LoadV<VB>(wa + j);
        a0 += LoadV<VB>(x0 + j) * p;
        a1 += LoadV<VB>(x1 + j) * p;
        a2 += LoadV<VB>(x2 + j) * p;
        a3 += LoadV<VB>(x3 + j) * p;
      }
      StoreV<VB>(slot(k, 0), a0), StoreV<VB>(slot(k, 1), a1);
      StoreV<VB>(slot(k, 2), a2), StoreV<VB>(slot(k, 3), a3);
    }
  }
  // The lanes' sums, the features past the last whole vector, the bias.
  for (int64_t k = 0; k < c; ++k) {
    const T* wk = w + k * d;
    for (int64_t r = 0; r < kGroup; ++r) {
      T s = SumV(LoadV<VB>(slot(k, r)));
      for (int64_t j = dv; j < d; ++j) s += x[r * d + j] * wk[j];
      z[r * c + k] = b[k] + s;
    }
  }
}

// gw[k0 + t][j] += sum_{r < m} res[r * c + k0 + t] * x_r[j] for t < KT: one register tile of
// KT classes x 2 vectors of features accumulated over all m rows of the chunk, so that each
// gradient entry is loaded and stored once per chunk (it was once per 4 rows, and that traffic
// dominated).
template <typename T, int VB, int KT>
LOGIT_INLINE void GradTile(const T* x, int64_t m, int64_t d, const T* res, int64_t c, int64_t k0,
                           T* gw) {
  constexpr int64_t L = Lanes<T, VB>();
  using V = Vec<T, VB>;
  int64_t j = 0;
  for (; j + 2 * L <= d; j += 2 * L) {
    V a[KT], e[KT];
    for (int t = 0; t < KT; ++t) {
      a[t] = LoadV<VB>(gw + (k0 + t) * d + j);
      e[t] = LoadV<VB>(gw + (k0 + t) * d + j + L);
    }
    for (int64_t r = 0; r < m; ++r) {
      const V u = LoadV<VB>(x + r * d + j), v = LoadV<VB>(x + r * d + j + L);
      const T* rr = res + r * c + k0;
      for (int t = 0; t < KT; ++t) {
        a[t] += rr[t] * u;
        e[t] += rr[t] * v;
      }
    }
    for (int t = 0; t < KT; ++t) {
      StoreV<VB>(gw + (k0 + t) * d + j, a[t]);
      StoreV<VB>(gw + (k0 + t) * d + j + L, e[t]);
    }
  }
  if (j + L <= d) {  // one vector left (784 floats with 16 lanes: 24 pairs, then this)
    V a[KT];
    for (int t = 0; t < KT; ++t) a[t] = LoadV<VB>(gw + (k0 + t) * d + j);
    for (int64_t r = 0; r < m; ++r) {
      const V u = LoadV<VB>(x + r * d + j);
      const T* rr = res + r * c + k0;
      for (int t = 0; t < KT; ++t) a[t] += rr[t] * u;
    }
    for (int t = 0; t < KT; ++t) StoreV<VB>(gw + (k0 + t) * d + j, a[t]);
    j += L;
  }
  for (; j < d; ++j) {
    T a[KT];
    for (int t = 0; t < KT; ++t) a[t] = gw[(k0 + t) * d + j];
    for (int64_t r = 0; r < m; ++r) {
      for (int t = 0; t < KT; ++t) a[t] += x[r * d + j] * res[r * c + k0 + t];
    }
    for (int t = 0; t < KT; ++t) gw[(k0 + t) * d + j] = a[t];
  }
}

// gw (c x d) += res^T (c x m) x (m x d): the gradient sums of a chunk of m rows. Class tiles of
// at most 5 (10 accumulators: each FMA chain waits 4 cycles per row, so fewer than 8 chains
// leave the FMA units idle), as even as possible (10 classes: 5 + 5; 7: 4 + 3).
template <typename T, int VB>
LOGIT_INLINE void AddOuterT(const T* x, int64_t m, int64_t d, const T* res, int64_t c, T* gw) {
  const int64_t tiles = (c + 4) / 5;
  int64_t k0 = 0;
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t kt = (c - k0) / (tiles - t);  // the remaining classes, spread evenly
    switch (kt) {
      case 5:
        GradTile<T, VB, 5>(x, m, d, res, c, k0, gw);
        break;
      case 4:
        GradTile<T, VB, 4>(x, m, d, res, c, k0, gw);
        break;
      case 3:
        GradTile<T, VB, 3>(x, m, d, res, c, k0, gw);
        break;
      case 2:
        GradTile<T, VB, 2>(x, m, d, res, c, k0, gw);
        break;
      default:
        GradTile<T, VB, 1>(x, m, d, res, c, k0, gw);
        break;
    }
    k0 += kt;
  }
}

// dst[0..n) += src[0..n).
template <typename T, int VB>
LOGIT_INLINE void AddRowT(const T* src, int64_t n, T* dst) {
  constexpr int64_t L = Lanes<T, VB>();
  int64_t i = 0;
  for (; i + L <= n; i += L) StoreV<VB>(dst + i, LoadV<VB>(dst + i) + LoadV<VB>(src + i));
  for (; i < n; ++i) dst[i] += src[i];
}

template <typename T, int VB>
LOGIT_INLINE T DotT(const T* a, const T* b, int64_t n) {
  constexpr int64_t L = Lanes<T, VB>();
  Vec<T, VB> acc{};
  int64_t j = 0;
  for (; j + L <= n; j += L) acc += LoadV<VB>(a + j) * LoadV<VB>(b + j);
  T s = 0;
  for (; j < n; ++j) s += a[j] * b[j];
  return s + SumV(acc);
}

template <typename T, int VB>
LOGIT_INLINE void AxpyT(T alpha, const T* x, T* y, int64_t n) {
  constexpr int64_t L = Lanes<T, VB>();
  int64_t j = 0;
  for (; j + L <= n; j += L) StoreV<VB>(y + j, LoadV<VB>(y + j) + alpha * LoadV<VB>(x + j));
  for (; j < n; ++j) y[j] += alpha * x[j];
}

// log(1 + exp(z)) without overflow.
LOGIT_INLINE double Softplus(double z) {
  return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
}

// double_sums: moves a thread's float32 sums into its float64 ones.
template <typename T>
LOGIT_INLINE void FoldT(ThreadSums<T>& p, bool double_sums) {
  p.unfolded = 0;
  if (!double_sums) return;
  const int64_t n = static_cast<int64_t>(p.gw.size());
  for (int64_t i = 0; i < n; ++i) p.gw64[i] += p.gw[i];
  for (size_t i = 0; i < p.gb.size(); ++i) p.gb64[i] += p.gb[i];
  std::fill(p.gw.begin(), p.gw.end(), T(0));
  std::fill(p.gb.begin(), p.gb.end(), T(0));
}

// The parameters a pass uses (W_eff^T class-major, b_eff) and the sums' precision.
template <typename T>
struct Model {
  int64_t d, c;
  const T* w;
  const T* b;
  bool double_sums;
};

// Softmax rows rows[0..m) into one thread's sums: logits kGroup rows at a time, residuals, and
// the gradient sums of every kChunk rows at once.
template <typename T, int VB>
LOGIT_INLINE void SoftmaxRowsT(const Model<T>& mo, const DenseRows& data, const int64_t* rows,
                               int64_t m, ThreadSums<T>& part) {
  const int64_t d = mo.d, c = mo.c;
  PrefetchRows(data, rows, std::min(m, 2 * kGroup));
  T* xs = part.x.data();
  T* zs = part.z.data();
  for (int64_t c0 = 0; c0 < m; c0 += kChunk) {
    const int64_t cm = std::min(kChunk, m - c0);
    // Logits and residuals, kGroup rows at a time (rows past the chunk are zeros).
    for (int64_t i0 = 0; i0 < cm; i0 += kGroup) {
      const int64_t g = std::min(kGroup, cm - i0);
      const int64_t next = c0 + i0 + 2 * kGroup;
      if (next < m) PrefetchRows(data, rows + next, std::min(kGroup, m - next));
      T* x = xs + i0 * d;
      LoadRowsT<T>(data, rows + c0 + i0, g, x);
      if (g < kGroup) std::fill(x + g * d, x + kGroup * d, T(0));
      LogitsT<T, VB>(x, d, mo.w, mo.b, c, zs + i0 * c, part.acc.data());
      for (int64_t r = 0; r < g; ++r) {
        const int64_t row = rows[c0 + i0 + r];
        const int64_t y = data.labels[row];
        const T sw = data.weights != nullptr ? data.weights[row] : T(1);
        T* z = zs + (i0 + r) * c;
        const T zmax = *std::max_element(z, z + c);
        const double zy = static_cast<double>(z[y]) - zmax;
        double sum = 0;
        for (int64_t k = 0; k < c; ++k) {
          z[k] = std::exp(z[k] - zmax);
          sum += z[k];
        }
        const T inv = static_cast<T>(1.0 / sum);
        part.loss += sw * (std::log(sum) - zy);  // cross-entropy: log sum exp - z_y
        part.weight += sw;
        for (int64_t k = 0; k < c; ++k) z[k] = sw * z[k] * inv;
        z[y] -= sw;
        for (int64_t k = 0; k < c; ++k) part.gb[k] += z[k];
      }
    }
    AddOuterT<T, VB>(xs, cm, d, zs, c, part.gw.data());
    part.unfolded += cm;
    if (part.unfolded >= kFoldRows) FoldT(part, mo.double_sums);
  }
}

// Binary (sigmoid) rows rows[0..m) into one thread's sums, a row at a time.
template <typename T, int VB>
LOGIT_INLINE void BinaryRowsT(const Model<T>& mo, const DenseRows& data, const int64_t* rows,
                              int64_t m, ThreadSums<T>& part) {
  const int64_t d = mo.d;
  PrefetchRows(data, rows, std::min<int64_t>(m, 4));
  T* x = part.x.data();
  for (int64_t i = 0; i < m; ++i) {
    const int64_t row = rows[i];
    if (i + 4 < m) PrefetchRows(data, rows + i + 4, 1);
    LoadRowsT<T>(data, rows + i, 1, x);
    const double z = DotT<T, VB>(x, mo.w, d) + mo.b[0];
    const double y = data.labels[row] == 1 ? 1.0 : 0.0;
    const double sw = data.weights != nullptr ? data.weights[row] : 1.0;
    part.loss += sw * (Softplus(z) - y * z);
    part.weight += sw;
    const double p = z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
    const T g = static_cast<T>(sw * (p - y));
    AxpyT<T, VB>(g, x, part.gw.data(), d);
    part.gb[0] += g;
    if (++part.unfolded >= kFoldRows) FoldT(part, mo.double_sums);
  }
}

// The entry points of one instruction set: a thread's rows (binary or softmax) and the sum of
// two vectors (Flush).
template <typename T, int VB>
LOGIT_INLINE void RowsT(const Model<T>& mo, const DenseRows& data, const int64_t* rows, int64_t m,
                        ThreadSums<T>& part) {
  if (mo.c == 1) {
    BinaryRowsT<T, VB>(mo, data, rows, m, part);
  } else {
    SoftmaxRowsT<T, VB>(mo, data, rows, m, part);
  }
}

#define LOGIT_FUSED_ENTRY_POINTS(SUFFIX, ATTR, VB)                                                \
  template <typename T>                                                                           \
  ATTR void Rows##SUFFIX(const Model<T>& mo, const DenseRows& data, const int64_t* rows,          \
                         int64_t m, ThreadSums<T>& part) {                                        \
    RowsT<T, VB>(mo, data, rows, m, part);                                                        \
  }                                                                                               \
  template <typename T>                                                                           \
  ATTR void AddRow##SUFFIX(const T* src, int64_t n, T* dst) {                                     \
    AddRowT<T, VB>(src, n, dst);                                                                  \
  }
LOGIT_FUSED_ENTRY_POINTS(Portable, , 32)
#ifdef LOGIT_HAVE_ISA_CLONES
LOGIT_FUSED_ENTRY_POINTS(Avx2, LOGIT_TARGET_AVX2, 32)
LOGIT_FUSED_ENTRY_POINTS(Avx512, LOGIT_TARGET_AVX512, 64)
#endif
#undef LOGIT_FUSED_ENTRY_POINTS

// The entry points of the instruction set in use (cpu::CurrentIsa()).
template <typename T>
struct Ops {
  void (*rows)(const Model<T>&, const DenseRows&, const int64_t*, int64_t, ThreadSums<T>&);
  void (*add_row)(const T*, int64_t, T*);
};

template <typename T>
Ops<T> CurrentOps() {
#ifdef LOGIT_HAVE_ISA_CLONES
  switch (cpu::CurrentIsa()) {
    case cpu::Isa::kAvx512:
      return {&RowsAvx512<T>, &AddRowAvx512<T>};
    case cpu::Isa::kAvx2:
      return {&RowsAvx2<T>, &AddRowAvx2<T>};
    case cpu::Isa::kPortable:
      break;
  }
#endif
  return {&RowsPortable<T>, &AddRowPortable<T>};
}

}  // namespace

template <typename T>
FusedKernel<T>::FusedKernel(int64_t d, int64_t c, bool double_sums)
    : d_(d), c_(c), double_sums_(double_sums && std::is_same_v<T, float>) {
  b_.assign(c_, T(0));
}

template <typename T>
ThreadSums<T>& FusedKernel<T>::PartFor(int t) {
  ThreadSums<T>& p = parts_[t];
  if (p.gw.empty()) {
    p.gw.assign(d_ * c_, T(0));
    p.gb.assign(c_, T(0));
    if (double_sums_) {
      p.gw64.assign(d_ * c_, 0.0);
      p.gb64.assign(c_, 0.0);
    }
    p.x.assign(kChunk * d_, T(0));
    p.z.assign(kChunk * c_, T(0));
    p.acc.assign(c_ * kGroup * (64 / sizeof(T)), T(0));  // the widest vectors' lanes
  }
  p.used = true;
  return p;
}

template <typename T>
void FusedKernel<T>::SetParams(const T* wt, const T* b, const T* mu, const T* sigma) {
  if (sigma == nullptr) {
    w_ = wt;  // used in place: no copy per step
    std::copy(b, b + c_, b_.begin());
    return;
  }
  weff_.resize(d_ * c_);
  for (int64_t k = 0; k < c_; ++k) {
    const T* src = wt + k * d_;
    T* dst = &weff_[k * d_];
    double bk = b[k];
    for (int64_t j = 0; j < d_; ++j) {
      dst[j] = src[j] / sigma[j];
      if (mu != nullptr) bk -= static_cast<double>(mu[j]) * dst[j];
    }
    b_[k] = static_cast<T>(bk);
  }
  w_ = weff_.data();
}

template <typename T>
void FusedKernel<T>::Accumulate(const DenseRows& data, const int64_t* rows, int64_t m) {
  // Threads take contiguous slices of the batch, each into its own sums (no sharing, no
  // atomics); Flush adds them up. Below 32 rows per thread the fork costs more than it saves
  // (measured: batch 16 on 2 threads took 47 us a step against 33 us on one).
  const int threads =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(cpu::MaxThreads(), m / 32)));
  if (parts_.size() < static_cast<size_t>(threads)) parts_.resize(threads);
  const Ops<T> ops = CurrentOps<T>();
  const Model<T> mo{d_, c_, w_, b_.data(), double_sums_};
  for (int t = 0; t < threads; ++t) PartFor(t);  // allocated here, not inside the region
  auto run = [&](int t, int nt) {
    const int64_t begin = m * t / nt, end = m * (t + 1) / nt;
    ops.rows(mo, data, rows + begin, end - begin, parts_[t]);
  };
  if (threads == 1) {
    run(0, 1);
    return;
  }
#pragma omp parallel num_threads(threads)
  run(cpu::ThreadNum(), cpu::TeamSize());
}

template <typename T>
void FusedKernel<T>::Flush(T* out) {
  const int64_t nw = d_ * c_;
  const Ops<T> ops = CurrentOps<T>();
  bool first = true;
  double loss = 0, weight = 0;
  for (ThreadSums<T>& p : parts_) {
    if (!p.used) continue;
    if (first) {
      std::copy(p.gw.begin(), p.gw.end(), out);
      std::copy(p.gb.begin(), p.gb.end(), out + nw);
      first = false;
    } else {
      ops.add_row(p.gw.data(), nw, out);
      ops.add_row(p.gb.data(), c_, out + nw);
    }
    std::fill(p.gw.begin(), p.gw.end(), T(0));
    std::fill(p.gb.begin(), p.gb.end(), T(0));
    loss += p.loss;
    weight += p.weight;
    p.loss = p.weight = 0;
    p.used = false;
  }
  if (first) std::fill(out, out + nw + c_, T(0));
  out[nw + c_] = static_cast<T>(loss);
  out[nw + c_ + 1] = static_cast<T>(weight);
}

template <typename T>
void FusedKernel<T>::FlushDouble(double* out) {
  const int64_t nw = d_ * c_;
  std::fill(out, out + nw + c_ + 2, 0.0);
  for (ThreadSums<T>& p : parts_) {
    if (!p.used) continue;
    FoldT(p, double_sums_);
    if (double_sums_) {
      for (int64_t i = 0; i < nw; ++i) out[i] += p.gw64[i];
      for (int64_t k = 0; k < c_; ++k) out[nw + k] += p.gb64[k];
      std::fill(p.gw64.begin(), p.gw64.end(), 0.0);
      std::fill(p.gb64.begin(), p.gb64.end(), 0.0);
    } else {
      for (int64_t i = 0; i < nw; ++i) out[i] += p.gw[i];
      for (int64_t k = 0; k < c_; ++k) out[nw + k] += p.gb[k];
      std::fill(p.gw.begin(), p.gw.end(), T(0));
      std::fill(p.gb.begin(), p.gb.end(), T(0));
    }
    out[nw + c_] += p.loss;
    out[nw + c_ + 1] += p.weight;
    p.loss = p.weight = 0;
    p.used = false;
  }
}

template class FusedKernel<float>;
template class FusedKernel<double>;

namespace {

LOGIT_INLINE double FinishGradientImpl(const float* sums, float inv_weight, const float* mu,
                                       const float* sigma, bool fit_bias, float l2,
                                       const float* theta, int64_t d, int64_t c, float* grad) {
  const int64_t nw = d * c;
  for (int64_t k = 0; k < nw + c; ++k) grad[k] = sums[k] * inv_weight;
  float* gb = grad + nw;
  if (sigma != nullptr) {
    for (int64_t k = 0; k < c; ++k) {
      float* g = grad + k * d;
      const float bk = gb[k];
      for (int64_t j = 0; j < d; ++j) g[j] = (g[j] - mu[j] * bk) / sigma[j];
    }
  }
  if (!fit_bias) std::fill(gb, gb + c, 0.0f);
  double sq = 0;
  if (l2 > 0) {
    constexpr int64_t kLanes = 8;  // separate partial sums, so that the loop vectorises
    float part[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + kLanes <= nw; k += kLanes) {
      for (int64_t l = 0; l < kLanes; ++l) {
        grad[k + l] += l2 * theta[k + l];
        part[l] += theta[k + l] * theta[k + l];
      }
    }
    for (; k < nw; ++k) {
      grad[k] += l2 * theta[k];
      sq += static_cast<double>(theta[k]) * theta[k];
    }
    for (int64_t l = 0; l < kLanes; ++l) sq += part[l];
  }
  return sq;
}

// Soft-thresholding, the proximal step of l1: sign(t) max(|t| - thresh, 0).
LOGIT_INLINE float SoftThreshold(float t, float thresh) {
  const float a = std::abs(t) - thresh;
  return a > 0 ? std::copysign(a, t) : 0.0f;
}

LOGIT_INLINE void AdamStepImpl(float* theta, const float* grad, float* m1, float* m2, int64_t n,
                               int64_t n_weights, double lr, double beta1, double beta2,
                               double eps, int64_t step, double l1) {
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
  const float c1 = static_cast<float>(1 - beta1), c2 = static_cast<float>(1 - beta2);
  const double bc1 = 1 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1 - std::pow(beta2, static_cast<double>(step));
  const float inv_sqrt_bc2 = static_cast<float>(1 / std::sqrt(bc2));
  const float step_size = static_cast<float>(lr / bc1);
  const float e = static_cast<float>(eps);
  // A branch-free loop (vectorised; -fno-math-errno lets sqrt vectorise).
  for (int64_t k = 0; k < n; ++k) {
    const float g = grad[k];
    const float a = b1 * m1[k] + c1 * g;
    const float v = b2 * m2[k] + c2 * g * g;
    m1[k] = a;
    m2[k] = v;
    theta[k] -= step_size * a / (std::sqrt(v) * inv_sqrt_bc2 + e);
  }
  if (l1 > 0) {
    const float thresh = static_cast<float>(lr * l1);
    for (int64_t k = 0; k < n_weights; ++k) {
      theta[k] = SoftThreshold(theta[k], thresh / (std::sqrt(m2[k]) * inv_sqrt_bc2 + e));
    }
  }
}

LOGIT_INLINE void SgdStepImpl(float* theta, const float* grad, float* velocity, int64_t n,
                              int64_t n_weights, double lr, double momentum, bool nesterov,
                              double l1) {
  const float r = static_cast<float>(lr), mu = static_cast<float>(momentum);
  const float thresh = static_cast<float>(lr * l1);
  for (int64_t k = 0; k < n; ++k) {
    const float g = grad[k];
    float t = theta[k];
    if (momentum > 0) {
      velocity[k] = mu * velocity[k] + g;
      t -= nesterov ? r * (g + mu * velocity[k]) : r * velocity[k];
    } else {
      t -= r * g;
    }
    theta[k] = t;
  }
  if (l1 > 0) {
    for (int64_t k = 0; k < n_weights; ++k) theta[k] = SoftThreshold(theta[k], thresh);
  }
}

// Their entry points per instruction set (the loops vectorise for each target).
#define LOGIT_STEP_ENTRY_POINTS(SUFFIX, ATTR)                                                     \
  ATTR double FinishGradient##SUFFIX(const float* sums, float inv_weight, const float* mu,        \
                                     const float* sigma, bool fit_bias, float l2,                 \
                                     const float* theta, int64_t d, int64_t c, float* grad) {     \
    return FinishGradientImpl(sums, inv_weight, mu, sigma, fit_bias, l2, theta, d, c, grad);      \
  }                                                                                               \
  ATTR void AdamStep##SUFFIX(float* theta, const float* grad, float* m1, float* m2, int64_t n,    \
                             int64_t n_weights, double lr, double beta1, double beta2,            \
                             double eps, int64_t step, double l1) {                               \
    AdamStepImpl(theta, grad, m1, m2, n, n_weights, lr, beta1, beta2, eps, step, l1);             \
  }                                                                                               \
  ATTR void SgdStep##SUFFIX(float* theta, const float* grad, float* velocity, int64_t n,          \
                            int64_t n_weights, double lr, double momentum, bool nesterov,         \
                            double l1) {                                                          \
    SgdStepImpl(theta, grad, velocity, n, n_weights, lr, momentum, nesterov, l1);                 \
  }
LOGIT_STEP_ENTRY_POINTS(Portable, )
#ifdef LOGIT_HAVE_ISA_CLONES
LOGIT_STEP_ENTRY_POINTS(Avx2, LOGIT_TARGET_AVX2)
LOGIT_STEP_ENTRY_POINTS(Avx512, LOGIT_TARGET_AVX512)
#define LOGIT_DISPATCH(NAME, ...)                                    \
  switch (cpu::CurrentIsa()) {                                       \
    case cpu::Isa::kAvx512:                                          \
      return NAME##Avx512(__VA_ARGS__);                              \
    case cpu::Isa::kAvx2:                                            \
      return NAME##Avx2(__VA_ARGS__);                                \
    case cpu::Isa::kPortable:                                        \
      break;                                                         \
  }                                                                  \
  return NAME##Portable(__VA_ARGS__)
#else
#define LOGIT_DISPATCH(NAME, ...) return NAME##Portable(__VA_ARGS__)
#endif

}  // namespace

double FinishGradient(const float* sums, float inv_weight, const float* mu, const float* sigma,
                      bool fit_bias, float l2, const float* theta, int64_t d, int64_t c,
                      float* grad) {
  LOGIT_DISPATCH(FinishGradient, sums, inv_weight, mu, sigma, fit_bias, l2, theta, d, c, grad);
}

void AdamStep(float* theta, const float* grad, float* m1, float* m2, int64_t n, int64_t n_weights,
              double lr, double beta1, double beta2, double eps, int64_t step, double l1) {
  LOGIT_DISPATCH(AdamStep, theta, grad, m1, m2, n, n_weights, lr, beta1, beta2, eps, step, l1);
}

void SgdStep(float* theta, const float* grad, float* velocity, int64_t n, int64_t n_weights,
             double lr, double momentum, bool nesterov, double l1) {
  LOGIT_DISPATCH(SgdStep, theta, grad, velocity, n, n_weights, lr, momentum, nesterov, l1);
}
#undef LOGIT_DISPATCH

}  // namespace logit::fused
