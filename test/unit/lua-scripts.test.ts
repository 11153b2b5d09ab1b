import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildLibrary, loadScripts, LUA_DIRECTORY, type LoadedScript } from '../../src/redis/script-loader.js';

/**
 * Static checks of the Lua scripts (no Redis; test/integration/lua-compile.test.ts compiles and runs
 * them). Heuristics on purpose: a small Lua scanner strips comments and blanks strings, then regexes.
 */

/** Lua source without comments, string contents blanked ('' / ""), positions and newlines kept. */
function stripLua(source: string): string {
  let out = '';
  let i = 0;
  const longBracket = (at: number): number => {
    // "[[" or "[=*[": returns the level (number of '='), or -1.
    const match = /^\[(=*)\[/.exec(source.slice(at, at + 10));
    return match ? (match[1] as string).length : -1;
  };
  const blank = (text: string) => text.replace(/[^\n]/g, ' ');
  while (i < source.length) {
    const c = source[i] as string;
    if (c === '-' && source[i + 1] === '-') {
      const level = longBracket(i + 2);
      let end: number;
      if (level >= 0) {
        const close = `]${'='.repeat(level)}]`;
        const at = source.indexOf(close, i + 2);
        end = at < 0 ? source.length : at + close.length;
      } else {
        const at = source.indexOf('\n', i);
        end = at < 0 ? source.length : at;
      }
      out += blank(source.slice(i, end));
      i = end;
    } else if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < source.length && source[j] !== c && source[j] !== '\n') j += source[j] === '\\' ? 2 : 1;
      out += c + blank(source.slice(i + 1, j)) + c;
      i = j + 1;
    } else if (c === '[' && longBracket(i) >= 0) {
      const level = longBracket(i);
      const close = `]${'='.repeat(level)}]`;
      const at = source.indexOf(close, i);
      const end = at < 0 ? source.length : at + close.length;
      out += `''${blank(source.slice(i + 2, end))}`;
      i = end;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** The text inside the parentheses opening at `open` (source[open] === '('). */
function balanced(code: string, open: number): string {
  let depth = 0;
  for (let i = open; i < code.length; i++) {
    if (code[i] === '(') depth++;
    else if (code[i] === ')' && --depth === 0) return code.slice(open + 1, i);
  }
  throw new Error(`unbalanced parentheses at ${open}`);
}

/** `code` with every `name(...)` call replaced by a placeholder. */
function withoutCalls(code: string, name: string): string {
  let out = code;
  for (;;) {
    const at = out.search(new RegExp(`\\b${name}\\s*\\(`));
    if (at < 0) return out;
    const open = out.indexOf('(', at);
    out = `${out.slice(0, at)}__TEXT__${out.slice(open + balanced(out, open).length + 2)}`;
  }
}

const LUA_BUILTINS = new Set(['redis', 'cjson', 'string', 'math', 'table', 'tonumber', 'tostring', 'ipairs', 'pairs',
  'unpack', 'type', 'error', 'pcall', 'next', 'select', 'KEYS', 'ARGV', 'bit', 'struct', 'cmsgpack', 'assert', 'os']);

/** Names declared local anywhere (locals, local functions, parameters, loop variables). */
function declaredNames(code: string): Set<string> {
  const names = new Set<string>();
  const add = (list: string) => {
    for (const name of list.split(',')) {
      const trimmed = name.trim();
      if (/^[A-Za-z_]\w*$/.test(trimmed)) names.add(trimmed);
    }
  };
  for (const m of code.matchAll(/\blocal\s+function\s+([A-Za-z_]\w*)/g)) add(m[1] as string);
  for (const m of code.matchAll(/\blocal\s+((?:[A-Za-z_]\w*\s*,\s*)*[A-Za-z_]\w*)/g)) if (m[1] !== 'function') add(m[1] as string);
  for (const m of code.matchAll(/\bfunction\b[^(\n]*\(([^)]*)\)/g)) add(m[1] as string);
  for (const m of code.matchAll(/\bfor\s+((?:[A-Za-z_]\w*\s*,\s*)*[A-Za-z_]\w*)\s*(?:=|\bin\b)/g)) add(m[1] as string);
  return names;
}

/** Assignments to a name never declared local, and global function definitions. */
function globalAssignments(code: string): string[] {
  const declared = declaredNames(code);
  const found: string[] = [];
  // Only statements outside table constructors ({ name = value } is a field, not an assignment).
  let depth = 0;
  let outside = '';
  for (const c of code) {
    if (c === '{') depth++;
    if (depth === 0 || c === '\n') outside += c;
    else outside += ' ';
    if (c === '}') depth--;
  }
  const assignment = /(?<![\w.:\]])((?:[A-Za-z_]\w*\s*,\s*)*[A-Za-z_]\w*)\s*=(?!=)/g;
  for (const m of outside.matchAll(assignment)) {
    const before = outside.slice(Math.max(0, (m.index ?? 0) - 40), m.index);
    if (/\b(local|for)\s+(?:[\w\s,]*)$/.test(before)) continue;
    for (const name of (m[1] as string).split(',').map((n) => n.trim())) {
      if (!declared.has(name)) found.push(`${name} = (line ${code.slice(0, m.index).split('\n').length})`);
    }
  }
  for (const m of code.matchAll(/(?<!local\s+)\bfunction\s+([A-Za-z_]\w*)\s*\(/g)) found.push(`function ${m[1]}`);
  return found;
}

/** Calls of a top-level local function before (above) its declaration: those resolve to a nil global. */
function callsBeforeDeclaration(code: string): string[] {
  const declaredAt = new Map<string, number>();
  for (const m of code.matchAll(/\blocal\s+function\s+([A-Za-z_]\w*)/g)) {
    if (!declaredAt.has(m[1] as string)) declaredAt.set(m[1] as string, m.index ?? 0);
  }
  const found: string[] = [];
  for (const m of code.matchAll(/(?<![\w.:])([A-Za-z_]\w*)\s*\(/g)) {
    const name = m[1] as string;
    const at = declaredAt.get(name);
    if (at !== undefined && (m.index ?? 0) < at) found.push(`${name} (line ${code.slice(0, m.index).split('\n').length})`);
  }
  return found;
}

/** ARGV indices a script's own code reads: ARGV[5], ARGV[SCRIPT_ARGS + 2], ARGV[a + 3] (a = SCRIPT_ARGS). */
function argvUsed(body: string, scriptArgs: number): Set<number> {
  const aliases = new Map<string, number>([['SCRIPT_ARGS', scriptArgs]]);
  for (const m of body.matchAll(/\blocal\s+([A-Za-z_]\w*)\s*=\s*SCRIPT_ARGS\b(?!\s*[+-])/g)) aliases.set(m[1] as string, scriptArgs);
  const used = new Set<number>();
  for (const m of body.matchAll(/\bARGV\s*\[([^\]]*)\]/g)) {
    const index = /^\s*(\d+|[A-Za-z_]\w*)\s*(?:\+\s*(\d+))?\s*$/.exec(m[1] as string);
    if (!index) throw new Error(`cannot read ARGV index "${m[1]}"`);
    const base = /^\d+$/.test(index[1] as string) ? Number(index[1]) : aliases.get(index[1] as string);
    if (base === undefined) throw new Error(`unknown ARGV base "${index[1]}"`);
    used.add(base + Number(index[2] ?? 0));
  }
  return used;
}

function docblockOf(body: string): string {
  const match = /^\s*--\[\[([\s\S]*?)\]\]/.exec(body);
  if (!match) throw new Error('no --[[ docblock ]] at the top');
  return match[1] as string;
}

const SCRIPTS: LoadedScript[] = loadScripts();
const INCLUDE_DIRECTORY = join(LUA_DIRECTORY, 'includes');
const INCLUDE_FILES = readdirSync(INCLUDE_DIRECTORY).filter((f) => f.endsWith('.lua')).map((f) => `includes/${f.slice(0, -4)}`);
const CONTEXT = readFileSync(join(INCLUDE_DIRECTORY, 'context.lua'), 'utf8');
const SCRIPT_ARGS = Number(/^local SCRIPT_ARGS = (\d+)$/m.exec(CONTEXT)?.[1]);

describe('Lua scripts', () => {
  it('are all loaded, one per file', () => {
    const files = readdirSync(LUA_DIRECTORY).filter((f) => f.endsWith('.lua'));
    expect(SCRIPTS.map((s) => `${s.name}-${s.numberOfKeys}.lua`).sort()).toEqual(files.sort());
    expect(SCRIPTS.length).toBeGreaterThanOrEqual(14);
  });

  it('share four arguments (context.lua documents and reads ARGV[1..4]; scripts start at SCRIPT_ARGS = 5)', () => {
    expect(SCRIPT_ARGS).toBe(5);
    const documented = [...docblockOf(CONTEXT).matchAll(/^\s*ARGV\[(\d+)\]/gm)].map((m) => Number(m[1]));
    expect(documented).toEqual([1, 2, 3, 4]);
    expect([...argvUsed(stripLua(CONTEXT), SCRIPT_ARGS)].sort()).toEqual([1, 2, 3, 4]);
  });

  it('every include file is used by some script', () => {
    const used = new Set(SCRIPTS.flatMap((s) => s.includes));
    expect(INCLUDE_FILES.filter((name) => !used.has(name))).toEqual([]);
  });

  describe.each(SCRIPTS.map((s) => [`${s.name}-${s.numberOfKeys}`, s] as const))('%s', (_file, script) => {
    const code = stripLua(script.lua);
    const body = stripLua(script.body);

    it('documents exactly the ARGV it reads (ARGV[5]..ARGV[n], no gaps)', () => {
      const documented = new Set([...docblockOf(script.body).matchAll(/ARGV\[(\d+)\]/g)].map((m) => Number(m[1])));
      const used = argvUsed(body, SCRIPT_ARGS);
      const sorted = (set: Set<number>) => [...set].sort((x, y) => x - y);
      expect(sorted(used)).toEqual(sorted(documented));
      expect(sorted(documented)).toEqual(Array.from({ length: documented.size }, (_, i) => SCRIPT_ARGS + i));
      expect(used.size).toBeGreaterThan(0);
    });

    it('has one key (the file name says 1) and uses only KEYS[1]', () => {
      expect(script.numberOfKeys).toBe(1);
      const keyRefs = [...code.matchAll(/\bKEYS\s*\[([^\]]*)\]/g)].map((m) => (m[1] as string).trim());
      expect(keyRefs.length).toBeGreaterThan(0);
      expect(keyRefs.filter((ref) => ref !== '1')).toEqual([]);
      // The script's own code reaches keys only through the context (ctx.P), never KEYS directly.
      expect([...body.matchAll(/\bKEYS\s*\[/g)]).toEqual([]);
    });

    it('has its includes resolved (no @include left) and flat', () => {
      expect(script.lua).not.toMatch(/@include/);
      expect(script.body).not.toMatch(/@include/);
      expect(script.includes.length).toBe(new Set(script.includes).size);
      for (const name of script.includes) expect(INCLUDE_FILES).toContain(name);
    });

    it('declares every helper before it is called (a later local would be a nil global at run time)', () => {
      expect(callsBeforeDeclaration(code)).toEqual([]);
    });

    it('assigns no globals', () => {
      expect(globalAssignments(code)).toEqual([]);
    });

    it('reads no undeclared name as a function (builtins aside)', () => {
      const declared = declaredNames(code);
      const unknown = new Set<string>();
      for (const m of code.matchAll(/(?<![\w.:])([A-Za-z_]\w*)\s*\(/g)) {
        const name = m[1] as string;
        if (!declared.has(name) && !LUA_BUILTINS.has(name) && !['function', 'if', 'and', 'or', 'not', 'return', 'in', 'elseif', 'until', 'while'].includes(name)) unknown.add(name);
      }
      expect([...unknown]).toEqual([]);
    });

    it('writes amounts as text: no tonumber() or arithmetic handed to redis.call outside intString()', () => {
      const problems: string[] = [];
      for (const m of code.matchAll(/\bredis\.call\s*\(/g)) {
        const args = balanced(code, code.indexOf('(', m.index));
        const rest = withoutCalls(args, 'intString');
        if (/\btonumber\s*\(/.test(rest)) problems.push(`tonumber: redis.call(${args.trim()})`);
        // A binary + - * / % between operands (unary minus as in ZRANGE 0, -1 is fine).
        if (/[\w)\]]\s*[-+*/%]\s*[\w(]/.test(rest)) problems.push(`arithmetic: redis.call(${args.trim()})`);
      }
      for (const m of code.matchAll(/\bsetText\s*\(/g)) {
        const args = balanced(code, code.indexOf('(', m.index));
        if (/^\s*record\s*,\s*field\s*,\s*intString\(n\)\s*$/.test(args)) continue;
        const rest = withoutCalls(args, 'intString');
        if (/\btonumber\s*\(|[\w)\]]\s*[-+*/%]\s*[\w(]/.test(rest)) problems.push(`setText(${args.trim()}): use setNum for numbers`);
      }
      expect(problems).toEqual([]);
    });
  });

  describe('the Redis Function library (buildLibrary)', () => {
    const library = buildLibrary();
    const code = stripLua(library.code.replace(/^#!lua.*\n/, ''));

    it('registers one function per script, versioned by content', () => {
      expect([...library.functions.keys()].sort()).toEqual(SCRIPTS.map((s) => s.name).sort());
      const version = library.name.replace(/^meterd_/, '');
      expect(version).toMatch(/^[0-9a-f]{12}$/);
      for (const [script, fn] of library.functions) {
        expect(fn).toBe(`${script}_${version}`);
        expect(library.code).toContain(`redis.register_function('${fn}', script_${script})`);
      }
      expect(library.code.startsWith(`#!lua name=${library.name}\n`)).toBe(true);
      expect(buildLibrary().code).toBe(library.code);
    });

    it('defines each include once, before any use, and assigns no globals', () => {
      expect(library.code).not.toMatch(/@include/);
      const definitions = [...code.matchAll(/\blocal\s+function\s+([A-Za-z_]\w*)/g)].map((m) => m[1] as string);
      const topLevel = definitions.filter((name) => INCLUDE_FILES.some((file) =>
        new RegExp(`^local function ${name}\\b`, 'm').test(readFileSync(join(LUA_DIRECTORY, `${file}.lua`), 'utf8'))));
      expect(topLevel.length).toBe(new Set(topLevel).size);
      expect(callsBeforeDeclaration(code)).toEqual([]);
      expect(globalAssignments(code)).toEqual([]);
    });
  });

  describe('the scanner itself', () => {
    it('strips comments and blanks strings, keeping positions', () => {
      const source = "local a = 'x -- y' -- note\nb = [[s]] --[[ c\n d ]] e";
      const stripped = stripLua(source);
      expect(stripped).toHaveLength(source.length);
      expect(stripped.split('\n')).toHaveLength(3);
      expect(stripped).not.toMatch(/note|x -- y|\bc\b|\bd\b|\[\[/);
      expect(stripped.replace(/\s+/g, ' ')).toBe("local a = ' ' b = '' e");
    });
    it('finds global assignments but not locals, fields or table keys', () => {
      expect(globalAssignments('local a = 1\na = 2\nlocal t = { b = 1 }\nt.c = 3\nx = 1\nfor i = 1, 2 do end\nfunction g() end')).toEqual([
        'x = (line 5)', 'function g',
      ]);
      expect(globalAssignments('local q, r = 1, 2\nif r < 0 then q = q - 1; r = r + 1 end')).toEqual([]);
    });
    it('finds a call above the declaration', () => {
      expect(callsBeforeDeclaration('local function a() return b() end\nlocal function b() end')).toEqual(['b (line 1)']);
    });
    it('reads ARGV indices through SCRIPT_ARGS aliases', () => {
      expect([...argvUsed('local a = SCRIPT_ARGS\nlocal x, y = ARGV[a], ARGV[a + 2]\nlocal z = ARGV[SCRIPT_ARGS + 1]', 5)].sort()).toEqual([5, 6, 7]);
    });
  });
});
