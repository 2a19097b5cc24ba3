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
          { id: 'b', modules: {}, stored_modules: { m: 2 }, loaded: false }
        ]
      })
    );
    expect((await p).map(s => s.loaded)).toEqual([true, false]);
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
