/**
 * The sidebar: a JupyterLab SidePanel whose top part stays in view (the
 * notebook it follows, the sandbox and module pickers, a toolbar with Undo /
 * Redo / Roll back named by their target) above the teacher's waiting version
 * (a sandbox that follows a teacher), the version list and the diff.  It only
 * renders the model; every string that came from the kernel goes through
 * textContent or React text, never innerHTML.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { CommandToolbarButton, SidePanel, Toolbar } from '@jupyterlab/ui-components';
import { Panel, PanelLayout, Widget } from '@lumino/widgets';

import { lineClass } from './format';
import { VersionList } from './list';
import { HistoryModel } from './model';
import { DiffBar, Pickers, ProbeBar } from './pickers';
import { TeacherOffer } from './teacher';

type CommandRegistry = JupyterFrontEnd['commands'];

/** The panel's commands (also in the command palette and the rows' context menu). */
export const COMMANDS = {
  open: 'sandbox-magic:open',
  undo: 'sandbox-magic:undo',
  redo: 'sandbox-magic:redo',
  rollback: 'sandbox-magic:rollback',
  follow: 'sandbox-magic:follow-current',
  rerunStale: 'sandbox-magic:rerun-stale'
};

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

/** "SANDBOX HISTORY · panel.ipynb" */
class Title extends Widget {
  private notebook = el('span', 'jp-SandboxPanel-notebook');

  constructor() {
    super();
    this.addClass('jp-SandboxPanel-title');
    this.node.append(el('h2', 'jp-SandboxPanel-heading', 'Sandbox history'), this.notebook);
  }

  display(name: string, path: string): void {
    this.notebook.textContent = name;
    this.notebook.title = path ? `Follows the notebook you are looking at: ${path}` : '';
  }
}

/** The panel's one-paragraph messages: not connected, nothing yet, an error. */
class Messages extends Widget {
  private text = el('p', 'jp-SandboxPanel-empty');
  private error = el('p', 'jp-SandboxPanel-error');

  constructor() {
    super();
    this.addClass('jp-SandboxPanel-messages');
    this.error.setAttribute('role', 'alert');
    this.node.append(this.text, this.error);
  }

  display(text: string, error: string): void {
    this.text.textContent = text;
    this.text.hidden = !text;
    this.error.textContent = error;
    this.error.hidden = !error;
    this.setHidden(!text && !error);
  }
}

class DiffView extends Widget {
  constructor() {
    super({ node: el('pre', 'jp-SandboxPanel-diff') });
    this.node.setAttribute('aria-label', 'Diff');
    this.node.tabIndex = 0;
  }

  display(m: HistoryModel): void {
    const node = this.node;
    if (!m.diff) {
      node.replaceChildren(
        el(
          'div',
          'jp-SandboxPanel-line jp-SandboxPanel-nodiff',
          m.history && m.history.versions.length < 2
            ? 'One version so far: nothing to compare yet.'
            : ''
        )
      );
      return;
    }
    const lines = m.diff.lines.map(([mark, text]) =>
      el('div', `jp-SandboxPanel-line ${lineClass(mark)}`, `${mark} ${text}`)
    );
    node.replaceChildren(...lines);
  }
}

export class SandboxPanel extends SidePanel {
  readonly list: VersionList;
  private titleView = new Title();
  private pickers: Pickers;
  private messages = new Messages();
  private diffBar: DiffBar;
  private probeBar: ProbeBar;
  private diffView = new DiffView();
  private offer: TeacherOffer;

  constructor(
    readonly model: HistoryModel,
    commands: CommandRegistry
  ) {
    super({ content: new Panel(), toolbar: new Toolbar() });
    this.addClass('jp-SandboxPanel');
    this.title.caption = 'Sandbox history';
    this.header.addWidget(this.titleView);
    this.pickers = new Pickers(model);
    (this.layout as PanelLayout).insertWidget(1, this.pickers);
    this.toolbar.node.setAttribute('aria-label', 'Sandbox history actions');
    for (const [name, id] of [
      ['undo', COMMANDS.undo],
      ['redo', COMMANDS.redo],
      ['rollback', COMMANDS.rollback]
    ]) {
      this.toolbar.addItem(name, new CommandToolbarButton({ commands, id }));
    }
    this.list = new VersionList(model);
    this.probeBar = new ProbeBar(model);
    this.diffBar = new DiffBar(model);
    this.offer = new TeacherOffer(model);
    this.offer.focusAfter = () => this.list.focus();
    for (const w of [
      this.messages,
      this.offer,
      this.probeBar,
      this.list,
      this.diffBar,
      this.diffView
    ]) {
      this.addWidget(w);
    }
    model.onChange(() => this.render());
    this.render();
  }

  render(): void {
    const m = this.model;
    this.titleView.display(m.notebook, m.notebookPath);
    const text =
      m.state !== 'ready'
        ? {
            'no-kernel': 'Open a notebook to see the history of its sandboxes.',
            connecting: 'Connecting to the kernel…',
            'not-loaded':
              'Run %load_ext sandbox_magic in this notebook, then a %%sandbox_reload cell.',
            ready: ''
          }[m.state]
        : m.sandboxes.length
          ? ''
          : 'No sandboxes yet: run a %%sandbox_reload cell.';
    this.messages.display(text, m.state === 'ready' ? m.error : '');
    const ready = m.state === 'ready' && m.sandboxes.length > 0;
    this.pickers.setHidden(!ready);
    this.toolbar.setHidden(!ready);
    this.list.setHidden(!ready || !m.history);
    this.offer.setHidden(!ready || this.offer.isEmpty);
    this.probeBar.setHidden(!ready || !m.history);
    this.diffBar.setHidden(!ready || !m.history);
    this.diffView.setHidden(!ready || !m.history);
    this.pickers.update();
    this.diffBar.update();
    this.probeBar.update();
    this.offer.update();
    this.list.sync();
    this.diffView.display(m);
  }
}
