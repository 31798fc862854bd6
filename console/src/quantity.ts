// Kubernetes quantities as numbers: CPU in cores, memory in bytes.

const suffix: Record<string, number> = {
  n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

export function parseQuantity(q: string | number | undefined): number {
  if (q === undefined || q === null || q === '') return NaN;
  if (typeof q === 'number') return q;
  const m = /^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$/.exec(q.trim());
  if (!m || !(m[2] in suffix)) return NaN;
  return Number(m[1]) * suffix[m[2]];
}

// podResources sums the containers' requests and limits of cpu and
// memory (NaN where none sets one: no line is drawn).
export function podResources(pod: any): { cpuRequest: number; cpuLimit: number; memRequest: number; memLimit: number } {
  const sum = (kind: 'requests' | 'limits', r: string) => {
    let total = 0;
    let any = false;
    for (const c of pod?.spec?.containers || []) {
      const v = parseQuantity(c.resources?.[kind]?.[r]);
      if (!Number.isNaN(v)) { total += v; any = true; }
    }
    return any ? total : NaN;
  };
  return { cpuRequest: sum('requests', 'cpu'), cpuLimit: sum('limits', 'cpu'), memRequest: sum('requests', 'memory'), memLimit: sum('limits', 'memory') };
}

// podUsage sums a PodMetrics' containers.
export function podUsage(m: any): { cpu: number; memory: number } {
  let cpu = 0;
  let memory = 0;
  for (const c of m?.containers || []) {
    cpu += parseQuantity(c.usage?.cpu) || 0;
    memory += parseQuantity(c.usage?.memory) || 0;
  }
  return { cpu, memory };
}

// gpuQuota is the GPUs in use against the quota's hard limit
// (nvidia.com/gpu or requests.nvidia.com/gpu), or null when no quota names GPUs.
export function gpuQuota(quotas: any[]): { used: number; hard: number } | null {
  for (const q of quotas) {
    for (const k of ['requests.nvidia.com/gpu', 'nvidia.com/gpu', 'limits.nvidia.com/gpu']) {
      const hard = q.status?.hard?.[k];
      if (hard !== undefined) return { used: parseQuantity(q.status?.used?.[k] ?? '0') || 0, hard: parseQuantity(hard) };
    }
  }
  return null;
}
