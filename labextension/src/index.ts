/**
 * sandbox-magic JupyterLab extension: a sidebar with the version history of
 * the active notebook kernel's sandboxes, updated live over a comm.  It runs in
 * JupyterLab and in Jupyter Notebook 7 (its right side panel).
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, ISessionContext, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import {
  CommandToolbarButton,
  listIcon,
  redoIcon,
  refreshIcon,
  undoIcon
} from '@jupyterlab/ui-components';

import { SandboxClient } from './client';
import { HistoryModel } from './model';
import { COMMANDS, SandboxPanel } from './panel';
import { Badges } from './provenance';
import { FRONTEND_TARGET, KERNEL_TARGET } from './protocol';

/** Keeps one comm open to the kernel of the notebook the user is looking at. */
class KernelConnector {
  constructor(
    private model: HistoryModel,
    private badges: Badges
  ) {}

  private context: ISessionContext | null = null;
  private comm: Kernel.IComm | null = null;
  private registered = new WeakSet<Kernel.IKernelConnection>();
  private opening = false;

  follow(context: ISessionContext | null): void {
    if (context === this.context) {
      return;
    }
    if (this.context) {
      this.context.kernelChanged.disconnect(this.onKernel, this);
      this.context.statusChanged.disconnect(this.onStatus, this);
    }
    this.close();
    this.context = context;
    if (!context) {
      this.model.detach('no-kernel', '');
      return;
    }
    context.kernelChanged.connect(this.onKernel, this);
    context.statusChanged.connect(this.onStatus, this);
    void context.ready.then(() => {
      if (this.context === context) {
        void this.open();
      }
    });
  }

  private onKernel(): void {
    this.close();
    void this.open();
  }

  private onStatus(_: ISessionContext, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      this.close();
      this.model.detach('connecting');
    } else if (status === 'idle' && !this.comm && this.model.state === 'connecting') {
      void this.open();
    }
  }

  private close(): void {
    const comm = this.comm;
    this.comm = null;
    if (comm && !comm.isDisposed) {
      try {
        comm.close();
      } catch {
        // the kernel is gone already
      }
    }
  }

  private async open(): Promise<void> {
    const kernel = this.context?.session?.kernel;
    if (!kernel || this.opening) {
      if (!kernel) {
        this.model.detach('no-kernel', '');
      }
      return;
    }
    this.opening = true;
    const name = this.context?.name ?? '';
    try {
      if (!this.registered.has(kernel)) {
        // %load_ext sandbox_magic opens this target to say it is ready
        kernel.registerCommTarget(FRONTEND_TARGET, () => {
          if (!this.comm) {
            void this.open();
          }
        });
        this.registered.add(kernel);
      }
      this.model.detach('connecting', name);
      const comm = kernel.createComm(KERNEL_TARGET);
      const client = new SandboxClient(comm);
      client.onRan(run => this.badges.record(run));
      comm.onMsg = msg => client.receive(msg.content.data);
      comm.onClose = () => {
        client.dispose();
        if (this.comm === comm) {
          this.comm = null;
          this.model.detach('not-loaded', name);
        }
      };
      this.comm = comm;
      await comm.open({}).done;
      const sandboxes = await client.hello();
      if (this.comm === comm) {
        this.model.attach(client, sandboxes);
        // cells that ran sandbox code while this notebook was not followed
        void client.ran().then(
          runs => this.badges.recordMissing(runs),
          () => undefined
        );
      }
    } catch {
      this.comm = null;
      this.model.detach('not-loaded', name);
    } finally {
      this.opening = false;
    }
  }
}

