# Fraud scoring side by side, one server, one run, on a labelled synthetic payment history
# made deterministically in SQL (benches/fraud/generate.sql: cards with habits, 0.5% fraud
# of three kinds):
#  1. quality: AUC-PR on the last 20% by time of platform.fraud_train's gbdt against
#     LightGBM trained in Python on the very feature vectors platform.fraud_features
#     exports (same rows, same split, same hyperparameters), a gbdt that sees only amount
#     and hour (the behavioural features' lift) and the built-in anomaly score. Every
#     AUC-PR is computed by one SQL function from per-payment scores (fraud_backtest for
#     ours), and ours is checked against the metric fraud_train stored.
#  2. latency of one fraud_score call including the card's profile update, with a
#     300-tree model deployed (the LightGBM model imported, and a gbdt trained in SQL):
#     p50/p99 timed inside the server with clock_timestamp() around each call in a
#     PL/pgSQL loop committing each payment, so no client round trip is counted, over payments just after the
#     history (profiles rebuilt from the history first);
#  3. the usual architecture: a FastAPI + LightGBM service on 127.0.0.1 keeping per-card
#     state in its own memory and serving the same 300-tree model, timed per request by a
#     keep-alive http.client over the same payments; its scores are compared with ours;
#  4. batch scoring: rows/s of platform.fraud_score_batch over the history replayed as new
#     cards, in one backend (one core), beside one SELECT count((fraud_score(...)).score)
#     over it (one call per payment, again as new cards);
#  5. when platform.score_payments(regclass, jsonb) exists: pgbench single-row inserts
#     (custom script, -T seconds), 4 clients, into a table with and without the scoring
#     trigger (score and risk level written into the row), alternating, 3 rounds (medians),
#     with synchronous_commit on and off;
#  6. quality on the reference generator's data: platform.generate_payments' planted,
#     labelled fraud (90 days), fraud_train's gbdt on all features against one on amount,
#     log_amount and hour_of_day, AUC-PR on the held-out last 20% by time.
# Python parts (LightGBM, FastAPI) run from a venv (FRAUD_VENV, default
# /tmp/pg_platform-bench-venv), made here in a full run; smoke runs use it only if it
# already exists. A missing optional piece prints a note and no figure; errors fail.
# shellcheck shell=bash
set -euo pipefail
if [ "$SMOKE" = 1 ]; then
    cards=200; payments=5000; days=30; warm=50; timed=500; secs=2
else
    cards=4000; payments=200000; days=60; warm=200; timed=5000; secs=12
fi
# FRAUD_CARDS, FRAUD_PAYMENTS, FRAUD_DAYS, FRAUD_TIMED override the sizes (to try medium ones).
cards=${FRAUD_CARDS:-$cards}; payments=${FRAUD_PAYMENTS:-$payments}; days=${FRAUD_DAYS:-$days}; timed=${FRAUD_TIMED:-$timed}
trees=300          # the latency model's size, in both modes
deadline=600       # seconds any timed loop may take, whatever is left
db=bench_fraud
fraud_dir=$(pwd)/benches/fraud
venv=${FRAUD_VENV:-/tmp/pg_platform-bench-venv}
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in the work tree
work=$(mktemp -d /tmp/pg_platform-bench-fraud.XXXXXX)
service_pid=
cleanup() {
    local rc=$?
    # On failure, the server's last words (run.sh removes its directory afterwards).
    if [ "$rc" != 0 ] && [ -f "$BENCH_DIR/server.log" ]; then
        note "exit $rc; the end of the server log:"; tail -15 "$BENCH_DIR/server.log" >&2 || true
    fi
    if [ -n "$service_pid" ]; then
        kill "$service_pid" 2>/dev/null || true
        wait "$service_pid" 2>/dev/null || true
    fi
    [ -n "${FRAUD_KEEP:-}" ] && { note "kept $work"; return; }
    rm -rf "$work"
}
trap cleanup EXIT
note() { echo "bench fraud: $*" >&2; }
fail() { note "$*"; exit 1; }
# psqlf ARGS...: psql on the bench database (files, stdin, variables).
psqlf() {
    PGOPTIONS='-c client_min_messages=warning' \
        psql -X -q -At -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"
}
ms() { date +%s%3N; }
t_start=$(ms)
part() { note "$1: $(( ($(ms) - t_part) / 1000 )).$(( ($(ms) - t_part) % 1000 / 100 ))s"; t_part=$(ms); }
t_part=$t_start

