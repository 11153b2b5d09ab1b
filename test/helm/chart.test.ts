/**
 * The Helm chart helm/meterd, rendered without a helm binary by test/helm/render (Go, Helm's
 * template semantics), for the default values and every ci/*-values.yaml scenario. Each object is
 * validated with kubernetes-models; the pods' environment is fed to meterd's own settings parser
 * and the product config to its own validator, so the chart cannot drift from what meterd accepts.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';
import { Deployment } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Pod, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import type { IIoK8sApiCoreV1Container as Container } from 'kubernetes-models/v1/Container';
import type { IIoK8sApiCoreV1PodSpec as PodSpec } from 'kubernetes-models/v1/PodSpec';
import type { IIoK8sApiCoreV1Volume as Volume } from 'kubernetes-models/v1/Volume';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { EXAMPLE_PRODUCT_CONFIG_PATH, parseProductConfig } from '../../src/config/product-config.js';
import { loadSettings } from '../../src/config/settings.js';
import { CHART_DIR, HelmRenderer, REPO_DIR, RENDERER_BUILD_TIMEOUT_MS, type Manifest, type RenderOptions } from './helm-render.js';
import { TABLE_END_MARKER, TABLE_START_MARKER, generatedValuesTable } from './values-table.js';

const CI_DIR = join(CHART_DIR, 'ci');
const CI_VALUES_FILES = readdirSync(CI_DIR).filter((f) => f.endsWith('-values.yaml')).sort();
/** The default values, then each CI scenario. */
const SCENARIOS: Array<{ name: string; options: RenderOptions }> = [
  { name: 'default values', options: {} },
  ...CI_VALUES_FILES.map((file) => ({ name: `ci/${file}`, options: { valuesFiles: [join(CI_DIR, file)] } })),
];
const REQUIRED_CI_SCENARIOS = [
  'default-values.yaml', 'sidecar-values.yaml', 'existing-secret-tls-values.yaml', 'monitoring-values.yaml', 'http-probes-values.yaml',
  'stripe-webhooks-values.yaml',
];
const SECRET_VARIABLES = [
  'AUTH_DATA_PLANE_TOKENS', 'AUTH_ADMIN_TOKENS', 'DATABASE_URL', 'REDIS_URL', 'STRIPE_SECRET_KEY', 'STRIPE_WEBHOOK_SECRET', 'ALERT_WEBHOOK_SECRET',
];
/** The secrets every deployment needs (default-values.yaml sets these); payments and alerts are optional. */
const CORE_SECRET_VARIABLES = ['AUTH_DATA_PLANE_TOKENS', 'AUTH_ADMIN_TOKENS', 'DATABASE_URL', 'REDIS_URL'];
const CHART_SET_VARIABLES = ['METERD_CONFIG', 'GRPC_TLS_CERT_FILE', 'GRPC_TLS_KEY_FILE', 'GRPC_TLS_CLIENT_CA_FILE'];
/** Plausible stand-ins for what a Secret would hold, so meterd's settings parser can run. */
const SECRET_STAND_INS: Record<string, string> = {
  AUTH_DATA_PLANE_TOKENS: 'gateway-token-0123456789abcdef',
  AUTH_ADMIN_TOKENS: 'admin-token-0123456789abcdef',
  DATABASE_URL: 'postgres://meterd:secret@postgres:5432/meterd',
  REDIS_URL: 'redis://:secret@redis:6379',
  STRIPE_SECRET_KEY: 'sk_test_0123456789abcdef',
  STRIPE_WEBHOOK_SECRET: 'whsec_0123456789abcdef',
  ALERT_WEBHOOK_SECRET: 'alert-secret-0123456789abcdef',
};
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

type Json = Record<string, unknown>;

const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/ServiceAccount': ServiceAccount,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'networking.k8s.io/v1/Ingress': Ingress,
};

let helm: HelmRenderer;

beforeAll(() => {
  helm = HelmRenderer.build();
}, RENDERER_BUILD_TIMEOUT_MS);

afterAll(() => {
  helm?.remove();
});

// ---- small accessors ----

function defined<T>(value: T | undefined | null, what: string): T {
  if (value === undefined || value === null) throw new Error(`missing: ${what}`);
  return value;
}

function kindsOf(manifests: Manifest[]): string[] {
  return manifests.map((m) => m.object.kind).sort();
}

function objectsOf(manifests: Manifest[], kind: string): Manifest['object'][] {
  return manifests.filter((m) => m.object.kind === kind).map((m) => m.object);
}

function one(manifests: Manifest[], kind: string, name?: string): Json & Manifest['object'] {
  const found = objectsOf(manifests, kind).filter((o) => name === undefined || o.metadata.name === name);
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0] as Json & Manifest['object'];
}

function deploymentOf(manifests: Manifest[]): Deployment {
  return new Deployment(one(manifests, 'Deployment') as never);
}

function podSpecOf(manifests: Manifest[]): PodSpec {
  return defined(deploymentOf(manifests).spec?.template.spec, 'Deployment pod spec');
}

function meterdContainer(spec: PodSpec): Container {
  const all = [...(spec.initContainers ?? []), ...spec.containers];
  return defined(all.find((c) => c.name === 'meterd'), 'container meterd');
}

/** The container's environment as meterd would see it: secret references replaced by stand-ins. */
function environmentOf(container: Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const variable of container.env ?? []) {
    if (variable.value !== undefined) env[variable.name] = variable.value;
    else if (variable.valueFrom?.secretKeyRef) env[variable.name] = defined(SECRET_STAND_INS[variable.name], `stand-in for ${variable.name}`);
  }
  return env;
}

function envEntry(container: Container, name: string) {
  return (container.env ?? []).find((v) => v.name === name);
}

/** Which Secret key a file path inside the container comes from, through its read-only mounts. */
function secretFileSource(spec: PodSpec, container: Container, filePath: string): { secretName: string; key: string } {
  const mount = defined(
    (container.volumeMounts ?? []).find((m) => posix.dirname(filePath) === m.mountPath.replace(/\/$/, '')),
    `a volume mounted at ${posix.dirname(filePath)}`,
  );
  expect(mount.readOnly, `${mount.name} is mounted read-only`).toBe(true);
  const volume: Volume = defined((spec.volumes ?? []).find((v) => v.name === mount.name), `volume ${mount.name}`);
  const secret = defined(volume.secret, `volume ${mount.name} is a Secret`);
  const item = defined((secret.items ?? []).find((i) => i.path === posix.basename(filePath)), `item for ${filePath}`);
  return { secretName: defined(secret.secretName, 'secretName'), key: item.key };
}

function productConfigOf(manifests: Manifest[]): unknown {
  const configMap = one(manifests, 'ConfigMap', 'meterd-config') as Json;
  const data = (configMap.data ?? {}) as Record<string, string>;
  return parseYaml(defined(data['product.yaml'], 'product.yaml'));
}

function podAnnotations(manifests: Manifest[]): Record<string, string> {
  return deploymentOf(manifests).spec?.template.metadata?.annotations ?? {};
}

/** Settings keys declared in src/config/settings.ts (its schema is not exported). */
function settingsVariables(): string[] {
  const source = readFileSync(join(REPO_DIR, 'src/config/settings.ts'), 'utf8');
  const schema = defined(/const settingsSchema = z\.object\(\{([\s\S]*?)\n\}\);/.exec(source)?.[1], 'settingsSchema in settings.ts');
  return [...schema.matchAll(/^\s{2}([A-Z][A-Z0-9_]+):/gm)].map((m) => defined(m[1], 'name')).sort();
}

function leafPaths(value: unknown, prefix = ''): string[] {
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length > 0) {
    return Object.entries(value as Json).flatMap(([key, child]) => leafPaths(child, `${prefix}${key}.`));
  }
  return [prefix.slice(0, -1)];
}

/** Every `properties` path of the schema (objects with additionalProperties false only). */
function schemaPaths(schema: Json, prefix = ''): string[] {
  const properties = schema.properties as Record<string, Json> | undefined;
  if (!properties || schema.additionalProperties !== false) return [prefix.slice(0, -1)];
  return Object.entries(properties).flatMap(([key, child]) => schemaPaths(child, `${prefix}${key}.`));
}

