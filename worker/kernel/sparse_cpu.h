// The CPU kernel for sparse (CSR) rows: loss and gradient sums of a binary (sigmoid) or softmax
// model in one pass over the stored values, never densifying a row. Parameters are feature-major
// (W is d x c, row j holding feature j's c weights, as the trainer's theta), so each stored value
// reads one contiguous run of c weights and adds into one contiguous run of c gradient sums.
// Arithmetic and sums in float64; values and column indices as the reader stores them (float32,
// int32). Threads take contiguous slices of the rows, balanced by stored values, each with its
// own gradient sums (no atomics), added up at the end. Entry points for each instruction set,
// picked per pass by cpu::CurrentIsa() (cpu_isa.h). No LibTorch in this file.
#ifndef LOGIT_WORKER_KERNEL_SPARSE_CPU_H_
#define LOGIT_WORKER_KERNEL_SPARSE_CPU_H_

#include <cstdint>
#include <vector>

namespace logit::sparse {

// Rows in compressed sparse row form, as the Dataset holds them.
struct CsrRows {
  const int64_t* indptr = nullptr;   // num_rows + 1 offsets
  const int32_t* indices = nullptr;  // column of each stored value, < d
  const float* values = nullptr;     // null: every stored value is 1
  const int64_t* labels = nullptr;   // class per row in [0, K)
  const float* weights = nullptr;    // per-row weight, or null for 1
};

// One thread's loss and weight sums in a pass (an implementation detail of SparseKernel).
struct alignas(64) SliceTotals {  // a cache line each: written for every row
  double loss = 0, weight = 0;
};

class SparseKernel {
 public:
  // d features, c = 1 (binary, sigmoid) or c = K >= 3 (softmax) output columns.
  SparseKernel(int64_t d, int64_t c);

  // Adds rows (all of [0, m) when rows is null, else rows[0..m)) to the sums, with effective
  // parameters w (d x c, feature-major) and b (c). `sums` has d*c + c + 2 entries: the gradient
  // wrt (w, b), the loss sum and the weight sum, added to (not overwritten).
  void Accumulate(const CsrRows& data, const int64_t* rows, int64_t m, const double* w,
                  const double* b, double* sums);

  // Scores: logits (m x c) of the rows, with the same parameters.
  void Logits(const CsrRows& data, const int64_t* rows, int64_t m, const double* w,
              const double* b, double* z) const;

  // Threads the last Accumulate split its rows over.
  int threads_used() const { return threads_used_; }

 private:
  int64_t d_, c_;
  std::vector<std::vector<double>> parts_;  // threads 1..T-1: their gradient sums
  std::vector<SliceTotals> totals_;         // per thread, this pass
  std::vector<double> scratch_;             // per thread: c logits
  int threads_used_ = 0;
};

}  // namespace logit::sparse

#endif  // LOGIT_WORKER_KERNEL_SPARSE_CPU_H_