const CATEGORY = 'Sandbox History';
/** The commands take no arguments. */
const NO_ARGS = { args: { type: 'object' as const, properties: {} } };

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'sandbox-magic:plugin',
  description: 'Version history, diffs and rollback of sandbox-magic modules.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, palette: ICommandPalette | null) => {
    const { commands } = app;
    const model = new HistoryModel();
    model.notify = (kind, message) => {
      Notification.emit(message, kind, { autoClose: kind === 'error' ? 10000 : 5000 });
    };
    let panel: SandboxPanel | null = null;
    let followed: NotebookPanel | null = null;
    const badges = new Badges((m, now) => {
      void (async () => {
        if (panel) {
          app.shell.activateById(panel.id);
        }
        await model.select(m.sandbox, m.module);
        if (m.version !== null && now !== undefined && now !== m.version) {
          await model.selectDiff(Math.min(m.version, now), Math.max(m.version, now));
        }
        panel?.list.focus();
      })();
    });
    model.onChange(() => badges.setVersions(model.sandboxes));
    badges.changed = () => commands.notifyCommandChanged(COMMANDS.rerunStale);

    /** Run an action; when it loses the keyboard focus (a button it disables), give the
     * focus back to that button or to the version list, but never take it from where
     * the user has moved it meanwhile. */
    const run = async (action: () => Promise<void>): Promise<void> => {
      const before = document.activeElement;
      const inPanel = panel !== null && before !== null && panel.node.contains(before);
      await action();
      const now = document.activeElement;
      if (!panel || !panel.isVisible || (now !== null && now !== document.body)) {
        return;
      }
      if (
        inPanel &&
        before instanceof HTMLElement &&
        before.isConnected &&
        !(before instanceof HTMLButtonElement && before.disabled)
      ) {
        before.focus();
      } else if (inPanel || before === null || before === document.body) {
        panel.list.focus();
      }
    };
    const ready = () => model.state === 'ready' && !!model.module && !model.busy;

    commands.addCommand(COMMANDS.open, {
      describedBy: NO_ARGS,
      label: 'Open Sandbox History',
      caption: 'Show the sidebar with the versions of the sandboxes of this notebook',
      icon: listIcon,
      execute: () => {
        if (panel) {
          app.shell.activateById(panel.id);
          panel.list.focus();
        }
      }
    });
    commands.addCommand(COMMANDS.undo, {
      describedBy: NO_ARGS,
      label: () => (typeof model.undoTarget === 'number' ? `Undo to v${model.undoTarget}` : 'Undo'),
      caption: () =>
        typeof model.undoTarget === 'number'
          ? `Make v${model.undoTarget} of ${model.module} current again (undo the last change)`
          : model.undoTarget === null
            ? 'Nothing to undo'
            : 'Undo the last change of this module',
      icon: undoIcon,
      isEnabled: () => ready() && model.undoTarget !== null,
      execute: () => run(() => model.act('undo'))
    });
    commands.addCommand(COMMANDS.redo, {
      describedBy: NO_ARGS,
      label: () => (typeof model.redoTarget === 'number' ? `Redo to v${model.redoTarget}` : 'Redo'),
      caption: () =>
        typeof model.redoTarget === 'number'
          ? `Make v${model.redoTarget} of ${model.module} current again (redo)`
          : model.redoTarget === null
            ? 'Nothing to redo'
            : 'Redo the change undone last',
      icon: redoIcon,
      isEnabled: () => ready() && model.redoTarget !== null,
      execute: () => run(() => model.act('redo'))
    });
    commands.addCommand(COMMANDS.rollback, {
      describedBy: NO_ARGS,
      label: () =>
        model.rollbackTarget !== null ? `Roll back to v${model.rollbackTarget}` : 'Roll back',
      caption: () =>
        model.rollbackTarget !== null
          ? `Run v${model.rollbackTarget} of ${model.module} again (the selected version)`
          : 'Select an older version in the list to roll back to it',
      isEnabled: () => ready() && model.rollbackTarget !== null,
      execute: () => run(() => model.act('rollback'))
    });
    commands.addCommand(COMMANDS.follow, {
      describedBy: NO_ARGS,
      label: 'Diff: Follow the Current Version',
      caption: 'Unpin the diff: show previous → current, and follow new versions',
      isEnabled: () => model.state === 'ready' && model.pinned,
      execute: () => run(() => model.follow())
    });
    commands.addCommand(COMMANDS.rerunStale, {
      describedBy: NO_ARGS,
      label: 'Re-run Cells with Stale Sandbox Outputs',
      caption: () => {
        const n = badges.staleCells().length;
        return n
          ? `Run again the ${n} cell${n === 1 ? '' : 's'} whose output a version that is no longer current made`
          : 'No output of this notebook comes from a version that is no longer current';
      },
      icon: refreshIcon,
      isEnabled: () => !!followed && badges.staleCells().length > 0,
      execute: async () => {
        const nb = followed;
        const cells = badges.staleCells();
        if (nb && cells.length) {
          await NotebookActions.runCells(nb.content, cells, nb.sessionContext);
        }
      }
    });
    model.onChange(() => {
      for (const id of [COMMANDS.undo, COMMANDS.redo, COMMANDS.rollback, COMMANDS.follow]) {
        commands.notifyCommandChanged(id);
      }
    });

    panel = new SandboxPanel(model, commands);
    panel.id = 'sandbox-magic-panel';
    panel.title.icon = listIcon;
    app.shell.add(panel, 'right', { rank: 600 });

    app.contextMenu.addItem({
      command: COMMANDS.rollback,
      selector: '.jp-SandboxPanel-version',
      rank: 1
    });
    app.contextMenu.addItem({
      command: COMMANDS.follow,
      selector: '.jp-SandboxPanel-listArea',
      rank: 2
    });
    if (palette) {
      for (const command of Object.values(COMMANDS)) {
        palette.addItem({ command, category: CATEGORY });
      }
    }

    const connector = new KernelConnector(model, badges);
    const showName = () => {
      const path = followed?.context.path ?? '';
      model.setNotebook(path.split('/').pop() ?? '', path);
    };
    const onCurrent = (nb: NotebookPanel | null) => {
      followed?.context.pathChanged.disconnect(showName);
      followed = nb;
      nb?.context.pathChanged.connect(showName);
      showName();
      badges.follow(nb);
      connector.follow(nb ? nb.sessionContext : null);
    };
    tracker.widgetAdded.connect((_, nb) => {
      nb.toolbar.insertItem(
        10,
        'sandbox-rerun-stale',
        new CommandToolbarButton({ commands, id: COMMANDS.rerunStale, label: '' })
      );
    });
    tracker.currentChanged.connect((_, nb) => onCurrent(nb));
    onCurrent(tracker.currentWidget);
  }
};

export default plugin;