# The Python side: the venv if usable; made (full runs only) if missing.
py=
if "$venv/bin/python" -c 'import fastapi, uvicorn, lightgbm, numpy' 2>/dev/null; then
    py=$venv/bin/python
elif [ "$SMOKE" != 1 ]; then
    note "making the venv $venv (fastapi, uvicorn, lightgbm, numpy from PyPI)"
    if python3 -m venv "$venv" && "$venv/bin/pip" install -q -r "$fraud_dir/requirements.txt" >"$work/pip.log" 2>&1; then
        py=$venv/bin/python
    else
        tail -5 "$work/pip.log" >&2 || true
        note "no usable venv: the LightGBM and FastAPI comparisons are skipped"
    fi
else
    note "smoke: no venv at $venv, LightGBM and FastAPI parts skipped (a full run makes it)"
fi
part "python venv"

sql postgres "DROP DATABASE IF EXISTS $db" "CREATE DATABASE $db" >/dev/null
sql $db "CREATE EXTENSION pg_platform" >/dev/null
psqlf -v cards=$cards -v payments=$payments -v days=$days -v live=$((warm + timed)) -f "$fraud_dir/generate.sql" >/dev/null
read -r n frauds <<<"$(sql $db "SELECT count(*), count(*) FILTER (WHERE is_fraud) FROM payments" | tr '|' ' ')"
note "history: $n payments ($frauds fraud) of $cards cards over $days days; $((warm + timed)) live payments"
# Per-payment scores of each model (history ids for quality, live ids for latency), and
# the AUC-PR of a model's scores on history ids above FROM: average precision with tied
# scores flagged together (as scikit-learn's average_precision_score and fraud_train).
sql $db "CREATE TABLE bench_score (model text, id bigint, score float8, PRIMARY KEY (model, id))" \
        "CREATE FUNCTION bench_ap(m text, from_id bigint) RETURNS float8 LANGUAGE sql STABLE AS \$\$
           WITH s AS (SELECT b.score, p.is_fraud FROM bench_score b JOIN payments p ON p.id = b.id
                       WHERE b.model = m AND p.id > from_id),
                g AS (SELECT score, count(*) FILTER (WHERE is_fraud) AS tp, count(*) AS n FROM s GROUP BY score),
                c AS (SELECT tp, sum(tp) OVER w AS ctp, sum(n) OVER w AS cn FROM g
                       WINDOW w AS (ORDER BY score DESC ROWS UNBOUNDED PRECEDING))
           SELECT sum(tp::float8 * ctp / cn) / (SELECT count(*) FROM s WHERE is_fraud) FROM c \$\$" >/dev/null
part "generate history"

# 1. Quality. fraud_train holds out the last 20% by time itself; n_train is read back.
src="SELECT card, amount, occurred_at, merchant, category, lat, lon, is_fraud FROM payments"
hist="SELECT card, amount, occurred_at, merchant, category, lat, lon FROM payments"
t0=$(ms)
v_ours=$(sql $db "SELECT platform.fraud_train('payments', '$src', 'is_fraud', 'gbdt')")
train_ms=$(( $(ms) - t0 ))
v_basic=$(sql $db "SELECT platform.fraud_train('basic', '$src', 'is_fraud', 'gbdt', '{\"features\": [\"amount\", \"log_amount\", \"hour_of_day\"]}')")
n_train=$(sql $db "SELECT count(*) FROM payments WHERE occurred_at < (SELECT (training->>'validation_from')::timestamptz FROM platform.fraud_models WHERE name = 'payments' AND version = $v_ours)")
[ "$(sql $db "SELECT (training->>'train_payments')::bigint FROM platform.fraud_models WHERE name = 'payments' AND version = $v_ours")" = "$n_train" ] \
    || fail "the training split is not the first $n_train payments by time"
