#include "worker/kernel/fused_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#else
inline int omp_get_thread_num() { return 0; }
inline int omp_get_num_threads() { return 1; }
#endif

// Built twice: for x86-64-v3 (AVX2 + FMA) and baseline x86-64; the loader picks one at start-up.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LOGIT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LOGIT_CLONES
#endif

namespace logit::fused {

namespace {

constexpr int64_t kLanes = 8;
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

// Converts `count` rows into dst (count x d floats).
LOGIT_CLONES void LoadRows(const DenseRows& data, const int64_t* rows, int64_t count, float* dst) {
  const int64_t d = data.d;
  for (int64_t r = 0; r < count; ++r) {
    float* out = dst + r * d;
    if (data.u8 != nullptr) {
      const uint8_t* in = data.u8 + rows[r] * d;
      const float s = data.scale;
      for (int64_t j = 0; j < d; ++j) out[j] = static_cast<float>(in[j]) * s;
    } else {
      std::memcpy(out, data.f32 + rows[r] * d, sizeof(float) * d);
    }
  }
}

// Eight floats in one vector (GCC/Clang vector extension): AVX in the x86-64-v3 clone, two SSE
// registers in the baseline one. Explicit vectors keep the compiler from vectorising the wrong
// loop (it did: across j, with shuffles, 5x slower).
typedef float v8f __attribute__((vector_size(32)));

inline v8f Load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store8(float* p, v8f v) { std::memcpy(p, &v, sizeof(v)); }

// Scalars are broadcast by writing `scalar * vector` (one vbroadcastss); a v8f{v, v, ...}
// literal compiled to a chain of inserts.
constexpr v8f kZero8 = {0, 0, 0, 0, 0, 0, 0, 0};
inline float Sum8(v8f v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// z[r * c + k] = b[k] + x_r . w_k for kGroup rows (rows beyond the batch are zeros) and the c
// class rows of W^T. Two classes at a time: 4 rows x 2 classes = 8 independent accumulators hide
// the FMA latency, and each step loads 6 vectors for 8 FMAs.
LOGIT_CLONES void Logits(const float* x, int64_t d, const float* w, const float* b, int64_t c,
                         float* z) {
  const float* x0 = x;
  const float* x1 = x + d;
  const float* x2 = x + 2 * d;
  const float* x3 = x + 3 * d;
  const int64_t dv = d / kLanes * kLanes;
  int64_t k = 0;
  for (; k + 2 <= c; k += 2) {
    const float* wa = w + k * d;
    const float* wb = wa + d;
    v8f a0 = kZero8, a1 = a0, a2 = a0, a3 = a0, e0 = a0, e1 = a0, e2 = a0, e3 = a0;
    for (int64_t j = 0; j < dv; j += kLanes) {
      const v8f p = Load8(wa + j), q = Load8(wb + j);
      const v8f u0 = Load8(x0 + j), u1 = Load8(x1 + j), u2 = Load8(x2 + j), u3 = Load8(x3 + j);
      a0 += u0 * p;
      e0 += u0 * q;
      a1 += u1 * p;
      e1 += u1 * q;
      a2 += u2 * p;
      e2 += u2 * q;
      a3 += u3 * p;
      e3 += u3 * q;
    }
    float sa[kGroup] = {Sum8(a0), Sum8(a1), Sum8(a2), Sum8(a3)};
    float se[kGroup] = {Sum8(e0), Sum8(e1), Sum8(e2), Sum8(e3)};
    for (int64_t j = dv; j < d; ++j) {
      for (int64_t r = 0; r < kGroup; ++r) {
        sa[r] += x[r * d + j] * wa[j];
        se[r] += x[r * d + j] * wb[j];
      }
    }
    for (int64_t r = 0; r < kGroup; ++r) {
      z[r * c + k] = b[k] + sa[r];
      z[r * c + k + 1] = b[k + 1] + se[r];
    }
  }
  if (k < c) {
    const float* wa = w + k * d;
    v8f a0 = kZero8, a1 = a0, a2 = a0, a3 = a0;
    for (int64_t j = 0; j < dv; j += kLanes) {
      const v8f p = Load8(wa + j);
      a0 += Load8(x0 + j) * p;
      a1 += Load8(x1 + j) * p;
      a2 += Load8(x2 + j) * p;
      a3 += Load8(x3 + j) * p;
    }
    float sa[kGroup] = {Sum8(a0), Sum8(a1), Sum8(a2), Sum8(a3)};
    for (int64_t j = dv; j < d; ++j) {
      for (int64_t r = 0; r < kGroup; ++r) sa[r] += x[r * d + j] * wa[j];
    }
    for (int64_t r = 0; r < kGroup; ++r) z[r * c + k] = b[k] + sa[r];
  }
}

// gw[k0 + t][j] += sum_{r < m} res[r * c + k0 + t] * x_r[j] for t < KT: one register tile of
// KT classes x 16 features accumulated over all m rows of the chunk, so that each gradient entry
// is loaded and stored once per chunk (it was once per 4 rows, and that traffic dominated).
// Inlined into the cloned callers, so it is compiled for each target.
template <int KT>
__attribute__((always_inline)) inline void GradTile(const float* x, int64_t m, int64_t d,
                                                    const float* res, int64_t c, int64_t k0,
                                                    float* gw) {
  int64_t j = 0;
  for (; j + 2 * kLanes <= d; j += 2 * kLanes) {
    v8f a[KT], e[KT];
    for (int t = 0; t < KT; ++t) {
      a[t] = Load8(gw + (k0 + t) * d + j);
      e[t] = Load8(gw + (k0 + t) * d + j + kLanes);
    }
    for (int64_t r = 0; r < m; ++r) {
      const v8f u = Load8(x + r * d + j), v = Load8(x + r * d + j + kLanes);
      const float* rr = res + r * c + k0;
      for (int t = 0; t < KT; ++t) {
        a[t] += rr[t] * u;
        e[t] += rr[t] * v;
      }
    }
    for (int t = 0; t < KT; ++t) {
      Store8(gw + (k0 + t) * d + j, a[t]);
      Store8(gw + (k0 + t) * d + j + kLanes, e[t]);
    }
  }
  for (; j < d; ++j) {
    float a[KT];
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
LOGIT_CLONES void AddOuter(const float* x, int64_t m, int64_t d, const float* res, int64_t c,
                           float* gw) {
  const int64_t tiles = (c + 4) / 5;
  int64_t k0 = 0;
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t kt = (c - k0) / (tiles - t);  // the remaining classes, spread evenly
    switch (kt) {
      case 5:
        GradTile<5>(x, m, d, res, c, k0, gw);
        break;
      case 4:
        GradTile<4>(x, m, d, res, c, k0, gw);
        break;
      case 3:
        GradTile<3>(x, m, d, res, c, k0, gw);
        break;
      case 2:
        GradTile<2>(x, m, d, res, c, k0, gw);
        break;
      default:
        GradTile<1>(x, m, d, res, c, k0, gw);
        break;
    }
    k0 += kt;
  }
}

// dst[0..n) += src[0..n).
LOGIT_CLONES void AddRow(const float* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) Store8(dst + i, Load8(dst + i) + Load8(src + i));
  for (; i < n; ++i) dst[i] += src[i];
}

// Threads OpenMP would use here (LibTorch's at::set_num_threads sets it).
int MaxThreads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

LOGIT_CLONES float Dot(const float* a, const float* b, int64_t n) {
  v8f acc = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) acc += Load8(a + j) * Load8(b + j);
  float s = 0;
  for (; j < n; ++j) s += a[j] * b[j];
  for (int64_t l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

LOGIT_CLONES void Axpy(float alpha, const float* x, float* y, int64_t n) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) Store8(y + j, Load8(y + j) + alpha * Load8(x + j));
  for (; j < n; ++j) y[j] += alpha * x[j];
}

// log(1 + exp(z)) without overflow.
inline double Softplus(double z) {
  return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z));
}

}  // namespace

