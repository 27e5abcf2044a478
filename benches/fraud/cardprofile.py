"""Per-card behavioural state and features kept in a scoring service's own memory: the
"usual architecture" that benches/bench_fraud.sh compares pg_platform with.

It computes the same 22 features, by the same definitions, as pg_platform's built-in
ones (bounded windows of recent payments, running mean and variance overall and per
category, recently used merchants, hour-of-day habit, the previous place), so that the
service can serve the very model that pg_platform serves. Standard library only.
"""

import math

NAMES = [
    "amount", "log_amount", "amount_to_card_mean", "amount_zscore", "amount_to_category_mean",
    "count_1h", "count_24h", "count_7d", "sum_1h", "sum_24h", "sum_7d",
    "seconds_since_prev", "distance_prev_km", "speed_prev_kmh", "hour_of_day", "hour_habit_share",
    "new_category", "new_merchant", "card_payment_count", "category_payment_count",
    "card_age_days", "payments_per_day",
]

US = 1_000_000
HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US
WEEK_US = 7 * DAY_US
MAX_RECENT = 256
MAX_CATEGORIES = 16
MAX_MERCHANTS = 64
NAN = float("nan")


def haversine_km(lat1, lon1, lat2, lon2):
    la1, lo1, la2, lo2 = map(math.radians, (lat1, lon1, lat2, lon2))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


class Stats:
    """Running mean and sample variance (Welford)."""

    __slots__ = ("n", "mean", "m2")

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def push(self, x):
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    def std_dev(self):
        return math.sqrt(max(0.0, self.m2 / (self.n - 1))) if self.n >= 2 else 0.0


class CardProfile:
    __slots__ = ("count", "amount", "first_at", "last_at", "last_place", "hours",
                 "categories", "merchants", "recent")

    def __init__(self):
        self.count = 0
        self.amount = Stats()
        self.first_at = None
        self.last_at = None
        self.last_place = None
        self.hours = [0] * 24
        self.categories = []  # [(name, Stats)], most recently used first
        self.merchants = []   # names, most recently used first
        self.recent = []      # [(time_us, amount)], oldest first

    def _category(self, name):
        for c, s in self.categories:
            if c == name:
                return s
        return None

    def features(self, at_us, amount, merchant, category, lat, lon):
        """The payment's features given the state before it (it is not folded in)."""
        v = [0.0] * 22
        v[0] = amount
        v[1] = math.log1p(max(amount, 0.0))
        card = self.amount
        v[2] = amount / card.mean if card.n > 0 and card.mean > 0 else 1.0
        sd = card.std_dev()
        v[3] = (amount - card.mean) / sd if card.n >= 2 and sd > 0 else 0.0
        cat = self._category(category)
        v[4] = amount / cat.mean if cat is not None and cat.mean > 0 else 1.0
        for w, ci, si in ((HOUR_US, 5, 8), (DAY_US, 6, 9), (WEEK_US, 7, 10)):
            start = at_us - w
            n, s = 0, 0.0
            for t, a in self.recent:
                if start < t <= at_us:
                    n += 1
                    s += a
            v[ci], v[si] = float(n), s
        if self.last_at is not None:
            gap = (at_us - self.last_at) / US
            v[11] = gap
            if self.last_place is not None and lat is not None and lon is not None:
                d = haversine_km(self.last_place[0], self.last_place[1], lat, lon)
                v[12] = d
                v[13] = d / (max(abs(gap), 60.0) / 3600.0)
            else:
                v[12] = v[13] = NAN
        else:
            v[11] = v[12] = v[13] = NAN
        hour = (at_us // US) % 86400 // 3600
        v[14] = float(hour)
        v[15] = self.hours[hour] / self.count if self.count > 0 else NAN
        v[16] = 0.0 if cat is not None else 1.0
        v[17] = 0.0 if merchant in self.merchants else 1.0
        v[18] = float(self.count)
        v[19] = float(cat.n) if cat is not None else 0.0
        if self.first_at is not None:
            age = max(0.0, (at_us - self.first_at) / DAY_US)
            v[20] = age
            v[21] = self.count / max(age, 1.0)
        else:
            v[20], v[21] = NAN, 0.0
        return v

    def update(self, at_us, amount, merchant, category, lat, lon):
        """Folds the payment in (after its features were computed)."""
        self.count += 1
        self.amount.push(amount)
        self.first_at = at_us if self.first_at is None else min(self.first_at, at_us)
        if self.last_at is None or at_us >= self.last_at:
            self.last_at = at_us
            if lat is not None and lon is not None:
                self.last_place = (lat, lon)
        self.hours[(at_us // US) % 86400 // 3600] += 1
        stats = None
        for i, (c, s) in enumerate(self.categories):
            if c == category:
                stats = s
                del self.categories[i]
                break
        if stats is None:
            stats = Stats()
        stats.push(amount)
        self.categories.insert(0, (category, stats))
        del self.categories[MAX_CATEGORIES:]
        if merchant in self.merchants:
            self.merchants.remove(merchant)
        self.merchants.insert(0, merchant)
        del self.merchants[MAX_MERCHANTS:]
        pos = len(self.recent)
        while pos > 0 and self.recent[pos - 1][0] > at_us:
            pos -= 1
        self.recent.insert(pos, (at_us, amount))
        keep_from = self.last_at - WEEK_US
        stale = 0
        while stale < len(self.recent) and self.recent[stale][0] <= keep_from:
            stale += 1
        drop = max(stale, len(self.recent) - MAX_RECENT)
        if drop:
            del self.recent[:drop]


def read_payments(path):
    """Rows of a tab-separated file: card, amount, time (Unix microseconds), merchant,
    category, lat, lon (\\N for NULL), as psql's COPY ... TO STDOUT writes them."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            card, amount, at, merchant, category, lat, lon = line.rstrip("\n").split("\t")
            yield (card, float(amount), int(at), "" if merchant == "\\N" else merchant,
                   "" if category == "\\N" else category,
                   None if lat == "\\N" else float(lat), None if lon == "\\N" else float(lon))
