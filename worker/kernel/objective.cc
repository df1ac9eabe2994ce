#include "worker/kernel/objective.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/common/status.h"

namespace logit {

namespace {

// sum |w_i| (squares = false) or sum w_i^2 (true) in float64 without a float64 copy of w: that
// copy and its square were two d x c temporaries every step, 2.4 GB of fresh pages a step with
// an ImageNet-sized model (150M parameters), and page faults took most of a step.
double NormSum(const at::Tensor& w, bool squares) {
  if (w.is_cpu() && w.is_contiguous() &&
      (w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble)) {
    const int64_t n = w.numel();
    auto sum_range = [&](const auto* p) {
      return at::parallel_reduce(
          0, n, int64_t{1} << 16, 0.0,
          [&](int64_t b, int64_t e, double s) {
            for (int64_t i = b; i < e; ++i) {
              const double v = static_cast<double>(p[i]);
              s += squares ? v * v : std::abs(v);
            }
            return s;
          },
          [](double a, double b) { return a + b; });
    };
    return w.scalar_type() == at::kFloat ? sum_range(w.data_ptr<float>())
                                         : sum_range(w.data_ptr<double>());
  }
  const at::Tensor w64 = w.to(at::kDouble);
  return (squares ? w64.square() : w64.abs()).sum().item<double>();
}

double SquaredNorm(const at::Tensor& w) { return NormSum(w, true); }

}  // namespace

struct LogisticObjective::Block {
  at::Tensor x;   // dense rows x d (compute dtype), or sparse COO rows x d
  at::Tensor xt;  // sparse only: d x rows
  bool sparse = false;
  at::Tensor y;   // int64 labels
  at::Tensor yf;  // labels in compute dtype (binary only)
  at::Tensor sw;  // sample weights or undefined
  int64_t rows = 0;
};

at::Tensor SparseRowsToCoo(const Dataset& data, const int64_t* rows, int64_t count, int64_t first,
                           int64_t num_features, const at::TensorOptions& opts) {
  const bool contiguous = rows == nullptr;
  int64_t nnz = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t r = contiguous ? first + i : rows[i];
    nnz += data.csr_indptr[r + 1] - data.csr_indptr[r];
  }
  at::Tensor idx = at::empty({2, nnz}, at::kLong);
  at::Tensor val = at::empty({nnz}, at::kFloat);
  int64_t* ri = idx.data_ptr<int64_t>();
  int64_t* ci = ri + nnz;
  float* v = val.data_ptr<float>();
  int64_t k = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t r = contiguous ? first + i : rows[i];
    for (int64_t p = data.csr_indptr[r]; p < data.csr_indptr[r + 1]; ++p, ++k) {
      ri[k] = i;
      ci[k] = data.csr_indices[p];
      v[k] = data.CsrValue(p);
    }
  }
  return at::sparse_coo_tensor(idx.to(opts.device()), val.to(opts), {count, num_features})
      .coalesce();
}

void LogisticObjective::LoadRows(const Dataset& data) {
  const at::TensorOptions opts = options();
  const int64_t n = n_, d = d_;
  switch (data.storage) {
    case FeatureStorage::kDenseFloat32:
      x_ = at::from_blob(const_cast<float*>(data.F32Rows()), {n, d}, at::kFloat)
               .to(config_.device);
      break;
    case FeatureStorage::kDenseUint8:
      x_ = at::from_blob(const_cast<uint8_t*>(data.U8Rows()), {n, d}, at::kByte)
               .to(config_.device);
      break;
    case FeatureStorage::kSparseCsr:
      if (config_.device.is_cpu()) {  // the CSR kernel reads the Dataset in place
        sparse_ = std::make_unique<sparse::SparseKernel>(d_, c_);
        csr_.indptr = data.csr_indptr.data();
        csr_.indices = data.csr_indices.data();
        csr_.values = data.CsrValuesOrNull();
        csr_.labels = data.labels.data();
        break;
      }
      for (int64_t b = 0; b < n; b += config_.block_rows) {
        const int64_t rows = std::min(config_.block_rows, n - b);
        at::Tensor x = SparseRowsToCoo(data, nullptr, rows, b, d_, opts);
        sparse_blocks_t_.push_back(x.t().coalesce());
        sparse_blocks_.push_back(std::move(x));
      }
      break;
  }
  y_ = at::from_blob(const_cast<int64_t*>(data.labels.data()), {n}, at::kLong).to(config_.device);
}

