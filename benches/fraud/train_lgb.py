"""LightGBM on the feature vectors pg_platform exports (platform.fraud_features), for
benches/bench_fraud.sh: the same rows, the same time split, the same hyperparameters as
pg_platform's gbdt (rounds, learning rate, depth, L2, least hessian per leaf).

Input: a tab-separated file of id (the payment's rank by time), label (0/1) and the
comma-separated features, in id order. Writes the validation rows' scores as
"lightgbm<TAB>id<TAB>score" lines (for COPY), and, with --model-out, a second model of
--model-rounds trees as LightGBM's text format plus the SQL that imports it.
"""

import argparse
import sys
import time

import lightgbm as lgb
import numpy as np


def load(path):
    ids, labels, rows = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            i, y, x = line.rstrip("\n").split("\t")
            ids.append(int(i))
            labels.append(int(y))
            rows.append([float(v) for v in x.split(",")])
    return np.array(ids), np.array(labels, dtype=np.float64), np.array(rows, dtype=np.float64)


def finite_thresholds(text):
    """LightGBM writes threshold=inf for a split that only separates missing values from
    present ones; pg_platform's importer refuses infinite thresholds. The largest finite
    double splits every finite input the same way, so the imported copy gets it instead
    (the service keeps the original text). Returns the text and how many were rewritten."""
    out, patched = [], 0
    for line in text.split("\n"):
        if line.startswith("threshold="):
            values = line[len("threshold="):].split(" ")
            for k, v in enumerate(values):
                if v in ("inf", "+inf", "-inf"):
                    values[k] = ("-" if v.startswith("-") else "") + repr(sys.float_info.max)
                    patched += 1
            line = "threshold=" + " ".join(values)
        out.append(line)
    return "\n".join(out), patched


def params(a):
    return {
        "objective": "binary",
        "learning_rate": a.learning_rate,
        "max_depth": a.max_depth,
        "num_leaves": 2 ** a.max_depth - 1,
        "lambda_l2": a.l2,
        "min_sum_hessian_in_leaf": a.min_leaf_weight,
        "deterministic": True,
        "force_row_wise": True,
        "seed": 1,
        "num_threads": a.threads,
        "verbose": -1,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", required=True)
    ap.add_argument("--names", required=True, help="comma-separated feature names")
    ap.add_argument("--n-train", type=int, required=True, help="ids 1..N train, the rest validate")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--learning-rate", type=float, default=0.1)
    ap.add_argument("--max-depth", type=int, default=5)
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--min-leaf-weight", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scores-out", required=True)
    ap.add_argument("--model-out")
    ap.add_argument("--model-rounds", type=int, default=300)
    ap.add_argument("--model-name", default="lightgbm")
    ap.add_argument("--import-sql-out")
    a = ap.parse_args()

    names = a.names.split(",")
    ids, y, x = load(a.features)
    if x.shape[1] != len(names):
        sys.exit(f"train_lgb: {x.shape[1]} features per row but {len(names)} names")
    train = ids <= a.n_train
    valid = ~train
    if y[train].sum() == 0 or y[valid].sum() == 0:
        sys.exit("train_lgb: no fraud in the training or the validation rows")
    data = lgb.Dataset(x[train], label=y[train], feature_name=names, free_raw_data=False)
    t0 = time.perf_counter()
    model = lgb.train(params(a), data, num_boost_round=a.rounds)
    seconds = time.perf_counter() - t0
    scores = model.predict(x[valid])
    with open(a.scores_out, "w", encoding="utf-8") as f:
        for i, s in zip(ids[valid], scores):
            f.write(f"lightgbm\t{i}\t{float(s)!r}\n")
    print(f"train_seconds {seconds:.3f}")
    print(f"train_rows {int(train.sum())}")

    if a.model_out:
        big = lgb.train(params(a), data, num_boost_round=a.model_rounds)
        if big.num_trees() != a.model_rounds:
            sys.exit(f"train_lgb: the {a.model_rounds}-round model has {big.num_trees()} trees")
        text = big.model_to_string()
        with open(a.model_out, "w", encoding="utf-8") as f:
            f.write(text)
        if a.import_sql_out:
            text, patched = finite_thresholds(text)
            print(f"infinite_thresholds_rewritten {patched}")
            if "$lgb$" in text:
                sys.exit("train_lgb: the model text holds the SQL quote tag")
            feats = ", ".join("'" + n + "'" for n in names)
            with open(a.import_sql_out, "w", encoding="utf-8") as f:
                f.write(f"SELECT platform.fraud_import_model('{a.model_name}', 'lightgbm', $lgb${text}$lgb$, "
                        f"ARRAY[{feats}]);\n")
        print(f"model_trees {big.num_trees()}")


if __name__ == "__main__":
    main()
