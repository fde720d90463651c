#!/usr/bin/env python3
"""scikit-learn anchor for `npm run bench:heads` (scripts/bench-heads.ts).

Reads <dir>/X_train.npy, y_train.npy, X_test.npy, y_test.npy (written once by the TS bench) and fits
the scikit-learn counterparts of the xfer heads with the same settings, printing one JSON object:
  {"sklearn": "1.9.1", "numpy": .., "python": .., "blas": [...],
   "results": {"linear": {"fit_s": .., "cpu_s": .., "acc": .., "threads": "1" | "default", "n_iter": ..}, ...}}
cpu_s is the process CPU time (all threads) of the fit: on a shared machine it varies less than the wall time.
Heads whose time depends on BLAS threads (linear, mlp) are fitted twice, with BLAS limited to one
thread and at its default, and the faster fit is reported: on a shared machine OpenBLAS's spinning
threads can be 10x slower than one thread, and the anchor should be scikit-learn at its best. The
LogisticRegressionCV sweep runs at one BLAS thread only (the faster setting every time we tried).
  --sweep-C 1e-4,...   also time LogisticRegressionCV(Cs=<those>, cv=StratifiedKFold(5)) ("sweep")
  --linear-standardize StandardScaler + LogisticRegression (as xfer's standardize transform + linear head)

  --seed r             random_state of MLPClassifier, LinearSVC and SVC (the TS bench passes round r, as xfer's seed)

  python3 scripts/bench_heads_sklearn.py --data DIR --heads linear,svm,svm-rbf,mlp --mlp-hidden 256 --mlp-epochs 20 --seed 0
  python3 scripts/bench_heads_sklearn.py --make-fixture test/heads-sklearn.json   # the unit-test reference
  python3 scripts/bench_heads_sklearn.py --make-mlp-fixture test/mlp-sklearn.json  # MLPClassifier from xfer's start

Run it with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (the TS bench does) so numpy uses its best kernel.
"""
import argparse
import json
import sys
import time
import warnings

import numpy as np


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return [{k: d.get(k) for k in ("internal_api", "num_threads", "architecture", "version")} for d in threadpool_info()]
    except Exception as e:  # threadpoolctl missing: say so
        return [f"threadpoolctl unavailable: {e}"]


def bench(args):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC
    import sklearn

    d = args.data
    X = np.load(f"{d}/X_train.npy")
    y = np.load(f"{d}/y_train.npy")
    Xt = np.load(f"{d}/X_test.npy")
    yt = np.load(f"{d}/y_test.npy")
    hidden = tuple(int(h) for h in args.mlp_hidden.split(","))
    E = args.mlp_epochs
    models = {
        # same objective/tolerances as the xfer heads (see src/heads/*.ts)
        "linear": lambda: (make_pipeline(StandardScaler(), LogisticRegression(C=args.C, max_iter=100, tol=1e-4)) if args.linear_standardize
                           else LogisticRegression(C=args.C, max_iter=100, tol=1e-4)),
        "svm": lambda: make_pipeline(StandardScaler(), LinearSVC(C=args.C, tol=1e-4, max_iter=1000, random_state=args.seed)),
        "svm-rbf": lambda: make_pipeline(StandardScaler(), SVC(C=args.C, kernel="rbf", gamma="scale", tol=1e-3, cache_size=1024, random_state=args.seed)),
        "mlp": lambda: make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=hidden, max_iter=E, batch_size=200, alpha=1e-4,
                                                                     learning_rate_init=1e-3, early_stopping=False, n_iter_no_change=E + 1,
                                                                     tol=0.0, random_state=args.seed, shuffle=True)),
    }
    if args.sweep_C:
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold
        Cs = [float(c) for c in args.sweep_C.split(",")]
        models["sweep"] = lambda: LogisticRegressionCV(Cs=Cs, cv=StratifiedKFold(5, shuffle=True, random_state=0), max_iter=100, tol=1e-4)
    try:
        from threadpoolctl import threadpool_limits
    except Exception:  # old Debian without threadpoolctl: default threads only
        threadpool_limits = None

    cpu = {}

    def timed(make):
        m = make()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c0 = time.process_time()
            t0 = time.perf_counter()
            m.fit(X, y)
            dt = time.perf_counter() - t0
            cpu[id(m)] = time.process_time() - c0
            return m, dt

    out = {}
    heads = args.heads.split(",") + (["sweep"] if args.sweep_C else [])
    for h in heads:
        threads = "default"
        if h in ("linear", "mlp", "sweep") and threadpool_limits is not None:
            with threadpool_limits(limits=1):
                m, fit_s = timed(models[h])
            threads = "1"
            # the sweep is long: at one thread only (on a shared 2-core machine that was always the faster)
            if h != "sweep":
                m2, fit2 = timed(models[h])
                if fit2 < fit_s:
                    m, fit_s, threads = m2, fit2, "default"
        else:
            m, fit_s = timed(models[h])
        acc = float((m.predict(Xt) == yt).mean())
        est = m[-1] if hasattr(m, "steps") else m
        n_iter = getattr(est, "n_iter_", None)
        r = {"fit_s": fit_s, "cpu_s": cpu[id(m)], "acc": acc, "threads": threads, "n_iter": np.asarray(n_iter).max().item() if n_iter is not None else None}
        if h == "sweep":
            r["best_C"] = float(np.ravel(est.C_)[0])
        out[h] = r
        print(f"  sklearn {sklearn.__version__} {h}: fit {fit_s:.3f} s ({threads} BLAS threads), acc {100 * acc:.2f}%", file=sys.stderr, flush=True)
    print(json.dumps({"sklearn": sklearn.__version__, "numpy": np.__version__, "python": sys.version.split()[0], "blas": blas_info(), "results": out}))


