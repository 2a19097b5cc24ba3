/**
 * The sidebar widget.  It only renders the model; every string that came from
 * the kernel goes through textContent, never innerHTML.
 */
import { Widget } from '@lumino/widgets';

import { HistoryModel } from './model';

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls: string,
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = cls;
  node.textContent = text;
  return node;
}

function option(value: string, label: string, selected: boolean): HTMLOptionElement {
  const o = document.createElement('option');
  o.value = value;
  o.textContent = label;
  o.selected = selected;
  return o;
}

export class SandboxPanel extends Widget {
  constructor(readonly model: HistoryModel) {
    super();
    this.addClass('jp-SandboxPanel');
    this.title.caption = 'Sandbox history';
    model.onChange(() => this.render());
    this.render();
  }

  render(): void {
    const m = this.model;
    const root = this.node;
    root.replaceChildren();
    root.appendChild(el('h2', 'jp-SandboxPanel-title', 'Sandbox history'));
    if (m.state !== 'ready') {
      const text = {
        'no-kernel': 'Open a notebook to see the history of its sandboxes.',
        connecting: 'Connecting to the kernel…',
        'not-loaded': 'Run %load_ext sandbox_magic in this notebook, then a %%sandbox_reload cell.',
        ready: ''
      }[m.state];
      root.appendChild(el('p', 'jp-SandboxPanel-empty', text));
      return;
    }
    if (!m.sandboxes.length) {
      root.appendChild(
        el('p', 'jp-SandboxPanel-empty', 'No sandboxes yet: run a %%sandbox_reload cell.')
      );
    } else {
      this.renderPickers(root);
      this.renderVersions(root);
      this.renderDiff(root);
    }
    if (m.status) {
      root.appendChild(el('p', 'jp-SandboxPanel-status', m.status));
    }
    if (m.error) {
      root.appendChild(el('p', 'jp-SandboxPanel-error', m.error));
    }
  }

  private renderPickers(root: HTMLElement): void {
    const m = this.model;
    const row = el('div', 'jp-SandboxPanel-pickers');
    const sb = el('select', 'jp-SandboxPanel-sandbox');
    m.sandboxes.forEach(s =>
      sb.appendChild(
        option(s.id, s.loaded ? s.id : `${s.id} (stored, not loaded)`, s.id === m.sandbox)
      )
    );
    sb.onchange = () => void m.select(sb.value);
    const mod = el('select', 'jp-SandboxPanel-module');
    m.modules().forEach(n => mod.appendChild(option(n, n, n === m.module)));
    mod.onchange = () => void m.select(m.sandbox!, mod.value);
    row.append(sb, mod);
    root.appendChild(row);
  }

  private renderVersions(root: HTMLElement): void {
    const m = this.model;
    if (!m.history) {
      return;
    }
    const actions = el('div', 'jp-SandboxPanel-actions');
    const undo = el('button', 'jp-mod-styled jp-SandboxPanel-undo', 'Undo');
    undo.onclick = () => void m.act('undo');
    const redo = el('button', 'jp-mod-styled jp-SandboxPanel-redo', 'Redo');
    redo.onclick = () => void m.act('redo');
    actions.append(undo, redo);
    root.appendChild(actions);
    const list = el('ul', 'jp-SandboxPanel-versions');
    for (const v of m.history.versions) {
      const li = el('li', 'jp-SandboxPanel-version' + (v.current ? ' jp-mod-current' : ''));
      li.dataset.version = String(v.version);
      const time = new Date(v.loaded_at);
      const when = isNaN(time.getTime())
        ? v.loaded_at
        : time.toLocaleTimeString([], { hour12: false });
      li.appendChild(el('span', 'jp-SandboxPanel-marker', v.current ? '●' : ''));
      li.appendChild(el('span', 'jp-SandboxPanel-number', `v${v.version}`));
      li.appendChild(el('span', 'jp-SandboxPanel-time', when));
      li.appendChild(el('code', 'jp-SandboxPanel-checksum', v.checksum));
      li.appendChild(el('span', 'jp-SandboxPanel-added', `+${v.added}`));
      li.appendChild(el('span', 'jp-SandboxPanel-removed', `−${v.removed}`));
      if (v.state_handler) {
        li.appendChild(el('span', 'jp-SandboxPanel-handler', `migrated by ${v.state_handler}`));
      }
      if (!v.current) {
        const b = el('button', 'jp-mod-styled jp-SandboxPanel-rollback', 'Rollback');
        b.title = `make v${v.version} current again`;
        b.onclick = () => void m.act('rollback', v.version);
        li.appendChild(b);
      }
      list.appendChild(li);
    }
    root.appendChild(list);
  }

  private renderDiff(root: HTMLElement): void {
    const m = this.model;
    if (!m.history || m.history.versions.length < 2 || !m.diffPair) {
      return;
    }
    const versions = m.history.versions.map(v => v.version);
    const row = el('div', 'jp-SandboxPanel-diffpick');
    const from = el('select', 'jp-SandboxPanel-from');
    const to = el('select', 'jp-SandboxPanel-to');
    for (const v of versions) {
      from.appendChild(option(String(v), `v${v}`, v === m.diffPair[0]));
      to.appendChild(option(String(v), `v${v}`, v === m.diffPair[1]));
    }
    const pick = () => void m.selectDiff(Number(from.value), Number(to.value));
    from.onchange = pick;
    to.onchange = pick;
    row.append(el('span', '', 'Diff'), from, el('span', '', '→'), to);
    root.appendChild(row);
    if (!m.diff) {
      return;
    }
    const pre = el('pre', 'jp-SandboxPanel-diff');
    for (const [mark, text] of m.diff.lines) {
      const cls = mark === '+' ? 'jp-mod-added' : mark === '-' ? 'jp-mod-removed' : '';
      pre.appendChild(el('div', `jp-SandboxPanel-line ${cls}`, `${mark} ${text}`));
    }
    root.appendChild(pre);
  }
}
