// Create from YAML: the editor's text as manifests, each sent to its
// resource's collection (found by the API's own discovery, so custom
// resources work too), and the API's answers as people read them.
import YAML from 'yaml';

export interface SyntaxError { line: number; col: number; message: string; from: number; to: number }

export interface Parsed {
  docs: any[];
  errors: SyntaxError[];
}

// parseManifests reads one or more YAML documents; errors carry the line
// and column (1-based) and the text offsets the editor underlines.
export function parseManifests(text: string): Parsed {
  const out: Parsed = { docs: [], errors: [] };
  for (const d of YAML.parseAllDocuments(text)) {
    if ('errors' in d && d.errors.length) {
      for (const e of d.errors) {
        const [from, to] = e.pos;
        out.errors.push({ line: e.linePos?.[0].line ?? 1, col: e.linePos?.[0].col ?? 1, message: e.message.split('\n')[0], from, to: Math.max(to, from + 1) });
      }
      continue;
    }
    const v = d.toJS();
    if (v === null || v === undefined) continue;
    out.docs.push(v);
  }
  if (!out.errors.length) {
    out.docs.forEach((d, i) => {
      const what = `document ${i + 1}`;
      if (typeof d !== 'object' || Array.isArray(d)) out.errors.push({ line: 1, col: 1, message: `${what} is not a mapping (an object with apiVersion and kind)`, from: 0, to: 1 });
      else if (!d.apiVersion || !d.kind) out.errors.push({ line: 1, col: 1, message: `${what} needs apiVersion and kind`, from: 0, to: 1 });
      else if (!d.metadata?.name && !d.metadata?.generateName) out.errors.push({ line: 1, col: 1, message: `${what} (${d.kind}) needs metadata.name`, from: 0, to: 1 });
    });
  }
  return out;
}

export interface APIResource { name: string; kind: string; namespaced: boolean; verbs?: string[] }

// groupVersionPath is where discovery lists an apiVersion's resources.
export function groupVersionPath(apiVersion: string): string {
  return apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
}

// collectionPath is where a manifest is POSTed: its kind's resource from
// discovery, in the manifest's namespace or the page's.
export function collectionPath(obj: any, ns: string, resources: APIResource[]): string {
  const r = resources.find((x) => x.kind === obj.kind && !x.name.includes('/'));
  if (!r) throw new Error(`the API serves no kind ${obj.kind} in ${obj.apiVersion} (check apiVersion and kind)`);
  const base = groupVersionPath(obj.apiVersion);
  if (!r.namespaced) return `${base}/${r.name}`;
  const n = obj.metadata?.namespace || ns;
  return `${base}/namespaces/${encodeURIComponent(n)}/${r.name}`;
}

// statusLines is an API refusal as lines: the message, then each cause
// with its field (validation and admission say which field is wrong).
export function statusLines(status: any, fallback: string): string[] {
  if (!status || typeof status !== 'object') return [fallback];
  const lines = [status.message || fallback];
  for (const c of status.details?.causes || []) {
    const line = c.field ? `${c.field}: ${c.message}` : c.message;
    if (line && !lines[0].includes(c.message)) lines.push(line);
  }
  return lines;
}

// tenantManifest is a Tenant (internal/tenant's CRD) with the quota's
// non-empty entries and the pools chosen (none: the default, general).
export function tenantManifest(name: string, quota: Record<string, string>, pools: string[]): any {
  const q = Object.fromEntries(Object.entries(quota).map(([k, v]) => [k, v.trim()]).filter(([, v]) => v !== ''));
  const spec: any = { quota: q };
  if (pools.length) spec.pools = pools;
  return { apiVersion: 'cci.io/v1alpha1', kind: 'Tenant', metadata: { name: name.trim() }, spec };
}
