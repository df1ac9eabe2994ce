// Fused CPU kernels for small minibatches of dense float32 / uint8 rows: gather, logits,
// softmax/sigmoid, cross-entropy and gradient sums in one pass over each row, plus the Adam and
// SGD updates, on raw pointers, with class-major parameters. At batch 16 a LibTorch step is ~30
// small ops whose dispatch costs more than the arithmetic; here a step is a few loops. No
// LibTorch in this file.
#ifndef LOGIT_WORKER_KERNEL_FUSED_CPU_H_
#define LOGIT_WORKER_KERNEL_FUSED_CPU_H_

#include <cstdint>
#include <vector>

namespace logit::fused {

// Dense rows as the dataset stores them: float32 or uint8 (times `scale`).
struct DenseRows {
  const float* f32 = nullptr;
  const uint8_t* u8 = nullptr;
  float scale = 1.0f;
  int64_t d = 0;
  const int64_t* labels = nullptr;  // class per row in [0, K)
  const float* weights = nullptr;   // per-row weight, or null for 1
};

// Starts loading `count` rows into the cache (call it for the next minibatch before the
// optimizer update of this one).
void PrefetchRows(const DenseRows& data, const int64_t* rows, int64_t count);

// One thread's sums and scratch rows in a FusedKernel (an implementation detail).
template <typename T>
struct ThreadSums {
  std::vector<T> gw, gb;           // gradient sums (c x d, c) since the last fold
  std::vector<double> gw64, gb64;  // folded sums (float with double_sums only)
  std::vector<T> x;                // converted rows of a chunk (32 x d)
  std::vector<T> z;                // logits / residuals of a chunk (32 x c)
  std::vector<T> acc;              // logits' partial sums between feature blocks (c x 4 vectors)
  double loss = 0, weight = 0;
  int64_t unfolded = 0;  // rows in gw / gb since the last fold
  bool used = false;     // holds sums since the last Flush
};

// Loss and gradient sums of a binary (c = 1, sigmoid) or softmax (c = K) model over gathered
// rows, in arithmetic T, with the best vector instructions the CPU has (cpu_isa.h: 8 floats or
// 4 doubles a vector with AVX2, 16 or 8 with AVX-512). Parameters are class-major: W^T (c x
// d, one row of d weights per class), then b (c), so that the products run along the features
// (no padding of the K columns).
template <typename T>
class FusedKernel {
 public:
  // With `double_sums` (T = float) the float32 sums of every 128 rows are added into float64
  // ones (full passes: float32 products, float64 sums over the whole dataset). T = double sums
  // in double anyway. Read float64 sums with FlushDouble.
  FusedKernel(int64_t d, int64_t c, bool double_sums = false);

  // Uses W^T (c x d, class-major) and b (c); `wt` must stay valid until the next call. With
  // mu/sigma (length d, may be null) the effective raw-space parameters W^T / sigma and
  // b - (W^T / sigma) mu are used instead.
  void SetParams(const T* wt, const T* b, const T* mu, const T* sigma);

  // Adds rows[0..m) of `data` to the gradient, loss and weight sums (threads split m >= 64).
  void Accumulate(const DenseRows& data, const int64_t* rows, int64_t m);

  // Writes the sums into out[0 .. c*d + c + 2): gradient wrt (W_eff^T class-major, b_eff), then
  // the loss sum and the weight sum; then clears them.
  void Flush(T* out);
  void FlushDouble(double* out);

 private:
  ThreadSums<T>& PartFor(int thread);

  int64_t d_, c_;
  bool double_sums_;
  const T* w_ = nullptr;     // W_eff^T in use: the caller's, or weff_ when standardising
  std::vector<T> weff_;      // W^T / sigma (standardised training only)
  std::vector<T> b_;         // b_eff
  std::vector<ThreadSums<T>> parts_;  // one per thread that took part
};

// The minibatch kernel (float32) and the float64 full-pass kernel.
using MinibatchKernel = FusedKernel<float>;
using FusedKernel64 = FusedKernel<double>;

// The minibatch gradient (class-major, as theta) from the (allreduced) sums of Flush: divides by
// the weight total, maps it back to the standardised space (mu/sigma may be null), zeroes the
// bias gradient without a bias, and adds l2 * W. Returns |W|^2 (for the objective) when l2 > 0,
// else 0.
double FinishGradient(const float* sums, float inv_weight, const float* mu, const float* sigma,
                      bool fit_bias, float l2, const float* theta, int64_t d, int64_t c,
                      float* grad);

// One Adam step on n parameters; the first n_weights are penalised by l1 (proximal step with
// Adam's per-coordinate step size). `step` counts from 1.
void AdamStep(float* theta, const float* grad, float* m1, float* m2, int64_t n, int64_t n_weights,
              double lr, double beta1, double beta2, double eps, int64_t step, double l1);

// One SGD step (optional momentum, Nesterov) with a proximal L1 step on the first n_weights.
void SgdStep(float* theta, const float* grad, float* velocity, int64_t n, int64_t n_weights,
             double lr, double momentum, bool nesterov, double l1);

}  // namespace logit::fused

#endif  // LOGIT_WORKER_KERNEL_FUSED_CPU_H_
