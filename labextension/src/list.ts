/**
 * The version list: one line per version (and per failed attempt), newest
 * first, rendered virtually (only the rows in view, plus a margin, are in the
 * DOM) so that 1,000 versions cost what 30 do.  It is a listbox: click or
 * arrow keys select a row, Enter (or a click) shows that version's change.
 * Every string from the kernel goes in through textContent, never innerHTML.
 */
import { Widget } from '@lumino/widgets';

import {
  droppedNote,
  unsavedNote,
  exactTime,
  ListRow,
  listRows,
  originLabel,
  relativeTime,
  rowTooltip
} from './format';
import { HistoryModel } from './model';

/** Height of one row in pixels (the stylesheet sets the same). */
export const ROW_HEIGHT = 24;
/** Rows rendered above and below the visible ones. */
const MARGIN = 8;
/** Relative times are rewritten this often. */
const TICK_MS = 30000;

function span(cls: string, text: string, title = ''): HTMLSpanElement {
  const s = document.createElement('span');
  s.className = cls;
  s.textContent = text;
  if (title) {
    s.title = title;
  }
  return s;
}

export function rowId(version: number): string {
  return `sandbox-magic-row-v${version}`;
}

export class VersionList extends Widget {
  readonly scroller: HTMLElement;
  private spacer: HTMLElement;
  private note: HTMLElement;
  private unsaved: HTMLElement;
  private rows: ListRow[] = [];
  private frame = 0;
  private timer: ReturnType<typeof setInterval> | null = null;
  private lastRender = { first: -1, last: -1, key: '' };

  constructor(private model: HistoryModel) {
    super();
    this.addClass('jp-SandboxPanel-listArea');
    this.scroller = document.createElement('div');
    this.scroller.className = 'jp-SandboxPanel-versions';
    this.scroller.setAttribute('role', 'listbox');
    this.scroller.tabIndex = 0;
    this.spacer = document.createElement('div');
    this.spacer.className = 'jp-SandboxPanel-spacer';
    this.scroller.appendChild(this.spacer);
    this.note = document.createElement('div');
    this.note.className = 'jp-SandboxPanel-note';
    this.unsaved = document.createElement('div');
    this.unsaved.className = 'jp-SandboxPanel-unsaved';
    this.unsaved.setAttribute('role', 'status');
    this.unsaved.hidden = true;
    this.node.append(this.scroller, this.unsaved, this.note);
    this.scroller.addEventListener('scroll', () => this.schedule());
    this.scroller.addEventListener('keydown', e => this.onKey(e));
    this.scroller.addEventListener('click', e => this.onClick(e));
    this.scroller.addEventListener('contextmenu', e => this.onContextMenu(e));
    // the list changes height (the panel is resized, the header wraps): a selected row
    // that was in view stays in view
    this.resizes = new ResizeObserver(() => this.onScrollerResize());
    this.resizes.observe(this.scroller);
  }

  private resizes: ResizeObserver;
  private viewHeight = 0;

  private onScrollerResize(): void {
    const s = this.scroller;
    const before = this.viewHeight;
    this.viewHeight = s.clientHeight;
    const i = this.indexOf(this.model.selected);
    if (i >= 0 && before > 0) {
      const top = i * ROW_HEIGHT;
      const wasInView = top >= s.scrollTop && top + ROW_HEIGHT <= s.scrollTop + before;
      if (wasInView) {
        this.reveal(i);
      }
    }
    this.schedule();
  }

  dispose(): void {
    this.resizes.disconnect();
    super.dispose();
  }

  /** Re-read the model's history (call on every model change). */
  sync(): void {
    const h = this.model.history;
    this.rows = h ? listRows(h) : [];
    this.spacer.style.height = `${this.rows.length * ROW_HEIGHT}px`;
    this.scroller.setAttribute(
      'aria-label',
      h ? `Versions of ${h.sandbox}.${h.module}` : 'Versions'
    );
    this.scroller.dataset.count = String(this.rows.length);
    const note = h ? droppedNote(h) : '';
    this.note.textContent = note;
    this.note.hidden = !note;
    const unsaved = h ? unsavedNote(h) : '';
    this.unsaved.textContent = unsaved;
    this.unsaved.hidden = !unsaved;
    this.lastRender.key = '';
    this.render();
  }

  /** Put the keyboard focus on the list (after an action, for example). */
  focus(): void {
    this.scroller.focus();
  }

