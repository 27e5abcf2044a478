"""The usual architecture pg_platform's fraud scoring is compared with: a FastAPI service
that keeps every card's behavioural state in its own process memory, computes the 22
features of each payment from it and scores the payment with a LightGBM model, one
payment per HTTP POST. The application calls it before (or after) writing the payment.

    python service.py --model MODEL.txt --history HISTORY.tsv --port PORT

It listens on 127.0.0.1 only. At start it folds the payment history into its state (what
a real service would load from a feature store), then answers:
    GET  /health  -> {"cards": N}
    POST /score   {"card", "amount", "occurred_at" (ISO 8601), "merchant", "category",
                   "lat", "lon"} -> {"score", "risk_level"}
One process (the state lives in it), handlers on the event loop (no thread hop, no race on
the state), access log off: the fastest honest set-up of this architecture.
"""

import argparse
import datetime
import os
import sys
from typing import Optional

import lightgbm as lgb
import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cardprofile import CardProfile, read_payments  # noqa: E402

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
ONE_US = datetime.timedelta(microseconds=1)


class Payment(BaseModel):
    card: str
    amount: float
    occurred_at: datetime.datetime
    merchant: Optional[str] = None
    category: Optional[str] = None
    lat: Optional[float] = None
    lon: Optional[float] = None


def build(model_path, history_path):
    booster = lgb.Booster(model_file=model_path)
    profiles = {}
    for card, amount, at, merchant, category, lat, lon in read_payments(history_path):
        p = profiles.get(card)
        if p is None:
            p = profiles[card] = CardProfile()
        p.update(at, amount, merchant, category, lat, lon)

    app = FastAPI()

    @app.get("/health")
    async def health():
        return {"cards": len(profiles)}

    @app.post("/score")
    async def score(p: Payment):
        at = (p.occurred_at - EPOCH) // ONE_US
        merchant, category = p.merchant or "", p.category or ""
        prof = profiles.get(p.card)
        if prof is None:
            prof = profiles[p.card] = CardProfile()
        x = prof.features(at, p.amount, merchant, category, p.lat, p.lon)
        s = float(booster.predict(np.array([x], dtype=np.float64), num_threads=1)[0])
        prof.update(at, p.amount, merchant, category, p.lat, p.lon)
        level = "highest" if s >= 0.9 else "elevated" if s >= 0.5 else "normal"
        return {"score": s, "risk_level": level}

    return app


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--history", required=True)
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    app = build(a.model, a.history)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