MinibatchKernel::MinibatchKernel(int64_t d, int64_t c, bool double_sums)
    : d_(d), c_(c), double_sums_(double_sums) {
  b_.assign(c_, 0.0f);
}

void MinibatchKernel::Fold(Part& p) const {
  if (!double_sums_) return;
  p.unfolded = 0;
  for (size_t i = 0; i < p.gw.size(); ++i) p.gw64[i] += p.gw[i];
  for (size_t i = 0; i < p.gb.size(); ++i) p.gb64[i] += p.gb[i];
  std::fill(p.gw.begin(), p.gw.end(), 0.0f);
  std::fill(p.gb.begin(), p.gb.end(), 0.0f);
}

MinibatchKernel::Part& MinibatchKernel::PartFor(int t) {
  Part& p = parts_[t];
  if (p.gw.empty()) {
    p.gw.assign(d_ * c_, 0.0f);
    p.gb.assign(c_, 0.0f);
    if (double_sums_) {
      p.gw64.assign(d_ * c_, 0.0);
      p.gb64.assign(c_, 0.0);
    }
    p.x.assign(kChunk * d_, 0.0f);
    p.z.assign(kChunk * c_, 0.0f);
  }
  p.used = true;
  return p;
}

void MinibatchKernel::SetParams(const float* wt, const float* b, const float* mu,
                                const float* sigma) {
  if (sigma == nullptr) {
    w_ = wt;  // used in place: no copy per step
    std::copy(b, b + c_, b_.begin());
    return;
  }
  weff_.resize(d_ * c_);
  for (int64_t k = 0; k < c_; ++k) {
    const float* src = wt + k * d_;
    float* dst = &weff_[k * d_];
    double bk = b[k];
    for (int64_t j = 0; j < d_; ++j) {
      dst[j] = src[j] / sigma[j];
      if (mu != nullptr) bk -= static_cast<double>(mu[j]) * dst[j];
    }
    b_[k] = static_cast<float>(bk);
  }
  w_ = weff_.data();
}

