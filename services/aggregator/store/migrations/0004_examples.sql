-- The requests kept to explain each base window: per experiment, shadow, window and kind the
-- k best by score (window.Picker), written in the same transaction as the windows and pruned
-- back to k there. example is the apiv1.Example JSON the API serves; it holds payloads
-- (bodies as captured, redaction applied). Kept as long as the base windows.
CREATE TABLE aggregator_examples (
    experiment   text             NOT NULL,
    shadow       text             NOT NULL,
    window_start timestamptz      NOT NULL,
    kind         text             NOT NULL,
    request_id   text             NOT NULL,
    score        double precision NOT NULL,
    example      jsonb            NOT NULL,
    PRIMARY KEY (experiment, shadow, window_start, kind, request_id)
);
CREATE INDEX aggregator_examples_start ON aggregator_examples (window_start);
