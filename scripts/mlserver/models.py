"""Write two scikit-learn iris classifiers as MLServer models, and the test set they are judged on.

iris-a (the champion) is a logistic regression; iris-b (the candidate) a shallower decision
tree, a few points less accurate. Both answer class predictions, which MLServer's scikit-learn
runtime returns as INT64 tensors. testset.json holds every iris row with its true class and both
models' predictions, so a test can compute exact agreement and accuracy.

usage: python models.py DIR HTTP_PORT GRPC_PORT METRICS_PORT
"""
import json
import os
import sys

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier


def main():
    out, http_port, grpc_port, metrics_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    x, y = load_iris(return_X_y=True)
    models = {
        "iris-a": LogisticRegression(max_iter=1000).fit(x, y),
        "iris-b": DecisionTreeClassifier(max_depth=2, random_state=0).fit(x[::2], y[::2]),
    }
    rows = [{"features": [float(v) for v in x[i]], "label": int(y[i])} for i in range(len(y))]
    for name, model in models.items():
        d = os.path.join(out, "models", name)
        os.makedirs(d, exist_ok=True)
        joblib.dump(model, os.path.join(d, "model.joblib"))
        with open(os.path.join(d, "model-settings.json"), "w") as f:
            json.dump({"name": name, "implementation": "mlserver_sklearn.SKLearnModel",
                       "parameters": {"uri": "./model.joblib", "version": "v1"}}, f)
        for row, p in zip(rows, model.predict(x)):
            row[name] = int(p)
    with open(os.path.join(out, "models", "settings.json"), "w") as f:
        json.dump({"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
                   "debug": False, "parallel_workers": 0}, f)
    with open(os.path.join(out, "testset.json"), "w") as f:
        json.dump(rows, f)


if __name__ == "__main__":
    main()
