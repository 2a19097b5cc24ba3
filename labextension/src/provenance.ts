/**
 * Badges under the outputs of cells that ran sandbox code: which module made the
 * output, at which version, and whether a newer version is current now.  The
 * record is kept in the cell's metadata (`sandbox_magic`), so a saved notebook
 * shows it again when it is opened.  Everything from the kernel is shown as text.
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { PanelLayout, Widget } from '@lumino/widgets';

import {
  badge,
  belongsToLastRun,
  currentVersions,
  IProvenanceMetadata,
  METADATA_KEY,
  readMetadata
} from './badge';
import { IRan, IRanModule, ISandboxSummary } from './protocol';

type CellWidget = NotebookPanel['content']['widgets'][number];

/** Keeps the badges of the followed notebook's cells. */
export class Badges {
  constructor(private open: (m: IRanModule, now: number | undefined) => void) {}

  private panel: NotebookPanel | null = null;
  private versions = new Map<string, number>();
  private shown = new WeakMap<CellWidget, Widget>();
  private watched = new WeakSet<CellWidget>();
  private scheduled = false;
  /** Called after the badges changed (commands re-read what they can do). */
  changed: () => void = () => {};

  follow(panel: NotebookPanel | null): void {
    if (panel === this.panel) {
      return;
    }
    this.panel?.content.modelContentChanged.disconnect(this.schedule, this);
    this.panel = panel;
    panel?.content.modelContentChanged.connect(this.schedule, this);
    this.schedule();
  }

  setVersions(sandboxes: ISandboxSummary[]): void {
    this.versions = currentVersions(sandboxes);
    this.schedule();
  }

  /** A cell of the followed notebook ran sandbox code. */
  record(run: IRan): void {
    const cell = this.cell(run.cell_id);
    if (!cell || !run.modules.length) {
      return;
    }
    const value: IProvenanceMetadata = { ran: run.modules, execution_count: run.execution_count };
    cell.model.setMetadata(METADATA_KEY, value as unknown as Record<string, unknown>);
    this.render(cell);
    this.changed();
  }

  /** Records the kernel kept (the panel attached after the cells ran): newer ones only. */
  recordMissing(runs: IRan[]): void {
    for (const run of runs) {
      const cell = this.cell(run.cell_id);
      if (!cell) {
        continue;
      }
      const meta = readMetadata(cell.model.getMetadata(METADATA_KEY));
      const count = countOf(cell);
      if (run.execution_count !== null && count === run.execution_count && !meta) {
        this.record(run);
      }
    }
  }

  /** Cells whose output came from a version that is no longer current. */
  staleCells(): CellWidget[] {
    const cells = this.panel?.content.widgets ?? [];
    return cells.filter(cell => {
      const meta = this.metaOf(cell);
      return !!meta && meta.ran.some(m => badge(m, this.versions.get(key(m))).stale);
    });
  }

  private cell(id: string | null): CellWidget | undefined {
    if (!id || !this.panel) {
      return undefined;
    }
    return this.panel.content.widgets.find(c => c.model.id === id);
  }

  private metaOf(cell: CellWidget): IProvenanceMetadata | null {
    if (cell.model.type !== 'code') {
      return null;
    }
    const meta = readMetadata(cell.model.getMetadata(METADATA_KEY));
    return meta && belongsToLastRun(meta, countOf(cell)) ? meta : null;
  }

  private schedule(): void {
    if (this.scheduled) {
      return;
    }
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      for (const cell of this.panel?.content.widgets ?? []) {
        this.render(cell);
      }
      this.changed();
    });
  }

  private render(cell: CellWidget): void {
    if (!this.watched.has(cell)) {
      this.watched.add(cell);
      cell.model.stateChanged.connect((_, change) => {
        if (change.name === 'executionCount') {
          this.render(cell);
          this.changed();
        }
      });
    }
    this.shown.get(cell)?.dispose();
    this.shown.delete(cell);
    const meta = this.metaOf(cell);
    if (!meta) {
      return;
    }
    const row = new Widget();
    row.addClass('jp-SandboxBadges');
    row.node.setAttribute('role', 'group');
    row.node.setAttribute('aria-label', 'Sandbox code that made this output');
    for (const m of meta.ran) {
      const now = this.versions.get(key(m));
      const b = badge(m, now);
      const button = document.createElement('button');
      button.className = 'jp-SandboxBadge' + (b.stale ? ' jp-SandboxBadge-stale' : '');
      button.textContent = b.text;
      button.title = b.title;
      button.addEventListener('click', () => this.open(m, now));
      row.node.appendChild(button);
    }
    (cell.layout as PanelLayout).addWidget(row);
    this.shown.set(cell, row);
  }
}

/** A code cell's execution count (null while it runs or before it ran). */
function countOf(cell: CellWidget): number | null {
  const count = (cell.model as unknown as { executionCount?: number | null }).executionCount;
  return typeof count === 'number' ? count : null;
}

function key(m: IRanModule): string {
  return `${m.sandbox}.${m.module}`;
}