def make_fixture(path):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC, LinearSVC

    rng = np.random.default_rng(7)
    n, d, k = 150, 8, 3
    means = rng.normal(0, 1.0, (k, d))
    y = np.arange(n) % k
    X = (means[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    Xt = (means[np.arange(60) % k] + rng.normal(0, 1, (60, d))).astype(np.float32)
    out = {"X": X.round(5).tolist(), "y": y.tolist(), "Xt": Xt.round(5).tolist()}
    X = np.array(out["X"], dtype=np.float64)
    Xt = np.array(out["Xt"], dtype=np.float64)
    lr = LogisticRegression(C=0.5, tol=1e-8, max_iter=1000).fit(X, y)
    out["lr"] = {"C": 0.5, "coef": lr.coef_.tolist(), "intercept": lr.intercept_.tolist(), "proba": lr.predict_proba(Xt).tolist()}
    svc = LinearSVC(C=0.1, tol=1e-8, max_iter=100000).fit(X, y)
    out["linsvc"] = {"C": 0.1, "coef": svc.coef_.tolist(), "intercept": svc.intercept_.tolist(), "dec": svc.decision_function(Xt).tolist()}
    rbf = SVC(C=1.0, tol=1e-6, decision_function_shape="ovo").fit(X, y)
    out["rbf"] = {"C": 1.0, "gamma": float(rbf._gamma), "n_sv": int(rbf.n_support_.sum()), "pred": rbf.predict(Xt).tolist(), "ovo": rbf.decision_function(Xt).tolist()}
    poly = SVC(C=1.0, kernel="poly", degree=2, coef0=1.0, tol=1e-6, decision_function_shape="ovo").fit(X, y)
    out["poly"] = {"C": 1.0, "gamma": float(poly._gamma), "degree": 2, "coef0": 1.0, "ovo": poly.decision_function(Xt).tolist()}
    p = PCA(n_components=3).fit(X)
    out["pca"] = {"k": 3, "explained_variance": p.explained_variance_.tolist(), "components": p.components_.tolist()}
    with open(path, "w") as f:
        json.dump(out, f)


class XferRng:
    """src/heads/rng.ts (mulberry32) in Python: the same uniforms, so a fixture can start where xfer starts."""

    M = 0xFFFFFFFF

    def __init__(self, seed):
        self.s = (seed & self.M) ^ 0x9E3779B9

    def next(self):
        M = self.M
        self.s = (self.s + 0x6D2B79F5) & M
        t = self.s
        t = ((t ^ (t >> 15)) * (t | 1)) & M
        t ^= (t + ((t ^ (t >> 7)) * (t | 61))) & M
        return ((t ^ (t >> 14)) & M) / 4294967296

    def shuffle(self, a):
        for i in range(len(a) - 1, 0, -1):
            j = int(self.next() * (i + 1))
            a[i], a[j] = a[j], a[i]
        return a


def make_mlp_fixture(path):
    """MLPClassifier started from xfer's mlp initial weights and epoch shuffles (replayed with XferRng, in
    the order src/heads/mlp.ts draws them: row order, then W0, b0, W1, b1, then one shuffle per epoch):
    with the same start, xfer's fit must follow scikit-learn's step for step (loss curve and weights)."""
    import sklearn.neural_network._multilayer_perceptron as mp
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(11)
    n, d, h, k, seed, epochs, batch, alpha = 150, 8, 16, 3, 3, 3, 16, 1e-2
    means = rng.normal(0, 1.0, (k, d))
    y = np.arange(n) % k
    X = np.round(means[y] + rng.normal(0, 1, (n, d)), 5).astype(np.float32)
    X[0] *= 60  # one far row: its initial loss exceeds -log(eps), where log_loss clips
    Xt = np.round(means[np.arange(30) % k] + rng.normal(0, 1, (30, d)), 5).astype(np.float32)
    r = XferRng(seed)
    order = r.shuffle(list(range(n)))
    inits = []
    for fi, fo in ((d, h), (h, k)):
        bound = np.sqrt(6 / (fi + fo))
        W = np.array([(2 * r.next() - 1) * bound for _ in range(fi * fo)], dtype=np.float32).reshape(fi, fo)
        b = np.array([(2 * r.next() - 1) * bound for _ in range(fo)], dtype=np.float32)
        inits.append((W, b))
    perms = [np.array(r.shuffle(order), dtype=np.int64) for _ in range(epochs)]
    it, pit = iter(inits), iter(perms)
    init0, shuffle0 = MLPClassifier._init_coef, mp.shuffle
    MLPClassifier._init_coef = lambda self, fi, fo, dtype: tuple(a.astype(dtype) for a in next(it))
    mp.shuffle = lambda idx, random_state=None: next(pit).astype(idx.dtype)
    try:
        m = MLPClassifier(hidden_layer_sizes=(h,), max_iter=epochs, batch_size=batch, alpha=alpha, learning_rate_init=1e-3,
                          early_stopping=False, n_iter_no_change=epochs + 1, tol=0.0, shuffle=True, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(X, y)
    finally:
        MLPClassifier._init_coef, mp.shuffle = init0, shuffle0
    import sklearn
    out = {"sklearn": sklearn.__version__, "seed": seed, "hidden": h, "epochs": epochs, "batch": batch, "alpha": alpha,
           "X": X.tolist(), "y": y.tolist(), "Xt": Xt.tolist(), "loss_curve": [float(v) for v in m.loss_curve_],
           "coefs": [c.tolist() for c in m.coefs_], "intercepts": [c.tolist() for c in m.intercepts_],
           "proba": m.predict_proba(Xt).tolist()}
    with open(path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--heads", default="linear,svm,svm-rbf,mlp")
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--mlp-hidden", default="256")
    ap.add_argument("--mlp-epochs", type=int, default=20)
    ap.add_argument("--sweep-C", default="")
    ap.add_argument("--seed", type=int, default=0, help="random_state of the seeded estimators (the TS bench passes the round index)")
    ap.add_argument("--linear-standardize", action="store_true", help="StandardScaler before LogisticRegression (real CNN codes)")
    ap.add_argument("--make-fixture")
    ap.add_argument("--make-mlp-fixture")
    a = ap.parse_args()
    if a.make_mlp_fixture:
        make_mlp_fixture(a.make_mlp_fixture)
    elif a.make_fixture:
        make_fixture(a.make_fixture)
    else:
        bench(a)
