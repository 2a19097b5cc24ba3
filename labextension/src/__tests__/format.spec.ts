import {
  droppedNote,
  followingNote,
  lineClass,
  listRows,
  originLabel,
  relativeTime,
  rowTooltip,
  unsavedNote
} from '../format';
import { IHistory, IVersionRow } from '../protocol';

const T0 = Date.parse('2026-01-01T12:00:00+00:00');

function at(seconds: number): string {
  return new Date(T0 + seconds * 1000).toISOString();
}

function row(version: number, seconds: number, extra: Partial<IVersionRow> = {}): IVersionRow {
  return {
    version,
    loaded_at: at(seconds),
    checksum: `c${version}`,
    added: 1,
    removed: 0,
    state_handler: null,
    current: false,
    origin: null,
    origin_at: null,
    ...extra
  };
}

function history(versions: IVersionRow[], extra: Partial<IHistory> = {}): IHistory {
  return {
    sandbox: 'demo',
    module: 'greet',
    versions,
    dropped: 0,
    max_versions: 10,
    failed: [],
    unsaved: null,
    following: null,
    teacher: null,
    ...extra
  };
}

describe('format', () => {
  it('says how long ago, in words', () => {
    const now = T0 + 1000 * 60 * 60 * 24 * 3;
    expect(relativeTime(at(0), T0 + 3000)).toBe('just now');
    expect(relativeTime(at(0), T0 + 42000)).toBe('42 s ago');
    expect(relativeTime(at(0), T0 + 5 * 60000)).toBe('5 min ago');
    expect(relativeTime(at(0), T0 + 3 * 3600000)).toBe('3 h ago');
    expect(relativeTime(at(0), T0 + 25 * 3600000)).toBe('yesterday');
    expect(relativeTime(at(0), now)).toBe('3 days ago');
    expect(relativeTime('not a time', now)).toBe('not a time');
    expect(relativeTime(at(60), T0)).toBe('just now'); // a clock a little ahead
  });

  it('names where a version came from', () => {
    expect(originLabel(row(1, 0, { origin: 'cell' }))).toBe('cell');
    expect(originLabel(row(1, 0, { origin: 'api', state_handler: 'migrate' }))).toBe(
      'API call · migrate'
    );
    expect(originLabel(row(1, 0))).toBe('');
    const tip = rowTooltip(row(2, 0, { origin: 'undo', origin_at: at(5), current: true }));
    expect(tip).toContain('v2 (current)');
    expect(tip).toContain('last made current by an undo');
    expect(originLabel(row(5, 0, { origin: 'teacher' }))).toBe('teacher');
    expect(rowTooltip(row(5, 0, { origin: 'teacher' }))).toContain(
      "last made current by a followed teacher's version"
    );
  });

  it('says in one line that a sandbox follows a teacher', () => {
    expect(followingNote({ path: '/class/x', auto: false, applied: 4 })).toBe(
      "following the teacher (teacher's v4 applied)"
    );
    expect(followingNote({ path: '/class/x', auto: true, applied: 2 })).toBe(
      "following the teacher (teacher's v2 applied, new versions applied at once)"
    );
    expect(followingNote({ path: '/class/x', auto: false, applied: null })).toBe(
      'following the teacher'
    );
  });

  it('classes diff lines by their marker', () => {
    expect(['+', '-', ' '].map(lineClass)).toEqual(['jp-mod-added', 'jp-mod-removed', '']);
  });

  it('places failed attempts among the versions where they happened', () => {
    const h = history([row(3, 30), row(2, 20), row(1, 10)], {
      failed: [
        { at: at(35), message: 'after v3', state_handler: null },
        { at: at(25), message: 'between v2 and v3', state_handler: null },
        { at: at(5), message: 'before v1', state_handler: null }
      ]
    });
    expect(
      listRows(h).map(r => (r.kind === 'version' ? `v${r.row.version}` : r.failure.message))
    ).toEqual(['after v3', 'v3', 'between v2 and v3', 'v2', 'v1', 'before v1']);
  });

  it('says when new versions are not saved to disk, and why', () => {
    expect(unsavedNote(history([]))).toBe('');
    expect(unsavedNote(history([], { unsaved: 'the folder /x was removed' }))).toBe(
      'Not saved to disk: the folder /x was removed. New versions are kept in the ' +
        "kernel's memory and written when the store can be written again."
    );
  });

  it('says how many versions retention dropped', () => {
    expect(droppedNote(history([], { dropped: 0 }))).toBe('');
    expect(droppedNote(history([], { dropped: 1 }))).toBe(
      '1 older version was dropped (max_versions=10)'
    );
    expect(droppedNote(history([], { dropped: 50, max_versions: null }))).toBe(
      '50 older versions were dropped'
    );
  });
});
