#include "worker/kernel/sparse_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "worker/kernel/cpu_isa.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace logit::sparse {

namespace {

#define LOGIT_INLINE __attribute__((always_inline)) inline

// log(1 + exp(z)) without overflow.
LOGIT_INLINE double Softplus(double z) {
  return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
}

LOGIT_INLINE double Sigmoid(double z) {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}

// The stored values: an array (ArrayValues), or all 1 (UnitValues: the Dataset keeps none, and
// the products become plain sums).
struct ArrayValues {
  const float* v;
  LOGIT_INLINE double operator[](int64_t p) const { return static_cast<double>(v[p]); }
};
struct UnitValues {
  LOGIT_INLINE double operator[](int64_t) const { return 1.0; }
};

// One sparse row against a weight vector (binary models): the dot product sum_p v_p w[j_p] over
// stored values [p0, p0 + n). Scalar in every entry point: AVX2 / AVX-512 gathers and AVX-512
// scatters of the 30-40 values of a row were measured slower (issue 16's sparse set, 2 threads:
// 12.7 ms a pass scalar, 13.7 ms AVX2 gathers, 14.7 ms AVX-512 gathers and scatters).
template <typename Values>
LOGIT_INLINE double RowDot(const int32_t* j, Values v, int64_t p0, int64_t n, const double* w) {
  double s0 = 0, s1 = 0;
  int64_t p = 0;
  for (; p + 1 < n; p += 2) {
    s0 += v[p0 + p] * w[j[p0 + p]];
    s1 += v[p0 + p + 1] * w[j[p0 + p + 1]];
  }
  if (p < n) s0 += v[p0 + p] * w[j[p0 + p]];
  return s0 + s1;
}

using Totals = SliceTotals;

template <typename Values>
LOGIT_INLINE void BinaryRows(const CsrRows& x, Values vals, const int64_t* rows, int64_t begin,
                             int64_t end, const double* w, double b, double* gw, double* gb,
                             Totals* t) {
  for (int64_t i = begin; i < end; ++i) {
    const int64_t r = rows != nullptr ? rows[i] : i;
    const int64_t p0 = x.indptr[r], n = x.indptr[r + 1] - p0;
    const double z = b + RowDot(x.indices, vals, p0, n, w);
    const double y = static_cast<double>(x.labels[r]);
    const double sw = x.weights != nullptr ? x.weights[r] : 1.0;
    t->loss += sw * (Softplus(z) - y * z);
    t->weight += sw;
    const double g = sw * (Sigmoid(z) - y);
    *gb += g;
    for (int64_t p = p0; p < p0 + n; ++p) gw[x.indices[p]] += g * vals[p];
  }
}

// Softmax rows: each stored value reads and updates c contiguous entries (vectorised by the
// compiler for the target of the calling entry point). `z` holds c scratch values.
template <typename Values>
LOGIT_INLINE void SoftmaxRows(const CsrRows& x, Values vals, const int64_t* rows, int64_t begin,
                              int64_t end, const double* w, const double* b, int64_t c, double* gw,
                              double* gb, double* z, Totals* t) {
  for (int64_t i = begin; i < end; ++i) {
    const int64_t r = rows != nullptr ? rows[i] : i;
    const int64_t p0 = x.indptr[r], p1 = x.indptr[r + 1];
    for (int64_t k = 0; k < c; ++k) z[k] = b[k];
    for (int64_t p = p0; p < p1; ++p) {
      const double v = vals[p];
      const double* __restrict wr = w + static_cast<int64_t>(x.indices[p]) * c;
      for (int64_t k = 0; k < c; ++k) z[k] += v * wr[k];
    }
    const int64_t y = x.labels[r];
    const double sw = x.weights != nullptr ? x.weights[r] : 1.0;
    double zmax = z[0];
    for (int64_t k = 1; k < c; ++k) zmax = std::max(zmax, z[k]);
    const double zy = z[y] - zmax;
    double sum = 0;
    for (int64_t k = 0; k < c; ++k) {
      z[k] = std::exp(z[k] - zmax);
      sum += z[k];
    }
    t->loss += sw * (std::log(sum) - zy);
    t->weight += sw;
    const double scale = sw / sum;
    for (int64_t k = 0; k < c; ++k) z[k] *= scale;
    z[y] -= sw;
    for (int64_t k = 0; k < c; ++k) gb[k] += z[k];
    for (int64_t p = p0; p < p1; ++p) {
      const double v = vals[p];
      double* __restrict gr = gw + static_cast<int64_t>(x.indices[p]) * c;
      for (int64_t k = 0; k < c; ++k) gr[k] += v * z[k];
    }
  }
}

// z (m x c) = b + the rows' values times W, rows split over the threads when there are many.
template <typename Values>
void RowLogits(const CsrRows& x, Values vals, const int64_t* rows, int64_t m, const double* w,
               const double* b, int64_t c, double* z) {
#pragma omp parallel for schedule(static) if (m > 4096)
  for (int64_t i = 0; i < m; ++i) {
    const int64_t r = rows != nullptr ? rows[i] : i;
    double* zi = z + i * c;
    for (int64_t k = 0; k < c; ++k) zi[k] = b[k];
    for (int64_t p = x.indptr[r]; p < x.indptr[r + 1]; ++p) {
      const double v = vals[p];
      const double* wr = w + static_cast<int64_t>(x.indices[p]) * c;
      for (int64_t k = 0; k < c; ++k) zi[k] += v * wr[k];
    }
  }
}

// One thread's share of a pass.
struct Slice {
  const CsrRows* x;
  const int64_t* rows;
  int64_t begin, end, c;
  const double *w, *b;
  double *gw, *gb, *z;
  Totals* t;
};

template <typename Values>
LOGIT_INLINE void RunSliceWith(const Slice& s, Values vals) {
  if (s.c == 1) {
    BinaryRows(*s.x, vals, s.rows, s.begin, s.end, s.w, s.b[0], s.gw, s.gb, s.t);
  } else {
    SoftmaxRows(*s.x, vals, s.rows, s.begin, s.end, s.w, s.b, s.c, s.gw, s.gb, s.z, s.t);
  }
}

LOGIT_INLINE void RunSlice(const Slice& s) {
  if (s.x->values == nullptr) {
    RunSliceWith(s, UnitValues());
  } else {
    RunSliceWith(s, ArrayValues{s.x->values});
  }
}

// One thread's slice of a pass, compiled for each instruction set (the softmax's class loops
// vectorise for the target: 16.4 ms a pass with AVX2 against 20.4 ms portable on a 10-class set).
void SlicePortable(const Slice& s) { RunSlice(s); }
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void SliceAvx2(const Slice& s) { RunSlice(s); }
__attribute__((target("avx512f,avx512vl"))) void SliceAvx512(const Slice& s) { RunSlice(s); }
#endif

void RunSliceForIsa(const Slice& s) {
#if defined(__x86_64__)
  const cpu::Isa isa = cpu::CurrentIsa();
  if (isa == cpu::Isa::kAvx512) return SliceAvx512(s);
  if (isa == cpu::Isa::kAvx2) return SliceAvx2(s);
#endif
  SlicePortable(s);
}

// Fewer stored values than this per thread: one thread (the fork and the extra sums cost more).
constexpr int64_t kValuesPerThread = 1 << 16;

}  // namespace