function checkServiceMonitorShape(object: Json & Manifest['object']): void {
  expect(object.apiVersion).toBe('monitoring.coreos.com/v1');
  const spec = object.spec as Json;
  expect(Object.keys(spec).sort()).toEqual(['endpoints', 'jobLabel', 'namespaceSelector', 'selector']);
  const selector = spec.selector as { matchLabels: Record<string, string> };
  expect(Object.values(selector.matchLabels).every((v) => typeof v === 'string')).toBe(true);
  const endpoints = spec.endpoints as Json[];
  expect(endpoints.length).toBeGreaterThan(0);
  for (const endpoint of endpoints) {
    for (const key of Object.keys(endpoint)) {
      expect(['port', 'path', 'scheme', 'interval', 'scrapeTimeout', 'relabelings', 'metricRelabelings']).toContain(key);
    }
    expect(endpoint.interval).toMatch(/^\d+(ms|s|m|h)$/);
    expect(endpoint.scrapeTimeout).toMatch(/^\d+(ms|s|m|h)$/);
  }
}

function validateObject(manifest: Manifest): void {
  const { object, source } = manifest;
  expect(object.metadata.name, `${source}: name`).toMatch(DNS_LABEL);
  expect(object.metadata.labels?.['app.kubernetes.io/managed-by'], `${source}: labels`).toBe('Helm');
  if (object.kind === 'ServiceMonitor') {
    checkServiceMonitorShape(object as Json & Manifest['object']);
    return;
  }
  const Model = MODELS[`${object.apiVersion}/${object.kind}`];
  if (!Model) throw new Error(`${source}: no model for ${object.apiVersion} ${object.kind}`);
  try {
    new Model(object as never).validate();
  } catch (err) {
    throw new Error(`${source}: ${object.kind} ${object.metadata.name} is invalid: ${(err as Error).message}`);
  }
}

// ---- every scenario ----

describe('chart scenarios', () => {
  it('has the CI scenarios the chart promises', () => {
    expect(CI_VALUES_FILES).toEqual(expect.arrayContaining(REQUIRED_CI_SCENARIOS));
  });

  it.each(SCENARIOS)('$name: every object is valid Kubernetes and meterd accepts its config', ({ options }) => {
    const manifests = helm.manifests(options);
    expect(manifests.length).toBeGreaterThan(0);
    for (const manifest of manifests) validateObject(manifest);

    // No two objects of a kind share a name.
    const identities = manifests.map((m) => `${m.object.kind}/${m.object.metadata.name}`);
    expect(new Set(identities).size).toBe(identities.length);

    // meterd's own validators accept the product config and the environment the pods get.
    expect(() => parseProductConfig(productConfigOf(manifests))).not.toThrow();
    const sidecarMap = objectsOf(manifests, 'ConfigMap').find((c) => c.metadata.name.endsWith('-sidecar')) as Json | undefined;
    const container = sidecarMap
      ? (parseYaml(((sidecarMap.data ?? {}) as Record<string, string>)['container.yaml'] ?? '') as Container[])[0]
      : meterdContainer(podSpecOf(manifests));
    const env = environmentOf(defined(container, 'meterd container'));
    expect(() => loadSettings(env)).not.toThrow();
    // Every environment variable is one meterd reads (or extraEnv's own).
    const known = new Set(settingsVariables());
    const values = helm.values(options);
    const extra = new Set(((values.extraEnv ?? []) as Array<{ name: string }>).map((e) => e.name));
    for (const name of Object.keys(env)) expect(known.has(name) || extra.has(name), `${name} is a meterd setting`).toBe(true);
  });

  it.each(SCENARIOS)('$name: the merged values satisfy values.schema.json', ({ options }) => {
    const validate = schemaValidator();
    const values = helm.values(options);
    expect(validate(values), JSON.stringify(validate.errors)).toBe(true);
  });

  it('names stay DNS labels of at most 63 characters for a long release name', () => {
    const releaseName = 'a-very-long-release-name-for-the-billing-team-in-production-eu1';
    for (const { options } of SCENARIOS) {
      for (const { object } of helm.manifests({ ...options, releaseName })) {
        expect(object.metadata.name).toMatch(DNS_LABEL);
      }
    }
  });

  it('renders the same output twice (no random or time-dependent values)', () => {
    expect(helm.template()).toBe(helm.template());
  });
});

// ---- mode deployment, default values ----

describe('default values', () => {
  it('render a Deployment, Service, ServiceAccount, ConfigMap and PodDisruptionBudget, and nothing off by default', () => {
    const manifests = helm.manifests();
    // No Secret: no secret value is set by default (NOTES.txt warns).
    expect(kindsOf(manifests)).toEqual(['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Service', 'ServiceAccount']);
    expect(deploymentOf(manifests).spec?.replicas).toBe(2);
  });

  it('give meterd exactly its own defaults, except where the chart mounts the product config', () => {
    const env = environmentOf(meterdContainer(podSpecOf(helm.manifests())));
    expect(loadSettings(env)).toEqual({ ...loadSettings({}), productConfigPath: '/etc/meterd/config/product.yaml' });
  });

  it('ship the example product config of src/config', () => {
    const example = parseYaml(readFileSync(EXAMPLE_PRODUCT_CONFIG_PATH, 'utf8')) as unknown;
    expect(productConfigOf(helm.manifests())).toEqual(example);
  });

  it('run `serve` as uid 10001 with a read-only root, no capabilities and RuntimeDefault seccomp', () => {
    const spec = podSpecOf(helm.manifests());
    const container = meterdContainer(spec);
    expect(container.args).toEqual(['serve']);
    expect(container.image).toBe('meterd:0.1.0');
    expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001, seccompProfile: { type: 'RuntimeDefault' } });
    expect(container.securityContext).toMatchObject({
      runAsNonRoot: true, runAsUser: 10001, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(spec.automountServiceAccountToken).toBe(false);
    // A read-only root needs a writable /tmp.
    expect(container.volumeMounts).toContainEqual({ name: 'meterd-tmp', mountPath: '/tmp' });
    expect(container.resources?.requests).toMatchObject({ cpu: '250m', memory: '256Mi' });
    expect(container.resources?.limits).toMatchObject({ memory: '512Mi' });
  });

  it('mount the product config read-only where METERD_CONFIG points', () => {
    const spec = podSpecOf(helm.manifests());
    const container = meterdContainer(spec);
    expect(envEntry(container, 'METERD_CONFIG')?.value).toBe('/etc/meterd/config/product.yaml');
    const mount = defined(container.volumeMounts?.find((m) => m.mountPath === '/etc/meterd/config'), 'config mount');
    expect(mount.readOnly).toBe(true);
    const volume = defined(spec.volumes?.find((v) => v.name === mount.name), 'config volume');
    expect(volume.configMap?.name).toBe('meterd-config');
  });

  it('probe gRPC health: liveness and startup on "", readiness on meterd.v1.MeteringService', () => {
    const container = meterdContainer(podSpecOf(helm.manifests()));
    expect(container.livenessProbe?.grpc).toEqual({ port: 50051, service: '' });
    expect(container.startupProbe?.grpc).toEqual({ port: 50051, service: '' });
    expect(container.readinessProbe?.grpc).toEqual({ port: 50051, service: 'meterd.v1.MeteringService' });
    expect(container.livenessProbe?.httpGet).toBeUndefined();
  });

  it('give pods more time to stop than SHUTDOWN_GRACE_MS', () => {
    const manifests = helm.manifests();
    const env = environmentOf(meterdContainer(podSpecOf(manifests)));
    const graceSeconds = defined(podSpecOf(manifests).terminationGracePeriodSeconds, 'terminationGracePeriodSeconds');
    expect(graceSeconds * 1000).toBeGreaterThan(Number(env.SHUTDOWN_GRACE_MS));
  });

  it('select pods by name and instance only, and the Service and PDB select the same pods', () => {
    const manifests = helm.manifests();
    const deployment = deploymentOf(manifests);
    const selector = defined(deployment.spec?.selector.matchLabels, 'selector');
    expect(selector).toEqual({ 'app.kubernetes.io/name': 'meterd', 'app.kubernetes.io/instance': 'meterd' });
    expect(deployment.spec?.template.metadata?.labels).toMatchObject(selector);
    const service = new Service(one(manifests, 'Service') as never);
    expect(service.spec?.selector).toEqual(selector);
    const pdb = new PodDisruptionBudget(one(manifests, 'PodDisruptionBudget') as never);
    expect(pdb.spec?.selector?.matchLabels).toEqual(selector);
    expect(pdb.spec?.maxUnavailable).toBe(1);
  });

  it('expose grpc 50051 and http-metrics 9464, each targeting a named container port', () => {
    const manifests = helm.manifests();
    const container = meterdContainer(podSpecOf(manifests));
    const service = new Service(one(manifests, 'Service') as never);
    const ports = service.spec?.ports ?? [];
    expect(ports.map((p) => [p.name, p.port])).toEqual([['grpc', 50051], ['http-metrics', 9464]]);
    for (const port of ports) {
      const target = container.ports?.find((p) => p.name === port.targetPort);
      expect(target, `container port ${String(port.targetPort)}`).toBeDefined();
    }
    expect(ports[0]?.appProtocol).toBe('kubernetes.io/h2c');
  });

  it('warn in NOTES.txt that authentication is off and the databases are not set', () => {
    const notes = helm.notes();
    expect(notes).toContain('no authentication tokens are set');
    expect(notes).toContain('REDIS_URL is not set');
    expect(notes).toContain('DATABASE_URL is not set');
    const withSecrets = helm.notes({ valuesFiles: [join(CI_DIR, 'default-values.yaml')] });
    expect(withSecrets).not.toContain('WARNING');
    expect(withSecrets).toContain('meterd.default.svc:50051');
  });
});

