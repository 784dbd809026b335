-- Comparison windows: one row per experiment, shadow, window width (seconds) and start. Every
-- batch updates the base width and its rollups (1 h, 1 d) in the same transaction, so each
-- rollup equals the merge of the windows it contains. data is window.Window's JSON encoding
-- (digests at full precision); total is copied out for cheap listings.
CREATE TABLE aggregator_windows (
    experiment    text        NOT NULL,
    shadow        text        NOT NULL,
    width_seconds int         NOT NULL,
    window_start  timestamptz NOT NULL,
    role          text        NOT NULL DEFAULT '',
    total         bigint      NOT NULL DEFAULT 0,
    data          bytea       NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment, shadow, width_seconds, window_start)
);
CREATE INDEX aggregator_windows_retention ON aggregator_windows (width_seconds, window_start);

-- The first offset of the batch that last moved next_offset: a writer whose batch starts
-- before the stored next_offset lost its partition to another replica and is refused.
ALTER TABLE consumer_offsets ADD COLUMN batch_first bigint NOT NULL DEFAULT 0;

-- Alert rule states per experiment, shadow and rule, and every transition.
CREATE TABLE alert_states (
    experiment   text        NOT NULL,
    shadow       text        NOT NULL,
    rule         text        NOT NULL,
    state        text        NOT NULL,
    streak       int         NOT NULL DEFAULT 0,
    value        double precision,
    noise_floor  double precision,
    samples      bigint      NOT NULL DEFAULT 0,
    since        timestamptz NOT NULL,
    evaluated_to timestamptz NOT NULL,
    PRIMARY KEY (experiment, shadow, rule)
);

CREATE TABLE alert_history (
    id           bigserial   PRIMARY KEY,
    experiment   text        NOT NULL,
    shadow       text        NOT NULL,
    rule         text        NOT NULL,
    severity     text        NOT NULL,
    from_state   text        NOT NULL,
    to_state     text        NOT NULL,
    value        double precision,
    noise_floor  double precision,
    threshold    double precision NOT NULL,
    samples      bigint      NOT NULL,
    range_from   timestamptz NOT NULL,
    range_to     timestamptz NOT NULL,
    at           timestamptz NOT NULL
);
CREATE INDEX alert_history_experiment ON alert_history (experiment, at);

-- Webhook notifications waiting to be delivered, written in the same transaction as the
-- transition they announce: a crash loses none, and the id is the stable webhook-id.
CREATE TABLE webhook_outbox (
    id           text        PRIMARY KEY,
    payload      bytea       NOT NULL,
    created_at   timestamptz NOT NULL,
    attempts     int         NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL,
    delivered_at timestamptz,
    failed_at    timestamptz,
    last_error   text        NOT NULL DEFAULT ''
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt) WHERE delivered_at IS NULL AND failed_at IS NULL;

-- Rollup windows (every width but the base) that no longer equal the merge of the windows
-- they contain: a batch marks them in its transaction, the rollup pass recomputes them from
-- the finer level and removes the mark if its version did not move meanwhile. Reads use the
-- finer windows in place of a marked one, so answers are exact whether or not the pass ran.
CREATE TABLE aggregator_dirty (
    experiment    text        NOT NULL,
    shadow        text        NOT NULL,
    width_seconds int         NOT NULL,
    window_start  timestamptz NOT NULL,
    version       bigint      NOT NULL DEFAULT 1,
    PRIMARY KEY (experiment, shadow, width_seconds, window_start)
);
