-- Reference payments schema (3NF), created by platform.create_payments_schema(schema).
-- @schema@ is replaced by the quoted target schema name.

CREATE TABLE @schema@.currency (
    code        char(3) PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
    name        text NOT NULL,
    minor_units smallint NOT NULL CHECK (minor_units BETWEEN 0 AND 4)
);

CREATE TABLE @schema@.transaction_status (
    id          smallint PRIMARY KEY,
    code        text NOT NULL UNIQUE,
    is_final    boolean NOT NULL,
    description text NOT NULL
);

-- The state machine of a transaction: a state change must follow an allowed edge.
CREATE TABLE @schema@.transaction_status_transition (
    from_status_id smallint NOT NULL REFERENCES @schema@.transaction_status,
    to_status_id   smallint NOT NULL REFERENCES @schema@.transaction_status,
    PRIMARY KEY (from_status_id, to_status_id),
    CHECK (from_status_id <> to_status_id)
);

CREATE TABLE @schema@.location (
    id          bigint PRIMARY KEY,
    country     char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    city        text NOT NULL,
    latitude    double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude   double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    ip_network  cidr NOT NULL UNIQUE   -- the network a geo-IP lookup resolves to this place
);

CREATE TABLE @schema@.customer (
    id               bigint PRIMARY KEY,
    external_id      uuid NOT NULL UNIQUE,
    full_name        text NOT NULL,
    email            text NOT NULL,
    phone            text,
    date_of_birth    date,
    home_location_id bigint NOT NULL REFERENCES @schema@.location,
    created_at       timestamptz NOT NULL,
    segment          text NOT NULL DEFAULT 'standard' CHECK (segment IN ('standard', 'premium', 'business'))
);
CREATE INDEX ON @schema@.customer (email);
CREATE INDEX ON @schema@.customer (home_location_id);

CREATE TABLE @schema@.billing_address (
    id          bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES @schema@.customer,
    line1       text NOT NULL,
    line2       text,
    city        text NOT NULL,
    postal_code text NOT NULL,
    country     char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    is_default  boolean NOT NULL DEFAULT true
);
CREATE INDEX ON @schema@.billing_address (customer_id);

CREATE TABLE @schema@.merchant (
    id          bigint PRIMARY KEY,
    name        text NOT NULL,
    industry    text NOT NULL,
    mcc         char(4) NOT NULL CHECK (mcc ~ '^[0-9]{4}$'),
    size        text NOT NULL CHECK (size IN ('micro', 'small', 'medium', 'large', 'enterprise')),
    country     char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    currency    char(3) NOT NULL REFERENCES @schema@.currency,
    created_at  timestamptz NOT NULL
);
CREATE INDEX ON @schema@.merchant (industry);

CREATE TABLE @schema@.payment_method (
    id                 bigint PRIMARY KEY,
    customer_id        bigint NOT NULL REFERENCES @schema@.customer,
    billing_address_id bigint REFERENCES @schema@.billing_address,
    kind               text NOT NULL CHECK (kind IN ('card', 'wallet', 'bank_account')),
    brand              text NOT NULL,
    last4              char(4) CHECK (last4 ~ '^[0-9]{4}$'),
    expires_on         date,
    created_at         timestamptz NOT NULL
);
CREATE INDEX ON @schema@.payment_method (customer_id);

CREATE TABLE @schema@.device (
    id           bigint PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES @schema@.customer,
    device_type  text NOT NULL CHECK (device_type IN ('mobile', 'desktop', 'tablet', 'pos')),
    os           text NOT NULL,
    fingerprint  text NOT NULL UNIQUE,
    first_seen   timestamptz NOT NULL
);
CREATE INDEX ON @schema@.device (customer_id);

