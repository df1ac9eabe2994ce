// The logistic-regression objective with closed-form gradients (internal to the kernel; includes
// ATen, so only kernel sources and kernel tests include it).
//
//   J(W, b) = sum_i s_i CE_i / sum_i s_i + (l2 / 2) |W|^2        (L1 is left to the optimizers)
//
// Parameters live in one flat tensor theta = [W (d x C, row-major), b (C)], C = 1 for binary
// (sigmoid) and K for softmax, so that one allreduce syncs the whole gradient. With
// standardisation (mu, sigma), theta is in the standardised space and the data stay raw:
// X_s W = X (W / sigma) - mu (W / sigma), so neither dense nor sparse data are transformed.
#ifndef LOGIT_WORKER_KERNEL_OBJECTIVE_H_
#define LOGIT_WORKER_KERNEL_OBJECTIVE_H_

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/dataset.h"
#include "worker/kernel/collective.h"
#include "worker/kernel/fused_cpu.h"
#include "worker/kernel/sparse_cpu.h"
#include "worker/model/model.h"

namespace logit {

struct ObjectiveConfig {
  int64_t classes = 2;  // K >= 2
  bool fit_bias = true;
  double l2 = 0;                       // >= 0
  at::ScalarType dtype = at::kDouble;  // arithmetic type
  at::Device device = at::kCPU;
  // float64 with dense rows on the CPU: full passes multiply in float32 (the fused kernel, ~8x
  // faster) and sum in float64 (--precision mixed). float32 always does.
  bool mixed_products = false;
  // Columns of the model; 0 = data.num_features. Sparse shards may see fewer columns than the
  // global feature count and are widened here instead of being copied.
  int64_t num_features = 0;
  // Rows per block of a full pass; 0 = auto: 2048 on a CPU (cache-sized), on a GPU up to
  // 256 MiB of converted rows (launches, not memory, bound a pass there).
  int64_t block_rows = 0;
};

// Per-pass results (global over all ranks when a collective is given).
struct PassValue {
  double loss = 0;       // mean weighted cross-entropy
  double objective = 0;  // loss + (l2/2)|W|^2
};

struct EvalStats {
  double loss = 0;      // mean weighted cross-entropy
  double accuracy = 0;  // weighted fraction correct
  double weight = 0;    // total weight (rows when unweighted)
};

// Rows of CSR data as a coalesced COO matrix (count x num_features) in `opts`: the rows
// rows[0..count) when `rows` is given, else the contiguous rows [first, first + count).
at::Tensor SparseRowsToCoo(const Dataset& data, const int64_t* rows, int64_t count, int64_t first,
                           int64_t num_features, const at::TensorOptions& opts);

class LogisticObjective {
 public:
  // `data` must outlive the objective. `sample_weight`: per-row weights (class weights folded
  // in), or undefined for all ones. `mu`/`sigma`: standardisation (length d), or undefined.
  // `collective` may be null (single process).
  static absl::StatusOr<std::unique_ptr<LogisticObjective>> Create(const Dataset& data,
                                                                   const ObjectiveConfig& config,
                                                                   at::Tensor sample_weight,
                                                                   at::Tensor mu, at::Tensor sigma,
                                                                   Collective* collective);

  int64_t num_params() const { return d_ * c_ + c_; }
  int64_t num_rows() const { return n_; }  // local rows
  const Dataset& data() const { return *data_; }  // the local rows (global ids: GlobalRow)
  Collective* collective() const { return collective_; }
  at::TensorOptions options() const;
  // Indices (into theta) of the penalised entries are [0, d * C).
  int64_t num_weights() const { return d_ * c_; }

  // Full pass over all local rows; `grad` (same shape as theta) receives dJ/dtheta.
  absl::StatusOr<PassValue> ValueAndGradient(const at::Tensor& theta, at::Tensor& grad);

  // The minibatch objective over local rows rows[begin, end) (mean over the batch's global
  // weight). A rank with no rows in the batch contributes zeros.
  absl::StatusOr<PassValue> BatchValueAndGradient(const at::Tensor& theta,
                                                  const std::vector<int64_t>& rows, size_t begin,
                                                  size_t end, at::Tensor& grad);

  // The same over class-major parameters and gradient: [W^T (C x d, row-major), b]. The fused
  // CPU minibatch path (dense float32/uint8 rows, float32 math) runs in this layout, so that
  // SGD/Adam keep their parameters and moments class-major for a whole epoch. Only when
  // ClassMajorMinibatch() (FailedPrecondition otherwise).
  bool ClassMajorMinibatch() const { return fused_ != nullptr; }
  absl::StatusOr<PassValue> BatchValueAndGradientClassMajor(const at::Tensor& theta_cm,
                                                            const std::vector<int64_t>& rows,
                                                            size_t begin, size_t end,
                                                            at::Tensor& grad_cm);
  // theta (feature-major, the model's layout) <-> class-major.
  at::Tensor ToClassMajor(const at::Tensor& theta) const;
  void FromClassMajor(const at::Tensor& theta_cm, at::Tensor& theta) const;

  // Whether full passes run the fused kernel with float32 products on float64 parameters
  // (ObjectiveConfig::mixed_products on dense CPU rows); switchable (the float64 polish, which
  // then runs the float64 fused kernel).
  bool mixed_products() const {
    return fused_full_ != nullptr && config_.dtype == at::kDouble && config_.mixed_products;
  }
  void set_mixed_products(bool on) { config_.mixed_products = on; }

