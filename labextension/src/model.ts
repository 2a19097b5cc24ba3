/**
 * What the panel shows, kept apart from the DOM so it can be tested alone.
 *
 * The diff follows previous -> current as versions arrive, unless the user
 * pinned a pair (picked one, or opened a version's own change); `follow()`
 * unpins it.  The selected row is the current version unless the user chose
 * another; Rollback acts on the selected row, so by default it has nothing to do.
 * A sandbox that follows a teacher's published history may have the teacher's
 * next version of the module waiting: Apply or Skip it.
 */
import { SandboxClient } from './client';
import {
  IDiff,
  IFollowing,
  IHistory,
  IProbeValue,
  ISandboxSummary,
  ITeacherOffer
} from './protocol';

export type ConnectionState = 'no-kernel' | 'not-loaded' | 'connecting' | 'ready';

/** How the model reports the outcome of an action (a JupyterLab notification in the app). */
export type Notify = (kind: 'success' | 'error', message: string) => void;

export class HistoryModel {
  state: ConnectionState = 'no-kernel';
  kernelName = '';
  /** The notebook the panel follows (its name, and its path for the tooltip). */
  notebook = '';
  notebookPath = '';
  sandboxes: ISandboxSummary[] = [];
  sandbox: string | null = null;
  module: string | null = null;
  history: IHistory | null = null;
  diff: IDiff | null = null;
  diffPair: [number, number] | null = null;
  /** True when the user chose the diff's pair; false while it follows previous -> current. */
  pinned = false;
  /** The selected version row (the current version unless the user chose another). */
  selected: number | null = null;
  /** What the last action did (also sent to `notify`). */
  status = '';
  error = '';
  /** An action (rollback, undo, redo, apply or skip a teacher's version) is waiting for
   * the kernel. */
  busy = false;
  notify: Notify = () => {};
  /** The probe shown as a column of the list: its expression and each version's value. */
  probe: { expr: string; values: Map<number, IProbeValue> } | null = null;
  /** A probe is running in the kernel. */
  probing = false;
  private probeKey = '';
  private selectedByUser = false;
  private client: SandboxClient | null = null;
  private listeners: (() => void)[] = [];
  private refreshing: Promise<void> | null = null;
  private again = false;
  private diffKey = '';

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  private emit(): void {
    this.listeners.forEach(l => l());
  }

  get connected(): boolean {
    return this.client !== null && !this.client.isDisposed;
  }

