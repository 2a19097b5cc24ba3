import { SandboxClient } from '../client';
import { ProtocolError } from '../protocol';

class FakeComm {
  sent: any[] = [];
  closed = false;
  send(data: unknown): void {
    this.sent.push(data);
  }
  close(): void {
    this.closed = true;
  }
}

function reply(id: number, result: unknown) {
  return { protocol: 1, id, ok: true, result };
}

describe('SandboxClient', () => {
  it('sends versioned requests and resolves validated replies', async () => {
    const comm = new FakeComm();
    const client = new SandboxClient(comm);
    const p = client.history('demo', 'counter');
    expect(comm.sent[0]).toEqual({
      protocol: 1,
      id: 1,
      method: 'history',
      params: { sandbox: 'demo', module: 'counter' }
    });
    client.receive(
      reply(1, {
        sandbox: 'demo',
        module: 'counter',
        versions: [
          {
            version: 2,
            loaded_at: '2026-01-01T00:00:00+00:00',
            checksum: 'abcd1234',
            added: 1,
            removed: 1,
            state_handler: null,
            current: true
          }
        ]
      })
    );
    const h = await p;
    expect(h.versions[0].version).toBe(2);
  });

  it('reads the fields added later and takes their absence as an older kernel', async () => {
    const comm = new FakeComm();
    const client = new SandboxClient(comm);
    const row = {
      version: 3,
      loaded_at: '2026-01-01T00:00:00+00:00',
      checksum: 'abcd1234',
      added: 1,
      removed: 1,
      state_handler: null,
      current: true
    };
    const now = client.history('demo', 'counter');
    client.receive(
      reply(1, {
        sandbox: 'demo',
        module: 'counter',
        versions: [{ ...row, origin: 'undo', origin_at: '2026-01-01T00:01:00+00:00' }],
        undo_to: 2,
        redo_to: null,
        dropped: 7,
        max_versions: 10,
        failed: [{ at: '2026-01-01T00:02:00+00:00', message: 'boom', state_handler: 'mig' }],
        unsaved: 'cannot write history to /gone/history.sqlite3'
      })
    );
    const h = await now;
    expect(h.unsaved).toBe('cannot write history to /gone/history.sqlite3');
    expect([h.undo_to, h.redo_to, h.dropped, h.max_versions]).toEqual([2, null, 7, 10]);
    expect(h.versions[0].origin).toBe('undo');
    expect(h.failed[0]).toEqual({
      at: '2026-01-01T00:02:00+00:00',
      message: 'boom',
      state_handler: 'mig'
    });
    const older = client.history('demo', 'counter');
    client.receive(reply(2, { sandbox: 'demo', module: 'counter', versions: [row] }));
    const o = await older;
    expect('undo_to' in o).toBe(false);
    expect([o.dropped, o.max_versions, o.failed, o.versions[0].origin, o.unsaved]).toEqual([
      0,
      null,
      [],
      null,
      null
    ]);
    const bad = client.history('demo', 'counter');
    client.receive(
      reply(3, { sandbox: 'demo', module: 'counter', versions: [row], failed: [{ at: 1 }] })
    );
    await expect(bad).rejects.toBeInstanceOf(ProtocolError);
    const badUnsaved = client.history('demo', 'counter');
    client.receive(reply(4, { sandbox: 'demo', module: 'counter', versions: [row], unsaved: 3 }));
    await expect(badUnsaved).rejects.toBeInstanceOf(ProtocolError);
  });

  it("reads a followed teacher and the teacher's waiting version, null when absent", async () => {
    const comm = new FakeComm();
    const client = new SandboxClient(comm);
    const row = {
      version: 4,
      loaded_at: '2026-01-01T00:00:00+00:00',
      checksum: 'abcd1234',
      added: 1,
      removed: 1,
      state_handler: null,
      current: true,
      origin: 'teacher',
      origin_at: '2026-01-01T00:00:00+00:00'
    };
    const base = { sandbox: 'demo', module: 'greet', versions: [row] };
    const teacher = {
      version: 5,
      state_handler: 'keep',
      current: 4,
      added: 3,
      removed: 1,
      lines: [
        [' ', 'def greet():'],
        ['-', "    return 'a'"],
        ['+', "    return 'b'"]
      ]
    };
    const offered = client.history('demo', 'greet');
    client.receive(
      reply(1, { ...base, following: { path: '/c/x.sqlite3', auto: false, applied: 1 }, teacher })
    );
    const h = await offered;
    expect(h.following).toEqual({ path: '/c/x.sqlite3', auto: false, applied: 1 });
    expect(h.teacher).toEqual(teacher);
    expect(h.versions[0].origin).toBe('teacher');

    // following, nothing waiting; a teacher version of a module new here
    const waiting = client.history('demo', 'greet');
    client.receive(
      reply(2, {
        ...base,
        following: { path: '/c/x.sqlite3', auto: true, applied: null },
        teacher: { ...teacher, current: null, state_handler: null }
      })
    );
    const w = await waiting;
    expect(w.following!.applied).toBeNull();
    expect([w.teacher!.current, w.teacher!.state_handler]).toEqual([null, null]);

    // an older kernel (no fields) and a sandbox that follows nothing (null)
    const older = client.history('demo', 'greet');
    client.receive(reply(3, base));
    expect([(await older).following, (await older).teacher]).toEqual([null, null]);
    const none = client.history('demo', 'greet');
    client.receive(reply(4, { ...base, following: null, teacher: null }));
    expect([(await none).following, (await none).teacher]).toEqual([null, null]);
  });

  it("rejects a malformed teacher's version or following", async () => {
    const comm = new FakeComm();
    const client = new SandboxClient(comm);
    const base = { sandbox: 'demo', module: 'greet', versions: [] };
    const teacher = {
      version: 5,
      state_handler: null,
      current: 4,
      added: 1,
      removed: 0,
      lines: []
    };
    const bad = [
      { teacher: 'v5' },
      { teacher: { ...teacher, version: '5' } },
      { teacher: { ...teacher, added: 1.5 } },
      { teacher: { ...teacher, state_handler: 3 } },
      { teacher: { ...teacher, current: 'v4' } },
      { teacher: { ...teacher, lines: [['<', 'x']] } },
      { teacher: { ...teacher, lines: 'x' } },
      { teacher: (({ lines, ...rest }) => rest)(teacher) },
      { following: { path: '/x', auto: 'no', applied: null } },
      { following: { auto: false, applied: null } },
      { following: { path: '/x', auto: false, applied: '1' } },
      { following: [] }
    ];
    for (const [i, extra] of bad.entries()) {
      const p = client.history('demo', 'greet');
      client.receive(reply(i + 1, { ...base, ...extra }));
      await expect(p).rejects.toBeInstanceOf(ProtocolError);
    }
  });

  it("applies and skips the teacher's version, and validates the replies", async () => {
    const comm = new FakeComm();
    const client = new SandboxClient(comm);
    const applied = client.followApply('demo', 'greet', 5);
    expect(comm.sent[0]).toEqual({
      protocol: 1,
      id: 1,
      method: 'follow_apply',
      params: { sandbox: 'demo', module: 'greet', version: 5 }
    });
    client.receive(reply(1, { lines: ['demo.greet: v5 from the teacher applied'], applied: 5 }));
    expect(await applied).toEqual({
      lines: ['demo.greet: v5 from the teacher applied'],
      applied: 5
    });
    const skipped = client.followSkip('demo', 'greet', 5);
    expect(comm.sent[1].method).toBe('follow_skip');
    client.receive(reply(2, { lines: ['demo.greet: v5 from the teacher skipped'], applied: null }));
    expect((await skipped).applied).toBeNull();
    const bad = client.followApply('demo', 'greet', 5);
    client.receive(reply(3, { lines: [1], applied: 5 }));
    await expect(bad).rejects.toBeInstanceOf(ProtocolError);
    const badApplied = client.followSkip('demo', 'greet', 5);
    client.receive(reply(4, { lines: [], applied: 'v5' }));
    await expect(badApplied).rejects.toBeInstanceOf(ProtocolError);
    const nothing = client.followSkip('demo', 'greet', 5);
    client.receive({
      protocol: 1,
      id: 5,
      ok: false,
      error: { code: 'nothing_to_do', message: 'no teacher version of greet is waiting' }
    });
    await expect(nothing).rejects.toMatchObject({ code: 'nothing_to_do' });
  });

  it('turns error replies into ProtocolErrors with their code', async () => {
    const comm = new FakeComm();
    const client = new SandboxClient(comm);
    const p = client.undo('demo', 'counter');
    client.receive({
      protocol: 1,
      id: 1,
      ok: false,
      error: { code: 'nothing_to_do', message: 'nothing to undo' }
    });
    await expect(p).rejects.toMatchObject({ code: 'nothing_to_do' });
  });

  it('reads whether a sandbox is loaded, taking older kernels as loaded', async () => {
    const comm = new FakeComm();
    const client = new SandboxClient(comm);
    const p = client.list();
    client.receive(
      reply(1, {
        sandboxes: [
          { id: 'a', modules: { m: 1 }, stored_modules: {} },
          { id: 'b', modules: {}, stored_modules: { m: 2 }, loaded: false },
          { id: 'c', modules: {}, stored_modules: {}, loaded: true, host: 'cluster', engines: 3 },
          { id: 'd', modules: { m: 4, n: 1 }, stored_modules: {}, teacher_waiting: { m: 6 } }
        ]
      })
    );
    const listed = await p;
    // a following sandbox names the modules whose teacher version waits
    expect(listed.map(s => s.teacher_waiting)).toEqual([{}, {}, {}, { m: 6 }]);
    listed.pop();
    expect(listed.map(s => s.loaded)).toEqual([true, false, true]);
    expect(listed.map(s => [s.host, s.engines])).toEqual([
      ['kernel', 0],
      ['kernel', 0],
      ['cluster', 3]
    ]);
    const bad = client.list();
    client.receive(
      reply(2, { sandboxes: [{ id: 'a', modules: {}, stored_modules: {}, loaded: 'no' }] })
    );
    await expect(bad).rejects.toBeInstanceOf(ProtocolError);
    const badWaiting = client.list();
    client.receive(
      reply(3, {
        sandboxes: [{ id: 'a', modules: {}, stored_modules: {}, teacher_waiting: { m: 'v6' } }]
      })
    );
    await expect(badWaiting).rejects.toBeInstanceOf(ProtocolError);
  });

  it('rejects malformed results instead of trusting them', async () => {
    const comm = new FakeComm();
    const client = new SandboxClient(comm);
    const p = client.diff('demo', 'counter', 1, 2);
    client.receive(reply(1, { v1: 1, v2: 2, added: 1, removed: 0, lines: [['<', 'x']] }));
    await expect(p).rejects.toBeInstanceOf(ProtocolError);
  });

  it('reads probe values and refuses malformed ones', async () => {
    const comm = new FakeComm();
    const client = new SandboxClient(comm);
    const good = client.probe('demo', 'counter', 'f(1)');
    expect(comm.sent[0]).toEqual({
      protocol: 1,
      id: 1,
      method: 'probe',
      params: { sandbox: 'demo', module: 'counter', expr: 'f(1)' }
    });
    client.receive(reply(1, { expr: 'f(1)', values: [{ version: 2, value: '3', error: false }] }));
    expect(await good).toEqual({
      expr: 'f(1)',
      values: [{ version: 2, value: '3', error: false }]
    });
    const bad = client.probe('demo', 'counter', 'f(1)');
    client.receive(reply(2, { expr: 'f(1)', values: [{ version: 2, value: 3, error: false }] }));
    await expect(bad).rejects.toBeInstanceOf(ProtocolError);
  });

  it('ignores messages that are not replies and times out', async () => {
    jest.useFakeTimers();
    const comm = new FakeComm();
    const client = new SandboxClient(comm, 50);
    const p = client.list();
    client.receive('garbage');
    client.receive({ protocol: 2, id: 1, ok: true, result: {} });
    client.receive({ protocol: 1, id: 99, ok: true, result: {} });
    jest.advanceTimersByTime(60);
    await expect(p).rejects.toMatchObject({ code: 'timeout' });
    jest.useRealTimers();
  });

  it('delivers change events and fails pending requests when closed', async () => {
    const comm = new FakeComm();
    const client = new SandboxClient(comm);
    const events: any[] = [];
    client.onChanged(e => events.push(e));
    client.receive({
      protocol: 1,
      event: 'changed',
      kind: 'reloaded',
      sandbox: 'demo',
      module: 'counter',
      version: 3
    });
    expect(events).toHaveLength(1);
    expect(events[0].version).toBe(3);
    const p = client.list();
    client.dispose();
    await expect(p).rejects.toMatchObject({ code: 'closed' });
    await expect(client.list()).rejects.toMatchObject({ code: 'closed' });
  });
});
