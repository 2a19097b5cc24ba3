/**
 * sandbox-magic JupyterLab extension: a sidebar with the version history of
 * the active notebook kernel's sandboxes, updated live over a comm.
 */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ISessionContext } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { listIcon } from '@jupyterlab/ui-components';

import { SandboxClient } from './client';
import { HistoryModel } from './model';
import { SandboxPanel } from './panel';
import { FRONTEND_TARGET, KERNEL_TARGET } from './protocol';

/** Keeps one comm open to the kernel of the notebook the user is looking at. */
class KernelConnector {
  constructor(private model: HistoryModel) {}

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
      }
    } catch {
      this.comm = null;
      this.model.detach('not-loaded', name);
    } finally {
      this.opening = false;
    }
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'sandbox-magic:plugin',
  description: 'Version history, diffs and rollback of sandbox-magic modules.',
  autoStart: true,
  requires: [INotebookTracker, ILabShell],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, labShell: ILabShell) => {
    const model = new HistoryModel();
    const panel = new SandboxPanel(model);
    panel.id = 'sandbox-magic-panel';
    panel.title.icon = listIcon;
    labShell.add(panel, 'right', { rank: 600 });
    const connector = new KernelConnector(model);
    tracker.currentChanged.connect((_, nb) => connector.follow(nb ? nb.sessionContext : null));
    connector.follow(tracker.currentWidget ? tracker.currentWidget.sessionContext : null);
  }
};

export default plugin;