  private schedule(): void {
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  protected onResize(): void {
    this.schedule();
  }

  protected onAfterShow(): void {
    this.schedule();
  }

  protected onAfterAttach(): void {
    this.timer = setInterval(() => {
      this.lastRender.key = '';
      this.render();
    }, TICK_MS);
    this.schedule();
  }

  protected onBeforeDetach(): void {
    if (this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private render(): void {
    const height = this.scroller.clientHeight || 30 * ROW_HEIGHT;
    const top = this.scroller.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - MARGIN);
    const last = Math.min(this.rows.length, Math.ceil((top + height) / ROW_HEIGHT) + MARGIN);
    const m = this.model;
    const key = `${m.selected}|${m.current}`;
    const r = this.lastRender;
    if (r.key && r.key === key && r.first === first && r.last === last) {
      return;
    }
    this.lastRender = { first, last, key };
    const now = Date.now();
    const nodes: HTMLElement[] = [];
    for (let i = first; i < last; i++) {
      const node = this.renderRow(this.rows[i], now);
      node.style.top = `${i * ROW_HEIGHT}px`;
      node.setAttribute('aria-posinset', String(i + 1));
      node.setAttribute('aria-setsize', String(this.rows.length));
      nodes.push(node);
    }
    this.spacer.replaceChildren(...nodes);
    if (m.selected !== null) {
      this.scroller.setAttribute('aria-activedescendant', rowId(m.selected));
    } else {
      this.scroller.removeAttribute('aria-activedescendant');
    }
  }

  private renderRow(item: ListRow, now: number): HTMLElement {
    const node = document.createElement('div');
    node.setAttribute('role', 'option');
    if (item.kind === 'failed') {
      const f = item.failure;
      node.className = 'jp-SandboxPanel-row jp-SandboxPanel-failed';
      node.setAttribute('aria-disabled', 'true');
      node.setAttribute('aria-selected', 'false');
      node.title = `A reload that failed (no version was recorded):\n${f.message}`;
      node.append(
        span('jp-SandboxPanel-marker', '✗'),
        span('jp-SandboxPanel-number', 'failed'),
        span('jp-SandboxPanel-time', relativeTime(f.at, now), exactTime(f.at)),
        span('jp-SandboxPanel-origin', f.message)
      );
      return node;
    }
    const v = item.row;
    const selected = v.version === this.model.selected;
    node.className =
      'jp-SandboxPanel-row jp-SandboxPanel-version' +
      (v.current ? ' jp-mod-current' : '') +
      (selected ? ' jp-mod-selected' : '');
    node.id = rowId(v.version);
    node.dataset.version = String(v.version);
    node.setAttribute('aria-selected', String(selected));
    node.title = rowTooltip(v);
    const marker = span('jp-SandboxPanel-marker', v.current ? '●' : '');
    if (v.current) {
      marker.setAttribute('aria-label', 'current');
    }
    node.append(
      marker,
      span('jp-SandboxPanel-number', `v${v.version}`),
      span('jp-SandboxPanel-time', relativeTime(v.loaded_at, now), exactTime(v.loaded_at)),
      span('jp-SandboxPanel-added', `+${v.added}`, `${v.added} lines added`),
      span('jp-SandboxPanel-removed', `−${v.removed}`, `${v.removed} lines removed`),
      span('jp-SandboxPanel-origin', originLabel(v))
    );
    const probe = this.model.probe;
    if (probe) {
      const p = probe.values.get(v.version);
      const text = !p ? '…' : p.error ? `✗ ${p.value}` : p.value;
      node.append(
        span(
          `jp-SandboxPanel-probe${p?.error ? ' jp-mod-error' : ''}`,
          text,
          `${probe.expr} under v${v.version}: ${p ? p.value : 'not probed yet'}`
        )
      );
    }
    return node;
  }

  private versionIndexes(): number[] {
    const out: number[] = [];
    this.rows.forEach((r, i) => {
      if (r.kind === 'version') {
        out.push(i);
      }
    });
    return out;
  }

  private indexOf(version: number | null): number {
    return this.rows.findIndex(r => r.kind === 'version' && r.row.version === version);
  }

  /** Scroll so that row `i` is in view. */
  private reveal(i: number): void {
    const s = this.scroller;
    const top = i * ROW_HEIGHT;
    if (top < s.scrollTop) {
      s.scrollTop = top;
    } else if (top + ROW_HEIGHT > s.scrollTop + s.clientHeight) {
      s.scrollTop = top + ROW_HEIGHT - s.clientHeight;
    }
  }

  private onKey(e: KeyboardEvent): void {
    const m = this.model;
    const versions = this.versionIndexes();
    if (!versions.length) {
      return;
    }
    const at = versions.indexOf(this.indexOf(m.selected));
    const page = Math.max(1, Math.floor(this.scroller.clientHeight / ROW_HEIGHT) - 1);
    let to: number;
    switch (e.key) {
      case 'ArrowDown':
        to = at < 0 ? 0 : Math.min(versions.length - 1, at + 1);
        break;
      case 'ArrowUp':
        to = at < 0 ? 0 : Math.max(0, at - 1);
        break;
      case 'PageDown':
        to = Math.min(versions.length - 1, Math.max(0, at) + page);
        break;
      case 'PageUp':
        to = Math.max(0, at - page);
        break;
      case 'Home':
        to = 0;
        break;
      case 'End':
        to = versions.length - 1;
        break;
      case 'Enter':
      case ' ':
        if (m.selected !== null) {
          void m.showVersion(m.selected);
        }
        e.preventDefault();
        return;
      default:
        return;
    }
    e.preventDefault();
    const row = this.rows[versions[to]];
    if (row.kind === 'version') {
      this.reveal(versions[to]);
      m.selectVersion(row.row.version);
    }
  }

  private versionAt(e: Event): number | null {
    const row = (e.target as HTMLElement).closest('.jp-SandboxPanel-version') as HTMLElement | null;
    return row && row.dataset.version ? Number(row.dataset.version) : null;
  }

  private onClick(e: MouseEvent): void {
    const v = this.versionAt(e);
    if (v !== null) {
      this.scroller.focus();
      void this.model.showVersion(v);
    }
  }

  private onContextMenu(e: MouseEvent): void {
    // the row's context menu (Roll back to vN...) acts on the row it opened on
    const v = this.versionAt(e);
    if (v !== null) {
      this.model.selectVersion(v);
    }
  }
}
