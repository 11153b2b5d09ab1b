/**
 * Reserve+Commit throughput and latency through the real gRPC server and Redis.
 *
 *   npm run bench -- [--seconds 10] [--concurrency 64] [--accounts 1000] [--redis redis://127.0.0.1:6379]
 *
 * Starts meterd in this process (or targets --target host:port of a running one), creates the accounts,
 * then runs `concurrency` loops, each doing ReserveCredits then CommitReservation, for `seconds`.
 * Prints operations per second (one op = reserve + commit), client-side latency percentiles of each
 * call and, in-process, meterd's own handling time per call (HDR histograms). --accounts 1 measures one hot account.
 */
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import * as hdr from 'hdr-histogram-js';
import { pino } from 'pino';
import { startMeterd } from '../src/app.js';
import { loadProductConfig } from '../src/config/product-config.js';
import { loadSettings } from '../src/config/settings.js';
import { connectClients } from '../test/support/grpc-clients.js';
import { deleteKeys } from '../test/support/meterd.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '64' },
    accounts: { type: 'string', default: '1000' },
    redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
    target: { type: 'string' },
  },
});
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);
const accountCount = Number(values.accounts);

const keyPrefix = `bench${randomBytes(4).toString('hex')}`;
/** meterd's own time per call: from the handler's start to its answer (in-process runs only). */
const serverHandling = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 10_000_000, numberOfSignificantValueDigits: 3 });
let measuring = false;
let stopServer = async () => {};
let port: number;
if (values.target) {
  port = Number(values.target.split(':')[1]);
} else {
  const settings = loadSettings({ ...process.env, REDIS_URL: values.redis, REDIS_KEY_PREFIX: keyPrefix, GRPC_HOST: '127.0.0.1', GRPC_PORT: '0', HTTP_HOST: '127.0.0.1', HTTP_PORT: '0' });
  const meterd = await startMeterd({
    settings, product: loadProductConfig(settings.productConfigPath), logger: pino({ level: 'warn' }),
    observeCall: (_service, _method, _code, seconds) => {
      if (measuring) serverHandling.recordValue(Math.max(1, Math.round(seconds * 1e6)));
    },
  });
  port = meterd.grpcPort;
  stopServer = async () => {
    await meterd.stop();
    await deleteKeys(values.redis, `${keyPrefix}:*`);
  };
}
const { metering, admin, close } = connectClients(port);

const accounts = Array.from({ length: accountCount }, (_, i) => `bench-${keyPrefix}-${i}`);
for (const accountId of accounts) {
  await admin.upsertAccount({ account: { accountId, plan: 'pro', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
  await admin.grantCredits({ accountId, credits: 1_000_000_000n, kind: 1, grantId: `bench-pack-${accountId}`, reason: 'bench' });
}

const reserveLatency = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 10_000_000, numberOfSignificantValueDigits: 3 });
const commitLatency = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 10_000_000, numberOfSignificantValueDigits: 3 });
const micros = (start: bigint) => Number((process.hrtime.bigint() - start) / 1000n);

let operations = 0;
let errors = 0;
measuring = true;
const deadline = Date.now() + seconds * 1000;
const cpuBefore = process.cpuUsage();
const wallStart = process.hrtime.bigint();
await Promise.all(
  Array.from({ length: concurrency }, async (_, worker) => {
    let n = 0;
    while (Date.now() < deadline) {
      const accountId = accounts[(worker + n * concurrency) % accounts.length] as string;
      n++;
      try {
        let start = process.hrtime.bigint();
        const hold = await metering.reserveCredits({ accountId, feature: 'content_rewrite', requestId: `b${worker}-${n}`, userId: `u${worker}`, labels: {} });
        reserveLatency.recordValue(micros(start));
        start = process.hrtime.bigint();
        await metering.commitReservation({ reservationId: hold.reservationId });
        commitLatency.recordValue(micros(start));
        operations++;
      } catch {
        errors++;
      }
    }
  }),
);
const wallSeconds = Number(process.hrtime.bigint() - wallStart) / 1e9;
const cpu = process.cpuUsage(cpuBefore);

const line = (name: string, h: hdr.Histogram) =>
  `${name.padEnd(8)} p50 ${h.getValueAtPercentile(50)} µs  p99 ${h.getValueAtPercentile(99)} µs  p99.9 ${h.getValueAtPercentile(99.9)} µs  max ${h.maxValue} µs`;
console.log(`machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, node ${process.version}`);
console.log(`setup: ${values.target ? `target ${values.target}` : 'meterd in-process'}, concurrency ${concurrency}, accounts ${accountCount}, ${seconds} s`);
console.log(`reserve+commit: ${(operations / wallSeconds).toFixed(0)} ops/s (${operations} ops, ${errors} errors)`);
console.log(line('reserve', reserveLatency));
console.log(line('commit', commitLatency));
if (!values.target) console.log(line('server', serverHandling) + '  (meterd handler start → answer, both RPCs)');
console.log(`process CPU (client + server): ${((cpu.user + cpu.system) / 1e6 / wallSeconds * 100).toFixed(0)}% of one core`);
close();
await stopServer();
process.exit(0);
