// What the create form makes: a Deployment (and a Service when a port is
// given), and the same as YAML, as the user could apply it with kubectl.
import YAML from 'yaml';

export interface Flavor {
  cpu: number;
  memoryGiB: number;
  name: string;
  pricePerHour: number;
}

export interface Form {
  name: string;
  image: string;
  flavor: Flavor | null;
  replicas: number;
  port: string;
  env: string;
  command: string;
}

export type FieldErrors = Partial<Record<keyof Form, string>>;

const dns1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function validate(f: Form): FieldErrors {
  const e: FieldErrors = {};
  if (!f.name) e.name = 'required';
  else if (f.name.length > 63 || !dns1123.test(f.name))
    e.name = 'lower-case letters, digits and "-", starting and ending with a letter or digit, at most 63';
  if (!f.image.trim()) e.image = 'required';
  if (!Number.isInteger(f.replicas) || f.replicas < 0) e.replicas = 'a whole number, 0 or more';
  if (f.port.trim() !== '') {
    const p = Number(f.port);
    if (!Number.isInteger(p) || p < 1 || p > 65535) e.port = 'a port number, 1-65535';
  }
  const bad = parseEnv(f.env).bad;
  if (bad.length) e.env = `not KEY=VALUE: ${bad.join(', ')}`;
  return e;
}

export function parseEnv(text: string): { env: { name: string; value: string }[]; bad: string[] } {
  const env: { name: string; value: string }[] = [];
  const bad: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf('=');
    const name = i > 0 ? line.slice(0, i).trim() : '';
    if (!name || !/^[-._a-zA-Z][-._a-zA-Z0-9]*$/.test(name)) {
      bad.push(line);
      continue;
    }
    env.push({ name, value: line.slice(i + 1) });
  }
  return { env, bad };
}

// quantity writes a flavor's memory as Kubernetes does: 0.5 GiB is 512Mi.
export function memoryQuantity(gib: number): string {
  return Number.isInteger(gib) ? `${gib}Gi` : `${Math.round(gib * 1024)}Mi`;
}

export function deployment(f: Form): Record<string, unknown> {
  const labels = { app: f.name };
  const container: Record<string, unknown> = { name: f.name, image: f.image.trim() };
  if (f.command.trim()) container.command = ['sh', '-c', f.command];
  const env = parseEnv(f.env).env;
  if (env.length) container.env = env;
  if (f.port.trim()) container.ports = [{ containerPort: Number(f.port) }];
  if (f.flavor) {
    const r = { cpu: String(f.flavor.cpu), memory: memoryQuantity(f.flavor.memoryGiB) };
    container.resources = { requests: r, limits: r };
  }
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: f.name, labels },
    spec: {
      replicas: f.replicas,
      selector: { matchLabels: labels },
      template: { metadata: { labels }, spec: { containers: [container] } },
    },
  };
}

export function service(f: Form): Record<string, unknown> | null {
  if (!f.port.trim()) return null;
  const port = Number(f.port);
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: f.name, labels: { app: f.name } },
    spec: { selector: { app: f.name }, ports: [{ port, targetPort: port }] },
  };
}

export function toYAML(f: Form): string {
  const docs = [deployment(f), service(f)].filter(Boolean);
  // No anchors and aliases for the shared label maps: written out, as people write them.
  return docs.map((d) => YAML.stringify(d, { aliasDuplicateObjects: false })).join('---\n');
}

export function kubectlCommand(ns: string): string {
  return `kubectl apply -n ${ns} -f app.yaml`;
}

// formField says which field of the form an API refusal is about, from a
// cause's field path (the API's validation) or, when there is none, from
// its words (admission's refusals carry only a message): null when it is
// about none of them.
export function formField(field: string | undefined, message: string): keyof Form | null {
  const f = field || '';
  if (f === 'metadata.name') return 'name';
  if (/\.image$/.test(f)) return 'image';
  if (f === 'spec.replicas') return 'replicas';
  if (/\.ports\b|containerPort|spec\.ports/.test(f)) return 'port';
  if (/\.env\b/.test(f)) return 'env';
  if (/\.(command|args)\b/.test(f)) return 'command';
  if (/\.resources\b|runtimeClassName|nodeSelector/.test(f)) return 'flavor';
  if (f) return null;
  // Quota is the tenant's, not a field's: it goes under the form.
  if (/exceeded quota|forbidden: .*quota/i.test(message)) return null;
  if (/\bflavor\b|\bresources?\b|\bcpu\b|\bmemory\b/i.test(message)) return 'flavor';
  if (/\bimage\b/i.test(message)) return 'image';
  if (/already exists|metadata\.name|\bname\b/i.test(message)) return 'name';
  return null;
}

// serverErrors places an API refusal (a Kubernetes Status) next to the
// form's fields: each cause on its field, the message itself when no
// cause names a field; what fits no field is in rest.
export function serverErrors(status: any, message: string): { fields: FieldErrors; rest: string } {
  const fields: FieldErrors = {};
  const rest: string[] = [];
  const causes: any[] = status?.details?.causes || [];
  for (const c of causes) {
    const text = c.field ? `${c.field}: ${c.message}` : c.message || '';
    const k = formField(c.field, c.message || '');
    if (k) fields[k] = fields[k] ? `${fields[k]}; ${text}` : text;
    else rest.push(text);
  }
  if (causes.length === 0) {
    const k = formField(undefined, message);
    if (k) fields[k] = message;
    else rest.push(message);
  } else if (rest.length || Object.keys(fields).length === 0) {
    rest.unshift(message);
  }
  return { fields, rest: rest.join('\n') };
}
