/**
 * Every hard bound meterd enforces, in one place (TIGER_STYLE: "put a limit on everything").
 * Units are last in each name. The README's "Limits" table lists these; a test keeps it in sync.
 */

/** Ids (account, feature, plan, request, grant, ...): 1–128 characters of this set. No `{`/`}` so an
 *  id can never change a Redis Cluster hash tag, no spaces or control characters. */
export const ID_LENGTH_MAX = 128;
export const ID_PATTERN = /^[A-Za-z0-9._:-]+$/;
export const ID_CHARACTERS_DESCRIPTION = 'letters, digits and . _ : -';

/** Any single amount of credits or units. Far below 2^53 so Lua's doubles stay exact. */
export const CREDITS_MAX = 1_000_000_000_000_000n; // 10^15
export const UNITS_MAX = 1_000_000_000_000_000n; // 10^15

/** An account's pool may not hold more than this in its buckets together (grants and adjustments
 *  beyond it are refused), so every sum Lua computes (buckets + overage room + held) stays < 2^53. */
export const POOL_CREDITS_MAX = 2_000_000_000_000_000n; // 2 × 10^15

/** A price-list entry: `credits` per `per_units` units. Bounded so cost arithmetic stays exact:
 *  the Lua pricing multiplies a remainder below per_units by credits, which must stay below 2^53. */
export const PRICE_CREDITS_MAX = 1_000_000; // 10^6
export const PRICE_PER_UNITS_MAX = 1_000_000_000; // 10^9

/** Hold time to live. */
export const TTL_SECONDS_DEFAULT = 300;
export const TTL_SECONDS_MIN = 1;
export const TTL_SECONDS_MAX = 86_400;

/** Labels on a reservation (e.g. model). */
export const LABELS_COUNT_MAX = 16;
export const LABEL_KEY_LENGTH_MAX = 64;
export const LABEL_VALUE_LENGTH_MAX = 256;

/** Free-text reasons and actors recorded in the ledger. */
export const REASON_LENGTH_MAX = 256;

/** A repeated request_id within this window returns the original reservation (rule 11). */
export const REQUEST_ID_RETENTION_SECONDS = 86_400;
/** A settled reservation is kept this long, for repeated commits/releases and for refunds. */
export const SETTLED_RESERVATION_RETENTION_SECONDS = 7 * 86_400;
/** Grant, adjustment and refund ids are remembered this long (Stripe retries webhooks for days). */
export const OPERATION_ID_RETENTION_SECONDS = 90 * 86_400;
/** Live usage counters outlive their period by this much (the ledger keeps history for good). */
export const USAGE_RETENTION_AFTER_PERIOD_SECONDS = 62 * 86_400;

/** Expired holds released per script call for the touched pool, and per sweeper call per partition. */
export const LAZY_EXPIRY_BATCH_MAX = 32;
export const SWEEP_BATCH_MAX = 256;

/** Redis Cluster partitions (hash-tag slots) accounts are spread over. Changing it moves accounts:
 *  it is fixed for the lifetime of a Redis dataset. */
export const PARTITION_COUNT = 64;

/** Plans and features in one product config. */
export const PLANS_COUNT_MAX = 100;
export const FEATURES_COUNT_MAX = 1_000;

/** ListLedgerEntries page size. */
export const LEDGER_PAGE_SIZE_DEFAULT = 50;
export const LEDGER_PAGE_SIZE_MAX = 500;

/** gRPC request size (every request is small), and response size (a ledger page of 500 entries). */
export const GRPC_MESSAGE_BYTES_MAX = 64 * 1024;
export const GRPC_RESPONSE_BYTES_MAX = 4 * 1024 * 1024;

// Relationships between limits, checked at load time.
if (SETTLED_RESERVATION_RETENTION_SECONDS < REQUEST_ID_RETENTION_SECONDS) {
  throw new Error('a settled reservation must outlive its request_id so a replay can answer');
}
if (POOL_CREDITS_MAX * 3n >= 2n ** 53n) throw new Error('pool sums must stay below 2^53');
if (BigInt(PRICE_CREDITS_MAX) * BigInt(PRICE_PER_UNITS_MAX) >= 2n ** 53n) throw new Error('price products must stay below 2^53');

/** Low-balance alerts as a share of the plan's allowance: whole percent. */
export const LOW_BALANCE_PERCENT_MAX = 100;

/** Credit packs on sale in one product config, and quick-pick amounts offered for a custom quantity. */
export const CREDIT_PACKS_COUNT_MAX = 20;
export const QUICK_PICKS_COUNT_MAX = 8;
/** The largest single charge Stripe accepts: eight digits in the currency's smallest unit ($999,999.99). */
export const CHARGE_AMOUNT_MINOR_MAX = 99_999_999;
/** Auto-refill's monthly spending cap (in the smallest currency unit): a bound, not a business rule. */
export const REFILL_MONTHLY_CAP_MINOR_MAX = 10_000_000_000;
/** success_url / cancel_url of a Checkout Session. */
export const URL_LENGTH_MAX = 2_048;
/** Stripe object ids (cus_..., pm_..., cs_..., pi_...) and idempotency keys are at most 255 characters. */
export const STRIPE_ID_LENGTH_MAX = 255;
export const STRIPE_IDEMPOTENCY_KEY_LENGTH_MAX = 255;
/** A Billing Meter event's identifier is at most 100 characters. */
export const STRIPE_METER_IDENTIFIER_LENGTH_MAX = 100;
