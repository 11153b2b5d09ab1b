-- Each event names the stream entry of its pool's previous event: a chain that tells Redis'
-- timelines apart. A Redis that lost the tail of its data (an AOF cut by a power loss, a failover
-- to a lagging replica) hands out the lost sequence numbers again; every event of that new
-- timeline, including those past what Postgres had, is kept apart in ledger_conflicts
-- (reason 'diverged') instead of being mixed into the ledger. '' for events written before this.
ALTER TABLE ledger_events ADD COLUMN prev_stream_entry_id text NOT NULL DEFAULT '';
-- Why a conflict was kept apart: 'payload_differs' (its event id was stored with another payload)
-- or 'diverged' (it follows a kept-apart event, or its chain does not meet the stored predecessor).
ALTER TABLE ledger_conflicts ADD COLUMN reason text NOT NULL DEFAULT 'payload_differs';
