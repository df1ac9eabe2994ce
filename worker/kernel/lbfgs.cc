#include "worker/kernel/lbfgs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/common/status.h"

namespace logit {

namespace {

constexpr double kArmijo = 1e-4;  // sufficient decrease
constexpr double kCurvature = 0.9;
constexpr int kMaxLineSearchEvals = 25;

std::vector<double> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// Entry `name` of `state` as a tensor of `count` elements in `options`.
absl::StatusOr<at::Tensor> TensorEntry(const OptimizerState& state, const std::string& name,
                                       int64_t count, const at::TensorOptions& options) {
  auto it = state.reals.find(name);
  if (it == state.reals.end() || static_cast<int64_t>(it->second.size()) != count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "optimizer state: '", name, "' is missing or does not hold ", count, " values"));
  }
  return at::from_blob(const_cast<double*>(it->second.data()), {count}, at::kDouble)
      .to(options)
      .clone();
}

}  // namespace

// One trial point of a line search along d.
struct LbfgsMinimizer::Trial : LbfgsPoint {
  double t = 0;
  double dg = 0;  // directional derivative g . d
};

LbfgsMinimizer::LbfgsMinimizer(LogisticObjective& obj, const LbfgsOptions& opt)
    : obj_(obj), opt_(opt), nw_(obj.num_weights()) {}

at::Tensor LbfgsMinimizer::Take() const {
  for (const at::Tensor& t : pool_) {
    if (t.use_count() == 1 && t.storage().use_count() == 1) return t;
  }
  pool_.push_back(at::empty({obj_.num_params()}, obj_.options()));
  return pool_.back();
}

absl::StatusOr<LbfgsMinimizer::Trial> LbfgsMinimizer::Eval(const at::Tensor& x) {
  Trial tr;
  tr.x = x;
  tr.g = Take();
  ASSIGN_OR_RETURN(tr.value, obj_.ValueAndGradient(x, tr.g));
  ++evals_;
  tr.f = tr.value.objective + L1(x);
  return tr;
}

double LbfgsMinimizer::L1(const at::Tensor& x) const {
  if (opt_.l1 <= 0) return 0;
  return opt_.l1 * x.narrow(0, 0, nw_).abs().sum().item<double>();
}

// The OWL-QN pseudo-gradient (the plain gradient without L1).
at::Tensor LbfgsMinimizer::PseudoGradient(const at::Tensor& x, const at::Tensor& g) const {
  if (opt_.l1 <= 0) return g;
  at::Tensor pg = g.clone();
  const at::Tensor w = x.narrow(0, 0, nw_);
  const at::Tensor gw = g.narrow(0, 0, nw_);
  const double l1 = opt_.l1;
  const at::Tensor right = gw + l1, left = gw - l1;
  const at::Tensor at_zero =
      at::where(right < 0, right, at::where(left > 0, left, at::zeros_like(gw)));
  pg.narrow(0, 0, nw_).copy_(at::where(w > 0, right, at::where(w < 0, left, at_zero)));
  return pg;
}

// d = -H pg by the two-loop recursion.
at::Tensor LbfgsMinimizer::Direction(const at::Tensor& pg) const {
  at::Tensor q = Take();
  at::neg_out(q, pg);
  const size_t m = s_.size();
  std::vector<double> alpha(m);
  for (size_t k = m; k-- > 0;) {
    alpha[k] = rho_[k] * s_[k].dot(q).item<double>();
    q.add_(y_[k], -alpha[k]);
  }
  if (opt_.preconditioner.defined()) q.mul_(opt_.preconditioner);
  if (m > 0) q.mul_(gamma_);
  for (size_t k = 0; k < m; ++k) {
    const double beta = rho_[k] * y_[k].dot(q).item<double>();
    q.add_(s_[k], alpha[k] - beta);
  }
  return q;
}

at::Tensor LbfgsMinimizer::SearchDirection(const at::Tensor& pg, double* step) {
  at::Tensor d = Direction(pg);
  if (opt_.l1 > 0) {
    at::Tensor dw = d.narrow(0, 0, nw_);
    dw.copy_(at::where(dw * pg.narrow(0, 0, nw_) < 0, dw, at::zeros_like(dw)));
  }
  if (d.dot(pg).item<double>() >= 0) {  // not a descent direction: restart
    Reset();
    d = pg.neg();
    if (opt_.preconditioner.defined()) d.mul_(opt_.preconditioner);
  }
  *step = opt_.initial_step;
  if (s_.empty()) {
    *step = std::min(1.0, 1.0 / at::linalg_vector_norm(pg, 1).item<double>()) * opt_.initial_step;
  }
  return d;
}

