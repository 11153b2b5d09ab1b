-- Money in (Stripe top-ups, auto-refill), overage billed separately, and balance alerts out.
-- Every side effect runs from a row here (an outbox), so a crash between Postgres and Redis or
-- Stripe or a webhook receiver only delays it: each is replayed on start and retried with backoff.

-- Alert and refill events carry their figures here ({"available": "...", "threshold": "..."}).
ALTER TABLE ledger_events ADD COLUMN detail jsonb;

-- Low-balance threshold as a percentage of the plan's allowance (0 = off); the effective threshold is
-- the larger of this and low_balance_threshold.
ALTER TABLE accounts ADD COLUMN low_balance_percent integer NOT NULL DEFAULT 0;

-- Every Stripe webhook event received with a valid signature, once (Stripe delivers at least once).
CREATE TABLE stripe_events (
  event_id      text PRIMARY KEY,
  type          text NOT NULL,
  created       timestamptz NOT NULL,          -- Stripe's event.created
  payload       jsonb NOT NULL,
  received_at   timestamptz NOT NULL DEFAULT now(),
  -- 'granted', 'ignored', 'unpaid', 'refill_failed', ...: what handling it did (for the operator).
  outcome       text NOT NULL DEFAULT ''
);

-- Checkout Sessions meterd created (CreateCheckoutSession), and their fulfilment.
CREATE TABLE checkout_sessions (
  session_id    text PRIMARY KEY,              -- Stripe's cs_...
  account_id    text NOT NULL,                 -- the pool root the credits land on
  requested_by  text NOT NULL,                 -- the account that asked (a space buys for its parent)
  pack_id       text NOT NULL DEFAULT '',      -- '' for a custom quantity
  credits       bigint NOT NULL CHECK (credits > 0),
  amount_cents  bigint NOT NULL CHECK (amount_cents >= 0),
  currency      text NOT NULL,
  status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid', 'expired', 'failed')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  paid_at       timestamptz
);
CREATE INDEX checkout_sessions_account ON checkout_sessions (account_id, created_at);

-- Grants owed to Redis: written in the same transaction that decides them (a paid session, a
-- succeeded refill), applied by the grant relay with GrantCredits (idempotent on grant_id), marked
-- applied_at after. grant_id is unique per purchase: 'checkout:<cs_...>', 'refill:<refill_id>'.
CREATE TABLE credit_grant_outbox (
  grant_id      text PRIMARY KEY,
  account_id    text NOT NULL,
  credits       bigint NOT NULL CHECK (credits > 0),
  reason        text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  attempts      integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_error    text NOT NULL DEFAULT '',
  applied_at    timestamptz
);
CREATE INDEX credit_grant_outbox_pending ON credit_grant_outbox (next_attempt_at) WHERE applied_at IS NULL;

-- Auto-refill settings per pool root (authoritative here; Redis keeps the threshold to detect it).
CREATE TABLE auto_refill_settings (
  account_id          text PRIMARY KEY,
  enabled             boolean NOT NULL,
  threshold_credits   bigint NOT NULL CHECK (threshold_credits > 0),
  pack_id             text NOT NULL DEFAULT '',   -- refill this pack ...
  target_credits      bigint,                     -- ... or up to this balance (custom quantity)
  monthly_cap_cents   bigint NOT NULL CHECK (monthly_cap_cents >= 0),
  payment_method_id   text NOT NULL,              -- saved card of the account's Stripe customer
  disabled_reason     text NOT NULL DEFAULT '',
  updated_at          timestamptz NOT NULL DEFAULT now()
);

-- One row per refill the reserve/commit path asked for (its refill_due ledger event), through payment.
CREATE TABLE refill_attempts (
  refill_id          text PRIMARY KEY,            -- the refill_due event id "<pool>/<seq>"
  account_id         text NOT NULL,
  status             text NOT NULL DEFAULT 'due'
                     CHECK (status IN ('due', 'processing', 'succeeded', 'failed', 'skipped')),
  credits            bigint NOT NULL DEFAULT 0,
  amount_cents       bigint NOT NULL DEFAULT 0,
  currency           text NOT NULL DEFAULT '',
  payment_intent_id  text NOT NULL DEFAULT '',
  attempts           integer NOT NULL DEFAULT 0,
  next_attempt_at    timestamptz NOT NULL DEFAULT now(),
  last_error         text NOT NULL DEFAULT '',
  created_at         timestamptz NOT NULL DEFAULT now(),
  settled_at         timestamptz
);
CREATE INDEX refill_attempts_open ON refill_attempts (next_attempt_at) WHERE status IN ('due', 'processing');
CREATE INDEX refill_attempts_account ON refill_attempts (account_id, created_at);

-- Overage reported to Stripe as Billing Meter events: one row per account, period and batch, written
-- before the call, so a retry sends the same identifier and Stripe never bills twice.
CREATE TABLE overage_reports (
  account_id    text NOT NULL,
  period_start  timestamptz NOT NULL,
  batch         integer NOT NULL,
  credits       bigint NOT NULL CHECK (credits > 0),
  identifier    text NOT NULL UNIQUE,            -- "ovg:<account>:<period start ms>:<batch>"
  created_at    timestamptz NOT NULL DEFAULT now(),
  attempts      integer NOT NULL DEFAULT 0,
  last_error    text NOT NULL DEFAULT '',
  reported_at   timestamptz,
  PRIMARY KEY (account_id, period_start, batch)
);
CREATE INDEX overage_reports_unreported ON overage_reports (created_at) WHERE reported_at IS NULL;

-- Balance alerts (low, exhausted, recovered, refill_failed), one per crossing: inserted by the flush
-- from 'alert' ledger events (alert_id = the event id) or by the refill worker; delivered to every
-- configured webhook URL and streamed by WatchAlerts (ordered by position).
CREATE TABLE alerts (
  position      bigserial UNIQUE,
  alert_id      text PRIMARY KEY,
  account_id    text NOT NULL,
  kind          text NOT NULL CHECK (kind IN ('low', 'exhausted', 'recovered', 'refill_failed')),
  available     bigint NOT NULL,
  threshold     bigint NOT NULL,
  occurred_at   timestamptz NOT NULL,
  detail        jsonb
);
CREATE INDEX alerts_account ON alerts (account_id, occurred_at);

-- Delivery of each alert to each webhook URL: retried with backoff until a 2xx, at most a bounded
-- number of attempts; the rows are the delivery log.
CREATE TABLE alert_deliveries (
  alert_id        text NOT NULL REFERENCES alerts (alert_id),
  url             text NOT NULL,
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_status     integer,
  last_error      text NOT NULL DEFAULT '',
  delivered_at    timestamptz,
  gave_up_at      timestamptz,
  PRIMARY KEY (alert_id, url)
);
CREATE INDEX alert_deliveries_pending ON alert_deliveries (next_attempt_at) WHERE delivered_at IS NULL AND gave_up_at IS NULL;

-- The Stripe customer of each pool root: overage meter events and off-session refills bill it.
CREATE TABLE stripe_customers (
  account_id          text PRIMARY KEY,
  stripe_customer_id  text NOT NULL,
  updated_at          timestamptz NOT NULL DEFAULT now()
);
