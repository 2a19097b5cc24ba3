/**
 * Request/response over one comm, with timeouts and validated replies.
 * Depends only on a minimal comm interface, so it is tested without a kernel.
 */
import {
  IActionResult,
  IChangedEvent,
  IDiff,
  IFollowResult,
  IHistory,
  IProbe,
  IRan,
  ISandboxSummary,
  parseAction,
  parseDiff,
  parseEvent,
  parseFollowResult,
  parseHistory,
  parseProbe,
  parseRanEvent,
  parseReply,
  parseRuns,
  parseSandboxes,
  PROTOCOL,
  ProtocolError
} from './protocol';

/** The part of a Jupyter comm the client uses. */
export interface ICommLike {
  send(data: unknown): void;
  close(): void;
}

interface IPending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class SandboxClient {
  constructor(
    private comm: ICommLike,
    readonly timeoutMs = 10000
  ) {}

  private nextId = 1;
  private pending = new Map<number, IPending>();
  private listeners: ((e: IChangedEvent) => void)[] = [];
  private ranListeners: ((e: IRan) => void)[] = [];
  private closed = false;

  /** Feed every message that arrives on the comm into the client. */
  receive(data: unknown): void {
    const event = parseEvent(data);
    if (event) {
      this.listeners.forEach(l => l(event));
      return;
    }
    const ran = parseRanEvent(data);
    if (ran) {
      this.ranListeners.forEach(l => l(ran));
      return;
    }
    const reply = parseReply(data);
    if (!reply || typeof reply.id !== 'number') {
      console.warn('sandbox-magic: ignored a malformed message from the kernel');
      return;
    }
    const p = this.pending.get(reply.id);
    if (!p) {
      return;
    }
    this.pending.delete(reply.id);
    clearTimeout(p.timer);
    if (reply.ok) {
      p.resolve(reply.result);
    } else {
      p.reject(new ProtocolError(reply.error!.code, reply.error!.message));
    }
  }

  onChanged(listener: (e: IChangedEvent) => void): void {
    this.listeners.push(listener);
  }

  /** A cell ran sandbox code (which modules, at which versions). */
  onRan(listener: (e: IRan) => void): void {
    this.ranListeners.push(listener);
  }

  /** The comm closed (kernel restart or shutdown): fail everything pending. */
  dispose(): void {
    this.closed = true;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new ProtocolError('closed', 'the kernel connection closed'));
    }
    this.pending.clear();
  }

  get isDisposed(): boolean {
    return this.closed;
  }

  request(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    if (this.closed) {
      return Promise.reject(new ProtocolError('closed', 'the kernel connection closed'));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ProtocolError('timeout', `the kernel did not answer "${method}"`));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.comm.send({ protocol: PROTOCOL, id, method, params });
    });
  }

  async hello(): Promise<ISandboxSummary[]> {
    return parseSandboxes(await this.request('hello'));
  }

  async list(): Promise<ISandboxSummary[]> {
    return parseSandboxes(await this.request('list'));
  }

  async history(sandbox: string, module: string): Promise<IHistory> {
    return parseHistory(await this.request('history', { sandbox, module }));
  }

  async diff(sandbox: string, module: string, v1: number, v2: number): Promise<IDiff> {
    return parseDiff(await this.request('diff', { sandbox, module, v1, v2 }));
  }

  async rollback(sandbox: string, module: string, version: number): Promise<IActionResult> {
    return parseAction(await this.request('rollback', { sandbox, module, version }));
  }

  async undo(sandbox: string, module: string): Promise<IActionResult> {
    return parseAction(await this.request('undo', { sandbox, module }));
  }

  async redo(sandbox: string, module: string): Promise<IActionResult> {
    return parseAction(await this.request('redo', { sandbox, module }));
  }

  /** Apply the teacher's waiting version of `module` in a following sandbox (a version
   * that fails here still answers ok: its line says FAILED). */
  async followApply(sandbox: string, module: string, version: number): Promise<IFollowResult> {
    return parseFollowResult(await this.request('follow_apply', { sandbox, module, version }));
  }

  /** Leave the teacher's waiting version of `module` unapplied (until the next one). */
  async followSkip(sandbox: string, module: string, version: number): Promise<IFollowResult> {
    return parseFollowResult(await this.request('follow_skip', { sandbox, module, version }));
  }

  /** The newest cells that ran sandbox code (kernels without the method: none). */
  async ran(): Promise<IRan[]> {
    try {
      return parseRuns(await this.request('ran'));
    } catch (e) {
      if (e instanceof ProtocolError && e.code === 'unknown_method') {
        return [];
      }
      throw e;
    }
  }

  async probe(sandbox: string, module: string, expr: string): Promise<IProbe> {
    return parseProbe(await this.request('probe', { sandbox, module, expr }));
  }
}