SparseKernel::SparseKernel(int64_t d, int64_t c) : d_(d), c_(c) {}

void SparseKernel::Accumulate(const CsrRows& x, const int64_t* rows, int64_t m, const double* w,
                              const double* b, double* sums) {
  // Slice boundaries balanced by stored values (contiguous rows), else by rows.
  int64_t values = 0;
  if (rows == nullptr) {
    values = x.indptr[m] - x.indptr[0];
  } else {
    for (int64_t i = 0; i < m; ++i) values += x.indptr[rows[i] + 1] - x.indptr[rows[i]];
  }
  // Each extra thread zeroes and adds up its own d x c sums: worth it only when the rows hold
  // more values than that.
  const int threads = static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>(cpu::MaxThreads(), values / std::max(kValuesPerThread, d_ * c_ + c_))));
  std::vector<int64_t> cut(threads + 1, m);
  cut[0] = 0;
  for (int t = 1; t < threads; ++t) {
    if (rows == nullptr) {
      const int64_t target = x.indptr[0] + values * t / threads;
      cut[t] = std::lower_bound(x.indptr, x.indptr + m, target) - x.indptr;
    } else {
      cut[t] = m * t / threads;
    }
  }
  threads_used_ = threads;
  const int64_t nw = d_ * c_;
  if (parts_.size() + 1 < static_cast<size_t>(threads)) parts_.resize(threads - 1);
  totals_.assign(threads, Totals());
  // Each thread's c logits on cache lines of their own (they are stored for every value).
  const int64_t stride = (c_ + 7) / 8 * 8 + 8;
  scratch_.resize(threads * stride);
  auto run = [&](int t) {
    double* own = sums;  // slice 0 adds into the caller's sums
    if (t > 0) {
      std::vector<double>& part = parts_[t - 1];
      part.assign(nw + c_, 0.0);
      own = part.data();
    }
    const Slice s{&x, rows, cut[t], cut[t + 1], c_, w, b, own, own + nw, &scratch_[t * stride],
                  &totals_[t]};
    RunSliceForIsa(s);
  };
  if (threads == 1) {
    run(0);
  } else {
#pragma omp parallel num_threads(threads)
    {
      // The runtime may grant fewer threads than asked (nested regions): each takes every
      // nt-th slice, so all slices run whatever the team's size.
      const int nt = cpu::TeamSize(), t = cpu::ThreadNum();
      for (int slice = t; slice < threads; slice += nt) run(slice);
#pragma omp barrier
      // Every thread adds its share of the other slices' gradient sums.
      const int64_t lo = (nw + c_) * t / nt, hi = (nw + c_) * (t + 1) / nt;
      for (int o = 1; o < threads; ++o) {
        const double* part = parts_[o - 1].data();
        for (int64_t i = lo; i < hi; ++i) sums[i] += part[i];
      }
    }
  }
  for (const Totals& t : totals_) {
    sums[nw + c_] += t.loss;
    sums[nw + c_ + 1] += t.weight;
  }
}

void SparseKernel::Logits(const CsrRows& x, const int64_t* rows, int64_t m, const double* w,
                          const double* b, double* z) const {
  if (x.values == nullptr) {
    RowLogits(x, UnitValues(), rows, m, w, b, c_, z);
  } else {
    RowLogits(x, ArrayValues{x.values}, rows, m, w, b, c_, z);
  }
}

}  // namespace logit::sparse
