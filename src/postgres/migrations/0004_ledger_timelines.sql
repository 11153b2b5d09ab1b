-- The ledger as one unbroken chain per pool. Each event names the stream entry of its pool's
-- previous event (prev_stream_entry_id; '' for events written before this). An event joins the
-- ledger only right after its pool's head and only if it chains to it: a Redis that lost the tail
-- of its data (an AOF cut by a power loss, a failover to a lagging replica) hands out the lost
-- sequence numbers again, and every event of that new timeline, also past what Postgres had, is
-- kept apart in ledger_conflicts (reason 'diverged') instead of being mixed into the ledger.
ALTER TABLE ledger_events ADD COLUMN prev_stream_entry_id text NOT NULL DEFAULT '';

-- Why a conflict was kept apart: 'payload_differs' (its event id was stored with another payload)
-- or 'diverged' (it does not chain to the ledger's timeline).
ALTER TABLE ledger_conflicts ADD COLUMN reason text NOT NULL DEFAULT 'payload_differs';

-- Per pool, the ledger's last event: every event from 1 up to it is stored. Each flush transaction
-- locks the heads of its pools (in key order) first, so flushes of one pool take turns.
-- replaced_before: the last repair's mark in Redis' stream (its Redis time as an entry id): an
-- event kept apart from before it was of a timeline that repair replaced (kept, marked repaired).
CREATE TABLE ledger_heads (
  account_id       text PRIMARY KEY,
  seq              bigint NOT NULL,
  stream_entry_id  text NOT NULL,
  replaced_before  text NOT NULL DEFAULT ''
);
INSERT INTO ledger_heads (account_id, seq, stream_entry_id)
SELECT DISTINCT ON (account_id) account_id, seq, stream_entry_id FROM ledger_events ORDER BY account_id, seq DESC;

-- Events flushed before the one they follow (another lane's or replica's batch, still in flight):
-- durable here, and joined to the ledger (or kept apart) by the flush that brings their predecessor.
CREATE TABLE ledger_parked (
  account_id       text NOT NULL,
  seq              bigint NOT NULL,
  stream_entry_id  text NOT NULL,
  payload          jsonb NOT NULL,
  parked_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, seq, stream_entry_id)
);

-- Stream entry ids ("<ms>-<n>") in order: a before b.
CREATE FUNCTION stream_entry_before(a text, b text) RETURNS boolean IMMUTABLE LANGUAGE sql AS $$
  SELECT (split_part(a, '-', 1)::bigint, split_part(a, '-', 2)::bigint) < (split_part(b, '-', 1)::bigint, split_part(b, '-', 2)::bigint)
$$;
