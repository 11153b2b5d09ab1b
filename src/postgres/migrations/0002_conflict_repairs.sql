-- A conflict (an event Redis wrote over a sequence number it had lost) stays for an operator to
-- review; repaired_at records when its pool was rebuilt from the ledger, so reconciliation stops
-- reporting it. The rows themselves are never deleted.
ALTER TABLE ledger_conflicts ADD COLUMN repaired_at timestamptz;
CREATE INDEX ledger_conflicts_unrepaired ON ledger_conflicts (account_id) WHERE repaired_at IS NULL;
