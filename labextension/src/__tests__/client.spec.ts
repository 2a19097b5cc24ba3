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
          { id: 'c', modules: {}, stored_modules: {}, loaded: true, host: 'cluster', engines: 3 }
        ]
      })
    );
    const listed = await p;
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
