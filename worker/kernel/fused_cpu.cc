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
constexpr int64_t kGroup = 4;  // rows processed together (W / gradient rows loaded once)

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

// z[r][0..cp) = b + x_r W for kGroup rows (padded columns; rows beyond the batch are zeros).
// Columns go 16 at a time where possible: 8 independent accumulators hide the FMA latency.
// A feature that is zero in all four rows (image borders) is skipped.
LOGIT_CLONES void Logits(const float* x, int64_t d, const float* w, const float* b, int64_t cp,
                         float* z) {
  const float* x0 = x;
  const float* x1 = x + d;
  const float* x2 = x + 2 * d;
  const float* x3 = x + 3 * d;
  int64_t c0 = 0;
  for (; c0 + 2 * kLanes <= cp; c0 += 2 * kLanes) {
    v8f a0 = Load8(b + c0), a1 = a0, a2 = a0, a3 = a0;
    v8f e0 = Load8(b + c0 + kLanes), e1 = e0, e2 = e0, e3 = e0;
    for (int64_t j = 0; j < d; ++j) {
      const v8f w0 = Load8(w + j * cp + c0), w1 = Load8(w + j * cp + c0 + kLanes);
      a0 += x0[j] * w0;
      e0 += x0[j] * w1;
      a1 += x1[j] * w0;
      e1 += x1[j] * w1;
      a2 += x2[j] * w0;
      e2 += x2[j] * w1;
      a3 += x3[j] * w0;
      e3 += x3[j] * w1;
    }
    Store8(z + c0, a0);
    Store8(z + c0 + kLanes, e0);
    Store8(z + cp + c0, a1);
    Store8(z + cp + c0 + kLanes, e1);
    Store8(z + 2 * cp + c0, a2);
    Store8(z + 2 * cp + c0 + kLanes, e2);
    Store8(z + 3 * cp + c0, a3);
    Store8(z + 3 * cp + c0 + kLanes, e3);
  }
  for (; c0 < cp; c0 += kLanes) {
    v8f a0 = Load8(b + c0), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t j = 0; j < d; ++j) {
      const v8f wj = Load8(w + j * cp + c0);
      a0 += x0[j] * wj;
      a1 += x1[j] * wj;
      a2 += x2[j] * wj;
      a3 += x3[j] * wj;
    }
    Store8(z + c0, a0);
    Store8(z + cp + c0, a1);
    Store8(z + 2 * cp + c0, a2);
    Store8(z + 3 * cp + c0, a3);
  }
}

// gw[j][0..cp) += sum_r x_r[j] * res_r over kGroup rows (padded rows are zeros).
LOGIT_CLONES void AddOuter(const float* x, int64_t d, const float* res, int64_t cp, float* gw) {
  const float* x0 = x;
  const float* x1 = x + d;
  const float* x2 = x + 2 * d;
  const float* x3 = x + 3 * d;
  int64_t c0 = 0;
  for (; c0 + 2 * kLanes <= cp; c0 += 2 * kLanes) {
    const v8f r0 = Load8(res + c0), r1 = Load8(res + cp + c0), r2 = Load8(res + 2 * cp + c0),
              r3 = Load8(res + 3 * cp + c0);
    const v8f s0 = Load8(res + c0 + kLanes), s1 = Load8(res + cp + c0 + kLanes),
              s2 = Load8(res + 2 * cp + c0 + kLanes), s3 = Load8(res + 3 * cp + c0 + kLanes);
    for (int64_t j = 0; j < d; ++j) {
      float* gj = gw + j * cp + c0;
      Store8(gj, Load8(gj) + x0[j] * r0 + x1[j] * r1 + x2[j] * r2 + x3[j] * r3);
      Store8(gj + kLanes, Load8(gj + kLanes) + x0[j] * s0 + x1[j] * s1 + x2[j] * s2 + x3[j] * s3);
    }
  }
  for (; c0 < cp; c0 += kLanes) {
    const v8f r0 = Load8(res + c0), r1 = Load8(res + cp + c0), r2 = Load8(res + 2 * cp + c0),
              r3 = Load8(res + 3 * cp + c0);
    for (int64_t j = 0; j < d; ++j) {
      float* gj = gw + j * cp + c0;
      Store8(gj, Load8(gj) + x0[j] * r0 + x1[j] * r1 + x2[j] * r2 + x3[j] * r3);
    }
  }
}

// dst[0..n) = src[0..n): vectors of 8, then single floats (a memcpy call per short row of the
// model costs more than the copy).
inline void CopyRow(const float* src, int64_t n, float* dst) {
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) Store8(dst + c, Load8(src + c));
  for (; c < n; ++c) dst[c] = src[c];
}

// dst[0..n) += src[0..n).
inline void AddRow(const float* src, int64_t n, float* dst) {
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) Store8(dst + c, Load8(dst + c) + Load8(src + c));
  for (; c < n; ++c) dst[c] += src[c];
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

MinibatchKernel::MinibatchKernel(int64_t d, int64_t c)
    : d_(d), c_(c), cp_(c == 1 ? 1 : (c + kLanes - 1) / kLanes * kLanes) {
  w_.assign(d_ * cp_, 0.0f);
  b_.assign(cp_, 0.0f);
}