read -r n_valid f_valid <<<"$(sql $db "SELECT count(*), count(*) FILTER (WHERE is_fraud) FROM payments WHERE id > $n_train" | tr '|' ' ')"
backtest() {  # backtest TAG MODEL VERSION: validation scores of a model into bench_score
    sql $db "INSERT INTO bench_score SELECT '$1', p.id, b.score
               FROM platform.fraud_backtest('$2', $3, '$hist') b JOIN payments p ON p.occurred_at = b.occurred_at
              WHERE p.id > $n_train" >/dev/null
    [ "$(sql $db "SELECT count(*) FROM bench_score WHERE model = '$1'")" = "$n_valid" ] \
        || fail "the backtest of $2 did not score every validation payment"
}
backtest ours payments "$v_ours"
backtest basic basic "$v_basic"
backtest builtin builtin NULL
ap_ours=$(sql $db "SELECT round(bench_ap('ours', $n_train)::numeric, 4)")
ap_basic=$(sql $db "SELECT round(bench_ap('basic', $n_train)::numeric, 4)")
ap_builtin=$(sql $db "SELECT round(bench_ap('builtin', $n_train)::numeric, 4)")
[ "$(sql $db "SELECT abs(bench_ap('ours', $n_train) - (metrics->>'auc_pr')::float8) < 1e-9 FROM platform.fraud_models WHERE name = 'payments' AND version = $v_ours")" = t ] \
    || fail "AUC-PR from the backtest differs from the one fraud_train stored"
part "quality: train ours (${train_ms} ms) and basic, backtests"

# The same feature vectors for LightGBM, from platform.fraud_features (or, only to train
# the service's model when the server lacks that function, from the Python replica).
ap_lgb=0; lgb_train_s=0; lgb_model=
have_features=$(sql $db "SELECT to_regprocedure('platform.fraud_features(text,text)') IS NOT NULL")
if [ -n "$py" ]; then
    if [ "$have_features" = t ]; then
        names=$(sql $db "SELECT array_to_string(names, ',') FROM platform.fraud_features('$src ORDER BY occurred_at LIMIT 1', 'is_fraud')")
        sql $db "COPY (SELECT p.id, f.label::int, array_to_string(f.features, ',', 'NaN')
                         FROM platform.fraud_features('$src', 'is_fraud') f
                         JOIN payments p ON p.occurred_at = f.occurred_at AND p.card = f.card ORDER BY p.id) TO STDOUT" >"$work/features.tsv"
    else
        note "platform.fraud_features is missing: no LightGBM AUC-PR; the service's model learns from the Python replica's features"
        names=$("$py" -c "import sys; sys.path.insert(0, '$fraud_dir'); import cardprofile; print(','.join(cardprofile.NAMES))")
        sql $db "COPY (SELECT id, is_fraud, card, amount, (extract(epoch FROM occurred_at) * 1000000)::int8, merchant, category, lat, lon
                         FROM payments ORDER BY id) TO STDOUT" >"$work/labelled.tsv"
        "$py" "$fraud_dir/replay_features.py" "$work/labelled.tsv" "$work/features.tsv"
    fi
    [ "$(wc -l <"$work/features.tsv")" = "$n" ] || fail "the feature export does not hold one row per payment"
    "$py" "$fraud_dir/train_lgb.py" --features "$work/features.tsv" --names "$names" --n-train "$n_train" \
        --scores-out "$work/lgb_scores.tsv" --model-out "$work/lgb.txt" --model-rounds $trees \
        --model-name payments --import-sql-out "$work/import.sql" >"$work/train_lgb.out"
    lgb_train_s=$(sed -n 's/^train_seconds //p' "$work/train_lgb.out")
    if [ "$have_features" = t ]; then
        sql $db "COPY bench_score FROM STDIN" <"$work/lgb_scores.tsv" >/dev/null
        ap_lgb=$(sql $db "SELECT round(bench_ap('lightgbm', $n_train)::numeric, 4)")
    fi
    patched=$(sed -n 's/^infinite_thresholds_rewritten //p' "$work/train_lgb.out")
    [ "${patched:-0}" = 0 ] || note "$patched infinite LightGBM thresholds (missing-vs-present splits) rewritten as the largest double for the importer"
    lgb_model=$(psqlf -f "$work/import.sql")
    part "quality: LightGBM (features exported, trained in ${lgb_train_s}s, $trees-tree model imported)"
fi
note "AUC-PR on $n_valid validation payments ($f_valid fraud): ours $ap_ours, LightGBM $ap_lgb, amount+hour $ap_basic, built-in $ap_builtin"

