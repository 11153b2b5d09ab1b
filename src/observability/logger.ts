import { pino, type Logger } from 'pino';

export type { Logger };

/** One root logger: JSON lines on stdout; secrets never logged (URLs with credentials are redacted). */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'meterd' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['redisUrl', '*.redisUrl', 'databaseUrl', '*.databaseUrl', 'authorization', '*.authorization'], censor: '[redacted]' },
    serializers: { err: pino.stdSerializers.err },
  });
}
