/**
 * Builds and runs the test-only Helm renderer (test/helm/render/main.go) and parses what it prints.
 * Go and its packages come from Debian (scripts/install-test-tools.sh): GOPATH mode, no network.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';

export const REPO_DIR = fileURLToPath(new URL('../../', import.meta.url));
export const CHART_DIR = join(REPO_DIR, 'helm/meterd');
const DEBIAN_GOPATH = '/usr/share/gocode';
/** A cold build compiles sprig and its dependencies; later builds hit the Go build cache. */
export const RENDERER_BUILD_TIMEOUT_MS = 120_000;
const RENDER_TIMEOUT_MS = 20_000;

/** A Kubernetes object as rendered: only what every object has is typed. */
export interface RenderedObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

export interface Manifest {
  /** The template it came from, from Helm's `# Source:` comment. */
  source: string;
  object: RenderedObject;
}

export interface RenderOptions {
  valuesFiles?: string[];
  /** --set key.path=value pairs (strings, numbers and booleans only). */
  set?: Record<string, string | number | boolean>;
  releaseName?: string;
  namespace?: string;
  kubeVersion?: string;
  extraTemplates?: string[];
}

export class HelmRenderer {
  private constructor(
    private readonly workDir: string,
    private readonly binary: string,
  ) {}

  /** Builds the renderer once into a fresh temporary directory. */
  static build(): HelmRenderer {
    const workDir = mkdtempSync(join(tmpdir(), 'meterd-helm-'));
    const binary = join(workDir, 'render');
    const home = process.env.HOME ?? homedir();
    const result = spawnSync('go', ['build', '-o', binary, './test/helm/render'], {
      cwd: REPO_DIR,
      encoding: 'utf8',
      timeout: RENDERER_BUILD_TIMEOUT_MS,
      env: {
        ...process.env,
        GO111MODULE: 'off',
        GOPATH: DEBIAN_GOPATH,
        GOFLAGS: '',
        GOPROXY: 'off',
        // Go needs a build cache; without HOME it has no default one.
        GOCACHE: process.env.GOCACHE ?? (home ? join(home, '.cache/go-build') : join(tmpdir(), 'meterd-go-build-cache')),
      },
    });
    if (result.status !== 0) {
      rmSync(workDir, { recursive: true, force: true });
      throw new Error(`go build of the Helm renderer failed (run scripts/install-test-tools.sh?):\n${result.error?.message ?? ''}${result.stderr}`);
    }
    return new HelmRenderer(workDir, binary);
  }

  remove(): void {
    rmSync(this.workDir, { recursive: true, force: true });
  }

  /** Writes a values file into the work directory and returns its path. */
  writeValues(name: string, values: unknown): string {
    const file = join(this.workDir, `${name}.yaml`);
    writeFileSync(file, stringify(values));
    return file;
  }

  writeFile(name: string, text: string): string {
    const file = join(this.workDir, name);
    writeFileSync(file, text);
    return file;
  }

  private run(options: RenderOptions, mode: string[]): { status: number | null; stdout: string; stderr: string } {
    // --strict (missingkey=error, as `helm lint --strict`): a template reading a value that
    // values.yaml does not define fails instead of printing nothing.
    const args = ['--chart', CHART_DIR, '--strict', ...mode];
    for (const file of options.valuesFiles ?? []) args.push('-f', file);
    for (const [key, value] of Object.entries(options.set ?? {})) args.push('--set', `${key}=${String(value)}`);
    for (const file of options.extraTemplates ?? []) args.push('--extra-template', file);
    if (options.releaseName) args.push('--release-name', options.releaseName);
    if (options.namespace) args.push('--namespace', options.namespace);
    if (options.kubeVersion) args.push('--kube-version', options.kubeVersion);
    const result = spawnSync(this.binary, args, { encoding: 'utf8', timeout: RENDER_TIMEOUT_MS });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  /** The manifest stream, as `helm template` prints it. */
  template(options: RenderOptions = {}): string {
    const result = this.run(options, []);
    if (result.status !== 0) throw new Error(`render failed: ${result.stderr}`);
    return result.stdout;
  }

  manifests(options: RenderOptions = {}): Manifest[] {
    return parseManifests(this.template(options));
  }

  notes(options: RenderOptions = {}): string {
    const result = this.run(options, ['--notes']);
    if (result.status !== 0) throw new Error(`render of NOTES.txt failed: ${result.stderr}`);
    return result.stdout;
  }

  /** The merged values (values.yaml + files + --set), as Helm validates them against the schema. */
  values(options: RenderOptions = {}): Record<string, unknown> {
    const result = this.run(options, ['--values-json']);
    if (result.status !== 0) throw new Error(`values failed: ${result.stderr}`);
    return JSON.parse(result.stdout) as Record<string, unknown>;
  }

  /** Renders expecting a refusal; returns the error text. */
  failure(options: RenderOptions = {}): string {
    const result = this.run(options, []);
    if (result.status === 0) throw new Error('expected the chart to refuse these values, but it rendered');
    return result.stderr;
  }
}

/**
 * Parses a multi-document stream as the API server would read it: YAML 1.1 (sigs.k8s.io/yaml), so
 * an unquoted `on` or `0440` would show up here as the boolean or octal Kubernetes sees.
 */
export function parseManifests(stream: string): Manifest[] {
  const manifests: Manifest[] = [];
  for (const doc of parseAllDocuments(stream, { version: '1.1' })) {
    if (doc.errors.length > 0) throw new Error(`unparsable YAML: ${doc.errors.map((e) => e.message).join('; ')}`);
    const object = doc.toJS() as RenderedObject | null;
    if (object === null) continue;
    // After `---` the yaml parser hangs the comment on the document's contents.
    const comment = `${doc.commentBefore ?? ''}\n${(doc.contents as { commentBefore?: string | null } | null)?.commentBefore ?? ''}`;
    const source = /Source: (\S+)/.exec(comment)?.[1] ?? '(unknown)';
    manifests.push({ source, object });
  }
  return manifests;
}