# 2. Latency: LAT TAG -> "p50 p99 calls" in microseconds, scores kept under TAG. Each
# call is timed inside the server (clock_timestamp() before and after it, in one PL/pgSQL
# loop that commits after each payment), so client round trips do not count; the loop,
# the timing, the INSERT of the score and the commit are outside the window. Profiles are
# rebuilt from the history first.
latency() {
    sql $db "SELECT platform.fraud_rebuild_profiles('$hist')" >/dev/null
    sql $db "DO \$\$ DECLARE r record; t0 timestamptz; took float8[] := '{}'; res platform.fraud_result;
                   stop_at timestamptz := clock_timestamp() + interval '$deadline s';
             BEGIN
               FOR r IN SELECT * FROM payments_live WHERE id <= $((warm + timed)) ORDER BY id LOOP
                 EXIT WHEN clock_timestamp() > stop_at;
                 t0 := clock_timestamp();
                 res := platform.fraud_score(r.card, r.amount, r.occurred_at, r.merchant, r.category, r.lat, r.lon);
                 IF r.id > $warm THEN
                   took := took || extract(epoch FROM clock_timestamp() - t0)::float8 * 1e6;
                   INSERT INTO bench_score VALUES ('$1', r.id, res.score);
                 END IF;
                 -- Each payment in its own transaction, as in production: a card's profile
                 -- row is not updated twice by one transaction.
                 COMMIT;
               END LOOP;
               PERFORM set_config('bench.lat', (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::numeric, 1) || ' '
                                                    || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY x)::numeric, 1) || ' ' || count(*)
                                                  FROM unnest(took) x), false);
             END \$\$" "SELECT current_setting('bench.lat')" | tail -1
}
sql $db "ALTER DATABASE $db SET platform.fraud_model = 'payments'" >/dev/null
v_300=$(sql $db "SELECT platform.fraud_train('payments', '$src', 'is_fraud', 'gbdt', '{\"iterations\": $trees}')")
sql $db "SELECT platform.fraud_deploy('payments', $v_300)" >/dev/null
read -r gbdt_p50 gbdt_p99 gbdt_n <<<"$(latency ours_gbdt)"
[ "$(sql $db "SELECT count(*) FROM bench_score WHERE model = 'ours_gbdt'")" -gt 0 ] || fail "no timed fraud_score call"
[ "$(sql $db "SELECT model_version FROM platform.fraud_score('card-000001', 1, now())")" = "$v_300" ] \
    || fail "fraud_score did not score with the deployed $trees-tree gbdt"
lgb_p50=0; lgb_p99=0
if [ -n "$lgb_model" ]; then
    sql $db "SELECT platform.fraud_deploy('payments', $lgb_model)" >/dev/null
    read -r lgb_p50 lgb_p99 _ <<<"$(latency ours_lgb)"
    [ "$(sql $db "SELECT model || ' ' || model_version FROM platform.fraud_score('card-000001', 1, now())")" = "payments $lgb_model" ] \
        || fail "fraud_score did not score with the imported LightGBM model"
fi
part "latency: $gbdt_n calls, $trees-tree gbdt then $trees-tree LightGBM import"

# 3. The FastAPI + LightGBM service, same model, same payments.
svc_p50=0; svc_p99=0; svc_rps=0
if [ -n "$lgb_model" ]; then
    sql $db "COPY (SELECT card, amount, (extract(epoch FROM occurred_at) * 1000000)::int8, merchant, category, lat, lon
                     FROM payments ORDER BY occurred_at) TO STDOUT" >"$work/history.tsv"
    sql $db "COPY (SELECT id, card, amount, (extract(epoch FROM occurred_at) * 1000000)::int8, merchant, category, lat, lon
                     FROM payments_live ORDER BY id) TO STDOUT" >"$work/live.tsv"
    port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    "$py" "$fraud_dir/service.py" --model "$work/lgb.txt" --history "$work/history.tsv" --port "$port" >"$work/service.log" 2>&1 &
    service_pid=$!
    "$py" "$fraud_dir/client.py" --port "$port" --live "$work/live.tsv" --warm $warm --timed $timed \
        --deadline $deadline --scores-out "$work/service_scores.tsv" >"$work/client.out" \
        || { cat "$work/service.log" >&2; fail "the service client failed"; }
    kill "$service_pid" 2>/dev/null || true
    wait "$service_pid" 2>/dev/null || true
    service_pid=
    svc_p50=$(sed -n 's/^p50_us //p' "$work/client.out")
    svc_p99=$(sed -n 's/^p99_us //p' "$work/client.out")
    svc_rps=$(sed -n 's/^rows_per_s //p' "$work/client.out")
    sql $db "COPY bench_score FROM STDIN" <"$work/service_scores.tsv" >/dev/null
    note "scores of the same payments, ours vs the service's: $(sql $db "SELECT count(*) || ' compared, ' || count(*) FILTER (WHERE abs(a.score - b.score) <= 1e-9) || ' equal, max difference ' || round(max(abs(a.score - b.score))::numeric, 6)
                FROM bench_score a JOIN bench_score b ON b.id = a.id AND b.model = 'service' WHERE a.model = 'ours_lgb'")"
    part "FastAPI + LightGBM service: $(sed -n 's/^requests //p' "$work/client.out") requests"
