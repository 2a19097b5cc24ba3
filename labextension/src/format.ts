/**
 * How the panel words and orders what the kernel sends: relative times, where
 * a version came from, and the rows of the version list (versions and failed
 * attempts, newest first).  Pure functions, tested without a DOM.
 */
import { IFailedAttempt, IFollowing, IHistory, IVersionRow } from './protocol';

export type ListRow =
  { kind: 'version'; row: IVersionRow } | { kind: 'failed'; failure: IFailedAttempt };

/** "just now", "40 s ago", "5 min ago", "3 h ago", "yesterday", "4 days ago", else the date. */
export function relativeTime(iso: string, now: number = Date.now()): string {
  const t = Date.parse(iso);
  if (isNaN(t)) {
    return iso;
  }
  const s = Math.round((now - t) / 1000);
  if (s < 10) {
    return 'just now';
  }
  if (s < 60) {
    return `${s} s ago`;
  }
  const m = Math.floor(s / 60);
  if (m < 60) {
    return `${m} min ago`;
  }
  const h = Math.floor(m / 60);
  if (h < 24) {
    return `${h} h ago`;
  }
  const d = Math.floor(h / 24);
  if (d < 7) {
    return d === 1 ? 'yesterday' : `${d} days ago`;
  }
  return new Date(t).toLocaleDateString();
}

/** The exact local date and time, for tooltips. */
export function exactTime(iso: string): string {
  const t = new Date(iso);
  if (isNaN(t.getTime())) {
    return iso;
  }
  return t.toLocaleString([], {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit'
  });
}

const ORIGINS: Record<string, string> = {
  cell: 'cell',
  api: 'API call',
  rollback: 'rollback',
  undo: 'undo',
  redo: 'redo',
  restore: 'restore',
  teacher: 'teacher'
};

/** Where a version came from, short: "cell", "undo", "cell · migrate". */
export function originLabel(row: IVersionRow): string {
  const parts: string[] = [];
  if (row.origin) {
    parts.push(ORIGINS[row.origin] ?? row.origin);
  }
  if (row.state_handler) {
    parts.push(row.state_handler);
  }
  return parts.join(' · ');
}

/** The same in full words, for the row's tooltip. */
export function rowTooltip(row: IVersionRow): string {
  const lines = [
    `v${row.version}${row.current ? ' (current)' : ''}, recorded ${exactTime(row.loaded_at)}`,
    `checksum ${row.checksum}; +${row.added} −${row.removed} lines against the version before`
  ];
  if (row.origin) {
    const how: Record<string, string> = {
      cell: 'a %%sandbox_reload cell',
      api: 'a call of the Python API',
      rollback: 'a rollback',
      undo: 'an undo',
      redo: 'a redo',
      restore: 'restoring the sandbox from its stored history',
      teacher: "a followed teacher's version"
    };
    const at = row.origin_at ? ` at ${exactTime(row.origin_at)}` : '';
    lines.push(`last made current by ${how[row.origin] ?? row.origin}${at}`);
  }
  if (row.state_handler) {
    lines.push(`state migrated by ${row.state_handler}`);
  }
  return lines.join('\n');
}

/** The class of a diff line by its marker: added, removed, or unchanged (''). */
export function lineClass(mark: string): string {
  return mark === '+' ? 'jp-mod-added' : mark === '-' ? 'jp-mod-removed' : '';
}

/** "following the teacher (teacher's v4 applied)": the one-line note of a following sandbox. */
export function followingNote(f: IFollowing): string {
  const parts: string[] = [];
  if (f.applied !== null) {
    parts.push(`teacher's v${f.applied} applied`);
  }
  if (f.auto) {
    parts.push('new versions applied at once');
  }
  return parts.length ? `following the teacher (${parts.join(', ')})` : 'following the teacher';
}

/** The list's rows: versions newest first, each failed attempt where it happened in time. */
export function listRows(history: IHistory): ListRow[] {
  const failed = [...history.failed].sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
  const out: ListRow[] = [];
  let f = 0;
  for (const row of history.versions) {
    const created = Date.parse(row.loaded_at);
    while (f < failed.length && Date.parse(failed[f].at) > created) {
      out.push({ kind: 'failed', failure: failed[f++] });
    }
    out.push({ kind: 'version', row });
  }
  while (f < failed.length) {
    out.push({ kind: 'failed', failure: failed[f++] });
  }
  return out;
}

/** "Not saved to disk: <why>; ...", or '' when the history is saved. */
export function unsavedNote(history: IHistory): string {
  return history.unsaved
    ? `Not saved to disk: ${history.unsaved}. New versions are kept in the kernel's ` +
        'memory and written when the store can be written again.'
    : '';
}

/** "7 older versions were dropped (max_versions=10)", or '' when none were. */
export function droppedNote(history: IHistory): string {
  const n = history.dropped;
  if (!n) {
    return '';
  }
  const limit = history.max_versions ? ` (max_versions=${history.max_versions})` : '';
  return n === 1
    ? `1 older version was dropped${limit}`
    : `${n} older versions were dropped${limit}`;
}
