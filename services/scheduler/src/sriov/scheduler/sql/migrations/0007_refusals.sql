-- The Failed events of refused asynchronous requests, by event id (derived from the request
-- message's stream position). A redelivery of that message (its ack lost after the refusal
-- committed) is acknowledged, not placed again: placed again once capacity had appeared, it
-- reserved, and the requester got a Reserved after the Failed of the same request (the soak's
-- 71.6 s round, 2026-12-01). A new message with the same request id is still a retry.
CREATE TABLE scheduler.refusals (
    event_id   uuid PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refusals_by_age ON scheduler.refusals (created_at);
