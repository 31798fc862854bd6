import { describe, expect, it } from 'vitest';
import { collectionPath, parseManifests, statusLines } from './yamlapply';

describe('parseManifests', () => {
  it('reads several documents', () => {
    const p = parseManifests('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n');
    expect(p.errors).toEqual([]);
    expect(p.docs.map((d) => d.kind)).toEqual(['ConfigMap', 'Deployment']);
  });
  it('gives the line and column of a syntax error', () => {
    const p = parseManifests('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: [1, 2\n  j: 3\n');
    expect(p.errors.length).toBeGreaterThan(0);
    expect(p.errors[0].line).toBe(7);
    expect(p.errors[0].col).toBeGreaterThan(0);
  });
  it('asks for kind and name', () => {
    expect(parseManifests('apiVersion: v1\nmetadata: {name: a}\n').errors[0].message).toMatch(/needs apiVersion and kind/);
    expect(parseManifests('apiVersion: v1\nkind: Pod\n').errors[0].message).toMatch(/needs metadata.name/);
    expect(parseManifests('- a\n').errors[0].message).toMatch(/not a mapping/);
  });
});

describe('collectionPath', () => {
  const core = [{ name: 'pods', kind: 'Pod', namespaced: true }, { name: 'pods/log', kind: 'Pod', namespaced: true }, { name: 'namespaces', kind: 'Namespace', namespaced: false }];
  it('uses discovery and the namespace of the manifest or the page', () => {
    expect(collectionPath({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' } }, 'acme', core)).toBe('/api/v1/namespaces/acme/pods');
    expect(collectionPath({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'x' } }, 'acme', core)).toBe('/api/v1/namespaces/x/pods');
    expect(collectionPath({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'n' } }, 'acme', core)).toBe('/api/v1/namespaces');
    expect(collectionPath({ apiVersion: 'cci.io/v1alpha1', kind: 'Tenant', metadata: { name: 't' } }, 'acme', [{ name: 'tenants', kind: 'Tenant', namespaced: false }])).toBe('/apis/cci.io/v1alpha1/tenants');
    expect(() => collectionPath({ apiVersion: 'v1', kind: 'Pdo', metadata: { name: 'p' } }, 'acme', core)).toThrow(/no kind Pdo/);
  });
});

describe('statusLines', () => {
  it('lists the causes with their fields', () => {
    const st = { message: 'Deployment.apps "x" is invalid: spec.replicas: Invalid value: -1', details: { causes: [{ field: 'spec.replicas', message: 'Invalid value: -1' }, { field: 'spec.template.spec.containers[0].image', message: 'Required value' }] } };
    expect(statusLines(st, 'x')).toEqual([st.message, 'spec.template.spec.containers[0].image: Required value']);
    expect(statusLines(undefined, '502 Bad Gateway')).toEqual(['502 Bad Gateway']);
  });
});

import { tenantManifest } from './yamlapply';
describe('tenantManifest', () => {
  it('keeps the quota given and the pools chosen', () => {
    expect(tenantManifest(' acme ', { cpu: '8', memory: ' ', 'nvidia.com/gpu': '1' }, ['general', 'gpu'])).toEqual({
      apiVersion: 'cci.io/v1alpha1', kind: 'Tenant', metadata: { name: 'acme' }, spec: { quota: { cpu: '8', 'nvidia.com/gpu': '1' }, pools: ['general', 'gpu'] },
    });
    expect(tenantManifest('b', {}, []).spec).toEqual({ quota: {} });
  });
});
