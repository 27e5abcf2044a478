"""Stand-in for platform.fraud_features while a server lacks it: replays a labelled history
(id, label, card, amount, time in Unix microseconds, merchant, category, lat, lon; tab-
separated, in time order) through cardprofile.py and writes what train_lgb.py reads (id,
label, comma-separated features). benches/bench_fraud.sh uses it only to train the
service's model; the AUC-PR comparison always uses pg_platform's own export.

    python replay_features.py IN.tsv OUT.tsv
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cardprofile import CardProfile  # noqa: E402


def main():
    src, dst = sys.argv[1], sys.argv[2]
    profiles = {}
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for line in f:
            i, y, card, amount, at, merchant, category, lat, lon = line.rstrip("\n").split("\t")
            amount, at = float(amount), int(at)
            lat = None if lat == "\\N" else float(lat)
            lon = None if lon == "\\N" else float(lon)
            merchant = "" if merchant == "\\N" else merchant
            category = "" if category == "\\N" else category
            p = profiles.get(card)
            if p is None:
                p = profiles[card] = CardProfile()
            x = p.features(at, amount, merchant, category, lat, lon)
            p.update(at, amount, merchant, category, lat, lon)
            label = 1 if y in ("t", "1", "true") else 0
            out.write(f"{i}\t{label}\t" + ",".join(repr(v) if v == v else "NaN" for v in x) + "\n")


if __name__ == "__main__":
    main()
