#include "worker/kernel/lbfgs.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>

namespace logit {

namespace {

constexpr double kArmijo = 1e-4;  // sufficient decrease
constexpr double kCurvature = 0.9;
constexpr int kMaxLineSearchEvals = 25;

// One trial point of a line search along d.
struct Trial {
  double t = 0;
  double f = 0;   // objective (smooth + l1) at x + t d
  double dg = 0;  // directional derivative g . d
  PassValue value;
  at::Tensor g;  // smooth gradient
  at::Tensor x;  // the point
};

class Minimizer {
 public:
  Minimizer(LogisticObjective& obj, const LbfgsOptions& opt) : obj_(obj), opt_(opt) {
    nw_ = obj.num_weights();
  }

  // f(x) and its smooth gradient.
  absl::StatusOr<Trial> Eval(const at::Tensor& x) {
    Trial tr;
    tr.x = x;
    tr.g = at::empty_like(x);
    auto v = obj_.ValueAndGradient(x, tr.g);
    if (!v.ok()) return v.status();
    ++evals_;
    tr.value = *v;
    tr.f = v->objective + L1(x);
    return tr;
  }

  double L1(const at::Tensor& x) const {
    if (opt_.l1 <= 0) return 0;
    return opt_.l1 * x.narrow(0, 0, nw_).abs().sum().item<double>();
  }