void LbfgsMinimizer::Remember(const at::Tensor& s, const at::Tensor& y) {
  const double sy = s.dot(y).item<double>();
  const double yy = y.dot(y).item<double>();
  if (!(sy > 1e-10 * yy) || yy == 0) return;  // skip pairs that break positive definiteness
  // gamma scales H0 = gamma P to the curvature along y: s'y / y'Py (P = I: s'y / y'y).
  double yhy = yy;
  if (opt_.preconditioner.defined()) {
    at::Tensor py = Take();
    at::mul_out(py, y, opt_.preconditioner);
    yhy = py.dot(y).item<double>();
  }
  if (static_cast<int64_t>(s_.size()) == opt_.history) {
    s_.pop_front();
    y_.pop_front();
    rho_.pop_front();
  }
  s_.push_back(s);
  y_.push_back(y);
  rho_.push_back(1.0 / sy);
  gamma_ = sy / yhy;
}

void LbfgsMinimizer::Reset() {
  s_.clear();
  y_.clear();
  rho_.clear();
}

// Cubic interpolation minimiser of two trials, safeguarded into [lo, hi].
double LbfgsMinimizer::Cubic(const Trial& a, const Trial& b, double lo, double hi) {
  const double d1 = a.dg + b.dg - 3 * (a.f - b.f) / (a.t - b.t);
  const double d2sq = d1 * d1 - a.dg * b.dg;
  if (d2sq >= 0 && a.t != b.t) {
    const double d2 = std::sqrt(d2sq);
    double t;
    if (a.t <= b.t) {
      t = b.t - (b.t - a.t) * ((b.dg + d2 - d1) / (b.dg - a.dg + 2 * d2));
    } else {
      t = a.t - (a.t - b.t) * ((a.dg + d2 - d1) / (a.dg - b.dg + 2 * d2));
    }
    if (std::isfinite(t)) return std::min(std::max(t, lo), hi);
  }
  return 0.5 * (lo + hi);
}

absl::StatusOr<LbfgsMinimizer::Trial> LbfgsMinimizer::Probe(const Trial& at, const at::Tensor& d,
                                                            double t) {
  at::Tensor x = Take();
  at::add_out(x, at.x, d, t);  // at.x + t d
  ASSIGN_OR_RETURN(Trial tr, Eval(x));
  tr.t = t;
  tr.dg = tr.g.dot(d).item<double>();
  return tr;
}

// Strong-Wolfe line search (Nocedal & Wright, Algorithms 3.5 and 3.6). Returns a trial with
// t == 0 when no point with sufficient decrease was found.
absl::StatusOr<LbfgsMinimizer::Trial> LbfgsMinimizer::StrongWolfe(const Trial& x0,
                                                                  const at::Tensor& d, double t) {
  Trial start = x0;
  start.t = 0;
  start.dg = x0.g.dot(d).item<double>();
  const double f0 = start.f, dg0 = start.dg;
  const double dmax = at::linalg_vector_norm(d, INFINITY).item<double>();
  Trial prev = start;
  Trial lo, hi;
  bool bracketed = false;
  for (int i = 0; i < kMaxLineSearchEvals; ++i) {
    ASSIGN_OR_RETURN(Trial cur, Probe(start, d, t));
    if (!std::isfinite(cur.f) || cur.f > f0 + kArmijo * t * dg0 || (i > 0 && cur.f >= prev.f)) {
      lo = prev;
      hi = cur;
      bracketed = true;
      break;
    }
    if (std::abs(cur.dg) <= -kCurvature * dg0) return cur;
    if (cur.dg >= 0) {
      lo = cur;
      hi = prev;
      bracketed = true;
      break;
    }
    const double next = Cubic(prev, cur, t + 0.01 * (t - prev.t), 10 * t);
    prev = cur;
    t = next;
  }
  if (!bracketed) return prev;  // sufficient decrease held at every trial
  for (int i = 0; i < kMaxLineSearchEvals; ++i) {
    const double a = std::min(lo.t, hi.t), b = std::max(lo.t, hi.t);
    if ((b - a) * dmax < 1e-14) break;
    double tt = Cubic(lo, hi, a, b);
    if (tt < a + 0.1 * (b - a) || tt > b - 0.1 * (b - a)) tt = 0.5 * (a + b);
    ASSIGN_OR_RETURN(Trial cur, Probe(start, d, tt));
    if (!std::isfinite(cur.f) || cur.f > f0 + kArmijo * tt * dg0 || cur.f >= lo.f) {
      hi = cur;
    } else {
      if (std::abs(cur.dg) <= -kCurvature * dg0) return cur;
      if (cur.dg * (hi.t - lo.t) >= 0) hi = lo;
      lo = cur;
    }
  }
  return lo;  // t == 0 (the start) when nothing decreased
}

// OWL-QN backtracking along the projected path (Andrew & Gao 2007).
absl::StatusOr<LbfgsMinimizer::Trial> LbfgsMinimizer::Backtrack(const Trial& x0,
                                                                const at::Tensor& pg,
                                                                const at::Tensor& d, double t) {
  const at::Tensor w0 = x0.x.narrow(0, 0, nw_);
  const at::Tensor orthant = at::where(w0 != 0, w0.sign(), pg.narrow(0, 0, nw_).neg().sign());
  for (int i = 0; i < 40; ++i) {
    at::Tensor x = Take();
    at::add_out(x, x0.x, d, t);  // x0 + t d, then projected on the orthant
    at::Tensor w = x.narrow(0, 0, nw_);
    w.copy_(at::where(w * orthant > 0, w, at::zeros_like(w)));
    ASSIGN_OR_RETURN(Trial tr, Eval(x));
    const double decrease = pg.dot(x - x0.x).item<double>();
    if (std::isfinite(tr.f) && tr.f <= x0.f + kArmijo * decrease) {
      tr.t = t;
      return tr;
    }
    t *= 0.5;
  }
  Trial fail = x0;
  fail.t = 0;
  return fail;
}