  setNotebook(name: string, path = name): void {
    this.notebook = name;
    this.notebookPath = path;
    this.emit();
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
    this.diffKey = '';
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

  /** The current version of the shown module. */
  get current(): number | null {
    return this.history?.versions.find(v => v.current)?.version ?? null;
  }

  /** The teacher's version of the shown module that waits to be applied, or null. */
  get teacher(): ITeacherOffer | null {
    return this.history?.teacher ?? null;
  }

  /** The teacher's history the shown sandbox follows, or null. */
  get following(): IFollowing | null {
    return this.history?.following ?? null;
  }

  /** The version undo would make current: null when there is nothing to undo,
   * undefined when the kernel does not say (an older kernel). */
  get undoTarget(): number | null | undefined {
    return this.history ? this.history.undo_to : null;
  }

  get redoTarget(): number | null | undefined {
    return this.history ? this.history.redo_to : null;
  }

  /** The version Rollback would make current: the selected row, unless it is current. */
  get rollbackTarget(): number | null {
    return this.selected !== null && this.selected !== this.current ? this.selected : null;
  }

  /** previous -> current (the two oldest when the oldest is current), or null. */
  followPair(): [number, number] | null {
    const versions = this.history ? this.history.versions.map(v => v.version) : [];
    if (versions.length < 2) {
      return null;
    }
    const current = this.current ?? versions[0];
    const older = versions.filter(v => v < current);
    return older.length ? [Math.max(...older), current] : [versions[1], versions[0]];
  }

  /** The version retained just before `version`, or null. */
  previousOf(version: number): number | null {
    const older = (this.history?.versions ?? []).map(v => v.version).filter(v => v < version);
    return older.length ? Math.max(...older) : null;
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
        this.forgetChoices();
      }
      if (this.sandbox && this.module) {
        this.history = await client.history(this.sandbox, this.module);
        this.syncSelection();
        await this.loadDiff(client);
        await this.reprobe(client);
      } else {
        this.history = null;
        this.diff = null;
        this.diffKey = '';
      }
      this.error = '';
    } catch (e) {
      this.error = (e as Error).message;
    }
    this.emit();
  }

  private forgetChoices(): void {
    this.probe = null;
    this.probeKey = '';
    this.diffPair = null;
    this.pinned = false;
    this.selected = null;
    this.selectedByUser = false;
  }

  private syncSelection(): void {
    const versions = this.history!.versions.map(v => v.version);
    if (!this.selectedByUser || this.selected === null || !versions.includes(this.selected)) {
      this.selected = this.current;
      this.selectedByUser = false;
    }
  }

  private async loadDiff(client: SandboxClient): Promise<void> {
    const follow = this.followPair();
    if (!follow) {
      this.diff = null;
      this.diffPair = null;
      this.diffKey = '';
      this.pinned = false;
      return;
    }
    const versions = this.history!.versions;
    let pair = this.pinned ? this.diffPair : null;
    if (!pair || !pair.every(p => versions.some(v => v.version === p))) {
      pair = follow;
      this.pinned = false;
    }
    this.diffPair = pair;
    // versions never change, so a diff already shown is not asked for again
    const sums = pair.map(p => versions.find(v => v.version === p)!.checksum);
    const key = JSON.stringify([this.sandbox, this.module, pair, sums]);
    if (key !== this.diffKey || !this.diff) {
      this.diff = await client.diff(this.sandbox!, this.module!, pair[0], pair[1]);
      this.diffKey = key;
    }
  }

  private versionsKey(): string {
    const rows = this.history?.versions ?? [];
    return JSON.stringify([this.sandbox, this.module, rows.map(v => [v.version, v.checksum])]);
  }

  /** Versions arrived or were dropped since the probe ran: run it again. */
  private async reprobe(client: SandboxClient): Promise<void> {
    if (this.probe && this.probeKey !== this.versionsKey()) {
      const expr = this.probe.expr;
      try {
        await this.probeWith(client, expr);
      } catch (e) {
        this.probe = null;
        this.probeKey = '';
        this.notify('error', `probe ${expr}: ${(e as Error).message}`);
      }
    }
  }

  private async probeWith(client: SandboxClient, expr: string): Promise<void> {
    const key = this.versionsKey();
    const r = await client.probe(this.sandbox!, this.module!, expr);
    this.probe = { expr: r.expr, values: new Map(r.values.map(v => [v.version, v])) };
    this.probeKey = key;
  }

  /** Evaluate `expr` under every retained version (scratch copies; the live sandbox is
   * untouched) and show the values as a column; it runs again when versions change. */
  async runProbe(expr: string): Promise<void> {
    const client = this.client;
    if (!client || !this.sandbox || !this.module || this.probing || !expr.trim()) {
      return;
    }
    this.probing = true;
    this.emit();
    try {
      await this.probeWith(client, expr.trim());
      this.error = '';
    } catch (e) {
      this.notify('error', `probe: ${(e as Error).message}`);
    } finally {
      this.probing = false;
    }
    this.emit();
  }

  /** Remove the probe column. */
  clearProbe(): void {
    this.probe = null;
    this.probeKey = '';
    this.emit();
  }

  /** Show another sandbox (and module). */
  select(sandbox: string, module: string | null = null): Promise<void> {
    this.sandbox = sandbox;
    this.module = module;
    this.forgetChoices();
    return this.refresh();
  }

  /** Select a version row (no request: Rollback and the commands act on it). */
  selectVersion(version: number): void {
    if (!this.history?.versions.some(v => v.version === version)) {
      return;
    }
    this.selected = version;
    this.selectedByUser = version !== this.current;
    this.emit();
  }

  /** Select a version and show what it changed (its predecessor -> it); the current
   * version's change is the followed diff, any other pins the diff. */
  showVersion(version: number): Promise<void> {
    this.selectVersion(version);
    const before = this.previousOf(version);
    if (version === this.current || before === null) {
      return this.follow();
    }
    return this.selectDiff(before, version);
  }

  /** Pin the diff to a pair of versions. */
  selectDiff(v1: number, v2: number): Promise<void> {
    this.diffPair = [v1, v2];
    this.pinned = true;
    return this.refresh();
  }

  /** Unpin the diff: previous -> current, following new versions again. */
  follow(): Promise<void> {
    this.pinned = false;
    return this.refresh();
  }

  async act(kind: 'rollback' | 'undo' | 'redo', version?: number): Promise<void> {
    const client = this.client;
    const sandbox = this.sandbox;
    const module = this.module;
    const target = kind === 'rollback' ? (version ?? this.rollbackTarget) : null;
    if (!client || !sandbox || !module || this.busy || (kind === 'rollback' && target === null)) {
      return;
    }
    this.busy = true;
    this.emit();
    try {
      const r =
        kind === 'rollback'
          ? await client.rollback(sandbox, module, target!)
          : kind === 'undo'
            ? await client.undo(sandbox, module)
            : await client.redo(sandbox, module);
      const restored = Object.entries(r.restored)
        .map(([m, v]) => `${m} v${v}`)
        .join(', ');
      const first = restored
        ? `${sandbox} was not loaded: restored it from its history first (${restored}); `
        : '';
      const was = r.old_version !== null && r.old_version !== r.new_version;
      const what =
        r.status === 'no_change'
          ? `no change (v${r.new_version} is current)`
          : kind === 'rollback'
            ? `rolled back to v${r.new_version}`
            : `${kind}: v${r.new_version} is current again`;
      this.status = `${first}${sandbox}.${r.module}: ${what}${was ? ` (was v${r.old_version})` : ''}`;
      this.pinned = false;
      this.selectedByUser = false;
      this.notify('success', this.status);
    } catch (e) {
      this.status = (e as Error).message;
      this.notify('error', this.status);
    } finally {
      this.busy = false;
    }
    await this.refresh();
  }

  /** Apply the teacher's waiting version of the shown module (a transactional reload:
   * when it fails here nothing changes, and the list shows the failure). */
  applyTeacher(): Promise<void> {
    return this.onTeacher('apply');
  }

  /** Leave the teacher's waiting version unapplied (until the teacher's next one). */
  skipTeacher(): Promise<void> {
    return this.onTeacher('skip');
  }

  private async onTeacher(kind: 'apply' | 'skip'): Promise<void> {
    const client = this.client;
    const sandbox = this.sandbox;
    const module = this.module;
    const offer = this.teacher;
    if (!client || !sandbox || !module || !offer || this.busy) {
      return;
    }
    this.busy = true;
    this.emit();
    try {
      const r =
        kind === 'apply'
          ? await client.followApply(sandbox, module, offer.version)
          : await client.followSkip(sandbox, module, offer.version);
      const failed = r.lines.some(l => l.includes('FAILED'));
      this.status =
        r.lines.join('\n') ||
        `${sandbox}.${module}: v${offer.version} from the teacher ` +
          (kind === 'apply' ? 'applied' : 'skipped');
      if (kind === 'apply' && !failed) {
        // a new current version: the diff and the selection follow it
        this.pinned = false;
        this.selectedByUser = false;
      }
      this.notify(failed ? 'error' : 'success', this.status);
    } catch (e) {
      this.status = (e as Error).message;
      this.notify('error', this.status);
    } finally {
      this.busy = false;
    }
    await this.refresh();
  }
}
