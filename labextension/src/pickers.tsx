/**
 * The panel's labelled pickers, built from JupyterLab's own components
 * (HTMLSelect, Button): the sandbox and module the panel shows, and the pair of
 * versions the diff compares, with whether that pair follows the current
 * version or is pinned.  Text from the kernel goes in as React text, never HTML.
 */
import { Button, HTMLSelect, InputGroup, ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { HistoryModel } from './model';

export const SANDBOX_SELECT = 'sandbox-magic-sandbox';
export const MODULE_SELECT = 'sandbox-magic-module';
export const DIFF_FROM = 'sandbox-magic-diff-from';
export const DIFF_TO = 'sandbox-magic-diff-to';
export const PROBE_INPUT = 'sandbox-magic-probe';

/** "Sandbox [demo ▾]  Module [greet ▾]" */
export class Pickers extends ReactWidget {
  constructor(private model: HistoryModel) {
    super();
    this.addClass('jp-SandboxPanel-pickers');
  }

  protected render(): React.ReactElement {
    const m = this.model;
    const sandboxes = m.sandboxes.map(s => ({
      value: s.id,
      label: !s.loaded
        ? `${s.id} (stored, not loaded)`
        : s.host === 'cluster'
          ? `${s.id} (cluster, ${s.engines} engine${s.engines === 1 ? '' : 's'})`
          : s.host !== 'kernel'
            ? `${s.id} (${s.host})`
            : s.id
    }));
    const waiting = m.sandboxes.find(s => s.id === m.sandbox)?.teacher_waiting ?? {};
    const modules = m.modules().map(n => ({
      value: n,
      label: n in waiting ? `${n} · teacher's v${waiting[n]} waiting` : n
    }));
    return (
      <>
        <label htmlFor={SANDBOX_SELECT}>Sandbox</label>
        <HTMLSelect
          id={SANDBOX_SELECT}
          className="jp-SandboxPanel-sandbox"
          title="The sandbox whose history is shown"
          value={m.sandbox ?? ''}
          options={sandboxes}
          onChange={e => void m.select(e.currentTarget.value)}
        />
        <label htmlFor={MODULE_SELECT}>Module</label>
        <HTMLSelect
          id={MODULE_SELECT}
          className="jp-SandboxPanel-module"
          title="The module whose versions are listed"
          value={m.module ?? ''}
          options={modules}
          onChange={e => void m.select(m.sandbox!, e.currentTarget.value)}
        />
      </>
    );
  }
}

/** "Diff [v2 ▾] → [v3 ▾]  following current | pinned [Follow current]" */
export class DiffBar extends ReactWidget {
  constructor(private model: HistoryModel) {
    super();
    this.addClass('jp-SandboxPanel-diffbar');
  }

  protected render(): React.ReactElement | null {
    const m = this.model;
    if (!m.history || !m.diffPair) {
      return null;
    }
    const versions = m.history.versions.map(v => ({ value: v.version, label: `v${v.version}` }));
    const [from, to] = m.diffPair;
    const pick = (a: number, b: number) => void m.selectDiff(a, b);
    return (
      <>
        <label htmlFor={DIFF_FROM}>Diff</label>
        <HTMLSelect
          id={DIFF_FROM}
          className="jp-SandboxPanel-from"
          aria-label="Diff from version"
          title="Diff from this version"
          value={from}
          options={versions}
          onChange={e => pick(Number(e.currentTarget.value), to)}
        />
        <span aria-hidden="true">→</span>
        <HTMLSelect
          id={DIFF_TO}
          className="jp-SandboxPanel-to"
          aria-label="Diff to version"
          title="Diff to this version"
          value={to}
          options={versions}
          onChange={e => pick(from, Number(e.currentTarget.value))}
        />
        {m.pinned ? (
          <>
            <span
              className="jp-SandboxPanel-pinned"
              title="This pair stays while new versions arrive"
            >
              pinned
            </span>
            <Button
              small
              minimal
              className="jp-SandboxPanel-follow"
              title="Show previous → current again, and follow new versions"
              onClick={() => void m.follow()}
            >
              Follow current
            </Button>
          </>
        ) : (
          <span
            className="jp-SandboxPanel-following"
            title="The diff moves to previous → current when a version arrives; pick a pair or open a row to pin one"
          >
            following current
          </span>
        )}
      </>
    );
  }
}

/** "Probe [total(3)      ] [Probe] [Clear]": a value per version, as a column of the list. */
export class ProbeBar extends ReactWidget {
  private draft = '';

  constructor(private model: HistoryModel) {
    super();
    this.addClass('jp-SandboxPanel-probebar');
  }

  protected render(): React.ReactElement | null {
    const m = this.model;
    if (!m.history) {
      return null;
    }
    const submit = (e: React.FormEvent) => {
      e.preventDefault();
      void m.runProbe(this.draft);
    };
    return (
      <form onSubmit={submit} aria-label="Probe every version">
        <label htmlFor={PROBE_INPUT}>Probe</label>
        <InputGroup
          id={PROBE_INPUT}
          className="jp-SandboxPanel-probeInput"
          type="text"
          placeholder="an expression, e.g. total(3)"
          title="Evaluated under every retained version, each in a scratch copy of the sandbox; the live sandbox is not touched"
          defaultValue={m.probe?.expr ?? this.draft}
          onChange={e => {
            this.draft = e.currentTarget.value;
          }}
        />
        <Button small type="submit" disabled={m.probing} className="jp-SandboxPanel-probeRun">
          {m.probing ? 'Probing…' : 'Probe'}
        </Button>
        {m.probe ? (
          <Button
            small
            minimal
            className="jp-SandboxPanel-probeClear"
            title={`Remove the column of ${m.probe.expr}`}
            onClick={() => m.clearProbe()}
          >
            Clear
          </Button>
        ) : null}
      </form>
    );
  }
}