LbfgsMinimizer::Trial LbfgsMinimizer::CurrentTrial() const {
  Trial tr;
  static_cast<LbfgsPoint&>(tr) = cur_;
  return tr;
}

absl::Status LbfgsMinimizer::Start(const at::Tensor& theta) {
  Reset();
  ASSIGN_OR_RETURN(Trial start, Eval(theta.to(obj_.options()).clone()));
  cur_ = start;
  return absl::OkStatus();
}

absl::StatusOr<LbfgsOutcome> LbfgsMinimizer::Iterate() {
  converged_ = false;
  while (true) {
    const at::Tensor pg = PseudoGradient(cur_.x, cur_.g);
    if (at::linalg_vector_norm(pg, INFINITY).item<double>() <= opt_.tol) {
      return LbfgsOutcome::kGradientTol;
    }
    double t = 0;
    const at::Tensor d = SearchDirection(pg, &t);
    const Trial from = CurrentTrial();
    ASSIGN_OR_RETURN(Trial next, opt_.l1 > 0 ? Backtrack(from, pg, d, t) : StrongWolfe(from, d, t));
    if (next.t == 0 || !(next.f < cur_.f)) {
      if (s_.empty()) return LbfgsOutcome::kLineSearch;
      Reset();  // retry once along steepest descent before giving up
      continue;
    }
    at::Tensor s = Take();
    at::sub_out(s, next.x, cur_.x);
    at::Tensor y = Take();
    at::sub_out(y, next.g, cur_.g);
    Remember(s, y);
    const double f_old = cur_.f;
    cur_ = next;
    const double rel = (f_old - cur_.f) / std::max({std::abs(f_old), std::abs(cur_.f), 1.0});
    converged_ = rel <= opt_.tol;
    return LbfgsOutcome::kStepped;
  }
}

void LbfgsMinimizer::Save(const std::string& prefix, OptimizerState& state) const {
  state.reals[prefix + "x"] = ToVector(cur_.x);
  state.reals[prefix + "g"] = ToVector(cur_.g);
  state.reals[prefix + "point"] = {cur_.f, cur_.value.loss, cur_.value.objective, gamma_};
  std::vector<double> s, y;
  for (size_t k = 0; k < s_.size(); ++k) {
    const std::vector<double> sk = ToVector(s_[k]), yk = ToVector(y_[k]);
    s.insert(s.end(), sk.begin(), sk.end());
    y.insert(y.end(), yk.begin(), yk.end());
  }
  state.reals[prefix + "s"] = std::move(s);
  state.reals[prefix + "y"] = std::move(y);
  state.reals[prefix + "rho"] = std::vector<double>(rho_.begin(), rho_.end());
  state.integers[prefix + "counters"] = {evals_, converged_ ? 1 : 0};
}

absl::Status LbfgsMinimizer::Restore(const std::string& prefix, const OptimizerState& state) {
  const int64_t p = obj_.num_params();
  const auto opts = obj_.options();
  auto point = state.reals.find(prefix + "point");
  auto rho = state.reals.find(prefix + "rho");
  auto counters = state.integers.find(prefix + "counters");
  if (point == state.reals.end() || point->second.size() != 4 || rho == state.reals.end() ||
      static_cast<int64_t>(rho->second.size()) > opt_.history || counters == state.integers.end() ||
      counters->second.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "optimizer state: no valid L-BFGS point, pairs or counters at '", prefix, "'"));
  }
  const int64_t m = static_cast<int64_t>(rho->second.size());
  ASSIGN_OR_RETURN(cur_.x, TensorEntry(state, prefix + "x", p, opts));
  ASSIGN_OR_RETURN(cur_.g, TensorEntry(state, prefix + "g", p, opts));
  ASSIGN_OR_RETURN(at::Tensor s, TensorEntry(state, prefix + "s", m * p, opts));
  ASSIGN_OR_RETURN(at::Tensor y, TensorEntry(state, prefix + "y", m * p, opts));
  cur_.f = point->second[0];
  cur_.value.loss = point->second[1];
  cur_.value.objective = point->second[2];
  gamma_ = point->second[3];
  Reset();
  for (int64_t k = 0; k < m; ++k) {
    s_.push_back(s.narrow(0, k * p, p).clone());
    y_.push_back(y.narrow(0, k * p, p).clone());
    rho_.push_back(rho->second[k]);
  }
  evals_ = counters->second[0];
  converged_ = counters->second[1] != 0;
  return absl::OkStatus();
}

}  // namespace logit
