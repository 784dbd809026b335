-- The joiner's long-lived label state: a materialized view of the label-state changelog
-- (understudy.joiner-labels.v1). space is the joiner's consumer group, so that joiner
-- deployments sharing a database never see each other's state. Rows are partitioned by time bucket (a day by default) of
-- their own event time; whole buckets are dropped once older than the label window.

-- Final comparisons waiting for their label. comparison is the Avro-encoded Comparison.
CREATE TABLE joiner_predictions (
    bucket      timestamptz NOT NULL,
    space       text        NOT NULL,
    partition   int         NOT NULL,
    request_id  text        NOT NULL,
    event_time  timestamptz NOT NULL,
    comparison  bytea       NOT NULL,
    matched     boolean     NOT NULL DEFAULT false,
    -- The key leads with what lookups know (not the bucket): one index serves both.
    PRIMARY KEY (space, request_id, partition, bucket)
) PARTITION BY RANGE (bucket);

-- Labels, whether or not their predictions have arrived. label is the Avro-encoded Label.
CREATE TABLE joiner_labels (
    bucket      timestamptz NOT NULL,
    space       text        NOT NULL,
    partition   int         NOT NULL,
    request_id  text        NOT NULL,
    event_time  timestamptz NOT NULL,
    experiment  text        NOT NULL DEFAULT '',
    label       bytea       NOT NULL,
    PRIMARY KEY (space, request_id, partition, bucket)
) PARTITION BY RANGE (bucket);

-- Requests whose prediction and label have both been applied but whose labeled comparison has
-- not been committed yet. A restarted joiner emits these first.
CREATE TABLE joiner_label_ready (
    space      text NOT NULL,
    partition  int  NOT NULL,
    request_id text NOT NULL,
    PRIMARY KEY (space, request_id, partition)
);

-- Next changelog offset to apply per partition, written in the same transaction as the rows.
CREATE TABLE joiner_label_offsets (
    space       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (space, partition)
);

-- Settings every joiner sharing this database must agree on (the bucket width: partitions of
-- different widths would overlap).
CREATE TABLE joiner_label_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
