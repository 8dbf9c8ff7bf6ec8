"""Real-time customer state: events in, per-customer history records, fresh features and scores, triggers out.

- `store`: the online store's contract and the embedded SQLite store (one file, WAL, no server);
  `redis_store`: the same contract on Redis, shared by several service replicas.
- `engine`: what one batch of events does to the store — validated, deduplicated by event id, appended to
  each customer's record (`features.history`), features rebuilt as of the store's clock, scored by the
  churn model, and a trigger written to the outbox for every threshold crossing, all in one write.
- `stream`: `winback stream`, a Redis Streams consumer group feeding the engine (at-least-once, acknowledged
  after the write).
"""