MinibatchKernel::Part& MinibatchKernel::PartFor(int t) {
  Part& p = parts_[t];
  if (p.gw.empty()) {
    p.gw.assign(d_ * cp_, 0.0f);
    p.gb.assign(cp_, 0.0f);
    p.x.assign(kGroup * d_, 0.0f);
    p.z.assign(kGroup * cp_, 0.0f);
  }
  p.used = true;
  return p;
}

void MinibatchKernel::SetParams(const float* w, const float* b, const float* mu,
                                const float* sigma) {
  for (int64_t j = 0; j < d_; ++j) {
    if (sigma == nullptr) {
      CopyRow(w + j * c_, c_, &w_[j * cp_]);
      continue;
    }
    const float inv = 1.0f / sigma[j];
    for (int64_t c = 0; c < c_; ++c) w_[j * cp_ + c] = w[j * c_ + c] * inv;
  }
  for (int64_t c = 0; c < c_; ++c) {
    double bc = b[c];
    if (mu != nullptr) {
      for (int64_t j = 0; j < d_; ++j) bc -= static_cast<double>(mu[j]) * w_[j * cp_ + c];
    }
    b_[c] = static_cast<float>(bc);
  }
  // Padded columns get a very negative bias: exp() of them is 0 in the softmax.
  for (int64_t c = c_; c < cp_; ++c) b_[c] = -1e30f;
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
  float* x = part.x.data();
  float* zs = part.z.data();
  for (int64_t i0 = 0; i0 < m; i0 += kGroup) {
    const int64_t g = std::min(kGroup, m - i0);
    if (i0 + 2 * kGroup < m) {
      PrefetchRows(data, rows + i0 + 2 * kGroup, std::min(kGroup, m - i0 - 2 * kGroup));
    }
    LoadRows(data, rows + i0, g, x);
    if (g < kGroup) std::fill(x + g * d_, x + kGroup * d_, 0.0f);
    Logits(x, d_, w_.data(), b_.data(), cp_, zs);
    for (int64_t r = 0; r < g; ++r) {
      const int64_t row = rows[i0 + r];
      const int64_t y = data.labels[row];
      const float sw = data.weights != nullptr ? data.weights[row] : 1.0f;
      float* z = zs + r * cp_;
      const float zmax = *std::max_element(z, z + c_);
      const double zy = static_cast<double>(z[y]) - zmax;
      double sum = 0;
      for (int64_t c = 0; c < c_; ++c) {
        z[c] = std::exp(z[c] - zmax);
        sum += z[c];
      }
      const float inv = static_cast<float>(1.0 / sum);
      part.loss += sw * (std::log(sum) - zy);  // cross-entropy: log sum exp - z_y
      part.weight += sw;
      for (int64_t c = 0; c < c_; ++c) z[c] = sw * z[c] * inv;
      for (int64_t c = c_; c < cp_; ++c) z[c] = 0;
      z[y] -= sw;
      for (int64_t c = 0; c < c_; ++c) part.gb[c] += z[c];
    }
    std::fill(zs + g * cp_, zs + kGroup * cp_, 0.0f);  // padded rows add nothing
    AddOuter(x, d_, zs, cp_, part.gw.data());
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
    const double z = Dot(x, w_.data(), d_) + b_[0];
    const double y = data.labels[row] == 1 ? 1.0 : 0.0;
    const double sw = data.weights != nullptr ? data.weights[row] : 1.0;
    part.loss += sw * (Softplus(z) - y * z);
    part.weight += sw;
    const double p = z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
    const float g = static_cast<float>(sw * (p - y));
    Axpy(g, x, part.gw.data(), d_);
    part.gb[0] += g;
  }
}

void MinibatchKernel::Flush(float* out) {
  const int64_t nw = d_ * c_;
  std::fill(out, out + nw + c_ + 2, 0.0f);
  double loss = 0, weight = 0;
  for (Part& p : parts_) {
    if (!p.used) continue;
    for (int64_t j = 0; j < d_; ++j) {
      float* row = &p.gw[j * cp_];
      AddRow(row, c_, out + j * c_);
      if (cp_ % kLanes == 0) {
        for (int64_t c = 0; c < cp_; c += kLanes) Store8(row + c, v8f{});
      } else {
        for (int64_t c = 0; c < cp_; ++c) row[c] = 0;
      }
    }
    for (int64_t c = 0; c < c_; ++c) out[nw + c] += p.gb[c];
    std::fill(p.gb.begin(), p.gb.end(), 0.0f);
    loss += p.loss;
    weight += p.weight;
    p.loss = p.weight = 0;
    p.used = false;
  }
  out[nw + c_] = static_cast<float>(loss);
  out[nw + c_ + 1] = static_cast<float>(weight);
}

LOGIT_CLONES double FinishGradient(const float* sums, float inv_weight, const float* mu,
                                   const float* sigma, bool fit_bias, float l2, const float* theta,
                                   int64_t d, int64_t c, float* grad) {
  const int64_t nw = d * c;
  for (int64_t k = 0; k < nw + c; ++k) grad[k] = sums[k] * inv_weight;
  float* gb = grad + nw;
  if (sigma != nullptr) {
    for (int64_t j = 0; j < d; ++j) {
      const float s = 1.0f / sigma[j];
      for (int64_t k = 0; k < c; ++k) grad[j * c + k] = (grad[j * c + k] - mu[j] * gb[k]) * s;
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
