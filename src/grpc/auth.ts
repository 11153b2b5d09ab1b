import { createHash, timingSafeEqual } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import { DomainError, ErrorReason } from '../domain/errors.js';

/**
 * Bearer tokens per service: a data-plane token (gateways) may call MeteringService; an admin token
 * may call AdminService and MeteringService. Tokens are compared as SHA-256 digests with
 * timingSafeEqual against every configured token, so neither a token's content nor its position
 * leaks through timing. The health and reflection services are not wrapped and stay open.
 */
export type Authorizer = (service: string, metadata: Metadata) => void;

export const DATA_PLANE_SERVICE = 'meterd.v1.MeteringService';
const BEARER = /^Bearer ([\x21-\x7e]+)$/;

type Role = 'data-plane' | 'admin';

const digest = (token: string) => createHash('sha256').update(token, 'utf8').digest();

/** Null when no token is configured (authentication off; startup warns). */
export function tokenAuthorizer(dataPlaneTokens: readonly string[], adminTokens: readonly string[]): Authorizer | null {
  if (dataPlaneTokens.length === 0 && adminTokens.length === 0) return null;
  const known: Array<{ digest: Buffer; role: Role }> = [
    ...dataPlaneTokens.map((t) => ({ digest: digest(t), role: 'data-plane' as const })),
    ...adminTokens.map((t) => ({ digest: digest(t), role: 'admin' as const })),
  ];
  return (service, metadata) => {
    const header = metadata.get('authorization')[0];
    if (header === undefined || header === '') {
      throw new DomainError(ErrorReason.TOKEN_MISSING, 'authorization metadata missing: send "authorization: Bearer <token>"');
    }
    const presented = typeof header === 'string' ? BEARER.exec(header)?.[1] : undefined;
    const presentedDigest = digest(presented ?? '');
    let role: Role | undefined;
    for (const candidate of known) {
      // No early exit: every candidate is compared.
      if (timingSafeEqual(candidate.digest, presentedDigest) && presented !== undefined) role ??= candidate.role;
    }
    if (role === undefined) throw new DomainError(ErrorReason.TOKEN_INVALID, 'the bearer token is not valid');
    if (role === 'data-plane' && service !== DATA_PLANE_SERVICE) {
      throw new DomainError(ErrorReason.PERMISSION_DENIED, `a data-plane token may call ${DATA_PLANE_SERVICE} only`, { service });
    }
  };
}
