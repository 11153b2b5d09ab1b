import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Loads src/redis/lua/<verbNoun>-<numberOfKeys>.lua and inlines `--- @include "includes/<name>"`
 * lines (BullMQ's layout): each include is inlined once per script, in the order first named.
 */
export const LUA_DIRECTORY = fileURLToPath(new URL('./lua/', import.meta.url));

export interface LoadedScript {
  name: string;
  numberOfKeys: number;
  lua: string;
}

const INCLUDE_LINE = /^-{2,3}[ \t]*@include[ \t]+(["'])(.+?)\1[ \t]*$/;

export function inlineIncludes(directory: string, source: string, seen = new Set<string>(), chain: string[] = []): string {
  return source
    .split('\n')
    .map((line) => {
      const match = INCLUDE_LINE.exec(line);
      if (!match) return line;
      const name = match[2] as string;
      if (chain.includes(name)) throw new Error(`circular Lua include: ${[...chain, name].join(' -> ')}`);
      if (seen.has(name)) return `-- (${name} already included)`;
      seen.add(name);
      const text = readFileSync(join(directory, `${name}.lua`), 'utf8');
      return inlineIncludes(directory, text, seen, [...chain, name]);
    })
    .join('\n');
}

export function loadScripts(directory = LUA_DIRECTORY): LoadedScript[] {
  const scripts = readdirSync(directory)
    .filter((file) => file.endsWith('.lua'))
    .map((file) => {
      const match = /^([a-z][A-Za-z]+)-(\d+)$/.exec(basename(file, '.lua'));
      if (!match) throw new Error(`Lua script ${file} must be named <verbNoun>-<numberOfKeys>.lua`);
      const lua = inlineIncludes(directory, readFileSync(join(directory, file), 'utf8'));
      return { name: match[1] as string, numberOfKeys: Number(match[2]), lua };
    });
  if (scripts.length === 0) throw new Error(`no Lua scripts in ${directory}`);
  return scripts;
}
