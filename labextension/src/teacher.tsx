/**
 * A sandbox that follows a teacher's published history: the teacher's next
 * version of the shown module, when one waits ("v5 from the teacher  +3 −1
 * [Apply] [Skip]" and what it changes against the version here), else a
 * one-line note that the sandbox follows the teacher.  Text from the kernel
 * goes in as React text, never HTML.
 */
import { Button, ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { followingNote, lineClass } from './format';
import { HistoryModel } from './model';

export const OFFER_HEADING = 'sandbox-magic-teacher-heading';

export class TeacherOffer extends ReactWidget {
  /** Called when an action removed the button that had the keyboard focus. */
  focusAfter: () => void = () => {};

  constructor(private model: HistoryModel) {
    super();
    this.addClass('jp-SandboxPanel-teacherArea');
  }

  /** Nothing to show: the module's sandbox follows no teacher. */
  get isEmpty(): boolean {
    return !this.model.history || (!this.model.teacher && !this.model.following);
  }

  private async act(action: () => Promise<void>): Promise<void> {
    const hadFocus = this.node.contains(document.activeElement);
    await action();
    const now = document.activeElement;
    if (hadFocus && (now === null || now === document.body || !now.isConnected)) {
      this.focusAfter();
    }
  }

  protected render(): React.ReactElement | null {
    const m = this.model;
    const offer = m.teacher;
    const following = m.following;
    if (!m.history) {
      return null;
    }
    if (!offer) {
      if (!following) {
        return null;
      }
      return (
        <p
          className="jp-SandboxPanel-followNote"
          title={
            `This sandbox follows the teacher's history published at ${following.path}; ` +
            (following.auto
              ? "the teacher's new versions are applied here at once"
              : "the teacher's new versions wait here until you apply or skip them")
          }
        >
          {followingNote(following)}
        </p>
      );
    }
    const v = `v${offer.version}`;
    const against =
      offer.current !== null ? `against v${offer.current} here` : 'new here: no version yet';
    return (
      <section className="jp-SandboxPanel-teacher" aria-labelledby={OFFER_HEADING}>
        <div className="jp-SandboxPanel-teacherHead">
          <h3
            id={OFFER_HEADING}
            className="jp-SandboxPanel-teacherTitle"
            title={`The teacher's ${v} of ${m.module} waits to be applied in ${m.sandbox}`}
          >
            {`${v} from the teacher`}
          </h3>
          <span className="jp-SandboxPanel-teacherStat">
            <span className="jp-SandboxPanel-added" title={`${offer.added} lines added`}>
              {`+${offer.added}`}
            </span>{' '}
            <span className="jp-SandboxPanel-removed" title={`${offer.removed} lines removed`}>
              {`−${offer.removed}`}
            </span>
          </span>
          {offer.state_handler ? (
            <span
              className="jp-SandboxPanel-teacherHandler"
              title={`Applying it runs the teacher's state handler ${offer.state_handler} on this kernel's objects`}
            >
              {`migrated by ${offer.state_handler}`}
            </span>
          ) : null}
        </div>
        <div className="jp-SandboxPanel-teacherActions">
          <Button
            small
            className="jp-SandboxPanel-apply"
            aria-label={`Apply the teacher's ${v}`}
            title={`Load the teacher's ${v} of ${m.module} here as a new version (if it fails here, nothing changes)`}
            disabled={m.busy}
            onClick={() => void this.act(() => m.applyTeacher())}
          >
            Apply
          </Button>
          <Button
            small
            className="jp-SandboxPanel-skip"
            aria-label={`Skip the teacher's ${v}`}
            title={`Leave the teacher's ${v} unapplied; the teacher's next version will be offered`}
            disabled={m.busy}
            onClick={() => void this.act(() => m.skipTeacher())}
          >
            Skip
          </Button>
          <span className="jp-SandboxPanel-teacherAgainst">{against}</span>
        </div>
        <pre
          className="jp-SandboxPanel-teacherDiff"
          aria-label={`What the teacher's ${v} changes, ${against}`}
          tabIndex={0}
        >
          {offer.lines.length ? (
            offer.lines.map(([mark, text], i) => (
              <div key={i} className={`jp-SandboxPanel-line ${lineClass(mark)}`}>
                {`${mark} ${text}`}
              </div>
            ))
          ) : (
            <div className="jp-SandboxPanel-line jp-SandboxPanel-nodiff">
              The same code as the version here.
            </div>
          )}
        </pre>
      </section>
    );
  }
}