void MinibatchKernel::Accumulate(const DenseRows& data, const int64_t* rows, int64_t m) {
  // Threads take contiguous slices of the batch, each into its own sums (no sharing, no
  // atomics); Flush adds them up. Below 32 rows per thread the fork costs more than it saves
  // (measured: batch 16 on 2 threads took 47 us a step against 33 us on one).
  const int threads =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(MaxThreads(), m / 32)));
  if (parts_.size() < static_cast<size_t>(threads)) parts_.resize(threads);
  auto run = [&](int t, int nt) {
    const int64_t begin = m * t / nt, end = m * (t + 1) / nt;
    Part& p = PartFor(t);
    if (c_ == 1) {
      AccumulateBinary(p, data, rows + begin, end - begin);
    } else {
      AccumulateSoftmax(p, data, rows + begin, end - begin);
    }
  };
  if (threads == 1) {
    run(0, 1);
    return;
  }
#pragma omp parallel num_threads(threads)
  run(omp_get_thread_num(), omp_get_num_threads());
}

void MinibatchKernel::AccumulateSoftmax(Part& part, const DenseRows& data, const int64_t* rows,
                                        int64_t m) const {
  PrefetchRows(data, rows, std::min(m, 2 * kGroup));
  float* xs = part.x.data();
  float* zs = part.z.data();
  for (int64_t c0 = 0; c0 < m; c0 += kChunk) {
    const int64_t cm = std::min(kChunk, m - c0);
    // Logits and residuals, kGroup rows at a time (rows past the chunk are zeros).
    for (int64_t i0 = 0; i0 < cm; i0 += kGroup) {
      const int64_t g = std::min(kGroup, cm - i0);
      const int64_t next = c0 + i0 + 2 * kGroup;
      if (next < m) PrefetchRows(data, rows + next, std::min(kGroup, m - next));
      float* x = xs + i0 * d_;
      LoadRows(data, rows + c0 + i0, g, x);
      if (g < kGroup) std::fill(x + g * d_, x + kGroup * d_, 0.0f);
      Logits(x, d_, w_, b_.data(), c_, zs + i0 * c_);
      for (int64_t r = 0; r < g; ++r) {
        const int64_t row = rows[c0 + i0 + r];
        const int64_t y = data.labels[row];
        const float sw = data.weights != nullptr ? data.weights[row] : 1.0f;
        float* z = zs + (i0 + r) * c_;
        const float zmax = *std::max_element(z, z + c_);
        const double zy = static_cast<double>(z[y]) - zmax;
        double sum = 0;
        for (int64_t k = 0; k < c_; ++k) {
          z[k] = std::exp(z[k] - zmax);
          sum += z[k];
        }
        const float inv = static_cast<float>(1.0 / sum);
        part.loss += sw * (std::log(sum) - zy);  // cross-entropy: log sum exp - z_y
        part.weight += sw;
        for (int64_t k = 0; k < c_; ++k) z[k] = sw * z[k] * inv;
        z[y] -= sw;
        for (int64_t k = 0; k < c_; ++k) part.gb[k] += z[k];
      }
    }
    AddOuter(xs, cm, d_, zs, c_, part.gw.data());
    part.unfolded += cm;
    if (part.unfolded >= kFoldRows) Fold(part);
  }
}

