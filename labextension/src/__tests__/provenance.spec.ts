import { SandboxClient } from '../client';
import { parseRanEvent, parseRuns, ProtocolError } from '../protocol';
import { badge, belongsToLastRun, currentVersions, METADATA_KEY, readMetadata } from '../badge';

const RAN = {
  protocol: 1,
  event: 'ran',
  execution_count: 7,
  cell_id: 'c-1',
  modules: [{ sandbox: 'demo', module: 'counter', version: 2 }]
};

describe('provenance', () => {
  it('parses ran events and rejects malformed ones', () => {
    expect(parseRanEvent(RAN)).toEqual({
      execution_count: 7,
      cell_id: 'c-1',
      modules: [{ sandbox: 'demo', module: 'counter', version: 2 }]
    });
    expect(parseRanEvent({ ...RAN, protocol: 2 })).toBeNull();
    expect(
      parseRanEvent({ ...RAN, modules: [{ sandbox: '<b>x</b>', module: 'm', version: 1 }] })
    ).toBeNull();
    expect(
      parseRanEvent({ ...RAN, modules: [{ sandbox: 'demo', module: 'm', version: 1.5 }] })
    ).toBeNull();
    expect(parseRanEvent({ ...RAN, cell_id: 12 })).toBeNull();
    expect(() => parseRuns({ runs: [{ modules: 'x' }] })).toThrow(ProtocolError);
    expect(parseRuns({ runs: [RAN] })[0].cell_id).toBe('c-1');
  });

  it('says which version made an output and whether a newer one is current', () => {
    const m = { sandbox: 'demo', module: 'counter', version: 2 };
    expect(badge(m, 2)).toMatchObject({ text: 'demo.counter v2', stale: false });
    const stale = badge(m, 4);
    expect(stale.text).toBe('demo.counter v2 \u2192 now v4');
    expect(stale.stale).toBe(true);
    expect(stale.title).toContain('v2 \u2192 v4');
    expect(badge(m, undefined).stale).toBe(false); // the sandbox is gone: nothing to compare
    expect(badge({ ...m, version: null }, 3)).toMatchObject({
      text: 'demo.counter v?',
      stale: false
    });
  });

  it('knows the current versions of loaded and stored sandboxes', () => {
    const v = currentVersions([
      {
        id: 'demo',
        modules: { counter: 4 },
        stored_modules: {},
        loaded: true,
        host: 'kernel',
        engines: 0,
        teacher_waiting: {}
      },
      {
        id: 'old',
        modules: {},
        stored_modules: { util: 2 },
        loaded: false,
        host: 'kernel',
        engines: 0,
        teacher_waiting: {}
      }
    ]);
    expect(v.get('demo.counter')).toBe(4);
    expect(v.get('old.util')).toBe(2);
  });

  it('reads only well-formed metadata, and only for the last run of the cell', () => {
    const meta = readMetadata({ ran: RAN.modules, execution_count: 7 });
    expect(meta).toEqual({ ran: RAN.modules, execution_count: 7 });
    expect(readMetadata({ ran: [] })).toBeNull();
    expect(readMetadata('x')).toBeNull();
    expect(readMetadata({ ran: [{ sandbox: 'demo' }] })).toBeNull();
    expect(belongsToLastRun(meta!, 7)).toBe(true);
    expect(belongsToLastRun(meta!, null)).toBe(true); // running: keep until the count comes
    expect(belongsToLastRun(meta!, 8)).toBe(false); // ran again without sandbox code
    expect(METADATA_KEY).toBe('sandbox_magic');
  });

  it('delivers ran events and the ran request through the client', async () => {
    const sent: any[] = [];
    const client = new SandboxClient({ send: d => sent.push(d), close: () => undefined });
    const got: unknown[] = [];
    client.onRan(r => got.push(r));
    client.receive(RAN);
    expect(got).toHaveLength(1);
    const p = client.ran();
    client.receive({ protocol: 1, id: sent[0].id, ok: true, result: { runs: [RAN] } });
    expect((await p)[0].modules[0].module).toBe('counter');
    const old = client.ran();
    client.receive({
      protocol: 1,
      id: sent[1].id,
      ok: false,
      error: { code: 'unknown_method', message: 'no' }
    });
    expect(await old).toEqual([]); // an older kernel: no records
  });
});