void LogisticObjective::SetUpFusedKernels(const Dataset& data) {
  const int64_t n = n_;
  fused::DenseRows& v = fused_rows_;
  if (data.storage == FeatureStorage::kDenseUint8) {
    v.u8 = data.U8Rows();
    v.scale = static_cast<float>(data.u8_scale);
  } else {
    v.f32 = data.F32Rows();
  }
  v.d = d_;
  v.labels = data.labels.data();
  auto to_floats = [](const at::Tensor& t) {
    at::Tensor f = t.to(at::kFloat).contiguous();
    return std::vector<float>(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
  };
  if (sw_.defined()) sw32_ = to_floats(sw_);
  if (sigma_.defined()) {
    mu32_ = to_floats(mu_);
    sigma32_ = to_floats(sigma_);
  }
  v.weights = sw32_.empty() ? nullptr : sw32_.data();
  if (config_.dtype == at::kFloat) {
    fused_ = std::make_unique<fused::MinibatchKernel>(d_, c_);
  }
  fused_full_ = std::make_unique<fused::MinibatchKernel>(d_, c_, true);
  if (config_.dtype == at::kDouble) {
    fused_full64_ = std::make_unique<fused::FusedKernel64>(d_, c_);
  }
  all_rows_.resize(n);
  std::iota(all_rows_.begin(), all_rows_.end(), 0);
}

absl::StatusOr<std::unique_ptr<LogisticObjective>> LogisticObjective::Create(
    const Dataset& data, const ObjectiveConfig& config, at::Tensor sample_weight, at::Tensor mu,
    at::Tensor sigma, Collective* collective) {
  if (config.classes < 2) {
    return absl::InvalidArgumentError(absl::StrCat("classes: must be >= 2, got ", config.classes));
  }
  const int64_t num_features = config.num_features > 0 ? config.num_features : data.num_features;
  if (num_features < 1) {
    return absl::InvalidArgumentError(absl::StrCat(data.source, ": no feature columns"));
  }
  if (data.storage != FeatureStorage::kSparseCsr && num_features != data.num_features) {
    return absl::InvalidArgumentError(absl::StrCat(data.source, ": has ", data.num_features,
                                                   " features, expected ", num_features));
  }
  std::unique_ptr<LogisticObjective> obj(new LogisticObjective());
  obj->data_ = &data;
  obj->config_ = config;
  if (obj->config_.block_rows <= 0) {
    const int64_t row_bytes =
        std::max<int64_t>(1, num_features) * (config.dtype == at::kDouble ? 8 : 4);
    obj->config_.block_rows =
        config.device.is_cuda() ? std::max<int64_t>(2048, (int64_t{256} << 20) / row_bytes) : 2048;
  }
  obj->collective_ = collective;
  obj->n_ = data.num_rows;
  obj->d_ = num_features;
  obj->c_ = config.classes == 2 ? 1 : config.classes;
  obj->u8_scale_ = data.u8_scale;
  const at::TensorOptions opts = obj->options();
  obj->LoadRows(data);
  if (obj->c_ == 1) obj->yf_ = obj->y_.to(opts);
  if (sample_weight.defined()) obj->sw_ = sample_weight.to(opts);
  if (sigma.defined()) {
    obj->mu_ = mu.to(opts);
    obj->sigma_ = sigma.to(opts);
  }
  obj->acc_ = at::zeros({obj->num_params() + 2}, opts);
  if (obj->sparse_ && obj->sw_.defined()) {
    obj->sw32_ = std::vector<float>(obj->n_);
    const at::Tensor w32 = obj->sw_.to(at::kFloat).contiguous();
    std::copy(w32.data_ptr<float>(), w32.data_ptr<float>() + obj->n_, obj->sw32_.begin());
    obj->csr_.weights = obj->sw32_.data();
  }
  // Dense rows on the CPU go through the fused kernels: minibatches in float32 arithmetic, full
  // passes with float32 products and float64 sums (for float32, and for float64 with
  // mixed_products).
  // Each thread of the fused kernels keeps its own K x d sums, so they serve small models only
  // (Fashion-MNIST: 7,850 values); ImageNet-sized ones (150M values) go through ATen's GEMMs.
  constexpr int64_t kFusedMaxParams = int64_t{4} << 20;
  const bool dense_cpu = data.storage != FeatureStorage::kSparseCsr && config.device.is_cpu() &&
                         obj->d_ * obj->c_ <= kFusedMaxParams;
  if (dense_cpu) obj->SetUpFusedKernels(data);
  return obj;
}

at::TensorOptions LogisticObjective::options() const {
  return at::TensorOptions().dtype(config_.dtype).device(config_.device);
}

void LogisticObjective::EffectiveParams(const at::Tensor& theta, at::Tensor* w_eff,
                                        at::Tensor* b_eff) const {
  at::Tensor w = theta.narrow(0, 0, d_ * c_).view({d_, c_});
  at::Tensor b = theta.narrow(0, d_ * c_, c_);
  if (sigma_.defined()) {
    *w_eff = w / sigma_.unsqueeze(1);
    *b_eff = b - at::matmul(mu_, *w_eff);
  } else {
    *w_eff = w;
    *b_eff = b;
  }
}

LogisticObjective::Block LogisticObjective::MakeContiguousBlock(int64_t begin, int64_t rows) {
  Block blk;
  blk.rows = rows;
  if (data_->storage == FeatureStorage::kSparseCsr) {
    const size_t i = static_cast<size_t>(begin / config_.block_rows);
    blk.sparse = true;
    blk.x = sparse_blocks_[i];
    blk.xt = sparse_blocks_t_[i];
  } else {
    at::Tensor raw = x_.narrow(0, begin, rows);
    if (raw.scalar_type() == config_.dtype && u8_scale_ == 1.0f) {
      blk.x = raw;
    } else {
      if (!xbuf_.defined() || xbuf_.size(0) < rows) xbuf_ = at::empty({rows, d_}, options());
      blk.x = xbuf_.narrow(0, 0, rows);
      blk.x.copy_(raw);
      if (data_->storage == FeatureStorage::kDenseUint8 && u8_scale_ != 1.0f) blk.x.mul_(u8_scale_);
    }
  }
  blk.y = y_.narrow(0, begin, rows);
  if (yf_.defined()) blk.yf = yf_.narrow(0, begin, rows);
  if (sw_.defined()) blk.sw = sw_.narrow(0, begin, rows);
  return blk;
}

LogisticObjective::Block LogisticObjective::MakeGatherBlock(const std::vector<int64_t>& rows,
                                                            size_t begin, size_t end) {
  Block blk;
  const int64_t m = static_cast<int64_t>(end - begin);
  blk.rows = m;
  at::Tensor idx =
      at::from_blob(const_cast<int64_t*>(rows.data() + begin), {m}, at::kLong).to(config_.device);
  if (data_->storage == FeatureStorage::kSparseCsr) {
    blk.sparse = true;
    blk.x = SparseRowsToCoo(*data_, rows.data() + begin, m, 0, d_, options());
    blk.xt = blk.x.t().coalesce();
  } else {
    if (!xbuf_.defined() || xbuf_.size(0) < m) xbuf_ = at::empty({m, d_}, options());
    blk.x = xbuf_.narrow(0, 0, m);
    if (x_.scalar_type() == config_.dtype) {
      at::index_select_out(blk.x, x_, 0, idx);
    } else {
      if (!xraw_.defined() || xraw_.size(0) < m) {
        xraw_ = at::empty({m, d_}, x_.options());
      }
      at::Tensor raw = xraw_.narrow(0, 0, m);
      at::index_select_out(raw, x_, 0, idx);
      blk.x.copy_(raw);
    }
    if (data_->storage == FeatureStorage::kDenseUint8 && u8_scale_ != 1.0f) blk.x.mul_(u8_scale_);
  }
  blk.y = y_.index_select(0, idx);
  if (yf_.defined()) blk.yf = yf_.index_select(0, idx);
  if (sw_.defined()) blk.sw = sw_.index_select(0, idx);
  return blk;
}

at::Tensor LogisticObjective::Logits(const Block& blk, const at::Tensor& w_eff,
                                     const at::Tensor& b_eff) const {
  if (blk.sparse) return at::mm(blk.x, w_eff).add_(b_eff);
  return at::addmm(b_eff, blk.x, w_eff);
}

void LogisticObjective::Accumulate(const Block& blk, const at::Tensor& w_eff,
                                   const at::Tensor& b_eff) {
  const int64_t p = num_params();
  at::Tensor gw = acc_.narrow(0, 0, d_ * c_).view({d_, c_});
  at::Tensor gb = acc_.narrow(0, d_ * c_, c_);
  if (blk.rows == 0) return;
  at::Tensor z = Logits(blk, w_eff, b_eff);
  at::Tensor g, ce;
  if (c_ == 1) {
    at::Tensor zc = z.view({blk.rows});
    ce = at::softplus(zc).sub_(blk.yf * zc);
    g = at::sigmoid(zc).sub_(blk.yf);
    if (blk.sw.defined()) {
      ce.mul_(blk.sw);
      g.mul_(blk.sw);
    }
    g = g.view({blk.rows, 1});
  } else {
    if (!minus_one_.defined() || minus_one_.size(0) < blk.rows) {
      minus_one_ = at::full({std::max(blk.rows, config_.block_rows), 1}, -1.0, options());
    }
    const at::Tensor y1 = blk.y.view({blk.rows, 1});
    g = at::log_softmax(z, 1);
    ce = g.gather(1, y1).neg_().view({blk.rows});
    g.exp_();
    g.scatter_add_(1, y1, minus_one_.narrow(0, 0, blk.rows));
    if (blk.sw.defined()) {
      ce.mul_(blk.sw);
      g.mul_(blk.sw.view({blk.rows, 1}));
    }
  }
  acc_.narrow(0, p, 1).add_(ce.sum());
  if (blk.sw.defined()) {
    acc_.narrow(0, p + 1, 1).add_(blk.sw.sum());
  } else {
    acc_.narrow(0, p + 1, 1).add_(static_cast<double>(blk.rows));
  }
  if (blk.sparse) {
    gw.add_(at::mm(blk.xt, g));
  } else {
    gw.addmm_(blk.x.t(), g);
  }
  gb.add_(g.sum(0));
}

absl::StatusOr<PassValue> LogisticObjective::Finish(const at::Tensor& theta, at::Tensor& grad) {
  const int64_t p = num_params();
  if (collective_ != nullptr) {
    absl::Status st = collective_->AllReduceSum(acc_);
    if (!st.ok()) return st;
  }
  const double wsum = acc_[p + 1].item<double>();
  if (!(wsum > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(data_->source, ": no rows with positive weight to train on"));
  }
  acc_.narrow(0, 0, p + 1).div_(wsum);
  grad.copy_(acc_.narrow(0, 0, p));
  at::Tensor gw = grad.narrow(0, 0, d_ * c_).view({d_, c_});
  at::Tensor gb = grad.narrow(0, d_ * c_, c_);
  if (sigma_.defined()) gw.sub_(at::outer(mu_, gb)).div_(sigma_.unsqueeze(1));
  if (!config_.fit_bias) gb.zero_();
  const at::Tensor w = theta.narrow(0, 0, d_ * c_).view({d_, c_});
  PassValue v;
  v.loss = acc_[p].item<double>();
  v.objective = v.loss;
  if (config_.l2 > 0) {
    gw.add_(w, config_.l2);
    v.objective += 0.5 * config_.l2 * SquaredNorm(w);
  }
  return v;
}

template <typename T>
void LogisticObjective::RunFusedFullPass(fused::FusedKernel<T>& kernel, const at::Tensor& theta_cm,
                                         const T* mu, const T* sigma) {
  const int64_t nw = d_ * c_;
  const T* th = theta_cm.data_ptr<T>();
  kernel.SetParams(th, th + nw, mu, sigma);
  kernel.Accumulate(fused_rows_, all_rows_.data(), n_);
  full_sums_.resize(nw + c_ + 2);
  kernel.FlushDouble(full_sums_.data());
}

absl::StatusOr<PassValue> LogisticObjective::FinishFromClassMajorSums(const at::Tensor& theta,
                                                                      at::Tensor& grad) {
  const int64_t nw = d_ * c_;
  const at::Tensor sums = at::from_blob(full_sums_.data(), {nw + c_ + 2}, at::kDouble);
  acc_.narrow(0, 0, nw).view({d_, c_}).copy_(sums.narrow(0, 0, nw).view({c_, d_}).t());
  acc_.narrow(0, nw, c_ + 2).copy_(sums.narrow(0, nw, c_ + 2));
  return Finish(theta, grad);
}

void LogisticObjective::EffectiveParams64(const at::Tensor& theta, at::Tensor* w,
                                         at::Tensor* b) const {
  at::Tensor w_eff, b_eff;
  EffectiveParams(theta, &w_eff, &b_eff);
  *w = w_eff.to(at::kDouble).contiguous();
  *b = b_eff.to(at::kDouble).contiguous();
}

absl::StatusOr<PassValue> LogisticObjective::SparsePass(const at::Tensor& theta,
                                                        const int64_t* rows, int64_t m,
                                                        at::Tensor& grad) {
  at::Tensor w, b;
  EffectiveParams64(theta, &w, &b);
  acc_.zero_();
  double* sums;
  if (config_.dtype == at::kDouble) {
    sums = acc_.data_ptr<double>();
  } else {
    sparse_sums_.assign(num_params() + 2, 0.0);
    sums = sparse_sums_.data();
  }
  if (m > 0) sparse_->Accumulate(csr_, rows, m, w.data_ptr<double>(), b.data_ptr<double>(), sums);
  if (config_.dtype != at::kDouble) {
    acc_.copy_(at::from_blob(sparse_sums_.data(), {num_params() + 2}, at::kDouble));
  }
  return Finish(theta, grad);
}

absl::StatusOr<PassValue> LogisticObjective::ValueAndGradient(const at::Tensor& theta,
                                                              at::Tensor& grad) {
  if (sparse_) return SparsePass(theta, nullptr, n_, grad);
  if (fused_full64_ && !config_.mixed_products) {  // float64 throughout
    RunFusedFullPass(*fused_full64_, ToClassMajor(theta),
                     mu_.defined() ? mu_.data_ptr<double>() : nullptr,
                     sigma_.defined() ? sigma_.data_ptr<double>() : nullptr);
    return FinishFromClassMajorSums(theta, grad);
  }
  if (fused_full_ && (config_.dtype == at::kFloat || config_.mixed_products)) {
    // float32 products, float64 sums.
    RunFusedFullPass(*fused_full_, ToClassMajor(theta).to(at::kFloat),
                     mu32_.empty() ? nullptr : mu32_.data(),
                     sigma32_.empty() ? nullptr : sigma32_.data());
    return FinishFromClassMajorSums(theta, grad);
  }
  acc_.zero_();
  at::Tensor w_eff, b_eff;
  EffectiveParams(theta, &w_eff, &b_eff);
  for (int64_t b = 0; b < n_; b += config_.block_rows) {
    Accumulate(MakeContiguousBlock(b, std::min(config_.block_rows, n_ - b)), w_eff, b_eff);
  }
  return Finish(theta, grad);
}

absl::StatusOr<PassValue> LogisticObjective::BatchValueAndGradient(const at::Tensor& theta,
                                                                   const std::vector<int64_t>& rows,
                                                                   size_t begin, size_t end,
                                                                   at::Tensor& grad) {
  if (fused_) {  // the fused kernel works class-major: convert in and out
    at::Tensor theta_cm = ToClassMajor(theta);
    at::Tensor grad_cm = at::empty_like(theta_cm);
    auto v = FusedBatch(theta_cm, rows, begin, end, grad_cm);
    if (v.ok()) FromClassMajor(grad_cm, grad);
    return v;
  }
  if (sparse_) {
    return SparsePass(theta, rows.data() + begin, static_cast<int64_t>(end - begin), grad);
  }
  acc_.zero_();
  at::Tensor w_eff, b_eff;
  EffectiveParams(theta, &w_eff, &b_eff);
  if (end > begin) Accumulate(MakeGatherBlock(rows, begin, end), w_eff, b_eff);
  return Finish(theta, grad);
}

absl::StatusOr<PassValue> LogisticObjective::BatchValueAndGradientClassMajor(
    const at::Tensor& theta_cm, const std::vector<int64_t>& rows, size_t begin, size_t end,
    at::Tensor& grad_cm) {
  if (!fused_) {
    return absl::FailedPreconditionError("class-major minibatches need the fused CPU kernel");
  }
  return FusedBatch(theta_cm, rows, begin, end, grad_cm);
}

at::Tensor LogisticObjective::ToClassMajor(const at::Tensor& theta) const {
  at::Tensor out = at::empty_like(theta);
  out.narrow(0, 0, d_ * c_).view({c_, d_}).copy_(theta.narrow(0, 0, d_ * c_).view({d_, c_}).t());
  out.narrow(0, d_ * c_, c_).copy_(theta.narrow(0, d_ * c_, c_));
  return out;
}

void LogisticObjective::FromClassMajor(const at::Tensor& theta_cm, at::Tensor& theta) const {
  theta.narrow(0, 0, d_ * c_)
      .view({d_, c_})
      .copy_(theta_cm.narrow(0, 0, d_ * c_).view({c_, d_}).t());
  theta.narrow(0, d_ * c_, c_).copy_(theta_cm.narrow(0, d_ * c_, c_));
}

absl::StatusOr<PassValue> LogisticObjective::FusedBatch(const at::Tensor& theta,
                                                        const std::vector<int64_t>& rows,
                                                        size_t begin, size_t end,
                                                        at::Tensor& grad) {
  const int64_t nw = d_ * c_, p = num_params();
  const float* th = theta.data_ptr<float>();
  const float* mu = mu32_.empty() ? nullptr : mu32_.data();
  const float* sigma = sigma32_.empty() ? nullptr : sigma32_.data();
  fused_->SetParams(th, th + nw, mu, sigma);
  if (end > begin) {
    fused_->Accumulate(fused_rows_, rows.data() + begin, static_cast<int64_t>(end - begin));
  }
  float* acc = acc_.data_ptr<float>();
  fused_->Flush(acc);
  if (collective_ != nullptr) {
    absl::Status st = collective_->AllReduceSum(acc_);
    if (!st.ok()) return st;
  }
  const double wsum = acc[p + 1];
  if (!(wsum > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(data_->source, ": no rows with positive weight to train on"));
  }
  const double sq =
      fused::FinishGradient(acc, static_cast<float>(1.0 / wsum), mu, sigma, config_.fit_bias,
                            static_cast<float>(config_.l2), th, d_, c_, grad.data_ptr<float>());
  PassValue v;
  v.loss = acc[p] / wsum;
  v.objective = v.loss + 0.5 * config_.l2 * sq;
  return v;
}

absl::StatusOr<EvalStats> LogisticObjective::Evaluate(const at::Tensor& theta) {
  at::Tensor sums = at::zeros({3}, options());
  at::Tensor w_eff, b_eff;
  if (sparse_) {
    EffectiveParams64(theta, &w_eff, &b_eff);
  } else {
    EffectiveParams(theta, &w_eff, &b_eff);
  }
  for (int64_t b = 0; b < n_; b += config_.block_rows) {
    const int64_t rows = std::min(config_.block_rows, n_ - b);
    Block blk;
    at::Tensor z;
    if (sparse_) {  // the CSR kernel's logits; labels and weights as a block's
      blk.rows = rows;
      blk.y = y_.narrow(0, b, rows);
      if (yf_.defined()) blk.yf = yf_.narrow(0, b, rows);
      if (sw_.defined()) blk.sw = sw_.narrow(0, b, rows);
      z = at::empty({rows, c_}, at::kDouble);
      // Rows [b, b + rows): the row offsets from b on (they index the whole values array).
      sparse::CsrRows from_b = csr_;
      from_b.indptr += b;
      from_b.labels += b;
      if (from_b.weights != nullptr) from_b.weights += b;
      sparse_->Logits(from_b, nullptr, rows, w_eff.data_ptr<double>(), b_eff.data_ptr<double>(),
                      z.data_ptr<double>());
      z = z.to(config_.dtype);
    } else {
      blk = MakeContiguousBlock(b, rows);
      z = Logits(blk, w_eff, b_eff);
    }
    at::Tensor ce, pred;
    if (c_ == 1) {
      at::Tensor zc = z.view({blk.rows});
      ce = at::softplus(zc).sub_(blk.yf * zc);
      pred = zc.gt(0).to(at::kLong);
    } else {
      ce = at::log_softmax(z, 1).gather(1, blk.y.view({blk.rows, 1})).neg_().view({blk.rows});
      pred = z.argmax(1);
    }
    at::Tensor correct = pred.eq(blk.y).to(config_.dtype);
    if (blk.sw.defined()) {
      sums[0].add_((ce * blk.sw).sum());
      sums[1].add_((correct * blk.sw).sum());
      sums[2].add_(blk.sw.sum());
    } else {
      sums[0].add_(ce.sum());
      sums[1].add_(correct.sum());
      sums[2].add_(static_cast<double>(blk.rows));
    }
  }
  if (collective_ != nullptr) {
    absl::Status st = collective_->AllReduceSum(sums);
    if (!st.ok()) return st;
  }
  at::Tensor host = sums.to(at::kCPU, at::kDouble);
  EvalStats s;
  s.weight = host[2].item<double>();
  if (s.weight > 0) {
    s.loss = host[0].item<double>() / s.weight;
    s.accuracy = host[1].item<double>() / s.weight;
  }
  return s;
}

absl::StatusOr<at::Tensor> LogisticObjective::DiagonalPreconditioner() const {
  if (data_->storage != FeatureStorage::kSparseCsr || sigma_.defined()) return at::Tensor();
  // Column sums of squares and the row count, over all ranks.
  at::Tensor sums = at::zeros({d_ + 1}, at::kDouble);
  double* s = sums.data_ptr<double>();
  for (size_t k = 0; k < data_->csr_indices.size(); ++k) {
    const double v = data_->CsrValue(static_cast<int64_t>(k));
    s[data_->csr_indices[k]] += v * v;
  }
  s[d_] = static_cast<double>(n_);
  if (collective_ != nullptr) RETURN_IF_ERROR(collective_->AllReduceSum(sums));
  const double rows = std::max(1.0, s[d_]);
  at::Tensor curvature = sums.narrow(0, 0, d_) * (0.25 / rows) + config_.l2;
  const double floor = 1e-12 * std::max(curvature.max().item<double>(), 0.25 + config_.l2);
  curvature.clamp_min_(floor);
  at::Tensor p = at::cat({curvature.reciprocal().unsqueeze(1).expand({d_, c_}).reshape({d_ * c_}),
                          at::full({c_}, 1.0 / (0.25 + config_.l2), at::kDouble)});
  // Normalised by the median: a mean would be dominated by columns no row holds (1 / l2).
  p.div_(p.median());
  return p.to(options());
}

double LogisticObjective::Penalty(const at::Tensor& theta, double l1) const {
  const at::Tensor w = theta.narrow(0, 0, d_ * c_);
  double p = 0;
  if (l1 > 0) p += l1 * NormSum(w, false);
  if (config_.l2 > 0) p += 0.5 * config_.l2 * NormSum(w, true);
  return p;
}

LinearModel LogisticObjective::ToModel(const at::Tensor& theta) const {
  at::Tensor w_eff, b_eff;
  EffectiveParams(theta, &w_eff, &b_eff);
  const at::Tensor w = w_eff.to(at::kCPU, at::kFloat).contiguous();
  const at::Tensor b = b_eff.to(at::kCPU, at::kFloat).contiguous();
  LinearModel m;
  m.num_features = d_;
  m.num_classes = config_.classes;
  m.weights.assign(w.data_ptr<float>(), w.data_ptr<float>() + w.numel());
  m.bias.assign(b.data_ptr<float>(), b.data_ptr<float>() + b.numel());
  return m;
}

}  // namespace logit