-- Range-partitioned on its time column; the primary key must include it.
CREATE TABLE @schema@.transaction (
    id                bigint NOT NULL,
    occurred_at       timestamptz NOT NULL,
    customer_id       bigint NOT NULL REFERENCES @schema@.customer,
    merchant_id       bigint NOT NULL REFERENCES @schema@.merchant,
    payment_method_id bigint NOT NULL REFERENCES @schema@.payment_method,
    device_id         bigint REFERENCES @schema@.device,
    location_id       bigint NOT NULL REFERENCES @schema@.location,
    ip_address        inet,
    amount            numeric(18,2) NOT NULL CHECK (amount > 0),
    currency          char(3) NOT NULL REFERENCES @schema@.currency,
    status_id         smallint NOT NULL REFERENCES @schema@.transaction_status,
    fraud_score       real CHECK (fraud_score BETWEEN 0 AND 1),
    -- The tax of the country where the payment took place, on the (net) amount.
    tax_amount        numeric(18,2) CHECK (tax_amount >= 0),
    -- Ground truth of platform.generate_payments: the kind of fraud a generated payment is
    -- (NULL: legitimate). Fraud scoring never reads it; evaluation may.
    fraud_label       text CHECK (fraud_label IN ('card_testing', 'account_takeover', 'compromised_merchant')),
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX ON @schema@.transaction (customer_id, occurred_at);
CREATE INDEX ON @schema@.transaction (merchant_id, occurred_at);
CREATE INDEX ON @schema@.transaction (occurred_at);
CREATE TABLE @schema@.transaction_default PARTITION OF @schema@.transaction DEFAULT;

CREATE TABLE @schema@.transaction_state_change (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id          bigint NOT NULL,
    transaction_occurred_at timestamptz NOT NULL,
    from_status_id          smallint NOT NULL,
    to_status_id            smallint NOT NULL,
    reason                  text NOT NULL CHECK (reason <> ''),
    changed_by              text NOT NULL DEFAULT current_user,
    changed_at              timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (transaction_id, transaction_occurred_at)
        REFERENCES @schema@.transaction (id, occurred_at),
    FOREIGN KEY (from_status_id, to_status_id)
        REFERENCES @schema@.transaction_status_transition
);
CREATE INDEX ON @schema@.transaction_state_change (transaction_id, transaction_occurred_at);

-- Reference data.
INSERT INTO @schema@.transaction_status (id, code, is_final, description) VALUES
    (1, 'pending',    false, 'authorisation requested, no answer yet'),
    (2, 'successful', false, 'authorised and captured'),
    (3, 'failed',     true,  'declined by the issuer or the processor'),
    (4, 'refunded',   true,  'money returned to the customer'),
    (5, 'disputed',   false, 'chargeback opened by the cardholder'),
    (6, 'reversed',   true,  'authorisation voided before capture'),
    (7, 'chargeback', true,  'dispute lost, funds taken back'),
    (8, 'review',     false, 'held for fraud review before it is settled');

INSERT INTO @schema@.transaction_status_transition (from_status_id, to_status_id) VALUES
    (1, 2), (1, 3), (1, 6), (2, 4), (2, 5), (5, 2), (5, 7),
    (1, 8), (2, 8), (8, 2), (8, 3), (8, 6);

-- The seed's ACID status change: the transaction's new status and its state-change row
-- commit together or not at all; an illegal transition fails the foreign key to
-- transaction_status_transition and rolls back the update with it.
CREATE FUNCTION @schema@.change_transaction_status(
    p_transaction_id bigint, p_to_status text, p_reason text)
RETURNS @schema@.transaction_state_change
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_to    smallint;
    v_from  smallint;
    v_at    timestamptz;
    v_row   @schema@.transaction_state_change;
BEGIN
    SELECT id INTO v_to FROM @schema@.transaction_status WHERE code = p_to_status;
    IF v_to IS NULL THEN
        RAISE EXCEPTION 'unknown transaction status "%"', p_to_status
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a code from @schema@.transaction_status.';
    END IF;
    SELECT t.status_id, t.occurred_at INTO v_from, v_at
      FROM @schema@.transaction t WHERE t.id = p_transaction_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'transaction % does not exist', p_transaction_id
            USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE @schema@.transaction SET status_id = v_to
     WHERE id = p_transaction_id AND occurred_at = v_at;
    BEGIN
        INSERT INTO @schema@.transaction_state_change
            (transaction_id, transaction_occurred_at, from_status_id, to_status_id, reason)
        VALUES (p_transaction_id, v_at, v_from, v_to, p_reason)
        RETURNING * INTO v_row;
    EXCEPTION WHEN foreign_key_violation OR check_violation THEN
        -- Re-raised: the whole transaction, the status update included, rolls back.
        RAISE EXCEPTION 'transaction %: status change % -> % is not allowed',
              p_transaction_id,
              (SELECT code FROM @schema@.transaction_status WHERE id = v_from), p_to_status
            USING ERRCODE = 'check_violation',
                  HINT = 'Allowed changes are listed in @schema@.transaction_status_transition; a reason is required.';
    END;
    RETURN v_row;
END
$fn$;
