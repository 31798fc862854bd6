import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { Form, deployment, memoryQuantity, parseEnv, service, toYAML, validate, serverErrors } from './manifest';

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

describe('serverErrors', () => {
  it('puts each cause of the API validation on its field', () => {
    const st = {
      kind: 'Status', code: 422, reason: 'Invalid', message: 'Deployment.apps "Web" is invalid: ...',
      details: { causes: [
        { field: 'metadata.name', message: 'Invalid value: "Web": a lowercase RFC 1123 subdomain' },
        { field: 'spec.template.spec.containers[0].image', message: 'Required value' },
        { field: 'spec.template.spec.containers[0].resources.limits', message: 'Invalid value: "-1"' },
      ] },
    };
    const got = serverErrors(st, '422: ' + st.message);
    expect(got.fields.name).toMatch(/^metadata\.name: Invalid value/);
    expect(got.fields.image).toBe('spec.template.spec.containers[0].image: Required value');
    expect(got.fields.flavor).toMatch(/resources\.limits/);
    expect(got.rest).toBe('');
  });
  it('places a message without causes by its words: a flavor refused by admission', () => {
    const msg = '403: admission webhook "policy.cci.io" denied the request: pod flavor 3 CPU / 1 GiB is not offered (cpu; memory); nearest flavor: 4 CPU / 8 GiB';
    expect(serverErrors({ code: 403, message: msg }, msg)).toEqual({ fields: { flavor: msg }, rest: '' });
    const taken = '409: deployments.apps "web" already exists';
    expect(serverErrors({ code: 409, reason: 'AlreadyExists' }, taken).fields.name).toBe(taken);
  });
  it('keeps what fits no field under the form', () => {
    const msg = '403: exceeded quota: compute-resources, requested: pods=1';
    expect(serverErrors({ code: 403 }, msg)).toEqual({ fields: {}, rest: msg });
    const st = { details: { causes: [{ field: 'spec.template.metadata.labels', message: 'Invalid value' }] } };
    expect(serverErrors(st, '422: invalid').rest).toBe('422: invalid\nspec.template.metadata.labels: Invalid value');
  });
});