fi

# 4. Batch scoring over the history as new cards, one statement in one backend.
sql $db "CREATE TABLE payments_batch AS SELECT id, 'batch-' || card AS card, amount, occurred_at, merchant, category, lat, lon
           FROM payments ORDER BY id" "ANALYZE payments_batch" >/dev/null
batch=$(sql $db "DO \$\$ DECLARE t timestamptz; n bigint; BEGIN
                   t := clock_timestamp();
                   SELECT count((platform.fraud_score(card, amount, occurred_at, merchant, category, lat, lon)).score) INTO n FROM payments_batch;
                   PERFORM set_config('bench.rate', round(n / extract(epoch FROM clock_timestamp() - t))::text, false);
                 END \$\$" "SELECT current_setting('bench.rate')" | tail -1)
batch_fn=0
if [ "$(sql $db "SELECT to_regprocedure('platform.fraud_score_batch(text)') IS NOT NULL")" = t ]; then
    batch_fn=$(sql $db "DO \$\$ DECLARE t timestamptz; n bigint; BEGIN
                   t := clock_timestamp();
                   SELECT count(score) INTO n FROM platform.fraud_score_batch(
                       'SELECT id, ''batch2-'' || card AS card, amount, occurred_at, merchant, category, lat, lon FROM payments_batch');
                   PERFORM set_config('bench.rate', round(n / extract(epoch FROM clock_timestamp() - t))::text, false);
                 END \$\$" "SELECT current_setting('bench.rate')" | tail -1)
fi
part "batch: $n rows"

# 5. Inserts with and without the scoring trigger (only if the trigger mode exists).
plain_tps=0; scored_tps=0
if [ "$(sql $db "SELECT to_regprocedure('platform.score_payments(regclass,jsonb)') IS NOT NULL")" = t ]; then
    for t in pay_plain pay_scored; do
        sql $db "CREATE TABLE $t (id bigserial PRIMARY KEY, card text NOT NULL, amount numeric(12,2) NOT NULL,
                   occurred_at timestamptz NOT NULL DEFAULT now(), merchant text, category text, lat float8, lon float8,
                   score float8, risk_level text)" >/dev/null
    done
    # Every input mapped to its column; the score and risk level written into the row.
    sql $db "SELECT platform.score_payments('pay_scored', '{\"card\": \"card\", \"amount\": \"amount\", \"occurred_at\": \"occurred_at\",
               \"merchant\": \"merchant\", \"category\": \"category\", \"lat\": \"lat\", \"lon\": \"lon\",
               \"score\": \"score\", \"risk_level\": \"risk_level\"}'::jsonb)" >/dev/null
    cat >"$work/insert.sql" <<EOF
\\set c random(1, $cards)
\\set m random(0, 199)
INSERT INTO :tbl (card, amount, merchant, category, lat, lon)
VALUES ('card-' || lpad(:c::text, 6, '0'), round((5 + random() * 80)::numeric, 2), 'grocery-' || :m, 'grocery', 48.85 + random() / 10, 2.35);
EOF
    # tps TABLE [SYNCHRONOUS_COMMIT]: pgbench for $secs seconds (a checkpoint first). The
    # WAL the run wrote per payment goes to $work/wal.TABLE (one line a run): unlike tps,
    # it does not move with the machine's neighbours.
    tps() {
        sql $db "CHECKPOINT" >/dev/null
        local lsn out
        lsn=$(sql $db "SELECT pg_current_wal_insert_lsn()")
        out=$(PGOPTIONS="-c synchronous_commit=${2:-on}" \
            pgbench -n -c 4 -j 2 -T "$secs" -D tbl="$1" -f "$work/insert.sql" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres "$db" 2>"$work/pgbench.err")
        local n
        n=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
        [ -n "$n" ] && [ "$n" -gt 0 ] \
            && sql $db "SELECT round(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$lsn') / $n)" >>"$work/wal.$1"
        echo "$out" | sed -n 's/^tps = \([0-9]*\).*/\1/p' | head -1
    }
    # pgbench hammers a few cards within seconds, so the built-in score soon calls them
    # highest risk and blocks (an ERROR that stops a pgbench client): an allow rule keeps
    # every insert going while the score, the rules and the profile update all still run.
    sql $db "SELECT platform.fraud_set_rule('bench_allow_all', 'allow', 'score >= 0', 1000, true)" >/dev/null
    # With and without the trigger alternate, each figure the median of its runs: a run's
    # tps moves with the machine's disk and neighbours by more than the trigger costs.
    # synchronous_commit = off takes the commit's flush out: what is left is CPU, the
    # trigger's own cost.
    [ "$SMOKE" = 1 ] && rounds=1 || rounds=3
    runs=()
    for _ in $(seq 1 "$rounds"); do
        for commit in on off; do
            for t in pay_plain pay_scored; do
                r=$(tps $t $commit); [ -n "$r" ] || { cat "$work/pgbench.err" >&2; fail "pgbench failed"; }
                runs+=("$t/$commit=$r")
            done
        done
    done
    pick() { median $(printf '%s\n' "${runs[@]}" | sed -n "s|^$1/$2=||p"); }
    plain_tps=$(pick pay_plain on); scored_tps=$(pick pay_scored on)
    plain_cpu_tps=$(pick pay_plain off); scored_cpu_tps=$(pick pay_scored off)
    # shellcheck disable=SC2046
    plain_wal=$(median $(cat "$work/wal.pay_plain")); scored_wal=$(median $(cat "$work/wal.pay_scored"))
    note "WAL bytes a payment in each run: no trigger $(tr '\n' ' ' <"$work/wal.pay_plain"), trigger $(tr '\n' ' ' <"$work/wal.pay_scored")"
    note "pgbench runs (table/synchronous_commit=tps): ${runs[*]}"
    sql $db "SELECT platform.fraud_drop_rule('bench_allow_all')" >/dev/null
    [ "$(sql $db "SELECT count(*) = count(score) AND count(*) > 0 FROM pay_scored")" = t ] \
        || fail "the scoring trigger left rows of pay_scored unscored"
    part "inserts: pgbench ${secs}s, $((rounds * 4)) runs"
fi

# 6. The reference generator's labelled fraud, learned from its own columns.
gen_ap=0; gen_basic=0
if [ "$(sql $db "SELECT count(*) FROM pg_proc WHERE proname = 'generate_payments' AND 'fraud_rate' = ANY (proargnames)")" = 1 ]; then
    if [ "$SMOKE" = 1 ]; then gen_customers=300; gen_tx=8000; else gen_customers=4000; gen_tx=200000; fi
    sql $db "SELECT platform.create_payments_schema('gen', '2026-01-01', 3)" \
            "SELECT count(*) FROM platform.generate_payments('gen', $gen_customers, 200, $gen_tx, seed => 42, days => 90)" \
            "CREATE VIEW gen_history AS
             SELECT t.payment_method_id::text AS card, t.amount, t.occurred_at, t.merchant_id::text AS merchant,
                    m.industry AS category, l.latitude AS lat, l.longitude AS lon, t.fraud_label IS NOT NULL AS is_fraud
               FROM gen.transaction t JOIN gen.merchant m ON m.id = t.merchant_id JOIN gen.location l ON l.id = t.location_id" >/dev/null
    v_gen=$(sql $db "SELECT platform.fraud_train('gen_full', 'SELECT * FROM gen_history', 'is_fraud', 'gbdt')")
    v_gen_basic=$(sql $db "SELECT platform.fraud_train('gen_basic', 'SELECT * FROM gen_history', 'is_fraud', 'gbdt',
                             '{\"features\": [\"amount\", \"log_amount\", \"hour_of_day\"]}')")
    gen_ap=$(sql $db "SELECT round((metrics->>'auc_pr')::numeric, 4) FROM platform.fraud_models WHERE name = 'gen_full' AND version = $v_gen")
    gen_basic=$(sql $db "SELECT round((metrics->>'auc_pr')::numeric, 4) FROM platform.fraud_models WHERE name = 'gen_basic' AND version = $v_gen_basic")
    gen_frauds=$(sql $db "SELECT count(*) FROM gen.transaction WHERE fraud_label IS NOT NULL")
    part "generator data: $gen_tx payments, $gen_frauds planted fraud"
fi

sql postgres "DROP DATABASE $db" >/dev/null
note "total $(( ($(ms) - t_start) / 1000 ))s"

valid="last 20% by time, $n_valid payments, $f_valid fraud"
if [ "$ap_lgb" != 0 ]; then
    result "Fraud" "AUC-PR, gbdt in SQL, $valid" "$ap_ours" "LightGBM on the same exported features" "$ap_lgb" higher
fi
result "Fraud" "AUC-PR, gbdt in SQL, all 22 features" "$ap_ours" "gbdt on amount, log_amount, hour_of_day" "$ap_basic" higher
result "Fraud" "AUC-PR, gbdt in SQL, all 22 features" "$ap_ours" "built-in anomaly score" "$ap_builtin" higher
if [ "$lgb_train_s" != 0 ]; then
    result "Fraud" "training on $n_train payments, features replayed (s)" "$(awk -v m="$train_ms" 'BEGIN { printf "%.1f", m / 1000 }')" "LightGBM, features given, $(nproc) threads" "$lgb_train_s" lower
fi
if [ "$svc_p99" != 0 ]; then
    result "Fraud" "fraud_score + profile, $trees-tree LightGBM, p50 (us)" "$lgb_p50" "FastAPI + LightGBM over HTTP, same model" "$svc_p50" lower
    result "Fraud" "fraud_score + profile, $trees-tree LightGBM, p99 (us)" "$lgb_p99" "FastAPI + LightGBM over HTTP, same model (goal: 10x)" "$svc_p99" lower
    result "Fraud" "fraud_score + profile, $trees-tree gbdt from SQL, p99 (us)" "$gbdt_p99" "FastAPI + LightGBM over HTTP" "$svc_p99" lower
else
    result "Fraud" "fraud_score + profile, $trees-tree gbdt from SQL, p50 (us)" "$gbdt_p50" "(no FastAPI service measured)" 0 lower
    result "Fraud" "fraud_score + profile, $trees-tree gbdt from SQL, p99 (us)" "$gbdt_p99" "(no FastAPI service measured)" 0 lower
fi
if [ "$batch_fn" != 0 ]; then
    result "Fraud" "fraud_score_batch, $n rows, one backend (rows/s)" "$batch_fn" "goal: 30k rows/s per core" 30000 higher
    result "Fraud" "fraud_score_batch, $n rows, one backend (rows/s)" "$batch_fn" "one fraud_score call per row" "$batch" higher
fi
result "Fraud" "fraud_score per row, $n rows, one backend (rows/s)" "$batch" "goal: 30k rows/s per core" 30000 higher
if [ "$svc_rps" != 0 ]; then
    result "Fraud" "fraud_score per row, $n rows, one backend (rows/s)" "$batch" "FastAPI + LightGBM, one request at a time" "$svc_rps" higher
fi
if [ "$gen_ap" != 0 ]; then
    result "Fraud" "AUC-PR on generate_payments data ($gen_tx payments), gbdt, all features" "$gen_ap" "gbdt on amount, log_amount, hour_of_day" "$gen_basic" higher
fi
if [ "$plain_tps" != 0 ]; then
    result "Fraud" "single-row inserts, 4 clients, scoring trigger (tps)" "$scored_tps" "no trigger (goal: 0.85x)" "$plain_tps" higher
    result "Fraud" "same, synchronous_commit = off (CPU-bound, tps)" "$scored_cpu_tps" "no trigger, synchronous_commit = off" "$plain_cpu_tps" higher
    result "Fraud" "same, WAL a payment, profile rewrite included (bytes, median)" "$scored_wal" "no trigger" "$plain_wal" lower
fi
