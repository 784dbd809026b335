-- Comparisons counted per experiment, window and join status.
CREATE TABLE comparison_counts (
    experiment   text        NOT NULL,
    window_start timestamptz NOT NULL,
    status       text        NOT NULL,
    count        bigint      NOT NULL,
    PRIMARY KEY (experiment, window_start, status)
);

-- Next Kafka offset to consume per partition, written in the same transaction as the counts
-- it produced: this table, not Kafka's group offsets, is the aggregator's source of truth.
CREATE TABLE consumer_offsets (
    consumer_group text   NOT NULL,
    topic          text   NOT NULL,
    partition      int    NOT NULL,
    next_offset    bigint NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition)
);