void MinibatchKernel::AccumulateBinary(Part& part, const DenseRows& data, const int64_t* rows,
                                       int64_t m) const {
  PrefetchRows(data, rows, std::min<int64_t>(m, 4));
  float* x = part.x.data();
  for (int64_t i = 0; i < m; ++i) {
    const int64_t row = rows[i];
    if (i + 4 < m) PrefetchRows(data, rows + i + 4, 1);
    LoadRows(data, rows + i, 1, x);
    const double z = Dot(x, w_, d_) + b_[0];
    const double y = data.labels[row] == 1 ? 1.0 : 0.0;
    const double sw = data.weights != nullptr ? data.weights[row] : 1.0;
    part.loss += sw * (Softplus(z) - y * z);
    part.weight += sw;
    const double p = z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
    const float g = static_cast<float>(sw * (p - y));
    Axpy(g, x, part.gw.data(), d_);
    part.gb[0] += g;
    if (++part.unfolded >= kFoldRows) Fold(part);
  }
}

void MinibatchKernel::Flush(float* out) {
  const int64_t nw = d_ * c_;
  bool first = true;
  double loss = 0, weight = 0;
  for (Part& p : parts_) {
    if (!p.used) continue;
    if (first) {
      std::copy(p.gw.begin(), p.gw.end(), out);
      std::copy(p.gb.begin(), p.gb.end(), out + nw);
      first = false;
    } else {
      AddRow(p.gw.data(), nw, out);
      AddRow(p.gb.data(), c_, out + nw);
    }
    std::fill(p.gw.begin(), p.gw.end(), 0.0f);
    std::fill(p.gb.begin(), p.gb.end(), 0.0f);
    loss += p.loss;
    weight += p.weight;
    p.loss = p.weight = 0;
    p.used = false;
  }
  if (first) std::fill(out, out + nw + c_, 0.0f);
  out[nw + c_] = static_cast<float>(loss);
  out[nw + c_ + 1] = static_cast<float>(weight);
}

void MinibatchKernel::FlushDouble(double* out) {
  const int64_t nw = d_ * c_;
  std::fill(out, out + nw + c_ + 2, 0.0);
  for (Part& p : parts_) {
    if (!p.used) continue;
    Fold(p);
    for (int64_t i = 0; i < nw; ++i) out[i] += p.gw64[i];
    for (int64_t k = 0; k < c_; ++k) out[nw + k] += p.gb64[k];
    std::fill(p.gw64.begin(), p.gw64.end(), 0.0);
    std::fill(p.gb64.begin(), p.gb64.end(), 0.0);
    out[nw + c_] += p.loss;
    out[nw + c_ + 1] += p.weight;
    p.loss = p.weight = 0;
    p.used = false;
  }
}

LOGIT_CLONES double FinishGradient(const float* sums, float inv_weight, const float* mu,
                                   const float* sigma, bool fit_bias, float l2, const float* theta,
                                   int64_t d, int64_t c, float* grad) {
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
inline float SoftThreshold(float t, float thresh) {
  const float a = std::abs(t) - thresh;
  return a > 0 ? std::copysign(a, t) : 0.0f;
}

LOGIT_CLONES void AdamStep(float* theta, const float* grad, float* m1, float* m2, int64_t n,
                           int64_t n_weights, double lr, double beta1, double beta2, double eps,
                           int64_t step, double l1) {
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

LOGIT_CLONES void SgdStep(float* theta, const float* grad, float* velocity, int64_t n,
                          int64_t n_weights, double lr, double momentum, bool nesterov, double l1) {
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

}  // namespace logit::fused
