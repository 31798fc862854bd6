import { describe, expect, it } from 'vitest';
import { pendingReason, timeline, verdict } from './timeline';
import { parseQuantity, podResources, podUsage } from './quantity';
import { LineBuffer, matching, visibleRange } from './logbuf';
import { shellMissing } from './channel';

const ev = (reason: string, message: string, type = 'Normal', at = '2026-03-01T10:00:05Z') => ({ reason, message, type, lastTimestamp: at, metadata: { uid: reason } });

describe('verdict', () => {
  it('names the image pull error of a pod with a missing image', () => {
    const pod = {
      metadata: { creationTimestamp: '2026-03-01T10:00:00Z' },
      status: { phase: 'Pending', containerStatuses: [{ name: 'app', image: 'reg/none:1', state: { waiting: { reason: 'ImagePullBackOff', message: 'Back-off pulling image' } } }] },
    };
    const events = [ev('Pulling', 'Pulling image "reg/none:1"'), ev('Failed', 'Failed to pull image "reg/none:1": not found', 'Warning', '2026-03-01T10:00:06Z')];
    expect(verdict(pod, events)).toBe('Container app cannot start: its image reg/none:1 cannot be pulled (ImagePullBackOff): Failed to pull image "reg/none:1": not found');
    expect(pendingReason(pod)).toBe('ImagePullBackOff: Back-off pulling image');
    const tl = timeline(pod, events);
    expect(tl.map((e) => e.title)).toEqual(['Created', 'Pulling', 'Failed']);
    expect(tl[2].level).toBe('error');
  });
  it('says a pod is unschedulable and why', () => {
    const pod = { status: { phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/1 nodes are available: 1 Insufficient cpu.', lastTransitionTime: '2026-03-01T10:00:01Z' }] } };
    expect(verdict(pod, [])).toBe('Not scheduled (Unschedulable): 0/1 nodes are available: 1 Insufficient cpu.');
    expect(pendingReason(pod)).toMatch(/^Unschedulable: 0\/1/);
  });
  it('tells OOMKilled and exit codes apart', () => {
    const oom = { status: { phase: 'Running', containerStatuses: [{ name: 'app', restartCount: 3, state: { waiting: { reason: 'CrashLoopBackOff' } }, lastState: { terminated: { exitCode: 137, reason: 'OOMKilled', startedAt: '2026-03-01T10:00:01Z', finishedAt: '2026-03-01T10:00:09Z' } } }] } };
    expect(verdict(oom, [])).toMatch(/keeps restarting \(3 restarts\): it was OOMKilled/);
    const tl = timeline(oom, []);
    expect(tl.map((e) => e.title)).toEqual(['app started', 'app was OOMKilled (exit code 137)']);
    const failed = { status: { phase: 'Failed', containerStatuses: [{ name: 'job', state: { terminated: { exitCode: 2, reason: 'Error' } } }] } };
    expect(verdict(failed, [])).toBe('Container job exited with code 2 (Error)');
  });
  it('blames a failing probe for a pod that is not ready, and is quiet for a healthy one', () => {
    const pod = { status: { phase: 'Running', containerStatuses: [{ name: 'web', ready: false, state: { running: { startedAt: '2026-03-01T10:00:00Z' } } }] } };
    expect(verdict(pod, [ev('Unhealthy', 'Readiness probe failed: connection refused', 'Warning')])).toBe('Container web is not ready: Readiness probe failed: connection refused');
    expect(verdict({ status: { phase: 'Running', containerStatuses: [{ name: 'web', ready: true, state: { running: {} } }] } }, [])).toBeNull();
  });
});

describe('quantities', () => {
  it('reads CPU and memory as the API writes them', () => {
    expect(parseQuantity('250m')).toBeCloseTo(0.25);
    expect(parseQuantity('123456789n')).toBeCloseTo(0.123456789);
    expect(parseQuantity('512Mi')).toBe(512 * 2 ** 20);
    expect(parseQuantity('1G')).toBe(1e9);
    expect(parseQuantity('2')).toBe(2);
    expect(parseQuantity('junk')).toBeNaN();
  });
  it('sums requests, limits and usage over containers', () => {
    const pod = { spec: { containers: [{ resources: { requests: { cpu: '250m', memory: '512Mi' }, limits: { cpu: '500m' } } }, { resources: { requests: { cpu: '250m' } } }] } };
    const r = podResources(pod);
    expect(r.cpuRequest).toBeCloseTo(0.5);
    expect(r.cpuLimit).toBeCloseTo(0.5);
    expect(r.memRequest).toBe(512 * 2 ** 20);
    expect(r.memLimit).toBeNaN();
    expect(podUsage({ containers: [{ usage: { cpu: '10m', memory: '1Mi' } }, { usage: { cpu: '5m', memory: '1Mi' } }] })).toEqual({ cpu: 0.015, memory: 2 * 2 ** 20 });
  });
});

describe('log view', () => {
  it('keeps lines cut between chunks and drops the oldest past its size', () => {
    const b = new LineBuffer(3);
    b.push('a\nb');
    expect(b.all()).toEqual(['a', 'b']);
    b.push('c\nd\ne\n');
    expect(b.lines).toEqual(['bc', 'd', 'e']);
  });
  it('draws only the rows in view, for 100,000 lines as for 10', () => {
    expect(visibleRange(0, 384, 16, 10)).toEqual([0, 10]);
    const [s, e] = visibleRange(800000, 384, 16, 100000);
    expect(s).toBe(50000 - 20);
    expect(e - s).toBeLessThanOrEqual(24 + 40);
    expect(visibleRange(1e9, 384, 16, 100)).toEqual([100, 100]);
  });
  it('searches case-insensitively', () => {
    const lines = Array.from({ length: 100000 }, (_, i) => `line ${i}${i % 25000 === 7 ? ' ERROR' : ''}`);
    expect(matching(lines, 'error')).toEqual([7, 25007, 50007, 75007]);
    expect(matching(lines, '')).toBeNull();
  });
});

describe('shellMissing', () => {
  it('recognises a missing shell', () => {
    expect(shellMissing('OCI runtime exec failed: exec failed: unable to start container process: exec: "bash": executable file not found in $PATH: unknown')).toBe(true);
    expect(shellMissing('command terminated with non-zero exit code: error executing command [sh], exit code 1')).toBe(false);
  });
});

import { gpuQuota } from './quantity';
describe('gpuQuota', () => {
  it('reads GPUs used and hard from the quota', () => {
    expect(gpuQuota([{ status: { hard: { cpu: '8', 'requests.nvidia.com/gpu': '2' }, used: { 'requests.nvidia.com/gpu': '1' } } }])).toEqual({ used: 1, hard: 2 });
    expect(gpuQuota([{ status: { hard: { 'nvidia.com/gpu': '0' } } }])).toEqual({ used: 0, hard: 0 });
    expect(gpuQuota([{ status: { hard: { cpu: '8' } } }])).toBeNull();
  });
});
