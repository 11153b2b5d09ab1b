import { DomainError, ErrorReason, isErrorReason, type ErrorMetadata } from '../domain/errors.js';
import type { Reply } from './replies.js';

/**
 * Turns a script's refusal ({e: reason, ...details}) into a DomainError with a message a person can
 * read. Every detail also goes into the error's metadata, so callers never parse the message.
 */
export interface ErrorContext {
  /** What needed the credits, for INSUFFICIENT_CREDITS ("image_2k needs 60 credits; 45 available"). */
  what?: string;
}

function metadataOf(reply: Reply): ErrorMetadata {
  const metadata: ErrorMetadata = {};
  for (const [key, value] of Object.entries(reply)) {
    if (key !== 'e' && (typeof value === 'string' || typeof value === 'number')) metadata[key] = String(value);
  }
  // Times travel as ms; people and ErrorInfo readers get ISO 8601.
  if (metadata.period_end !== undefined) metadata.period_end = new Date(Number(metadata.period_end)).toISOString();
  return metadata;
}

function messageFor(reason: ErrorReason, m: ErrorMetadata, context: ErrorContext): string {
  switch (reason) {
    case ErrorReason.INSUFFICIENT_CREDITS:
      return `${context.what ?? 'this operation'} needs ${m.required} credits; ${m.available} available`;
    case ErrorReason.ACCOUNT_NOT_FOUND:
      return `account "${m.account_id}" does not exist`;
    case ErrorReason.RESERVATION_NOT_FOUND:
      return `reservation "${m.reservation_id}" does not exist (or is past its retention)`;
    case ErrorReason.IDEMPOTENCY_KEY_REUSED:
      return 'this idempotency key was already used with different parameters';
    case ErrorReason.RESERVATION_COMMITTED:
      return `reservation "${m.reservation_id}" is already committed`;
    case ErrorReason.RESERVATION_RELEASED:
      return `reservation "${m.reservation_id}" was released; nothing was charged`;
    case ErrorReason.RESERVATION_EXPIRED:
      return `reservation "${m.reservation_id}" expired before it was settled; nothing was charged`;
    case ErrorReason.RESERVATION_NOT_COMMITTED:
      return `reservation "${m.reservation_id}" was never charged, so there is nothing to refund`;
    case ErrorReason.REFUND_EXCEEDS_CHARGE:
      return `refund of ${m.requested} credits exceeds the ${m.refundable} still refundable on this reservation`;
    case ErrorReason.ADJUSTMENT_EXCEEDS_BALANCE:
      return `removing ${m.required} credits would go below zero; ${m.available} can be removed`;
    case ErrorReason.POOL_LIMIT_EXCEEDED:
      return `the account's pool may hold at most ${m.pool_max} credits`;
    case ErrorReason.COST_TOO_LARGE:
      return `the cost exceeds the limit of ${m.credits_max} credits per operation`;
    case ErrorReason.PARENT_IMMUTABLE:
      return `account${m.account_id ? ` "${m.account_id}"` : ''} exists with another parent; parent_id is set at creation and cannot change`;
    case ErrorReason.PARENT_NOT_FOUND:
      return `parent account "${m.parent_id}" does not exist`;
    case ErrorReason.PARENT_IS_SPACE:
      return `parent "${m.parent_id}" is itself a space; spaces nest one level only`;
    case ErrorReason.ANCHOR_IMMUTABLE:
      return `billing_anchor cannot change once set (it is ${new Date(Number(m.billing_anchor)).toISOString()})`;
    case ErrorReason.PLAN_REQUIRED:
      return 'a root account needs a plan';
    case ErrorReason.SPACE_SETTING:
      return 'a space draws on its parent: it has no plan or trial of its own';
    case ErrorReason.ACCOUNT_EXISTS:
      return `account "${m.account_id}" already exists in Redis; rebuild-redis only restores missing accounts`;
    case ErrorReason.ACCOUNT_IS_SPACE:
      return `account "${m.account_id}" is a space; change the plan of its parent "${m.parent_id}"`;
    default:
      return reason;
  }
}

export function scriptRefusal(reply: Reply, context: ErrorContext = {}): DomainError {
  const metadata = metadataOf(reply);
  // A stub where the account itself was expected: the id is taken by a space living elsewhere.
  const reason = reply.e === 'MOVED' ? ErrorReason.PARENT_IMMUTABLE : String(reply.e);
  if (!isErrorReason(reason)) {
    return new DomainError(ErrorReason.INTERNAL, `unexpected script refusal ${reason}`, metadata);
  }
  return new DomainError(reason, messageFor(reason, metadata, context), metadata);
}
