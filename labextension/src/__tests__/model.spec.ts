import { SandboxClient } from '../client';
import { HistoryModel } from '../model';

/** A fake kernel answering the protocol from an in-memory history. */
class FakeKernel {
  versions = [1, 2, 3];
  current = 3;
  oldLoaded = false;
  /** undefined: answer as a kernel from before undo_to / redo_to existed */
  undoTo: number | null | undefined = 2;
  redoTo: number | null | undefined = null;
  failRollback = false;
  probes = 0;
  /** The teacher's history the sandbox follows (undefined: an older kernel). */
  following: { path: string; auto: boolean; applied: number | null } | null | undefined;
  /** The teacher's version waiting (its number), and whether applying it fails here. */
  offer: number | null = null;
  failOffer = false;
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
          })),
          ...(this.undoTo === undefined ? {} : { undo_to: this.undoTo, redo_to: this.redoTo }),
          ...(this.following === undefined
            ? {}
            : {
                following: this.following,
                teacher:
                  this.offer === null
                    ? null
                    : {
                        version: this.offer,
                        state_handler: 'keep',
                        current: this.current,
                        added: 2,
                        removed: 1,
                        lines: [
                          ['-', 'old'],
                          ['+', 'new'],
                          ['+', 'newer']
                        ]
                      }
              })
        });
      case 'follow_apply':
      case 'follow_skip': {
        const v = this.offer;
        if (v !== null && req.params.version !== v) {
          setTimeout(() =>
            this.client.receive({
              protocol: 1,
              id: req.id,
              ok: false,
              error: { code: 'stale', message: `the teacher's version waiting is now v${v}` }
            })
          );
          return;
        }
        if (v === null) {
          setTimeout(() =>
            this.client.receive({
              protocol: 1,
              id: req.id,
              ok: false,
              error: { code: 'nothing_to_do', message: 'no teacher version of counter is waiting' }
            })
          );
          return;
        }
        this.offer = null;
        const what =
          req.method === 'follow_skip' ? 'skipped' : this.failOffer ? 'FAILED here' : 'applied';
        if (req.method === 'follow_apply' && !this.failOffer) {
          this.versions.push(this.versions.length + 1);
          this.current = this.versions.length;
          this.following!.applied = v;
        }
        return ok({
          lines: [`${p.sandbox}.${p.module}: v${v} from the teacher ${what}`],
          applied: this.following!.applied
        });
      }
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
      case 'probe':
        this.probes += 1;
        return ok({
          expr: p.expr,
          values: [...this.versions].reverse().map(v => ({
            version: v,
            value: v === 2 ? 'ZeroDivisionError: division by zero' : String(v * 10),
            error: v === 2
          }))
        });
      case 'rollback': {
        if (this.failRollback) {
          setTimeout(() =>
            this.client.receive({
              protocol: 1,
              id: req.id,
              ok: false,
              error: { code: 'failed', message: 'the module body raised' }
            })
          );
          return;
        }
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
    expect(m.status).toBe(
      'old was not loaded: restored it from its history first (c v2); old.c: rolled back to v1 (was v3)'
    );
    expect(m.sandboxes.find(s => s.id === 'old')!.loaded).toBe(true);
  });

  it('rolls back and refreshes, reporting the result', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    const notes: string[] = [];
    m.notify = (kind, message) => notes.push(`${kind}: ${message}`);
    await m.act('rollback', 1);
    expect(k.current).toBe(1);
    expect(m.status).toBe('demo.counter: rolled back to v1 (was v3)');
    expect(notes).toEqual(['success: demo.counter: rolled back to v1 (was v3)']);
    expect(m.history!.versions.find(v => v.current)!.version).toBe(1);
    k.failRollback = true;
    await m.act('rollback', 2);
    expect(notes[1]).toBe('error: the module body raised');
  });

  it('selects the current row, so Rollback has nothing to do until another is chosen', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    expect(m.selected).toBe(3);
    expect(m.rollbackTarget).toBeNull();
    k.requests = [];
    await m.act('rollback');
    expect(k.requests).toEqual([]);
    m.selectVersion(1);
    expect(m.rollbackTarget).toBe(1);
    await m.act('rollback');
    expect(k.current).toBe(1);
    expect([m.selected, m.rollbackTarget]).toEqual([1, null]);
  });

  it('names the undo and redo targets, and knows when a kernel does not say', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    expect([m.undoTarget, m.redoTarget]).toEqual([2, null]);
    k.undoTo = undefined;
    await m.refresh();
    expect(m.undoTarget).toBeUndefined();
  });

  it('moves the diff to previous -> current as versions arrive, unless a pair is pinned', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    expect([m.diffPair, m.pinned]).toEqual([[2, 3], false]);
    for (const v of [4, 5]) {
      k.versions.push(v);
      k.current = v;
      k.client.receive({ ...PUSH, version: v });
      await changed(m, () => m.history?.versions[0].version === v, `v${v} shown`);
      await m.refresh();
      expect(m.diffPair).toEqual([v - 1, v]);
    }
    await m.selectDiff(1, 3);
    expect([m.diffPair, m.pinned]).toEqual([[1, 3], true]);
    k.versions.push(6);
    k.current = 6;
    await m.refresh();
    expect([m.diffPair, m.pinned]).toEqual([[1, 3], true]);
    expect(m.selected).toBe(6); // the selection still follows the current version
    await m.follow();
    expect([m.diffPair, m.pinned]).toEqual([[5, 6], false]);
  });

  it("opens a version's own change, pinned; the current one's is the followed diff", async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    await m.showVersion(2);
    expect([m.selected, m.diffPair, m.pinned]).toEqual([2, [1, 2], true]);
    await m.showVersion(3);
    expect([m.selected, m.diffPair, m.pinned]).toEqual([3, [2, 3], false]);
  });

  it('asks for a diff only when the pair changed', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    k.requests = [];
    await m.refresh();
    expect(k.requests).toEqual(['list', 'history']);
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

  it('shows a probe as a value per version, runs it again when versions change', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    await m.runProbe('  total(3) ');
    expect(m.probe!.expr).toBe('total(3)');
    expect(m.probe!.values.get(3)).toEqual({ version: 3, value: '30', error: false });
    expect(m.probe!.values.get(2)!.error).toBe(true);
    await m.refresh();
    expect(k.probes).toBe(1); // same versions: not asked again
    k.versions = [1, 2, 3, 4];
    k.current = 4;
    await m.refresh();
    expect(k.probes).toBe(2);
    expect(m.probe!.values.get(4)!.value).toBe('40');
    await m.select('other');
    expect(m.probe).toBeNull(); // another module: the column goes
    await m.runProbe('   ');
    expect(k.probes).toBe(2); // an empty expression is not sent
  });

  it('reports a probe the kernel refuses, and clears the column on demand', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    const notes: string[] = [];
    m.notify = (kind, message) => notes.push(`${kind}: ${message}`);
    m.attach(k.client, []);
    await m.refresh();
    const answer = k.answer.bind(k);
    k.answer = (req: any) =>
      req.method === 'probe'
        ? setTimeout(() =>
            k.client.receive({
              protocol: 1,
              id: req.id,
              ok: false,
              error: { code: 'bad_params', message: 'the probe is not an expression' }
            })
          )
        : answer(req);
    await m.runProbe('x = 1');
    expect(m.probe).toBeNull();
    expect(notes).toEqual(['error: probe: the probe is not an expression']);
    k.answer = answer;
    await m.runProbe('f()');
    expect(m.probe).not.toBeNull();
    m.clearProbe();
    expect(m.probe).toBeNull();
  });

  it("keeps the teacher's waiting version and applies it, then re-reads", async () => {
    const k = new FakeKernel();
    k.following = { path: '/class/classroom.sqlite3', auto: false, applied: 1 };
    k.offer = 2;
    const m = new HistoryModel();
    const notes: string[] = [];
    m.notify = (kind, message) => notes.push(`${kind}: ${message}`);
    m.attach(k.client, []);
    await m.refresh();
    expect(m.following).toEqual({ path: '/class/classroom.sqlite3', auto: false, applied: 1 });
    expect(m.teacher).toMatchObject({ version: 2, current: 3, added: 2, removed: 1 });
    expect(m.teacher!.state_handler).toBe('keep');
    m.selectVersion(1);
    k.requests = [];
    await m.applyTeacher();
    expect(k.requests.slice(0, 3)).toEqual(['follow_apply', 'list', 'history']);
    expect(notes).toEqual(['success: demo.counter: v2 from the teacher applied']);
    expect(m.teacher).toBeNull();
    expect(m.following!.applied).toBe(2);
    expect([m.current, m.selected, m.busy]).toEqual([4, 4, false]);
    expect(m.diffPair).toEqual([3, 4]);
    // nothing waits: no request
    k.requests = [];
    await m.applyTeacher();
    await m.skipTeacher();
    expect(k.requests).toEqual([]);
  });

  it("skips the teacher's version, and reports a failing one or a refused request", async () => {
    const k = new FakeKernel();
    k.following = { path: '/class/classroom.sqlite3', auto: false, applied: 1 };
    k.offer = 2;
    const m = new HistoryModel();
    const notes: string[] = [];
    m.notify = (kind, message) => notes.push(`${kind}: ${message}`);
    m.attach(k.client, []);
    await m.refresh();
    k.requests = [];
    await m.skipTeacher();
    expect(k.requests.slice(0, 3)).toEqual(['follow_skip', 'list', 'history']);
    expect(notes).toEqual(['success: demo.counter: v2 from the teacher skipped']);
    expect([m.teacher, m.current]).toEqual([null, 3]);

    k.offer = 3;
    k.failOffer = true;
    await m.refresh();
    await m.applyTeacher();
    expect(notes[1]).toBe('error: demo.counter: v3 from the teacher FAILED here');
    expect(m.current).toBe(3);

    // the offer went meanwhile (applied in a cell, say): the kernel's error is shown
    k.offer = 4;
    await m.refresh();
    k.offer = null;
    await m.applyTeacher();
    expect(notes[2]).toBe('error: no teacher version of counter is waiting');
    expect([m.teacher, m.busy]).toEqual([null, false]);

    // a newer teacher version came after the diff shown: Apply names the one reviewed
    k.offer = 5;
    await m.refresh();
    k.offer = 6;
    await m.applyTeacher();
    expect(notes[3]).toBe("error: the teacher's version waiting is now v6");
    expect([m.teacher!.version, m.current]).toEqual([6, 3]);
  });

  it('re-reads when a teacher version arrives, is skipped or fails', async () => {
    const k = new FakeKernel();
    k.following = { path: '/class/classroom.sqlite3', auto: false, applied: 1 };
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    expect(m.teacher).toBeNull();
    for (const [kind, offer] of [
      ['follow_pending', 2],
      ['follow_skipped', null],
      ['follow_pending', 3],
      ['follow_failed', null]
    ] as const) {
      k.offer = offer;
      k.requests = [];
      const shown = changed(
        m,
        () => (m.teacher?.version ?? null) === offer,
        `the model never re-read after "${kind}"`
      );
      k.client.receive({ ...PUSH, kind, version: offer ?? 2 });
      await shown;
      expect(k.requests).toContain('history');
    }
  });

  it('reads a kernel without the teacher fields as following nothing', async () => {
    const k = new FakeKernel();
    const m = new HistoryModel();
    m.attach(k.client, []);
    await m.refresh();
    expect([m.following, m.teacher]).toEqual([null, null]);
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