// ---- secrets and checksums ----

describe('secrets and checksums', () => {
  it('inline secret values become the chart Secret, read through secretKeyRef, never plain env', () => {
    const manifests = helm.manifests({ valuesFiles: [join(CI_DIR, 'stripe-webhooks-values.yaml')] });
    const secret = new Secret(one(manifests, 'Secret', 'meterd') as never);
    expect(Object.keys(secret.data ?? {}).sort()).toEqual([...SECRET_VARIABLES].sort());
    expect(Buffer.from(defined(secret.data?.REDIS_URL, 'REDIS_URL'), 'base64').toString()).toBe('redis://:change-me@redis-master.db.svc:6379');
    expect(Buffer.from(defined(secret.data?.STRIPE_WEBHOOK_SECRET, 'STRIPE_WEBHOOK_SECRET'), 'base64').toString()).toBe('whsec_change-me-0123456789');
    const container = meterdContainer(podSpecOf(manifests));
    for (const variable of SECRET_VARIABLES) {
      const entry = envEntry(container, variable);
      expect(entry?.value).toBeUndefined();
      expect(entry?.valueFrom?.secretKeyRef).toEqual({ name: 'meterd', key: variable });
    }
    // Payments and alerts are optional: the core secrets alone make a Secret of those four.
    const core = new Secret(one(helm.manifests({ valuesFiles: [join(CI_DIR, 'default-values.yaml')] }), 'Secret', 'meterd') as never);
    expect(Object.keys(core.data ?? {}).sort()).toEqual([...CORE_SECRET_VARIABLES].sort());
  });

  it('only the secret values that are set go into the Secret and the environment', () => {
    const manifests = helm.manifests({ set: { 'secrets.databaseUrl': 'postgres://u:p@pg:5432/meterd' } });
    const secret = new Secret(one(manifests, 'Secret') as never);
    expect(Object.keys(secret.data ?? {})).toEqual(['DATABASE_URL']);
    const container = meterdContainer(podSpecOf(manifests));
    expect((container.env ?? []).filter((v) => v.valueFrom).map((v) => v.name)).toEqual(['DATABASE_URL']);
  });

  it('roll the pods when the product config changes (checksum/config), and only then', () => {
    const before = podAnnotations(helm.manifests());
    const morePlans = helm.writeValues('more-plans', {
      productConfig: {
        plans: [{ id: 'free', monthly_credits: 300, price_cents: 0 }],
        features: [{ id: 'chat', credits: 1 }],
      },
    });
    const after = podAnnotations(helm.manifests({ valuesFiles: [morePlans] }));
    expect(before['checksum/config']).toMatch(/^[0-9a-f]{64}$/);
    expect(after['checksum/config']).not.toBe(before['checksum/config']);
    expect(after['checksum/secret']).toBe(before['checksum/secret']);
    // Settings that are environment variables roll the pods by changing the pod template itself.
    expect(podAnnotations(helm.manifests({ set: { 'config.LOG_LEVEL': 'debug' } }))).toEqual(before);
  });

  it('roll the pods when a secret value changes (checksum/secret)', () => {
    const base = join(CI_DIR, 'default-values.yaml');
    const before = podAnnotations(helm.manifests({ valuesFiles: [base] }));
    const after = podAnnotations(helm.manifests({ valuesFiles: [base], set: { 'secrets.authAdminTokens': 'another-admin-token-0123456789' } }));
    expect(after['checksum/secret']).not.toBe(before['checksum/secret']);
    expect(after['checksum/config']).toBe(before['checksum/config']);
  });

  it('existingSecret: no Secret is rendered and env reads the named keys (a "" key leaves the variable unset)', () => {
    const manifests = helm.manifests({ valuesFiles: [join(CI_DIR, 'existing-secret-tls-values.yaml')] });
    expect(objectsOf(manifests, 'Secret')).toEqual([]);
    const container = meterdContainer(podSpecOf(manifests));
    expect(envEntry(container, 'AUTH_DATA_PLANE_TOKENS')?.valueFrom?.secretKeyRef).toEqual({ name: 'meterd-credentials', key: 'data-plane-tokens' });
    expect(envEntry(container, 'DATABASE_URL')?.valueFrom?.secretKeyRef).toEqual({ name: 'meterd-credentials', key: 'database-url' });
    expect(envEntry(container, 'REDIS_URL')?.valueFrom?.secretKeyRef).toEqual({ name: 'meterd-credentials', key: 'redis-url' });
    expect(envEntry(container, 'AUTH_ADMIN_TOKENS')).toBeUndefined();
    // The Stripe and alert keys default to "": a Secret made for an older chart version still works.
    for (const variable of ['STRIPE_SECRET_KEY', 'STRIPE_WEBHOOK_SECRET', 'ALERT_WEBHOOK_SECRET']) expect(envEntry(container, variable)).toBeUndefined();
    const withStripe = meterdContainer(podSpecOf(helm.manifests({
      valuesFiles: [join(CI_DIR, 'existing-secret-tls-values.yaml')],
      set: {
        'existingSecretKeys.stripeSecretKey': 'stripe-key', 'existingSecretKeys.stripeWebhookSecret': 'stripe-webhook',
        'existingSecretKeys.alertWebhookSecret': 'alert-secret', 'config.ALERT_WEBHOOK_URLS': 'https://alerts.example.com/meterd',
      },
    })));
    expect(envEntry(withStripe, 'STRIPE_SECRET_KEY')?.valueFrom?.secretKeyRef).toEqual({ name: 'meterd-credentials', key: 'stripe-key' });
    expect(envEntry(withStripe, 'STRIPE_WEBHOOK_SECRET')?.valueFrom?.secretKeyRef).toEqual({ name: 'meterd-credentials', key: 'stripe-webhook' });
    expect(envEntry(withStripe, 'ALERT_WEBHOOK_SECRET')?.valueFrom?.secretKeyRef).toEqual({ name: 'meterd-credentials', key: 'alert-secret' });
    expect(() => loadSettings(environmentOf(withStripe))).not.toThrow();
    // Inline values are ignored once an existing Secret is named.
    const ignored = helm.manifests({ valuesFiles: [join(CI_DIR, 'existing-secret-tls-values.yaml')], set: { 'secrets.redisUrl': 'redis://x:6379' } });
    expect(objectsOf(ignored, 'Secret')).toEqual([]);
  });
});

// ---- TLS and probes ----

