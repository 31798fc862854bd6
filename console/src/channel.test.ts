import { describe, expect, it } from 'vitest';
import { ERROR, RESIZE, STDERR, STDIN, STDOUT, execPath, exitStatus, frame, isOutput, parse, resize } from './channel';

describe('exec channel framing', () => {
  it('prefixes stdin with channel 0', () => {
    expect(Array.from(frame(STDIN, 'hi\n'))).toEqual([0, 104, 105, 10]);
  });
  it('sends a resize as JSON on channel 4', () => {
    const f = resize(80, 24);
    expect(f[0]).toBe(RESIZE);
    expect(JSON.parse(new TextDecoder().decode(f.subarray(1)))).toEqual({ Width: 80, Height: 24 });
  });
  it('reads the channel of a message', () => {
    const m = parse(new Uint8Array([STDOUT, 104, 105]).buffer);
    expect(m.channel).toBe(STDOUT);
    expect(new TextDecoder().decode(m.data)).toBe('hi');
    expect(() => parse(new Uint8Array([]))).toThrow(/no channel byte/);
  });
  it("does not take the apiserver's empty 'connected' frame for output", () => {
    // Taken for output, it kept the terminal on bash in a container without it.
    expect(isOutput(parse(frame(STDOUT, '')))).toBe(false);
    expect(isOutput(parse(frame(STDOUT, 'x')))).toBe(true);
    expect(isOutput(parse(frame(STDERR, 'err')))).toBe(true);
    expect(isOutput(parse(frame(ERROR, '{"status":"Failure"}')))).toBe(false);
  });
  it('reads the exit status', () => {
    const enc = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));
    expect(exitStatus(enc({ status: 'Success' }))).toBeNull();
    expect(exitStatus(enc({ status: 'Failure', message: 'command terminated with non-zero exit code: 127' }))).toMatch(/127/);
    expect(exitStatus(new TextEncoder().encode('not json'))).toBe('not json');
    expect(ERROR).toBe(3);
  });
  it('builds the exec path with repeated command parameters', () => {
    const p = execPath('acme', 'web-1', 'web', ['sh', '-c', 'echo hi'], true);
    const u = new URL(p, 'https://x');
    expect(u.pathname).toBe('/api/v1/namespaces/acme/pods/web-1/exec');
    expect(u.searchParams.getAll('command')).toEqual(['sh', '-c', 'echo hi']);
    expect(u.searchParams.get('tty')).toBe('true');
    expect(u.searchParams.get('stderr')).toBe('false');
  });
});
