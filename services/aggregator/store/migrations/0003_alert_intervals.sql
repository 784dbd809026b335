-- The evidence behind each alert state and transition: the rule's interval (NULL bounds when
-- open on that side or not computable), the rule status it came from and why.
ALTER TABLE alert_states
    ADD COLUMN interval_low  double precision,
    ADD COLUMN interval_high double precision,
    ADD COLUMN status        text NOT NULL DEFAULT '',
    ADD COLUMN reason        text NOT NULL DEFAULT '';
ALTER TABLE alert_history
    ADD COLUMN interval_low  double precision,
    ADD COLUMN interval_high double precision,
    ADD COLUMN status        text NOT NULL DEFAULT '',
    ADD COLUMN reason        text NOT NULL DEFAULT '';
