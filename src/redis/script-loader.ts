import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Loads src/redis/lua/<verbNoun>-<numberOfKeys>.lua (BullMQ's layout): each script names the shared
 * functions it needs with `--- @include "includes/<name>"` lines.
 *
 * meterd runs them as one Redis Function library (buildLibrary): every include is defined once when
 * the library loads, and each script becomes a registered function, so a call pays only for its own
 * work — not for re-creating some sixty helper closures on every EVALSHA. loadScripts() gives each
 * script as a stand-alone EVAL text, for tests.
 */
export const LUA_DIRECTORY = fileURLToPath(new URL('./lua/', import.meta.url));

export interface LoadedScript {
  name: string;
  numberOfKeys: number;
  /** The script with its includes inlined: runnable with EVAL. */
  lua: string;
  /** The includes it names, in order, and its own text without the include lines. */
  includes: string[];
  body: string;
}

const INCLUDE_LINE = /^-{2,3}[ \t]*@include[ \t]+(["'])(.+?)\1[ \t]*$/;

function readInclude(directory: string, name: string): string {
  const text = readFileSync(join(directory, `${name}.lua`), 'utf8');
  if (text.split('\n').some((line) => INCLUDE_LINE.test(line))) {
    throw new Error(`Lua include ${name} includes others; includes must be flat (list them in the script)`);
  }
  return text;
}

export function loadScripts(directory = LUA_DIRECTORY): LoadedScript[] {
  const scripts = readdirSync(directory)
    .filter((file) => file.endsWith('.lua'))
    .sort()
    .map((file) => {
      const match = /^([a-z][A-Za-z]+)-(\d+)$/.exec(basename(file, '.lua'));
      if (!match) throw new Error(`Lua script ${file} must be named <verbNoun>-<numberOfKeys>.lua`);
      const includes: string[] = [];
      const bodyLines: string[] = [];
      for (const line of readFileSync(join(directory, file), 'utf8').split('\n')) {
        const include = INCLUDE_LINE.exec(line);
        if (include) includes.push(include[2] as string);
        else bodyLines.push(line);
      }
      const body = bodyLines.join('\n');
      const lua = [...includes.map((name) => readInclude(directory, name)), body].join('\n');
      return { name: match[1] as string, numberOfKeys: Number(match[2]), lua, includes, body };
    });
  if (scripts.length === 0) throw new Error(`no Lua scripts in ${directory}`);
  return scripts;
}

export interface ScriptLibrary {
  /** Library name, versioned by content: replicas of different versions never call each other's code. */
  name: string;
  code: string;
  /** Script name → the Redis Function to FCALL. */
  functions: Map<string, string>;
  /** The function that runs several calls of BATCHABLE_SCRIPTS in one partition, one after another. */
  batchFunction: string;
}

/** The data-plane scripts that may run together in one Redis call (RedisCreditStore's batcher). */
export const BATCHABLE_SCRIPTS = ['reserveCredits', 'commitReservation', 'releaseReservation', 'extendReservation', 'getBalance'] as const;

/**
 * The batch function: ARGV = the 4 shared arguments, then a count, then per call its script name,
 * its number of arguments and the arguments. Each call runs exactly as alone (its own context, its
 * own checks before its first write) on records shared by the batch and saved once at its end (see
 * beginBatch in includes/context.lua); the reply is the list of their JSON replies, in order. A
 * Lua error (a bug) still saves what the calls did, as each would have on its own, then raises.
 */
function batchFunction(): string {
  const table = BATCHABLE_SCRIPTS.map((name) => `${name} = script_${name}`).join(', ');
  return `local BATCHABLE = { ${table} }
local function runBatch(KEYS, ARGV)
  local count = tonumber(ARGV[5])
  local at = 6
  local replies = {}
  for call = 1, count do
    local run = BATCHABLE[ARGV[at]]
    local argc = tonumber(ARGV[at + 1])
    local args = { ARGV[1], ARGV[2], ARGV[3], ARGV[4] }
    for k = 1, argc do args[4 + k] = ARGV[at + 1 + k] end
    at = at + 2 + argc
    replies[call] = run(KEYS, args)
  end
  return replies
end
local function script_batch(KEYS, ARGV)
  beginBatch()
  local ok, result = pcall(runBatch, KEYS, ARGV)
  endBatch()
  if not ok then error(result) end
  return result
end`;
}

/** All scripts as one Redis Function library (Redis ≥ 7.0). */
export function buildLibrary(directory = LUA_DIRECTORY): ScriptLibrary {
  const scripts = loadScripts(directory);
  const includeOrder: string[] = [];
  for (const script of scripts) {
    for (const name of script.includes) if (!includeOrder.includes(name)) includeOrder.push(name);
  }
  const parts = [...includeOrder.map((name) => readInclude(directory, name))];
  for (const script of scripts) {
    parts.push(`local function script_${script.name}(KEYS, ARGV)\n${script.body}\nend`);
  }
  parts.push(batchFunction());
  const definitions = parts.join('\n');
  const version = createHash('sha256').update(definitions).digest('hex').slice(0, 12);
  const functions = new Map(scripts.map((s) => [s.name, `${s.name}_${version}`]));
  const batch = `batch_${version}`;
  const registrations = [
    ...scripts.map((s) => `redis.register_function('${functions.get(s.name)}', script_${s.name})`),
    `redis.register_function('${batch}', script_batch)`,
  ];
  const name = `meterd_${version}`;
  return { name, code: `#!lua name=${name}\n${definitions}\n${registrations.join('\n')}\n`, functions, batchFunction: batch };
}
