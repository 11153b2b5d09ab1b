import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from './logger.js';

/**
 * meterd's HTTP port (HTTP_PORT): /metrics for Prometheus, /healthz and /readyz for probes; later
 * issues add routes (Stripe webhooks). Routes are "METHOD /path"; anything else is 404 or 405.
 */
export type HttpHandler = (request: IncomingMessage, response: ServerResponse) => Promise<void> | void;

/** Request bodies larger than this are refused (413) by handlers that read a body. */
export const HTTP_BODY_BYTES_MAX = 1_048_576;
/** A request must arrive whole within this time. */
export const HTTP_REQUEST_TIMEOUT_MS = 10_000;

export interface RunningHttpServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

export function sendJson(response: ServerResponse, statusCode: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(statusCode, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

export async function startHttpServer(host: string, port: number, routes: Record<string, HttpHandler>, logger: Logger): Promise<RunningHttpServer> {
  const paths = new Set(Object.keys(routes).map((route) => route.slice(route.indexOf(' ') + 1)));
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0] as string;
    const handler = routes[`${request.method} ${path}`];
    if (!handler) {
      sendJson(response, paths.has(path) ? 405 : 404, { error: paths.has(path) ? 'method not allowed' : 'not found' });
      return;
    }
    Promise.resolve()
      .then(() => handler(request, response))
      .catch((err: unknown) => {
        logger.error({ err, path }, 'http handler failed');
        if (!response.headersSent) sendJson(response, 500, { error: 'internal error' });
        else response.destroy();
      });
  });
  server.requestTimeout = HTTP_REQUEST_TIMEOUT_MS;
  server.headersTimeout = HTTP_REQUEST_TIMEOUT_MS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  return {
    server,
    port: typeof address === 'object' && address ? address.port : port,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    }),
  };
}