  // The OWL-QN pseudo-gradient (the plain gradient without L1).
  at::Tensor PseudoGradient(const at::Tensor& x, const at::Tensor& g) const {
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
  at::Tensor Direction(const at::Tensor& pg) const {
    at::Tensor q = pg.neg();
    const size_t m = s_.size();
    std::vector<double> alpha(m);
    for (size_t k = m; k-- > 0;) {
      alpha[k] = rho_[k] * s_[k].dot(q).item<double>();
      q.add_(y_[k], -alpha[k]);
    }
    if (m > 0) q.mul_(gamma_);
    for (size_t k = 0; k < m; ++k) {
      const double beta = rho_[k] * y_[k].dot(q).item<double>();
      q.add_(s_[k], alpha[k] - beta);
    }
    return q;
  }

  void Remember(const at::Tensor& s, const at::Tensor& y) {
    const double sy = s.dot(y).item<double>();
    const double yy = y.dot(y).item<double>();
    if (!(sy > 1e-10 * yy) || yy == 0) return;  // skip pairs that break positive definiteness
    if (static_cast<int64_t>(s_.size()) == opt_.history) {
      s_.pop_front();
      y_.pop_front();
      rho_.pop_front();
    }
    s_.push_back(s);
    y_.push_back(y);
    rho_.push_back(1.0 / sy);
    gamma_ = sy / yy;
  }

  void Reset() {
    s_.clear();
    y_.clear();
    rho_.clear();
  }

  // Cubic interpolation minimiser of two trials, safeguarded into [lo, hi].
  static double Cubic(const Trial& a, const Trial& b, double lo, double hi) {
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

  absl::StatusOr<Trial> Probe(const Trial& at, const at::Tensor& d, double t) {
    auto tr = Eval(at.x + t * d);
    if (!tr.ok()) return tr.status();
    tr->t = t;
    tr->dg = tr->g.dot(d).item<double>();
    return tr;
  }

  // Strong-Wolfe line search (Nocedal & Wright, Algorithms 3.5 and 3.6). Returns a trial with
  // t == 0 when no point with sufficient decrease was found.
  absl::StatusOr<Trial> StrongWolfe(const Trial& x0, const at::Tensor& d, double t) {
    Trial start = x0;
    start.t = 0;
    start.dg = x0.g.dot(d).item<double>();
    const double f0 = start.f, dg0 = start.dg;
    const double dmax = d.abs().max().item<double>();
    Trial prev = start;
    Trial lo, hi;
    bool bracketed = false;
    for (int i = 0; i < kMaxLineSearchEvals; ++i) {
      auto cur = Probe(start, d, t);
      if (!cur.ok()) return cur.status();
      if (!std::isfinite(cur->f) || cur->f > f0 + kArmijo * t * dg0 ||
          (i > 0 && cur->f >= prev.f)) {
        lo = prev;
        hi = *cur;
        bracketed = true;
        break;
      }
      if (std::abs(cur->dg) <= -kCurvature * dg0) return *cur;
      if (cur->dg >= 0) {
        lo = *cur;
        hi = prev;
        bracketed = true;
        break;
      }
      const double next = Cubic(prev, *cur, t + 0.01 * (t - prev.t), 10 * t);
      prev = *cur;
      t = next;
    }
    if (!bracketed) return prev;  // sufficient decrease held at every trial
    for (int i = 0; i < kMaxLineSearchEvals; ++i) {
      const double a = std::min(lo.t, hi.t), b = std::max(lo.t, hi.t);
      if ((b - a) * dmax < 1e-14) break;
      double tt = Cubic(lo, hi, a, b);
      if (tt < a + 0.1 * (b - a) || tt > b - 0.1 * (b - a)) tt = 0.5 * (a + b);
      auto cur = Probe(start, d, tt);
      if (!cur.ok()) return cur.status();
      if (!std::isfinite(cur->f) || cur->f > f0 + kArmijo * tt * dg0 || cur->f >= lo.f) {
        hi = *cur;
      } else {
        if (std::abs(cur->dg) <= -kCurvature * dg0) return *cur;
        if (cur->dg * (hi.t - lo.t) >= 0) hi = lo;
        lo = *cur;
      }
    }
    return lo;  // t == 0 (the start) when nothing decreased
  }

  // OWL-QN backtracking along the projected path (Andrew & Gao 2007).
  absl::StatusOr<Trial> Backtrack(const Trial& x0, const at::Tensor& pg, const at::Tensor& d,
                                  double t) {
    const at::Tensor w0 = x0.x.narrow(0, 0, nw_);
    const at::Tensor orthant = at::where(w0 != 0, w0.sign(), pg.narrow(0, 0, nw_).neg().sign());
    for (int i = 0; i < 40; ++i) {
      at::Tensor x = x0.x + t * d;
      at::Tensor w = x.narrow(0, 0, nw_);
      w.copy_(at::where(w * orthant > 0, w, at::zeros_like(w)));
      auto tr = Eval(x);
      if (!tr.ok()) return tr.status();
      const double decrease = pg.dot(x - x0.x).item<double>();
      if (std::isfinite(tr->f) && tr->f <= x0.f + kArmijo * decrease) {
        tr->t = t;
        return tr;
      }
      t *= 0.5;
    }
    Trial fail = x0;
    fail.t = 0;
    return fail;
  }

  absl::StatusOr<LbfgsReport> Run(at::Tensor& theta, const LbfgsIterationCallback& cb) {
    LbfgsReport report;
    auto cur = Eval(theta.clone());
    if (!cur.ok()) return cur.status();
    report.stop_reason = "max_epochs";
    for (int64_t it = 1; it <= opt_.max_iterations; ++it) {
      const at::Tensor pg = PseudoGradient(cur->x, cur->g);
      if (pg.abs().max().item<double>() <= opt_.tol) {
        report.stop_reason = "gradient_tol";
        break;
      }
      at::Tensor d = Direction(pg);
      if (opt_.l1 > 0) {
        at::Tensor dw = d.narrow(0, 0, nw_);
        dw.copy_(at::where(dw * pg.narrow(0, 0, nw_) < 0, dw, at::zeros_like(dw)));
      }
      if (d.dot(pg).item<double>() >= 0) {  // not a descent direction: restart
        Reset();
        d = pg.neg();
      }
      double t = opt_.initial_step;
      if (s_.empty()) t = std::min(1.0, 1.0 / pg.abs().sum().item<double>()) * opt_.initial_step;
      auto next = opt_.l1 > 0 ? Backtrack(*cur, pg, d, t) : StrongWolfe(*cur, d, t);
      if (!next.ok()) return next.status();
      if (next->t == 0 || !(next->f < cur->f)) {
        if (!s_.empty()) {  // retry once along steepest descent before giving up
          Reset();
          --it;
          continue;
        }
        report.stop_reason = "line_search";
        break;
      }
      Remember(next->x - cur->x, next->g - cur->g);
      const double f_old = cur->f;
      cur = std::move(next);
      report.iterations = it;
      if (cb) {
        absl::Status st = cb(it, cur->value, cur->f);
        if (!st.ok()) return st;
      }
      const double rel = (f_old - cur->f) / std::max({std::abs(f_old), std::abs(cur->f), 1.0});
      if (rel <= opt_.tol) {
        report.stop_reason = "objective_tol";
        break;
      }
    }
    theta.copy_(cur->x);
    report.evaluations = evals_;
    report.objective = cur->f;
    report.last = cur->value;
    return report;
  }

 private:
  LogisticObjective& obj_;
  const LbfgsOptions opt_;
  int64_t nw_ = 0;
  int64_t evals_ = 0;
  std::deque<at::Tensor> s_, y_;
  std::deque<double> rho_;
  double gamma_ = 1.0;
};

}  // namespace

absl::StatusOr<LbfgsReport> MinimizeLbfgs(LogisticObjective& objective, at::Tensor& theta,
                                          const LbfgsOptions& options,
                                          const LbfgsIterationCallback& on_iteration) {
  Minimizer m(objective, options);
  return m.Run(theta, on_iteration);
}

}  // namespace logit
