import { existsSync, readFileSync } from 'node:fs';

/** meterd's version, from the package.json above this file (src/ in the repo, dist/src/ in a build). */
function readVersion(): string {
  for (const relative of ['../package.json', '../../package.json']) {
    const url = new URL(relative, import.meta.url);
    if (!existsSync(url)) continue;
    const pkg = JSON.parse(readFileSync(url, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'meterd' && pkg.version) return pkg.version;
  }
  return 'unknown';
}

export const METERD_VERSION = readVersion();
