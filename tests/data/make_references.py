#!/usr/bin/python3
"""Writes the shipped test datasets and scikit-learn reference optima used by kernel tests.

Run once with Debian's interpreter (python3-sklearn 1.2.1, python3-numpy):
    /usr/bin/python3 tests/data/make_references.py
It writes iris.csv, breast_cancer.csv, digits.csv (features..., label) and references.json.

Objective (SPEC.md): J = mean CE + l1 |W|_1 + (l2/2)|W|^2, bias unpenalised; scikit-learn's C
maps to l2 = 1/(C n) (L2) or l1 = 1/(C n) (L1). W is reported on raw features: for standardised
fits the scaler is folded back (W / sigma, b - mu . W / sigma).
"""
import json
import os
import warnings

import numpy as np
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))


def write_csv(name, X, y, header):
    path = os.path.join(HERE, name)
    with open(path, "w") as f:
        f.write(",".join(header + ["target"]) + "\n")
        for row, label in zip(X, y):
            f.write(",".join(repr(float(v)) for v in row) + "," + str(int(label)) + "\n")


def softmax_objective(X, y, W, b, l1, l2):
    Z = X @ W + b
    if W.shape[1] == 1:  # binary: sigmoid on one column
        z = Z[:, 0]
        ce = np.logaddexp(0, z) - y * z
    else:
        Z = Z - Z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(Z).sum(axis=1))
        ce = lse - Z[np.arange(len(y)), y]
    return ce.mean() + l1 * np.abs(W).sum() + 0.5 * l2 * (W ** 2).sum()


def newton_polish(X, y, W, b, l2, binary):
    """Refines scikit-learn's L2 solution by damped Newton steps on the exact objective so that
    the reference weights are the optimum to ~1e-12, not just within scikit-learn's stopping
    tolerance (flat directions leave its weights off by ~1e-3 even when the objective agrees)."""
    n, d = X.shape
    K = W.shape[1]
    Xa = np.hstack([X, np.ones((n, 1))])

    def unpack(t):
        M = t.reshape(d + 1, K)
        return M[:d], M[d]

    def fgh(t):
        Wt, bt = unpack(t)
        Z = X @ Wt + bt
        if binary:
            z = Z[:, 0]
            p = 1 / (1 + np.exp(-z))
            f = np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * (Wt ** 2).sum()
            g = Xa.T @ (p - y) / n
            H = (Xa * (p * (1 - p))[:, None]).T @ Xa / n
        else:
            Zs = Z - Z.max(axis=1, keepdims=True)
            P = np.exp(Zs)
            P /= P.sum(axis=1, keepdims=True)
            f = np.mean(np.log(np.exp(Zs).sum(axis=1)) - Zs[np.arange(n), y]) + 0.5 * l2 * (Wt ** 2).sum()
            Y = np.eye(K)[y]
            g = (Xa.T @ (P - Y) / n).ravel()
            # Hessian of the mean CE: sum_i kron(x x^T, diag(p) - p p^T) / n
            H = np.einsum("ia,ib,ik,kl->akbl", Xa, Xa, P, np.eye(K), optimize=True) / n
            H -= np.einsum("ia,ib,ik,il->akbl", Xa, Xa, P, P, optimize=True) / n
            H = H.reshape((d + 1) * K, (d + 1) * K)
        reg = np.zeros(((d + 1), K))
        reg[:d] = 1.0
        reg = reg.ravel()
        Wt2 = unpack(t)[0]
        g = g + l2 * np.concatenate([Wt2.ravel(), np.zeros(K)]) if True else g
        H = H + np.diag(l2 * reg)
        return f, g, H

    t = np.concatenate([W.ravel(), b]).astype(np.float64)
    t = np.vstack([W, b[None, :]]).ravel()
    for _ in range(100):
        f, g, H = fgh(t)
        if np.abs(g).max() < 1e-13:
            break
        step = np.linalg.lstsq(H, g, rcond=None)[0]
        s = 1.0
        while s > 1e-8 and fgh(t - s * step)[0] > f + 1e-12 * abs(f):
            s *= 0.5
        t = t - s * step
    Wt, bt = unpack(t)
    return Wt, bt, float(np.abs(fgh(t)[1]).max())


def fit(name, X, y, C, standardize, penalty="l2"):
    n = X.shape[0]
    Xt = X
    mu = np.zeros(X.shape[1])
    sigma = np.ones(X.shape[1])
    if standardize:
        scaler = StandardScaler().fit(X)
        mu, sigma = scaler.mean_, scaler.scale_
        Xt = scaler.transform(X)
    binary = len(np.unique(y)) == 2
    if penalty == "l2":
        clf = LogisticRegression(C=C, tol=1e-12, max_iter=100000, solver="lbfgs",
                                 multi_class="auto" if binary else "multinomial")
    else:
        clf = LogisticRegression(C=C, penalty="l1", tol=1e-12, max_iter=200000, solver="saga",
                                 random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(Xt, y)
    W = clf.coef_.T  # d x K (d x 1 for binary)
    b = clf.intercept_
    l1 = 1.0 / (C * n) if penalty == "l1" else 0.0
    l2 = 1.0 / (C * n) if penalty == "l2" else 0.0
    sklearn_obj = softmax_objective(Xt, y, W, b, l1, l2)
    grad_max = None
    if penalty == "l2":
        W, b, grad_max = newton_polish(Xt, y, W, b, l2, binary)
    obj = softmax_objective(Xt, y, W, b, l1, l2)
    W_raw = W / sigma[:, None]
    b_raw = b - mu @ W_raw
    return {
        "dataset": name, "C": C, "l1": l1, "l2": l2, "standardize": standardize,
        "objective": float(obj), "sklearn_objective": float(sklearn_obj),
        "polished_gradient_max": grad_max, "n_iter": int(np.max(clf.n_iter_)),
        "W": W_raw.tolist(), "b": b_raw.tolist(),
        "W_train_space": W.tolist(), "b_train_space": b.tolist(),
        "zeros": int((W == 0).sum()),
    }


def main():
    iris = datasets.load_iris()
    cancer = datasets.load_breast_cancer()
    digits = datasets.load_digits()
    write_csv("iris.csv", iris.data, iris.target, [f"f{i}" for i in range(4)])
    write_csv("breast_cancer.csv", cancer.data, cancer.target, [f"f{i}" for i in range(30)])
    write_csv("digits.csv", digits.data, digits.target, [f"f{i}" for i in range(64)])
    refs = []
    for C in (0.1, 1.0, 10.0):
        refs.append(fit("iris.csv", iris.data, iris.target, C, False))
    for C in (0.1, 1.0):
        refs.append(fit("breast_cancer.csv", cancer.data, cancer.target, C, True))
    for C in (0.01, 0.1):
        refs.append(fit("digits.csv", digits.data, digits.target, C, False))
    refs.append(fit("breast_cancer.csv", cancer.data, cancer.target, 0.1, True, penalty="l1"))
    with open(os.path.join(HERE, "references.json"), "w") as f:
        json.dump({"generator": "tests/data/make_references.py",
                   "sklearn": __import__("sklearn").__version__,
                   "references": refs}, f, indent=1)
    for r in refs:
        print(r["dataset"], r["C"], r["l1"] > 0 and "l1" or "l2", r["objective"],
              r["sklearn_objective"], r["polished_gradient_max"], r["n_iter"], r["zeros"])


if __name__ == "__main__":
    main()
