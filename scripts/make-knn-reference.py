"""Reference k-NN probabilities from scikit-learn for test/knn-sklearn.json (run once:
python3 scripts/make-knn-reference.py > test/knn-sklearn.json). Three Gaussian blobs, 8-D."""
import json
import numpy as np
import sklearn
from sklearn.neighbors import KNeighborsClassifier

rng = np.random.default_rng(7)
means = rng.normal(size=(3, 8)) * 1.5
y = np.arange(60) % 3
X = (means[y] + rng.normal(size=(60, 8))).astype(np.float32)
yq = np.arange(20) % 3
Q = (means[yq] + rng.normal(size=(20, 8))).astype(np.float32)
cases = []
for metric, weights, k in [("euclidean", "uniform", 7), ("euclidean", "distance", 7), ("cosine", "uniform", 5)]:
    m = KNeighborsClassifier(n_neighbors=k, metric=metric, weights=weights, algorithm="brute").fit(X, y)
    cases.append({"metric": metric, "weights": weights, "k": k, "proba": m.predict_proba(Q).astype(float).round(7).tolist()})
print(json.dumps({"sklearn": sklearn.__version__, "X": X.tolist(), "y": y.tolist(), "Q": Q.tolist(), "cases": cases}))
