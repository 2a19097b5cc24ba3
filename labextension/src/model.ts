/**
 * What the panel shows, kept apart from the DOM so it can be tested alone.
 */
import { SandboxClient } from './client';
import { IDiff, IHistory, ISandboxSummary } from './protocol';

export type ConnectionState = 'no-kernel' | 'not-loaded' | 'connecting' | 'ready';

export class HistoryModel {
  state: ConnectionState = 'no-kernel';
  kernelName = '';
  sandboxes: ISandboxSummary[] = [];
  sandbox: string | null = null;
  module: string | null = null;
  history: IHistory | null = null;
  diff: IDiff | null = null;
  diffPair: [number, number] | null = null;
  status = '';
  error = '';
  private client: SandboxClient | null = null;
  private listeners: (() => void)[] = [];
  private refreshing: Promise<void> | null = null;
  private again = false;

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  private emit(): void {
    this.listeners.forEach(l => l());
  }

  get connected(): boolean {
    return this.client !== null && !this.client.isDisposed;
  }

  attach(client: SandboxClient, sandboxes: ISandboxSummary[]): void {
    this.client = client;
    this.state = 'ready';
    this.sandboxes = sandboxes;
    this.error = '';
    client.onChanged(() => void this.refresh());
    void this.refresh();
  }

  detach(state: ConnectionState, kernelName = this.kernelName): void {
    this.client = null;
    this.state = state;
    this.kernelName = kernelName;
    this.sandboxes = [];
    this.history = null;
    this.diff = null;
    this.emit();
  }

  /** Module names of the selected sandbox (loaded or only in the stored history). */
  modules(): string[] {
    const s = this.sandboxes.find(x => x.id === this.sandbox);
    if (!s) {
      return [];
    }
    return Object.keys({ ...s.stored_modules, ...s.modules }).sort();
  }

  /** Re-read everything; concurrent calls collapse into one more pass. */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.again = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.again = false;
        await this.load();
      } while (this.again);
    })().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async load(): Promise<void> {
    const client = this.client;
    if (!client) {
      this.emit();
      return;
    }
    try {
      this.sandboxes = await client.list();
      if (!this.sandboxes.some(s => s.id === this.sandbox)) {
        this.sandbox = this.sandboxes.length ? this.sandboxes[0].id : null;
        this.module = null;
      }
      const mods = this.modules();
      if (!this.module || !mods.includes(this.module)) {
        this.module = mods.length ? mods[0] : null;
        this.diffPair = null;
      }
      if (this.sandbox && this.module) {
        this.history = await client.history(this.sandbox, this.module);
        await this.loadDiff(client);
      } else {
        this.history = null;
        this.diff = null;
      }
      this.error = '';
    } catch (e) {
      this.error = (e as Error).message;
    }
    this.emit();
  }

  private async loadDiff(client: SandboxClient): Promise<void> {
    const versions = this.history ? this.history.versions.map(v => v.version) : [];
    if (versions.length < 2) {
      this.diff = null;
      this.diffPair = null;
      return;
    }
    let pair = this.diffPair;
    if (!pair || !versions.includes(pair[0]) || !versions.includes(pair[1])) {
      const current = this.history!.versions.find(v => v.current)?.version ?? versions[0];
      const older = versions.filter(v => v < current);
      pair = older.length ? [Math.max(...older), current] : [versions[1], versions[0]];
    }
    this.diffPair = pair;
    this.diff = await client.diff(this.sandbox!, this.module!, pair[0], pair[1]);
  }

  select(sandbox: string, module: string | null = null): Promise<void> {
    this.sandbox = sandbox;
    this.module = module;
    this.diffPair = null;
    return this.refresh();
  }

  selectDiff(v1: number, v2: number): Promise<void> {
    this.diffPair = [v1, v2];
    return this.refresh();
  }

  async act(kind: 'rollback' | 'undo' | 'redo', version?: number): Promise<void> {
    const client = this.client;
    if (!client || !this.sandbox || !this.module) {
      return;
    }
    try {
      const r =
        kind === 'rollback'
          ? await client.rollback(this.sandbox, this.module, version!)
          : kind === 'undo'
            ? await client.undo(this.sandbox, this.module)
            : await client.redo(this.sandbox, this.module);
      const restored = Object.entries(r.restored)
        .map(([m, v]) => `${m} v${v}`)
        .join(', ');
      const first = restored ? `restored from the stored history first (${restored}); ` : '';
      this.status = `${first}${r.module}: now v${r.new_version} (${r.status.replace('_', ' ')})`;
      this.diffPair = null;
    } catch (e) {
      this.status = (e as Error).message;
    }
    await this.refresh();
  }
}
