-- The durable record of every credit movement, flushed from the Redis ledger streams.
-- Append-only migrations: never edit a file once it has shipped; add the next number instead.

-- Account settings, as the last account_settings event of the account's pool set them.
CREATE TABLE accounts (
  account_id            text PRIMARY KEY,
  parent_id             text NOT NULL DEFAULT '',
  plan                  text NOT NULL DEFAULT '',
  pending_plan          text NOT NULL DEFAULT '',
  billing_anchor        timestamptz NOT NULL,
  space_limit_credits   bigint,
  trial_credits         bigint NOT NULL DEFAULT 0,
  trial_ends_at         timestamptz,
  low_balance_threshold bigint NOT NULL DEFAULT 0,
  created_at            timestamptz NOT NULL,
  -- (pool, seq) of the event that set these: an older event never overwrites a newer one.
  settings_pool         text NOT NULL,
  settings_seq          bigint NOT NULL
);
CREATE INDEX accounts_parent ON accounts (parent_id) WHERE parent_id <> '';

-- One row per ledger event. Amounts are signed changes of the pool's fields (see README).
CREATE TABLE ledger_events (
  event_id         text PRIMARY KEY,          -- "<pool>/<seq>"
  account_id       text NOT NULL,             -- the pool (root account)
  seq              bigint NOT NULL,           -- per pool, from 1, without gaps
  kind             text NOT NULL,
  space_id         text NOT NULL DEFAULT '',
  user_id          text NOT NULL DEFAULT '',
  feature          text NOT NULL DEFAULT '',
  reservation_id   text NOT NULL DEFAULT '',
  trial            bigint NOT NULL DEFAULT 0,
  allowance        bigint NOT NULL DEFAULT 0,
  promo            bigint NOT NULL DEFAULT 0,
  pack             bigint NOT NULL DEFAULT 0,
  overage          bigint NOT NULL DEFAULT 0,
  held             bigint NOT NULL DEFAULT 0,
  charged          bigint NOT NULL DEFAULT 0,
  charged_overage  bigint NOT NULL DEFAULT 0,
  shortfall        bigint NOT NULL DEFAULT 0,
  promo_detail     text NOT NULL DEFAULT '',
  plan             text NOT NULL DEFAULT '',
  period_start     timestamptz,
  period_end       timestamptz,
  expires_at       timestamptz,                -- a promotional grant's expiry (NULL: never)
  op_id            text NOT NULL DEFAULT '',
  reason           text NOT NULL DEFAULT '',
  actor            text NOT NULL DEFAULT '',
  labels           jsonb,
  settings         jsonb,
  occurred_at      timestamptz NOT NULL,
  stream_entry_id  text NOT NULL,
  -- Hash of the event's fields: the same event id with another payload is a bug to alarm on.
  payload_sha256   text NOT NULL,
  flushed_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (account_id, seq)
);
CREATE INDEX ledger_events_account_time ON ledger_events (account_id, occurred_at);
CREATE INDEX ledger_events_space_time ON ledger_events (space_id, occurred_at) WHERE space_id <> '';
CREATE INDEX ledger_events_reservation ON ledger_events (reservation_id) WHERE reservation_id <> '';

-- How each reservation ended (commit, release or expiry) and what was refunded since.
CREATE TABLE reservation_outcomes (
  reservation_id   text PRIMARY KEY,
  account_id       text NOT NULL,
  space_id         text NOT NULL DEFAULT '',
  user_id          text NOT NULL DEFAULT '',
  feature          text NOT NULL DEFAULT '',
  state            text NOT NULL CHECK (state IN ('committed', 'released', 'expired')),
  charged          bigint NOT NULL DEFAULT 0,
  charged_overage  bigint NOT NULL DEFAULT 0,
  shortfall        bigint NOT NULL DEFAULT 0,
  refunded         bigint NOT NULL DEFAULT 0,
  settled_at       timestamptz NOT NULL,
  event_id         text NOT NULL
);
CREATE INDEX reservation_outcomes_account ON reservation_outcomes (account_id, settled_at);

-- Committed usage per pool × period × space × feature × user ('' = none), kept by the flush.
CREATE TABLE usage_rollups (
  account_id    text NOT NULL,
  period_start  timestamptz NOT NULL,
  space_id      text NOT NULL DEFAULT '',
  feature       text NOT NULL,
  user_id       text NOT NULL DEFAULT '',
  operations    bigint NOT NULL DEFAULT 0,
  credits       bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (account_id, period_start, space_id, feature, user_id)
);

-- Events that arrived with an id Postgres already holds under another payload: a Redis that lost its
-- tail reused sequence numbers (or a bug). Kept here, never dropped, for an operator to repair.
CREATE TABLE ledger_conflicts (
  id               bigserial PRIMARY KEY,
  event_id         text NOT NULL,
  account_id       text NOT NULL,
  seq              bigint NOT NULL,
  payload          jsonb NOT NULL,
  stream_entry_id  text NOT NULL,
  detected_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (event_id, stream_entry_id)
);
