#!/usr/bin/env python3
"""Regenerate the fraud scorer's bit-exactness fixtures in src/fraud/testdata/.

Trains small binary models with XGBoost and LightGBM on synthetic data (NaNs, exact
zeros), then writes the model files and ~200 input rows, many of them placed exactly at,
just below and just above the models' split thresholds (in float64 and float32), with the
libraries' own predictions written with repr() (shortest round-trip, exact).

    python3 -m venv /tmp/fraudvenv
    /tmp/fraudvenv/bin/pip install xgboost lightgbm numpy scikit-learn
    /tmp/fraudvenv/bin/python scripts/fraud_fixtures.py

Files written:
    xgb.json     XGBoost Booster.save_model (binary:logistic, gbtree, 30 trees, depth 4)
    lgb.txt      LightGBM save_model (binary, 30 trees, depth 4, NaN-as-missing)
    lgb_zero.txt LightGBM save_model with zero_as_missing=true (missing type Zero)
    rows.csv     inputs and expected outputs, one row per line (header names the columns)
    versions.txt library versions that produced the files
"""

import json
import os
import sys

import lightgbm as lgb
import numpy as np
import xgboost as xgb

FEATURES = ["amount", "log_amount", "count_1h", "count_24h", "distance_prev_km", "hour_of_day"]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "fraud", "testdata")


def make_data(rng, n):
    x = np.empty((n, 6))
    x[:, 0] = np.round(rng.lognormal(3.5, 1.2, n), 2)
    x[:, 1] = np.log1p(x[:, 0])
    x[:, 2] = rng.poisson(0.7, n).astype(float)  # many exact zeros
    x[:, 3] = rng.poisson(3.0, n).astype(float)
    x[:, 4] = rng.exponential(40.0, n)
    x[:, 5] = rng.integers(0, 24, n).astype(float)
    # NaNs in two features (no previous payment, unknown amount log).
    x[rng.random(n) < 0.15, 4] = np.nan
    x[rng.random(n) < 0.05, 1] = np.nan
    logit = (
        -3.0
        + 0.012 * np.nan_to_num(x[:, 0])
        + 0.6 * x[:, 2]
        + 0.1 * x[:, 3]
        + 0.01 * np.nan_to_num(x[:, 4], nan=80.0)
        + 1.2 * ((x[:, 5] < 5) | (x[:, 5] > 22))
    )
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(float)
    return x, y


def xgb_thresholds(model_json):
    out = []
    for tree in model_json["learner"]["gradient_booster"]["model"]["trees"]:
        for i, left in enumerate(tree["left_children"]):
            if left != -1:
                out.append((tree["split_indices"][i], float(tree["split_conditions"][i])))
    return out


def lgb_thresholds(booster):
    out = []

    def walk(node):
        if "split_index" in node:
            out.append((node["split_feature"], float(node["threshold"])))
            walk(node["left_child"])
            walk(node["right_child"])

    for t in booster.dump_model()["tree_info"]:
        walk(t["tree_structure"])
    return out


def main():
    rng = np.random.default_rng(20240611)
    x, y = make_data(rng, 3000)

    dtrain = xgb.DMatrix(x, label=y, feature_names=FEATURES)
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3, "tree_method": "hist", "seed": 1}
    bst = xgb.train(params, dtrain, num_boost_round=30)

    lgb_params = {
        "objective": "binary",
        "num_leaves": 15,
        "max_depth": 4,
        "learning_rate": 0.2,
        "min_data_in_leaf": 20,
        "verbose": -1,
        "seed": 1,
        "deterministic": True,
        "num_threads": 1,
    }
    lgbm = lgb.train(lgb_params, lgb.Dataset(x, label=y, feature_name=FEATURES), num_boost_round=30)
    lgbz = lgb.train(
        dict(lgb_params, zero_as_missing=True),
        lgb.Dataset(x, label=y, feature_name=FEATURES),
        num_boost_round=30,
    )

    os.makedirs(OUT, exist_ok=True)
    bst.save_model(os.path.join(OUT, "xgb.json"))
    lgbm.save_model(os.path.join(OUT, "lgb.txt"))
    lgbz.save_model(os.path.join(OUT, "lgb_zero.txt"))
    with open(os.path.join(OUT, "xgb.json")) as f:
        model_json = json.load(f)

    # Input rows: ordinary rows, then rows at the split thresholds.
    rows, _ = make_data(rng, 100)
    rows = list(rows)
    edge_rng = np.random.default_rng(7)
    xt = xgb_thresholds(model_json)
    lt = lgb_thresholds(lgbm) + lgb_thresholds(lgbz)
    for feat, t in [xt[i] for i in edge_rng.choice(len(xt), 14, replace=False)]:
        t32 = np.float32(t)
        below32 = float(np.nextafter(t32, np.float32(-np.inf)))
        for v in (
            float(t32),  # exactly at: not < t, goes right
            float(np.nextafter(float(t32), -np.inf)),  # just below in f64, rounds up to t in f32
            below32,  # the previous float32: left
            (below32 + float(t32)) / 2.0,  # the f64 midpoint: f32 rounding to even decides
        ):
            r = rows[int(edge_rng.integers(0, 100))].copy()
            r[feat] = v
            rows.append(r)
    for feat, t in [lt[i] for i in edge_rng.choice(len(lt), 14, replace=False)]:
        for v in (t, float(np.nextafter(t, np.inf)), float(np.nextafter(t, -np.inf))):
            r = rows[int(edge_rng.integers(0, 100))].copy()
            r[feat] = v
            rows.append(r)
    # Zeros, tiny values around LightGBM's kZeroThreshold, negative zero, NaN everywhere.
    for v in (0.0, -0.0, 1e-36, -1e-36, 1e-34, 9.99999e-36, float(np.float32(1e-35)), np.nan):
        r = rows[int(edge_rng.integers(0, 100))].copy()
        r[2] = v
        r[4] = v
        rows.append(r)
    rows.append(np.full(6, np.nan))
    rows = np.array(rows)

    dm = xgb.DMatrix(rows, feature_names=FEATURES)
    xgb_prob = bst.predict(dm)
    xgb_margin = bst.predict(dm, output_margin=True)
    xgb_contrib = bst.predict(dm, pred_contribs=True, approx_contribs=True)
    lgb_prob = lgbm.predict(rows)
    lgb_raw = lgbm.predict(rows, raw_score=True)
    lgbz_prob = lgbz.predict(rows)

    header = FEATURES + ["xgb_prob", "xgb_margin", "lgb_prob", "lgb_raw", "lgbz_prob"]
    header += ["xgb_contrib_" + f for f in FEATURES] + ["xgb_bias"]
    with open(os.path.join(OUT, "rows.csv"), "w") as f:
        f.write(",".join(header) + "\n")
        for i in range(len(rows)):
            vals = [repr(float(v)) for v in rows[i]]
            vals += [repr(float(v)) for v in (xgb_prob[i], xgb_margin[i], lgb_prob[i], lgb_raw[i], lgbz_prob[i])]
            vals += [repr(float(v)) for v in xgb_contrib[i]]
            f.write(",".join(vals) + "\n")
    with open(os.path.join(OUT, "versions.txt"), "w") as f:
        f.write(f"xgboost {xgb.__version__}\nlightgbm {lgb.__version__}\nnumpy {np.__version__}\n")
    print(f"wrote {len(rows)} rows to {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