  // Hints that rows[begin, end) come next (the fused CPU path prefetches them): the first
  // 256 KB of them, which stay in L2 until used (the kernel prefetches the rest a few rows
  // ahead). Prefetching all of a large batch (16 MB at batch 4,096 x 4 KB rows) cost 17% of an
  // epoch and evicted itself before use.
  void PrefetchBatch(const std::vector<int64_t>& rows, size_t begin, size_t end) const {
    if (fused_ && end > begin) {
      const int64_t row_bytes = std::max<int64_t>(1, d_ * (fused_rows_.u8 != nullptr ? 1 : 4));
      const int64_t count =
          std::min<int64_t>(static_cast<int64_t>(end - begin),
                            std::max<int64_t>(1, (int64_t{256} << 10) / row_bytes));
      fused::PrefetchRows(fused_rows_, rows.data() + begin, count);
    }
  }

  // Loss and accuracy over all local rows (global with a collective); no gradient.
  absl::StatusOr<EvalStats> Evaluate(const at::Tensor& theta);

  // A diagonal preconditioner for L-BFGS on sparse rows (LbfgsOptions::preconditioner): one
  // over the logistic loss's largest curvature per parameter, mean_i x_ij^2 / 4 (1/4 for the
  // bias) plus l2, over all ranks, normalised to mean 1. Column scales of sparse data (rare
  // features, counts) span orders of magnitude; this evens them out without changing the
  // optimum. Undefined for dense rows and for standardised training (already even). Every rank
  // must call it.
  absl::StatusOr<at::Tensor> DiagonalPreconditioner() const;

  // l1 |W|_1 + (l2/2) |W|^2 of theta.
  double Penalty(const at::Tensor& theta, double l1) const;

  // The model on raw features: W / sigma, b - mu . (W / sigma).
  LinearModel ToModel(const at::Tensor& theta) const;

 private:
  struct Block;
  LogisticObjective() = default;
  // Create's parts: the rows and labels on the device; the fused CPU kernels (dense CPU rows).
  void LoadRows(const Dataset& data);
  void SetUpFusedKernels(const Dataset& data);
  // The CSR kernel's pass over rows (null: all), into acc_, then Finish.
  absl::StatusOr<PassValue> SparsePass(const at::Tensor& theta, const int64_t* rows, int64_t m,
                                       at::Tensor& grad);
  // Effective parameters as contiguous float64 CPU tensors (the CSR kernel's).
  void EffectiveParams64(const at::Tensor& theta, at::Tensor* w, at::Tensor* b) const;
  Block MakeContiguousBlock(int64_t begin, int64_t rows);
  Block MakeGatherBlock(const std::vector<int64_t>& rows, size_t begin, size_t end);
  void EffectiveParams(const at::Tensor& theta, at::Tensor* w_eff, at::Tensor* b_eff) const;
  at::Tensor Logits(const Block& block, const at::Tensor& w_eff, const at::Tensor& b_eff) const;
  // Adds the block's gradient sums and loss/weight sums into acc_.
  void Accumulate(const Block& block, const at::Tensor& w_eff, const at::Tensor& b_eff);
  absl::StatusOr<PassValue> Finish(const at::Tensor& theta, at::Tensor& grad);
  // One fused full pass over all local rows into full_sums_ (class-major, float64).
  template <typename T>
  void RunFusedFullPass(fused::FusedKernel<T>& kernel, const at::Tensor& theta_cm, const T* mu,
                        const T* sigma);
  // Finish from the class-major float64 sums of a fused full pass (full_sums_).
  absl::StatusOr<PassValue> FinishFromClassMajorSums(const at::Tensor& theta, at::Tensor& grad);
  // The fused CPU minibatch (dense float32 / uint8 rows, float32 math), class-major.
  absl::StatusOr<PassValue> FusedBatch(const at::Tensor& theta_cm, const std::vector<int64_t>& rows,
                                       size_t begin, size_t end, at::Tensor& grad);

  // Constant after construction.
  const Dataset* data_ = nullptr;
  ObjectiveConfig config_;
  Collective* collective_ = nullptr;
  int64_t n_ = 0, d_ = 0, c_ = 0;
  at::Tensor x_;           // dense features (f32 or u8), on device; undefined for sparse
  at::Tensor y_;           // labels (int64)
  at::Tensor yf_;          // labels as compute dtype (binary)
  at::Tensor sw_;          // sample weights (compute dtype) or undefined
  at::Tensor mu_, sigma_;  // standardisation or undefined
  double u8_scale_ = 1;
  std::vector<at::Tensor> sparse_blocks_, sparse_blocks_t_;  // sparse rows on a GPU (COO)
  // Sparse rows on the CPU: the CSR kernel straight over the Dataset's arrays (no copy).
  std::unique_ptr<sparse::SparseKernel> sparse_;
  sparse::CsrRows csr_;
  std::vector<double> sparse_sums_;  // its float64 sums when the arithmetic is float32
  std::unique_ptr<fused::MinibatchKernel> fused_;       // minibatches: dense, CPU, float32
  std::unique_ptr<fused::MinibatchKernel> fused_full_;  // full passes: dense, CPU, f32 / mixed
  std::unique_ptr<fused::FusedKernel64> fused_full64_;  // full passes: dense, CPU, float64
  fused::DenseRows fused_rows_;
  std::vector<int64_t> all_rows_;             // 0..n-1, the rows of a full pass
  std::vector<float> sw32_, mu32_, sigma32_;  // float copies for the fused kernels
  std::vector<double> full_sums_;             // a full pass's sums (class-major)

  // Scratch buffers, reused across calls (no allocation of large buffers per step).
  at::Tensor acc_;        // [grad sums (P), loss sum, weight sum]
  at::Tensor xbuf_;       // block of converted dense rows (compute dtype)
  at::Tensor xraw_;       // gathered raw rows (storage dtype)
  at::Tensor minus_one_;  // (block_rows, 1) of -1, for the softmax gradient
};

}  // namespace logit

#endif  // LOGIT_WORKER_KERNEL_OBJECTIVE_H_
