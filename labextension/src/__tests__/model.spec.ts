import { SandboxClient } from '../client';
import { HistoryModel } from '../model';

/** A fake kernel answering the protocol from an in-memory history. */
class FakeKernel {
  versions = [1, 2, 3];
  current = 3;
  oldLoaded = false;
  /** Every request method received, in order. */
  requests: string[] = [];
  client: SandboxClient;
  constructor() {
    this.client = new SandboxClient({ send: d => this.answer(d as any), close: () => {} });
  }
  answer(req: any): void {
    const ok = (result: unknown): void => {
      setTimeout(() => this.client.receive({ protocol: 1, id: req.id, ok: true, result }), 0);
    };
    this.requests.push(req.method);
    const p = req.params;
    switch (req.method) {
      case 'list':
      case 'hello':
        return ok({
          sandboxes: [
            { id: 'demo', modules: { counter: this.current }, stored_modules: {} },
            { id: 'other', modules: { a: 1 }, stored_modules: { b: 2 } },
            this.oldLoaded
              ? { id: 'old', modules: { c: 2 }, stored_modules: {}, loaded: true }
              : { id: 'old', modules: {}, stored_modules: { c: 2 }, loaded: false }
          ]
        });
      case 'history':
        return ok({
          sandbox: p.sandbox,
          module: p.module,
          versions: [...this.versions].reverse().map(v => ({
            version: v,
            loaded_at: '2026-01-01T00:00:00+00:00',
            checksum: `c${v}`,
            added: 1,
            removed: 0,
            state_handler: v === 2 ? 'migrate' : null,
            current: v === this.current
          }))
        });
      case 'diff':
        return ok({
          v1: p.v1,
          v2: p.v2,
          added: 1,
          removed: 1,
          lines: [
            ['-', 'a'],
            ['+', 'b']
          ]
        });
      case 'rollback': {
        const restored = p.sandbox === 'old' && !this.oldLoaded ? { c: 2 } : undefined;
        this.oldLoaded = this.oldLoaded || p.sandbox === 'old';
        this.current = p.version;
        return ok({
          module: p.module,
          status: 'rolled_back',
          old_version: 3,
          new_version: p.version,
          migrated: 0,
          ...(restored ? { restored } : {})
        });
      }
    }
  }
}

/** Resolves when the model notifies a change for which `done()` holds; fails after `ms`. */
function changed(m: HistoryModel, done: () => boolean, what: string, ms = 1000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    m.onChange(() => {
      if (done()) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

const PUSH = {
  protocol: 1,
  event: 'changed',
  kind: 'reloaded',
  sandbox: 'demo',
  module: 'counter',
  version: 4
};

describe('HistoryModel', () => {
  it('selects the first sandbox and module and diffs previous against current', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    expect(m.state).toBe('ready');
    expect([m.sandbox, m.module]).toEqual(['demo', 'counter']);
    expect(m.history!.versions.map(v => v.version)).toEqual([3, 2, 1]);
    expect(m.diffPair).toEqual([2, 3]);
    expect(m.diff!.lines).toHaveLength(2);
  });

  it('lists stored modules of a sandbox too', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.select('other');
    expect(m.modules()).toEqual(['a', 'b']);
  });

  it('lists a sandbox only the store knows and says when an action restored it', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.select('old');
    expect(m.sandboxes.map(s => [s.id, s.loaded])).toEqual([
      ['demo', true],
      ['other', true],
      ['old', false]
    ]);
    expect(m.modules()).toEqual(['c']);
    await m.act('rollback', 1);
    expect(m.status).toBe('restored from the stored history first (c v2); c: now v1 (rolled back)');
    expect(m.sandboxes.find(s => s.id === 'old')!.loaded).toBe(true);
  });

  it('rolls back and refreshes, reporting the result', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    await m.act('rollback', 1);
    expect(k.current).toBe(1);
    expect(m.status).toBe('counter: now v1 (rolled back)');
    expect(m.history!.versions.find(v => v.current)!.version).toBe(1);
  });

  it('refreshes by itself when the kernel pushes a change and notifies listeners', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    k.versions.push(4);
    k.current = 4;
    k.requests = [];
    // Nothing but the pushed event may make the model read the new version.
    const shown = changed(
      m,
      () => m.history?.versions[0].version === 4,
      'the model never showed v4 after the kernel pushed "changed"'
    );
    k.client.receive(PUSH);
    await shown;
    expect(k.requests).toEqual(['list', 'history', 'diff']);
    expect(m.history!.versions.find(v => v.current)!.version).toBe(4);
  });

  it('ignores pushes of another protocol version', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    k.requests = [];
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => {});
    k.client.receive({ ...PUSH, protocol: 2 });
    await new Promise(r => setTimeout(r, 20));
    expect(warn).toHaveBeenCalledTimes(1);
    warn.mockRestore();
    expect(k.requests).toEqual([]);
  });

  it('forgets everything on detach', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    m.detach('not-loaded');
    expect(m.state).toBe('not-loaded');
    expect(m.history).toBeNull();
  });
});