describe('TLS and probes', () => {
  it('mounts the server certificate, key and client CA read-only and points GRPC_TLS_* at them', () => {
    const manifests = helm.manifests({ valuesFiles: [join(CI_DIR, 'existing-secret-tls-values.yaml')] });
    const spec = podSpecOf(manifests);
    const container = meterdContainer(spec);
    const env = environmentOf(container);
    expect(env.GRPC_TLS_CERT_FILE).toBe('/etc/meterd/tls/tls.crt');
    expect(secretFileSource(spec, container, defined(env.GRPC_TLS_CERT_FILE, 'cert'))).toEqual({ secretName: 'meterd-server-tls', key: 'tls.crt' });
    expect(secretFileSource(spec, container, defined(env.GRPC_TLS_KEY_FILE, 'key'))).toEqual({ secretName: 'meterd-server-tls', key: 'tls.key' });
    expect(secretFileSource(spec, container, defined(env.GRPC_TLS_CLIENT_CA_FILE, 'ca'))).toEqual({ secretName: 'gateway-client-ca', key: 'ca.pem' });
    expect(loadSettings(env).grpcTls).toEqual({
      certFile: '/etc/meterd/tls/tls.crt', keyFile: '/etc/meterd/tls/tls.key', clientCaFile: '/etc/meterd/client-ca/ca.pem',
    });
    // The gRPC port speaks TLS now: not advertised as plaintext HTTP/2.
    const service = new Service(one(manifests, 'Service') as never);
    expect(service.spec?.ports?.[0]?.appProtocol).toBeUndefined();
  });

  it('the client CA defaults to ca.crt of the server certificate Secret (cert-manager layout)', () => {
    const spec = podSpecOf(helm.manifests({
      set: { 'tls.enabled': true, 'tls.secretName': 'meterd-tls', 'tls.clientCa.enabled': true },
    }));
    const container = meterdContainer(spec);
    expect(secretFileSource(spec, container, defined(envEntry(container, 'GRPC_TLS_CLIENT_CA_FILE')?.value, 'ca')))
      .toEqual({ secretName: 'meterd-tls', key: 'ca.crt' });
  });

  it('with TLS, probes.type auto uses HTTP probes (kubelet gRPC probes cannot speak TLS)', () => {
    const container = meterdContainer(podSpecOf(helm.manifests({ valuesFiles: [join(CI_DIR, 'existing-secret-tls-values.yaml')] })));
    expect(container.livenessProbe?.grpc).toBeUndefined();
    expect(container.readinessProbe?.httpGet).toMatchObject({ path: '/readyz', port: 9464 });
  });

  it('refuses probes.type grpc with TLS, TLS without a Secret, and mutual TLS without TLS', () => {
    const tls = join(CI_DIR, 'existing-secret-tls-values.yaml');
    expect(helm.failure({ valuesFiles: [tls], set: { 'probes.type': 'grpc' } })).toContain('kubelet gRPC probes do not speak TLS');
    expect(helm.failure({ set: { 'tls.enabled': true } })).toContain('tls.secretName is required');
    expect(helm.failure({ set: { 'tls.clientCa.enabled': true } })).toContain('needs tls.enabled');
  });

  it('probes.type http: GET /healthz for liveness and startup, /readyz for readiness, on the HTTP port', () => {
    const manifests = helm.manifests({ valuesFiles: [join(CI_DIR, 'http-probes-values.yaml')] });
    const spec = podSpecOf(manifests);
    const container = meterdContainer(spec);
    expect(container.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 9464, scheme: 'HTTP' });
    expect(container.startupProbe?.httpGet).toEqual({ path: '/healthz', port: 9464, scheme: 'HTTP' });
    expect(container.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 9464, scheme: 'HTTP' });
    expect(container.readinessProbe?.grpc).toBeUndefined();
    expect(container.lifecycle?.preStop?.exec?.command).toEqual(['sleep', '10']);
    const healthzOnly = meterdContainer(podSpecOf(helm.manifests({
      valuesFiles: [join(CI_DIR, 'http-probes-values.yaml')], set: { 'probes.httpPath.readiness': '/healthz' },
    })));
    expect(healthzOnly.readinessProbe?.httpGet?.path).toBe('/healthz');
    // 30 s of drain + 10 s of preStop < 60 s; one replica, so no PodDisruptionBudget.
    expect(spec.terminationGracePeriodSeconds).toBe(60);
    expect(objectsOf(manifests, 'PodDisruptionBudget')).toEqual([]);
  });

  it('probe ports follow config.GRPC_PORT and config.HTTP_PORT', () => {
    const container = meterdContainer(podSpecOf(helm.manifests({ set: { 'config.GRPC_PORT': 6000, 'config.HTTP_PORT': 6001 } })));
    expect(container.ports?.map((p) => p.containerPort)).toEqual([6000, 6001]);
    expect(container.readinessProbe?.grpc?.port).toBe(6000);
    expect(helm.failure({ set: { 'config.HTTP_PORT': 50051 } })).toContain('must differ');
  });

  it('refuses a termination grace period that does not cover SHUTDOWN_GRACE_MS plus the preStop sleep', () => {
    expect(helm.failure({ set: { 'config.SHUTDOWN_GRACE_MS': 30000 } })).toContain('terminationGracePeriodSeconds (30 s) must exceed');
    expect(helm.failure({ set: { 'preStop.sleepSeconds': 20 } })).toContain('terminationGracePeriodSeconds');
    const spec = podSpecOf(helm.manifests({ set: { 'preStop.sleepSeconds': 5 } }));
    expect(meterdContainer(spec).lifecycle?.preStop?.sleep?.seconds).toBe(5);
  });
});

// ---- monitoring, autoscaling, disruption budget, dashboard ----

describe('monitoring scenario', () => {
  const options = (): RenderOptions => ({ valuesFiles: [join(CI_DIR, 'monitoring-values.yaml')] });

  it('a ServiceMonitor scrapes /metrics on the Service port http-metrics', () => {
    const manifests = helm.manifests(options());
    const monitor = one(manifests, 'ServiceMonitor');
    const service = one(manifests, 'Service');
    const spec = monitor.spec as { selector: { matchLabels: Record<string, string> }; endpoints: Array<Json>; namespaceSelector: { matchNames: string[] } };
    expect(service.metadata.labels).toMatchObject(spec.selector.matchLabels);
    expect(spec.namespaceSelector.matchNames).toEqual(['default']);
    expect(spec.endpoints).toEqual([
      expect.objectContaining({ port: 'http-metrics', path: '/metrics', interval: '15s', scrapeTimeout: '10s' }),
    ]);
    const servicePorts = ((service.spec as Json).ports as Array<{ name: string }>).map((p) => p.name);
    expect(servicePorts).toContain(spec.endpoints[0]?.port);
    expect(monitor.metadata.labels?.release).toBe('kube-prometheus-stack');
  });

  it('an autoscaling/v2 HPA drives the Deployment, which then sets no replicas', () => {
    const manifests = helm.manifests(options());
    const hpa = new HorizontalPodAutoscaler(one(manifests, 'HorizontalPodAutoscaler') as never);
    expect(hpa.spec?.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'meterd' });
    expect([hpa.spec?.minReplicas, hpa.spec?.maxReplicas]).toEqual([3, 12]);
    expect(hpa.spec?.metrics?.map((m) => [m.resource?.name, m.resource?.target.averageUtilization])).toEqual([['cpu', 60], ['memory', 80]]);
    expect(hpa.spec?.behavior?.scaleDown?.stabilizationWindowSeconds).toBe(300);
    expect(deploymentOf(manifests).spec?.replicas).toBeUndefined();
    expect(helm.failure({ ...options(), set: { 'autoscaling.minReplicas': 20 } })).toContain('must not exceed');
  });

  it('the PodDisruptionBudget is on when more than one pod runs, or when forced', () => {
    const pdb = new PodDisruptionBudget(one(helm.manifests(options()), 'PodDisruptionBudget') as never);
    expect(pdb.spec?.minAvailable).toBe(2);
    expect(pdb.spec?.maxUnavailable).toBeUndefined();
    expect(objectsOf(helm.manifests({ set: { replicaCount: 1 } }), 'PodDisruptionBudget')).toEqual([]);
    expect(objectsOf(helm.manifests({ set: { replicaCount: 1, 'podDisruptionBudget.enabled': true } }), 'PodDisruptionBudget')).toHaveLength(1);
    expect(objectsOf(helm.manifests({ set: { 'podDisruptionBudget.enabled': false } }), 'PodDisruptionBudget')).toEqual([]);
    // With autoscaling, minReplicas decides.
    expect(objectsOf(helm.manifests({ set: { replicaCount: 1, 'autoscaling.enabled': true } }), 'PodDisruptionBudget')).toHaveLength(1);
    const percent = new PodDisruptionBudget(one(helm.manifests({ set: { 'podDisruptionBudget.minAvailable': '50%' } }), 'PodDisruptionBudget') as never);
    expect(percent.spec?.minAvailable).toBe('50%');
  });

  it('the Grafana dashboard ConfigMap carries every dashboards/*.json byte for byte, labelled grafana_dashboard "1"', () => {
    const dashboardMap = one(helm.manifests(options()), 'ConfigMap', 'meterd-dashboards');
    expect(dashboardMap.metadata.labels?.grafana_dashboard).toBe('1');
    expect(dashboardMap.metadata.annotations).toEqual({ grafana_folder: 'meterd' });
    const data = dashboardMap.data as Record<string, string>;
    const files = readdirSync(join(CHART_DIR, 'dashboards')).filter((f) => f.endsWith('.json')).sort();
    expect(files.length).toBeGreaterThan(0);
    expect(Object.keys(data).sort()).toEqual(files);
    for (const file of files) {
      expect(data[file]).toBe(readFileSync(join(CHART_DIR, 'dashboards', file), 'utf8'));
      expect(() => JSON.parse(data[file] ?? '')).not.toThrow();
    }
  });

  it('none of these is rendered by default', () => {
    const kinds = kindsOf(helm.manifests());
    expect(kinds).not.toContain('ServiceMonitor');
    expect(kinds).not.toContain('HorizontalPodAutoscaler');
    expect(objectsOf(helm.manifests(), 'ConfigMap').map((c) => c.metadata.name)).toEqual(['meterd-config']);
  });
});

