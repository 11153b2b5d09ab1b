import { createServer, type IncomingHttpHeaders } from 'node:http';

/** A webhook request as the receiver got it: the raw body, before any parsing (signatures cover it). */
export interface ReceivedRequest {
  /** 1 for the first request this receiver got. */
  number: number;
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  rawBody: Buffer;
}

export interface Answer {
  status: number;
  body?: string;
  headers?: Record<string, string>;
}

/** Decides the answer to each request; may wait (a slow or hanging receiver). */
export type Answerer = (request: ReceivedRequest) => number | Answer | Promise<number | Answer>;

export interface AlertReceiver {
  /** http://127.0.0.1:<port>/alerts */
  url: string;
  port: number;
  requests: ReceivedRequest[];
  /** Replaces how the receiver answers from the next request on. */
  answerWith(answerer: Answerer): void;
  /** Resolves once `count` requests have arrived (the test's timeout bounds the wait). */
  received(count: number): Promise<ReceivedRequest[]>;
  close(): Promise<void>;
}

/** Of a request body, at most this much is kept (alert payloads are a few hundred bytes). */
const RECEIVER_BODY_BYTES_MAX = 65_536;

/** A local webhook receiver on a free loopback port that records every request and answers as told. */
export async function startAlertReceiver(answerer: Answerer = () => 200): Promise<AlertReceiver> {
  let answer = answerer;
  const requests: ReceivedRequest[] = [];
  const waiters: Array<{ count: number; resolve: (requests: ReceivedRequest[]) => void }> = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    request.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes <= RECEIVER_BODY_BYTES_MAX) chunks.push(chunk);
    });
    request.on('end', () => {
      const received: ReceivedRequest = {
        number: requests.length + 1, method: request.method ?? '', path: request.url ?? '', headers: request.headers, rawBody: Buffer.concat(chunks),
      };
      requests.push(received);
      for (const waiter of [...waiters]) {
        if (requests.length >= waiter.count) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(requests.slice());
        }
      }
      Promise.resolve(answer(received)).then((given) => {
        const { status, body = '', headers = {} } = typeof given === 'number' ? { status: given } : given;
        if (response.destroyed) return;
        response.writeHead(status, { 'content-type': 'text/plain', ...headers });
        response.end(body);
      }, () => response.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/alerts`,
    port,
    requests,
    answerWith(next) {
      answer = next;
    },
    received(count) {
      if (requests.length >= count) return Promise.resolve(requests.slice());
      return new Promise((resolve) => waiters.push({ count, resolve }));
    },
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
