import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { Form, deployment, memoryQuantity, parseEnv, service, toYAML, validate } from './manifest';

const base: Form = {
  name: 'web', image: '127.0.0.1:5000/cci-test/httpd:1',
  flavor: { cpu: 0.5, memoryGiB: 1, name: '0.5 CPU / 1 GiB', pricePerHour: 0.02469 },
  replicas: 2, port: '8080', env: 'A=1\nB=x=y', command: '',
};

describe('form to manifests', () => {
  it('makes a Deployment with the flavor as requests and limits', () => {
    const d: any = deployment(base);
    expect(d.kind).toBe('Deployment');
    expect(d.spec.replicas).toBe(2);
    expect(d.spec.selector.matchLabels).toEqual({ app: 'web' });
    const c = d.spec.template.spec.containers[0];
    expect(c.resources.requests).toEqual({ cpu: '0.5', memory: '1Gi' });
    expect(c.resources.limits).toEqual(c.resources.requests);
    expect(c.env).toEqual([{ name: 'A', value: '1' }, { name: 'B', value: 'x=y' }]);
    expect(c.ports).toEqual([{ containerPort: 8080 }]);
    expect(c.command).toBeUndefined();
  });
  it('runs a command through sh -c', () => {
    const c: any = (deployment({ ...base, command: 'echo hi; sleep 1' }) as any).spec.template.spec.containers[0];
    expect(c.command).toEqual(['sh', '-c', 'echo hi; sleep 1']);
  });
  it('adds a Service only with a port', () => {
    expect((service(base) as any).spec.ports).toEqual([{ port: 8080, targetPort: 8080 }]);
    expect(service({ ...base, port: '' })).toBeNull();
  });
  it('writes YAML that reads back to the same objects', () => {
    const docs = YAML.parseAllDocuments(toYAML(base)).map((d) => d.toJS());
    expect(docs).toEqual([deployment(base), service(base)]);
    expect(toYAML(base)).not.toMatch(/[&*]a\d/);
  });
  it('writes half a GiB as 512Mi', () => {
    expect(memoryQuantity(0.5)).toBe('512Mi');
    expect(memoryQuantity(4)).toBe('4Gi');
  });
});

describe('form validation', () => {
  it.each([
    ['Web', 'name'], ['-web', 'name'], ['', 'name'], ['a'.repeat(64), 'name'],
  ])('refuses the name %j', (name, field) => {
    expect(validate({ ...base, name })).toHaveProperty(field);
  });
  it('takes a good form', () => expect(validate(base)).toEqual({}));
  it('refuses a bad port, replicas and env', () => {
    const e = validate({ ...base, port: '70000', replicas: -1, env: 'NOEQUALS' });
    expect(Object.keys(e).sort()).toEqual(['env', 'port', 'replicas']);
  });
  it('names the bad env lines', () => {
    expect(parseEnv('OK=1\n=x\n1bad=2').bad).toEqual(['=x', '1bad=2']);
  });
});