// ---- scheduling and the knobs operators turn ----

describe('scheduling scenario', () => {
  it('pins the image by digest, uses the given ServiceAccount, a headless Service and Redis Cluster seeds', () => {
    const manifests = helm.manifests({ valuesFiles: [join(CI_DIR, 'scheduling-values.yaml')] });
    const spec = podSpecOf(manifests);
    const container = meterdContainer(spec);
    expect(container.image).toBe('registry.example.com/platform/meterd@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef');
    expect(spec.imagePullSecrets).toEqual([{ name: 'regcred' }]);
    expect(spec.serviceAccountName).toBe('gateway-services');
    expect(objectsOf(manifests, 'ServiceAccount')).toEqual([]);
    expect(new Service(one(manifests, 'Service') as never).spec?.clusterIP).toBe('None');
    expect(spec.priorityClassName).toBe('business-critical');
    expect(spec.tolerations).toHaveLength(1);
    expect(spec.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux' });
    expect(deploymentOf(manifests).spec?.template.metadata?.labels?.team).toBe('billing');
    expect(podAnnotations(manifests)['reloader.stakater.com/auto']).toBe('true');
    // The spread constraint gets the chart's selector when it names none.
    expect(spec.topologySpreadConstraints?.[0]?.labelSelector?.matchLabels).toEqual(deploymentOf(manifests).spec?.selector.matchLabels);
    const env = environmentOf(container);
    expect(env.REDIS_URL).toBeUndefined();
    expect(env.NODE_OPTIONS).toBe('--max-old-space-size=384');
    expect(loadSettings(env).redisClusterNodes).toHaveLength(3);
  });

  it('an empty config value leaves the variable unset, so meterd uses its own default', () => {
    const container = meterdContainer(podSpecOf(helm.manifests({ set: { 'config.LOG_LEVEL': '' } })));
    expect(envEntry(container, 'LOG_LEVEL')).toBeUndefined();
    expect(envEntry(container, 'METRICS_ACCOUNT_IDS')).toBeUndefined();
  });

  it('large whole numbers reach the environment without exponent notation (Helm reads numbers as floats)', () => {
    const container = meterdContainer(podSpecOf(helm.manifests({ set: { 'config.FLUSH_BACKLOG_ALARM_EVENTS': 250000000 } })));
    expect(envEntry(container, 'FLUSH_BACKLOG_ALARM_EVENTS')?.value).toBe('250000000');
    expect(envEntry(container, 'RECONCILE_INTERVAL_MS')?.value).toBe('300000');
  });
});

// ---- payments, alerts and the Stripe webhook Ingress ----

describe('payments, alerts and the Stripe webhook Ingress', () => {
  const options = (): RenderOptions => ({ valuesFiles: [join(CI_DIR, 'stripe-webhooks-values.yaml')] });

  /** The environment with the chart Secret's real values (not stand-ins), as the kubelet would fill it in. */
  function environmentWithSecret(manifests: Manifest[]): Record<string, string> {
    const container = meterdContainer(podSpecOf(manifests));
    const secrets = objectsOf(manifests, 'Secret');
    const data = ((secrets[0] as Json | undefined)?.data ?? {}) as Record<string, string>;
    const env: Record<string, string> = {};
    for (const variable of container.env ?? []) {
      if (variable.value !== undefined) env[variable.name] = variable.value;
      const ref = variable.valueFrom?.secretKeyRef;
      if (ref) env[variable.name] = Buffer.from(defined(data[ref.key], `Secret key ${ref.key}`), 'base64').toString();
    }
    return env;
  }

  it('meterd gets the Stripe, refill, overage and alert settings of the values', () => {
    const settings = loadSettings(environmentWithSecret(helm.manifests(options())));
    expect(settings.stripe).toEqual({
      secretKey: 'sk_test_change-me-0123456789', webhookSecret: 'whsec_change-me-0123456789', apiUrl: 'https://api.stripe.com',
      timeoutMs: 20000, maxNetworkRetries: 3, meterEventName: 'acme_overage_credits',
    });
    expect([settings.outboxPollIntervalMs, settings.refillAttemptsMax, settings.refillRetryBaseMs, settings.overageReportIntervalMs])
      .toEqual([1000, 6, 60000, 300000]);
    expect(settings.alerts).toEqual({
      webhookUrls: ['https://alerts.example.com/meterd', 'https://hooks.example.org/billing'], webhookSecret: 'alert-signing-secret-0123456789',
      deliveryAttemptsMax: 12, retryBaseMs: 1000, deliveryTimeoutMs: 3000,
    });
  });

  it('the Ingress routes only the exact path /webhooks/stripe, to the Service port of meterd\'s HTTP server', () => {
    const manifests = helm.manifests(options());
    const ingress = new Ingress(one(manifests, 'Ingress') as never);
    expect(() => ingress.validate()).not.toThrow();
    expect(ingress.metadata?.name).toBe('meterd-webhooks');
    expect(ingress.metadata?.annotations).toEqual({ 'cert-manager.io/cluster-issuer': 'letsencrypt' });
    expect(ingress.metadata?.labels).toMatchObject({ exposure: 'public', 'app.kubernetes.io/instance': 'meterd' });
    expect(ingress.spec?.ingressClassName).toBe('nginx');
    expect(ingress.spec?.tls).toEqual([{ hosts: ['billing.example.com'], secretName: 'billing-example-com-tls' }]);
    // One rule, one Exact path, no default backend: /metrics, /healthz and /readyz are not reachable.
    expect(ingress.spec?.defaultBackend).toBeUndefined();
    expect(ingress.spec?.rules).toEqual([{
      host: 'billing.example.com',
      http: { paths: [{ path: '/webhooks/stripe', pathType: 'Exact', backend: { service: { name: 'meterd', port: { name: 'http-metrics' } } } }] },
    }]);
    // That Service port leads to the container port meterd's HTTP server listens on.
    const service = new Service(one(manifests, 'Service') as never);
    const servicePort = defined(service.spec?.ports?.find((p) => p.name === 'http-metrics'), 'Service port http-metrics');
    const container = meterdContainer(podSpecOf(manifests));
    const containerPort = defined(container.ports?.find((p) => p.name === servicePort.targetPort), 'container port');
    expect(String(containerPort.containerPort)).toBe(environmentOf(container).HTTP_PORT);
    const notes = helm.notes(options());
    expect(notes).toContain('https://billing.example.com/webhooks/stripe');
    expect(notes).not.toContain('WARNING');
  });

  it('is off by default; without a host it matches every host; TLS needs a host; NOTES warns when Stripe is not set', () => {
    expect(objectsOf(helm.manifests(), 'Ingress')).toEqual([]);
    const anyHost = new Ingress(one(helm.manifests({ set: { 'webhookIngress.enabled': true } }), 'Ingress') as never);
    expect(() => anyHost.validate()).not.toThrow();
    expect(anyHost.spec?.rules?.map((r) => r.host)).toEqual([undefined]);
    expect(anyHost.spec?.tls).toBeUndefined();
    expect(anyHost.spec?.ingressClassName).toBeUndefined();
    expect(helm.failure({ set: { 'webhookIngress.enabled': true, 'webhookIngress.tls.secretName': 'tls' } }))
      .toContain('webhookIngress.tls.secretName needs webhookIngress.host');
    expect(helm.notes({ set: { 'webhookIngress.enabled': true } })).toContain('webhookIngress is on but STRIPE_SECRET_KEY is not set');
  });

  it('refuses STRIPE_SECRET_KEY without STRIPE_WEBHOOK_SECRET, as meterd does', () => {
    expect(() => loadSettings({ STRIPE_SECRET_KEY: 'sk_test_x' })).toThrow(/STRIPE_WEBHOOK_SECRET/);
    expect(helm.failure({ set: { 'secrets.stripeSecretKey': 'sk_test_x' } })).toContain('secrets.stripeSecretKey needs secrets.stripeWebhookSecret');
    expect(helm.failure({ set: { mode: 'sidecar', 'secrets.stripeSecretKey': 'sk_test_x' } })).toContain('needs secrets.stripeWebhookSecret');
    const existing = join(CI_DIR, 'existing-secret-tls-values.yaml');
    expect(helm.failure({ valuesFiles: [existing], set: { 'existingSecretKeys.stripeSecretKey': 'stripe-key' } }))
      .toContain('existingSecretKeys.stripeSecretKey needs existingSecretKeys.stripeWebhookSecret');
    // The webhook secret alone is accepted by both (payments stay off).
    const env = environmentWithSecret(helm.manifests({ set: { 'secrets.stripeWebhookSecret': 'whsec_x' } }));
    expect(loadSettings(env).stripe.secretKey).toBe('');
  });

  it('refuses ALERT_WEBHOOK_URLS without an ALERT_WEBHOOK_SECRET of at least 16 characters, as meterd does', () => {
    const url = 'https://alerts.example.com/meterd';
    expect(() => loadSettings({ ALERT_WEBHOOK_URLS: url, ALERT_WEBHOOK_SECRET: 'x'.repeat(15) })).toThrow(/ALERT_WEBHOOK_SECRET/);
    expect(helm.failure({ set: { 'config.ALERT_WEBHOOK_URLS': url } })).toContain('config.ALERT_WEBHOOK_URLS needs secrets.alertWebhookSecret of at least 16 characters');
    expect(helm.failure({ set: { 'config.ALERT_WEBHOOK_URLS': url, 'secrets.alertWebhookSecret': 'x'.repeat(15) } })).toContain('at least 16 characters');
    expect(helm.failure({ set: { mode: 'sidecar', 'config.ALERT_WEBHOOK_URLS': url } })).toContain('needs secrets.alertWebhookSecret');
    const existing = join(CI_DIR, 'existing-secret-tls-values.yaml');
    expect(helm.failure({ valuesFiles: [existing], set: { 'config.ALERT_WEBHOOK_URLS': url } }))
      .toContain('config.ALERT_WEBHOOK_URLS needs existingSecretKeys.alertWebhookSecret');
    // Exactly 16 characters: both accept it.
    const env = environmentWithSecret(helm.manifests({ set: { 'config.ALERT_WEBHOOK_URLS': url, 'secrets.alertWebhookSecret': 'x'.repeat(16) } }));
    expect(loadSettings(env).alerts).toMatchObject({ webhookUrls: [url], webhookSecret: 'x'.repeat(16) });
    // Whitespace is no URL list, for both: no secret needed. A bare comma is one, for both.
    const blank = helm.writeValues('blank-alert-urls', { config: { ALERT_WEBHOOK_URLS: '   ' } });
    expect(loadSettings(environmentWithSecret(helm.manifests({ valuesFiles: [blank] }))).alerts.webhookUrls).toEqual([]);
    expect(() => loadSettings({ ALERT_WEBHOOK_URLS: ' , ' })).toThrow(/ALERT_WEBHOOK_SECRET/);
    const comma = helm.writeValues('comma-alert-urls', { config: { ALERT_WEBHOOK_URLS: ' , ' } });
    expect(helm.failure({ valuesFiles: [comma] })).toContain('needs secrets.alertWebhookSecret');
  });

  it('the schema takes at most 10 http(s) alert URLs, as meterd does', () => {
    const validate = schemaValidator();
    const urls = (n: number) => Array.from({ length: n }, (_, i) => `https://alerts${i}.example.com/meterd`).join(',');
    const ten = helm.writeValues('ten-alert-urls', { config: { ALERT_WEBHOOK_URLS: urls(10) } });
    expect(validate(helm.values({ valuesFiles: [ten] })), JSON.stringify(validate.errors)).toBe(true);
    expect(() => loadSettings({ ALERT_WEBHOOK_URLS: urls(10), ALERT_WEBHOOK_SECRET: 'x'.repeat(16) })).not.toThrow();
    const eleven = helm.writeValues('eleven-alert-urls', { config: { ALERT_WEBHOOK_URLS: urls(11) } });
    expect(validate(helm.values({ valuesFiles: [eleven] }))).toBe(false);
    expect(() => loadSettings({ ALERT_WEBHOOK_URLS: urls(11), ALERT_WEBHOOK_SECRET: 'x'.repeat(16) })).toThrow(/at most 10/);
  });
});

// ---- mode sidecar ----

describe('mode sidecar', () => {
  const sidecarOptions = (): RenderOptions => ({ valuesFiles: [join(CI_DIR, 'sidecar-values.yaml')] });

  function snippet(options: RenderOptions): { containers: Container[]; volumes: Volume[]; patch: Json; configMapName: string } {
    const manifests = helm.manifests(options);
    const map = one(manifests, 'ConfigMap', 'meterd-sidecar');
    const data = map.data as Record<string, string>;
    return {
      containers: parseYaml(defined(data['container.yaml'], 'container.yaml')) as Container[],
      volumes: parseYaml(defined(data['volumes.yaml'], 'volumes.yaml')) as Volume[],
      patch: parseYaml(defined(data['deployment-patch.yaml'], 'deployment-patch.yaml')) as Json,
      configMapName: map.metadata.name,
    };
  }

  it('renders no Deployment, Service, ServiceAccount, HPA, PDB, ServiceMonitor or Ingress', () => {
    const manifests = helm.manifests({
      ...sidecarOptions(), set: { 'serviceMonitor.enabled': true, 'autoscaling.enabled': true, 'webhookIngress.enabled': true },
    });
    expect(kindsOf(manifests)).toEqual(['ConfigMap', 'ConfigMap', 'Secret']);
    expect(manifests.map((m) => m.object.metadata.name).sort()).toEqual(['meterd', 'meterd-config', 'meterd-sidecar']);
  });

  it('the snippet is a valid container for a gateway pod, with every volume it mounts', () => {
    const manifests = helm.manifests(sidecarOptions());
    const { containers, volumes } = snippet(sidecarOptions());
    expect(containers).toHaveLength(1);
    const container = defined(containers[0], 'container');
    const pod = new Pod({
      metadata: { name: 'gateway' },
      spec: { initContainers: containers, containers: [{ name: 'gateway', image: 'gateway:1' }], volumes },
    });
    expect(() => pod.validate()).not.toThrow();
    for (const mount of container.volumeMounts ?? []) expect(volumes.map((v) => v.name)).toContain(mount.name);
    // It refers to the objects this release renders.
    expect(volumes.find((v) => v.configMap)?.configMap?.name).toBe(one(manifests, 'ConfigMap', 'meterd-config').metadata.name);
    const secretName = one(manifests, 'Secret').metadata.name;
    for (const variable of container.env ?? []) {
      if (variable.valueFrom?.secretKeyRef) expect(variable.valueFrom.secretKeyRef.name).toBe(secretName);
    }
    // A native sidecar; port names that cannot clash with the gateway's; the preStop sleep.
    expect(container.restartPolicy).toBe('Always');
    expect(container.ports?.map((p) => p.name)).toEqual(['meterd-grpc', 'meterd-metrics']);
    expect(container.lifecycle?.preStop?.sleep?.seconds).toBe(5);
    expect(envEntry(container, 'LOG_LEVEL')?.value).toBe('warn');
  });

  it('the deployment patch carries the same container, the volumes and the checksum annotations', () => {
    const { containers, volumes, patch } = snippet(sidecarOptions());
    const template = (patch.spec as Json).template as { metadata: { annotations: Record<string, string> }; spec: Json };
    expect(template.spec.initContainers).toEqual(containers);
    expect(template.spec.containers).toBeUndefined();
    expect(template.spec.volumes).toEqual(volumes);
    // Same product config as the defaults, so the same checksum as the Deployment's.
    expect(template.metadata.annotations['checksum/meterd-config']).toBe(podAnnotations(helm.manifests())['checksum/config']);
    expect(template.metadata.annotations['checksum/meterd-secret']).toMatch(/^[0-9a-f]{64}$/);
  });

  it('without sidecar.native the container goes under containers and has no restartPolicy', () => {
    const { containers, patch } = snippet({ set: { mode: 'sidecar' } });
    expect(containers[0]?.restartPolicy).toBeUndefined();
    expect(((patch.spec as Json).template as { spec: Json }).spec.containers).toEqual(containers);
  });

  it('an umbrella chart can include meterd.sidecarContainer, meterd.sidecarVolumes and meterd.sidecarPodAnnotations', () => {
    const gatewayTemplate = helm.writeFile('gateway-deployment.yaml', [
      '{{- $meterd := dict "Values" .Values "Release" .Release "Chart" (dict "Name" "meterd" "Version" "0.1.0" "AppVersion" "0.1.0") }}',
      'apiVersion: apps/v1',
      'kind: Deployment',
      'metadata:',
      '  name: gateway',
      '  labels:',
      '    app.kubernetes.io/managed-by: Helm',
      'spec:',
      '  selector:',
      '    matchLabels: {app: gateway}',
      '  template:',
      '    metadata:',
      '      labels: {app: gateway}',
      '      annotations:',
      '        {{- include "meterd.sidecarPodAnnotations" $meterd | nindent 8 }}',
      '    spec:',
      '      containers:',
      '        - name: gateway',
      '          image: gateway:1.0.0',
      '        {{- include "meterd.sidecarContainer" $meterd | nindent 8 }}',
      '      volumes:',
      '        {{- include "meterd.sidecarVolumes" $meterd | nindent 8 }}',
      '',
    ].join('\n'));
    const options: RenderOptions = { set: { mode: 'sidecar' }, extraTemplates: [gatewayTemplate] };
    const manifests = helm.manifests(options);
    const gateway = manifests.find((m) => m.source === 'parent/templates/gateway-deployment.yaml');
    const deployment = new Deployment(defined(gateway, 'gateway Deployment').object as never);
    expect(() => deployment.validate()).not.toThrow();
    const { containers, volumes } = snippet({ set: { mode: 'sidecar' } });
    expect(deployment.spec?.template.spec?.containers.map((c) => c.name)).toEqual(['gateway', 'meterd']);
    expect(deployment.spec?.template.spec?.containers[1]).toEqual(containers[0]);
    expect(deployment.spec?.template.spec?.volumes).toEqual(volumes);
    expect(Object.keys(deployment.spec?.template.metadata?.annotations ?? {}).sort()).toEqual(['checksum/meterd-config', 'checksum/meterd-secret']);
  });
});

// ---- values.schema.json ----

let compiledSchema: ValidateFunction | undefined;
function schemaValidator(): ValidateFunction {
  if (!compiledSchema) {
    const schema = JSON.parse(readFileSync(join(CHART_DIR, 'values.schema.json'), 'utf8')) as Json;
    compiledSchema = new Ajv({ allErrors: true, strict: true }).compile(schema);
  }
  return compiledSchema;
}

describe('values.schema.json', () => {
  function errorsFor(options: RenderOptions): string {
    const validate = schemaValidator();
    expect(validate(helm.values(options))).toBe(false);
    return JSON.stringify(validate.errors);
  }

  it('rejects unknown keys, at the top and inside config', () => {
    expect(errorsFor({ set: { replicas: 3 } })).toContain('"additionalProperty":"replicas"');
    expect(errorsFor({ set: { 'config.LOG_LEVL': 'debug' } })).toContain('"additionalProperty":"LOG_LEVL"');
    expect(errorsFor({ set: { 'tls.clientCA.enabled': true } })).toContain('"additionalProperty":"clientCA"');
  });

  it('rejects wrong types and values out of meterd\'s bounds', () => {
    expect(errorsFor({ set: { replicaCount: 'two' } })).toContain('/replicaCount');
    expect(errorsFor({ set: { mode: 'daemonset' } })).toContain('/mode');
    expect(errorsFor({ set: { 'config.GRPC_PORT': 70000 } })).toContain('/config/GRPC_PORT');
    expect(errorsFor({ set: { 'config.SWEEP_INTERVAL_MS': 10 } })).toContain('/config/SWEEP_INTERVAL_MS');
    expect(errorsFor({ set: { 'config.LOG_LEVEL': 'verbose' } })).toContain('/config/LOG_LEVEL');
    expect(errorsFor({ set: { 'probes.type': 'tcp' } })).toContain('/probes/type');
    expect(errorsFor({ set: { 'secrets.redisUrl': 'localhost:6379' } })).toContain('/secrets/redisUrl');
    expect(errorsFor({ set: { 'config.STRIPE_MAX_NETWORK_RETRIES': 11 } })).toContain('/config/STRIPE_MAX_NETWORK_RETRIES');
    expect(errorsFor({ set: { 'config.REFILL_ATTEMPTS_MAX': 0 } })).toContain('/config/REFILL_ATTEMPTS_MAX');
    expect(errorsFor({ set: { 'config.STRIPE_API_URL': 'https://api.stripe.com/v1' } })).toContain('/config/STRIPE_API_URL');
    expect(errorsFor({ set: { 'config.STRIPE_METER_EVENT_NAME': 'overage credits' } })).toContain('/config/STRIPE_METER_EVENT_NAME');
    expect(errorsFor({ set: { 'config.ALERT_WEBHOOK_URLS': 'alerts.example.com/meterd' } })).toContain('/config/ALERT_WEBHOOK_URLS');
    expect(errorsFor({ set: { 'webhookIngress.host': 'Billing.Example.com' } })).toContain('/webhookIngress/host');
    expect(errorsFor({ set: { 'webhookIngress.path': '/metrics' } })).toContain('"additionalProperty":"path"');
    const badPlan = helm.writeValues('bad-plan', { productConfig: { plans: [{ id: 'free', monthly_credit: 10, price_cents: 0 }] } });
    expect(errorsFor({ valuesFiles: [badPlan] })).toContain('monthly_credit');
  });

  it('accepts what an umbrella release passes (global) and booleans as strings in config', () => {
    const validate = schemaValidator();
    const umbrella = helm.writeValues('umbrella', { global: { imageRegistry: 'r' }, config: { SHADOW_MODE: 'true' } });
    expect(validate(helm.values({ valuesFiles: [umbrella] })), JSON.stringify(validate.errors)).toBe(true);
  });

  it('describes exactly the keys values.yaml has', () => {
    const schema = JSON.parse(readFileSync(join(CHART_DIR, 'values.schema.json'), 'utf8')) as Json;
    const defaults = parseYaml(readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8')) as Json;
    const inSchema = schemaPaths(schema).filter((p) => p !== 'global');
    for (const path of inSchema) {
      const present = path.split('.').reduce<unknown>((node, key) => (node as Json | undefined)?.[key], defaults);
      expect(present, `values.yaml has ${path}`).not.toBeUndefined();
    }
  });
});

// ---- the chart covers meterd's settings ----

describe('coverage of meterd settings', () => {
  it('every setting of src/config/settings.ts is a config key, a secret or set by the chart, and nothing else is', () => {
    const defaults = parseYaml(readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8')) as { config: Json };
    const configKeys = Object.keys(defaults.config);
    const covered = [...configKeys, ...SECRET_VARIABLES, ...CHART_SET_VARIABLES].sort();
    expect(covered).toEqual(settingsVariables());
  });

  it('every whole-number setting has its settings.ts default in values.yaml and its bounds in values.schema.json', () => {
    const source = readFileSync(join(REPO_DIR, 'src/config/settings.ts'), 'utf8');
    const defaults = (parseYaml(readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8')) as { config: Json }).config;
    const schema = JSON.parse(readFileSync(join(CHART_DIR, 'values.schema.json'), 'utf8')) as { properties: { config: { properties: Record<string, Json> } } };
    // Port 0 (any free port) cannot be probed or targeted by a Service: the chart refuses it.
    const chartStricter: Record<string, { minimum: number }> = { GRPC_PORT: { minimum: 1 }, HTTP_PORT: { minimum: 1 } };
    const number = (text: string | undefined) => Number(defined(text, 'number').replaceAll('_', ''));
    const integers = [...source.matchAll(/^\s{2}([A-Z][A-Z0-9_]+): integer\(([\d_]+), ([\d_]+), ([\d_]+)\)/gm)];
    expect(integers.length).toBeGreaterThan(20);
    for (const [, name, min, max, fallback] of integers) {
      const key = defined(name, 'name');
      expect(defaults[key], `values.yaml config.${key}`).toBe(number(fallback));
      const property = defined(schema.properties.config.properties[key], `schema of config.${key}`);
      const bounds = defined((property.anyOf as Json[] | undefined)?.find((b) => b.type === 'integer'), `integer bounds of ${key}`);
      expect({ minimum: bounds.minimum, maximum: bounds.maximum }, key).toEqual({ minimum: number(min), maximum: number(max), ...chartStricter[key] });
    }
  });
});

// ---- README values table ----

describe('chart README', () => {
  const readme = (): string => readFileSync(join(CHART_DIR, 'README.md'), 'utf8');

  function tableOf(text: string): string {
    const start = text.indexOf(TABLE_START_MARKER);
    const end = text.indexOf(TABLE_END_MARKER);
    if (start < 0 || end < start) throw new Error('README.md has no values-table markers');
    return text.slice(start + TABLE_START_MARKER.length, end).trim();
  }

  it('lists every leaf key of values.yaml, and nothing else', () => {
    const defaults = parseYaml(readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8')) as unknown;
    const listed = [...tableOf(readme()).matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]);
    expect([...listed].sort()).toEqual(leafPaths(defaults).sort());
  });

  it('holds the table generated from values.yaml comments (regenerate: npx tsx test/helm/values-table.ts)', () => {
    expect(tableOf(readme())).toBe(generatedValuesTable());
    // Every row has a description: values.yaml is documented key by key.
    for (const line of generatedValuesTable().split('\n').slice(2)) expect(line, line).not.toMatch(/\|\s*\|$/);
  });

  it('documents install, upgrade, secrets, both modes and the Stripe webhook endpoint', () => {
    const text = readme();
    for (const phrase of [
      'helm lint helm/meterd', 'helm install meterd helm/meterd', 'helm upgrade', 'existingSecret', 'mode: sidecar', 'meterd.sidecarContainer',
      'webhookIngress', '/webhooks/stripe', 'STRIPE_WEBHOOK_SECRET', 'ALERT_WEBHOOK_SECRET',
    ]) {
      expect(text).toContain(phrase);
    }
  });
});

// ---- the renderer itself ----

describe('renderer (Helm semantics the chart relies on)', () => {
  it('later -f files win, maps merge deeply, null deletes a default', () => {
    const first = helm.writeValues('first', { config: { LOG_LEVEL: 'debug', SHADOW_MODE: true }, podLabels: { a: 'b' } });
    const second = helm.writeValues('second', { config: { LOG_LEVEL: 'warn' }, podLabels: null });
    const values = helm.values({ valuesFiles: [first, second] });
    const config = values.config as Json;
    expect(config.LOG_LEVEL).toBe('warn');
    expect(config.SHADOW_MODE).toBe(true);
    expect(config.GRPC_PORT).toBe(50051);
    expect(values).not.toHaveProperty('podLabels');
  });

  it('checks Chart.yaml kubeVersion against the cluster version', () => {
    expect(helm.failure({ kubeVersion: 'v1.26.5' })).toContain('incompatible with Kubernetes v1.26.5');
    expect(helm.manifests({ kubeVersion: 'v1.27.0' }).length).toBeGreaterThan(0);
  });

  it('implements tpl, required, toJson, fromYaml, .Capabilities, .Files, .Template and .Chart as Helm does', () => {
    const probe = helm.writeFile('renderer-probe.yaml', [
      '{{- $parsed := "a: 1000000\\nb: [x, y]" | fromYaml }}',
      'apiVersion: v1',
      'kind: ConfigMap',
      'metadata:',
      '  name: renderer-probe',
      '  labels:',
      '    app.kubernetes.io/managed-by: {{ .Release.Service }}',
      'data:',
      '  tpl: {{ tpl "{{ .Release.Name }}-{{ .Values.mode }}" . | quote }}',
      '  required: {{ required "mode is required" .Values.mode | quote }}',
      '  toJson: {{ .Values.image | toJson | quote }}',
      '  fromYaml: {{ printf "%v %s" $parsed.a ($parsed.b | last) | quote }}',
      '  toYaml: {{ dict "big" $parsed.a | toYaml | quote }}',
      '  hasApps: {{ .Capabilities.APIVersions.Has "apps/v1" | quote }}',
      '  hasMonitoring: {{ .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" | quote }}',
      '  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}',
      '  template: {{ printf "%s %s" .Template.Name .Template.BasePath | quote }}',
      '  chart: {{ printf "%s %s %s" .Chart.Name .Chart.Version .Chart.AppVersion | quote }}',
      '  release: {{ printf "%s %s %v" .Release.Name .Release.Namespace .Release.IsInstall | quote }}',
      '  dashboard: {{ .Files.Get "dashboards/meterd-overview.json" | sha256sum | quote }}',
      '  ci: {{ .Files.Get "ci/default-values.yaml" | quote }}',
      '',
    ].join('\n'));
    const manifests = helm.manifests({ extraTemplates: [probe], releaseName: 'r1', namespace: 'billing' });
    const data = one(manifests, 'ConfigMap', 'renderer-probe').data as Record<string, string>;
    const dashboard = readFileSync(join(CHART_DIR, 'dashboards/meterd-overview.json'));
    expect(data).toEqual({
      tpl: 'r1-deployment',
      required: 'deployment',
      toJson: '{"digest":"","pullPolicy":"IfNotPresent","repository":"meterd","tag":""}',
      // Helm reads YAML numbers as float64; toYaml still prints whole numbers plainly.
      fromYaml: '1e+06 y',
      toYaml: 'big: 1000000',
      hasApps: 'true',
      hasMonitoring: 'false',
      kubeVersion: 'v1.30.0',
      template: 'parent/templates/renderer-probe.yaml parent/templates',
      chart: 'meterd 0.1.0 0.1.0',
      release: 'r1 billing true',
      dashboard: createHash('sha256').update(dashboard).digest('hex'),
      // .helmignore keeps ci/ out of the chart's files.
      ci: '',
    });
    const refusing = helm.writeFile('refusing.yaml', '{{ required "nameOverride is required here" .Values.nameOverride }}\n');
    expect(helm.failure({ extraTemplates: [refusing] })).toContain('nameOverride is required here');
  });

  it('labels each document with its template, like helm template', () => {
    const sources = helm.manifests().map((m) => basename(dirname(m.source)) + '/' + basename(m.source));
    expect(sources).toContain('templates/deployment.yaml');
    expect(sources.every((s) => s.startsWith('templates/'))).toBe(true);
  });
});
