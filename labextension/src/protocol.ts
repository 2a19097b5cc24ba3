/**
 * Protocol 1 between the panel and the kernel (see labextension/PROTOCOL.md).
 * Everything arriving from the kernel is validated here before use.
 */

export const PROTOCOL = 1;
export const KERNEL_TARGET = 'sandbox_magic';
export const FRONTEND_TARGET = 'sandbox_magic.panel';

export interface ISandboxSummary {
  id: string;
  modules: Record<string, number>;
  stored_modules: Record<string, number>;
  /** False when only the store holds its history (after a kernel restart). */
  loaded: boolean;
  /** Where its code runs: kernel, process, cluster ('kernel' from older kernels). */
  host: string;
  /** A cluster sandbox's number of engines (0 otherwise). */
  engines: number;
  /** A following sandbox: module -> the teacher's version waiting ({} otherwise). */
  teacher_waiting: Record<string, number>;
}

export interface IVersionRow {
  version: number;
  loaded_at: string;
  checksum: string;
  added: number;
  removed: number;
  state_handler: string | null;
  current: boolean;
  /** What last made it current in this kernel: cell, api, rollback, undo, redo, restore,
   * teacher (a followed teacher's version). */
  origin: string | null;
  origin_at: string | null;
}

export interface IFailedAttempt {
  at: string;
  message: string;
  state_handler: string | null;
}

export interface IHistory {
  sandbox: string;
  module: string;
  versions: IVersionRow[];
  /** The version undo / redo would make current; null: nothing; undefined: an older kernel. */
  undo_to?: number | null;
  redo_to?: number | null;
  /** Versions no longer retained, and the retention (null: all kept, or not known). */
  dropped: number;
  max_versions: number | null;
  /** Failed reloads this kernel saw, newest first. */
  failed: IFailedAttempt[];
  /** Why new versions are kept in memory only (the store cannot be written); null: saved. */
  unsaved: string | null;
  /** The teacher's published history this sandbox follows; null: it follows none. */
  following: IFollowing | null;
  /** The teacher's version of this module waiting to be applied; null: none waits. */
  teacher: ITeacherOffer | null;
}

/** A sandbox following a teacher's published history. */
export interface IFollowing {
  /** The published store it reads. */
  path: string;
  /** New teacher versions are applied at once (else they wait for Apply or Skip). */
  auto: boolean;
  /** The teacher's version of this module applied here (null: none, or an own edit since). */
  applied: number | null;
}

/** The teacher's version of a module, waiting, and what it changes here. */
export interface ITeacherOffer {
  /** The teacher's version number (not one of this sandbox's). */
  version: number;
  /** The state handler the teacher's reload ran; it runs here when applied. */
  state_handler: string | null;
  /** The version here the diff starts from (null: the module has none here). */
  current: number | null;
  added: number;
  removed: number;
  lines: [string, string][];
}

/** What follow_apply / follow_skip did: one line per module, and the teacher's version
 * of the module now applied here. */
export interface IFollowResult {
  lines: string[];
  applied: number | null;
}

export interface IDiff {
  v1: number;
  v2: number;
  added: number;
  removed: number;
  lines: [string, string][];
}

export interface IActionResult {
  module: string;
  status: string;
  old_version: number | null;
  new_version: number | null;
  migrated: number;
  /** Modules loaded from the stored history before the action (sandbox not loaded). */
  restored: Record<string, number>;
}

/** One version's value of a probe expression (run in a scratch copy of the sandbox). */
export interface IProbeValue {
  version: number;
  /** The value's repr, or "Type: message" when the version or the expression raised. */
  value: string;
  error: boolean;
}

export interface IProbe {
  expr: string;
  values: IProbeValue[];
}

export interface IChangedEvent {
  protocol: number;
  event: 'changed';
  kind: string;
  sandbox: string;
  module: string | null;
  version: number | null;
}

export class ProtocolError extends Error {
  constructor(
    readonly code: string,
    message: string
  ) {
    super(message);
  }
}

type Json = unknown;

function isObject(v: Json): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isInt(v: Json): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

function isVersionMap(v: Json): v is Record<string, number> {
  return isObject(v) && Object.values(v).every(isInt);
}

function isOptional(v: Json, check: (x: Json) => boolean): boolean {
  return v === undefined || v === null || check(v);
}

function isString(v: Json): boolean {
  return typeof v === 'string';
}

function fail(what: string): never {
  throw new ProtocolError('bad_reply', `malformed ${what} from the kernel`);
}

export function parseSandboxes(result: Json): ISandboxSummary[] {
  if (!isObject(result) || !Array.isArray(result.sandboxes)) {
    fail('sandbox list');
  }
  return (result.sandboxes as Json[]).map(s => {
    if (
      !isObject(s) ||
      typeof s.id !== 'string' ||
      !isVersionMap(s.modules) ||
      !isVersionMap(s.stored_modules) ||
      !(s.loaded === undefined || typeof s.loaded === 'boolean') ||
      !isOptional(s.host, isString) ||
      !isOptional(s.engines, isInt) ||
      !isOptional(s.teacher_waiting, isVersionMap)
    ) {
      fail('sandbox entry');
    }
    return {
      id: s.id as string,
      modules: s.modules as Record<string, number>,
      stored_modules: s.stored_modules as Record<string, number>,
      loaded: s.loaded !== false, // kernels before "loaded" listed loaded sandboxes only
      host: (s.host as string | undefined) ?? 'kernel',
      engines: (s.engines as number | undefined) ?? 0,
      teacher_waiting: (s.teacher_waiting as Record<string, number> | null | undefined) ?? {}
    };
  });
}

/** A history; fields added later (origin, undo_to, failed...) may be missing (older kernels). */
export function parseHistory(result: Json): IHistory {
  if (
    !isObject(result) ||
    typeof result.sandbox !== 'string' ||
    typeof result.module !== 'string' ||
    !Array.isArray(result.versions) ||
    !isOptional(result.undo_to, isInt) ||
    !isOptional(result.redo_to, isInt) ||
    !isOptional(result.dropped, isInt) ||
    !isOptional(result.max_versions, isInt) ||
    !(result.failed === undefined || Array.isArray(result.failed)) ||
    !isOptional(result.unsaved, isString)
  ) {
    fail('history');
  }
  const following = parseFollowing(result.following);
  const teacher = parseTeacher(result.teacher);
  const versions = (result.versions as Json[]).map((v): IVersionRow => {
    if (
      !isObject(v) ||
      !isInt(v.version) ||
      typeof v.loaded_at !== 'string' ||
      typeof v.checksum !== 'string' ||
      !isInt(v.added) ||
      !isInt(v.removed) ||
      !(v.state_handler === null || typeof v.state_handler === 'string') ||
      typeof v.current !== 'boolean' ||
      !isOptional(v.origin, isString) ||
      !isOptional(v.origin_at, isString)
    ) {
      fail('version row');
    }
    return {
      version: v.version as number,
      loaded_at: v.loaded_at as string,
      checksum: v.checksum as string,
      added: v.added as number,
      removed: v.removed as number,
      state_handler: v.state_handler as string | null,
      current: v.current as boolean,
      origin: (v.origin as string | undefined) ?? null,
      origin_at: (v.origin_at as string | undefined) ?? null
    };
  });
  const failed = ((result.failed as Json[] | undefined) ?? []).map((f): IFailedAttempt => {
    if (
      !isObject(f) ||
      typeof f.at !== 'string' ||
      typeof f.message !== 'string' ||
      !isOptional(f.state_handler, isString)
    ) {
      fail('failed attempt');
    }
    return {
      at: f.at as string,
      message: f.message as string,
      state_handler: (f.state_handler as string | undefined) ?? null
    };
  });
  const history: IHistory = {
    sandbox: result.sandbox as string,
    module: result.module as string,
    versions,
    dropped: (result.dropped as number | undefined) ?? 0,
    max_versions: (result.max_versions as number | undefined) ?? null,
    failed,
    unsaved: (result.unsaved as string | null | undefined) ?? null,
    following,
    teacher
  };
  if (result.undo_to !== undefined) {
    history.undo_to = result.undo_to as number | null;
  }
  if (result.redo_to !== undefined) {
    history.redo_to = result.redo_to as number | null;
  }
  return history;
}

/** Diff lines: [" " | "+" | "-", text] each. */
function parseLines(lines: Json): [string, string][] {
  if (!Array.isArray(lines)) {
    fail('diff lines');
  }
  return (lines as Json[]).map(l => {
    if (
      !Array.isArray(l) ||
      l.length !== 2 ||
      !['+', '-', ' '].includes(l[0] as string) ||
      typeof l[1] !== 'string'
    ) {
      fail('diff line');
    }
    return [l[0], l[1]] as [string, string];
  });
}

/** The history's `following` (missing or null: it follows nothing, or an older kernel). */
function parseFollowing(f: Json): IFollowing | null {
  if (f === undefined || f === null) {
    return null;
  }
  if (
    !isObject(f) ||
    typeof f.path !== 'string' ||
    typeof f.auto !== 'boolean' ||
    !isOptional(f.applied, isInt)
  ) {
    fail('following');
  }
  return {
    path: f.path as string,
    auto: f.auto as boolean,
    applied: (f.applied as number | null | undefined) ?? null
  };
}

/** The history's `teacher` (missing or null: no teacher version waits). */
function parseTeacher(t: Json): ITeacherOffer | null {
  if (t === undefined || t === null) {
    return null;
  }
  if (
    !isObject(t) ||
    !isInt(t.version) ||
    !isOptional(t.state_handler, isString) ||
    !isOptional(t.current, isInt) ||
    !isInt(t.added) ||
    !isInt(t.removed)
  ) {
    fail('teacher version');
  }
  return {
    version: t.version as number,
    state_handler: (t.state_handler as string | null | undefined) ?? null,
    current: (t.current as number | null | undefined) ?? null,
    added: t.added as number,
    removed: t.removed as number,
    lines: parseLines(t.lines)
  };
}

export function parseDiff(result: Json): IDiff {
  if (
    !isObject(result) ||
    !isInt(result.v1) ||
    !isInt(result.v2) ||
    !isInt(result.added) ||
    !isInt(result.removed) ||
    !Array.isArray(result.lines)
  ) {
    fail('diff');
  }
  const lines = parseLines(result.lines);
  return {
    v1: result.v1 as number,
    v2: result.v2 as number,
    added: result.added as number,
    removed: result.removed as number,
    lines
  };
}

export function parseAction(result: Json): IActionResult {
  if (
    !isObject(result) ||
    typeof result.module !== 'string' ||
    typeof result.status !== 'string' ||
    !(result.new_version === null || isInt(result.new_version)) ||
    !(result.restored === undefined || isVersionMap(result.restored))
  ) {
    fail('action result');
  }
  return {
    ...(result as unknown as IActionResult),
    restored: (result.restored as Record<string, number> | undefined) ?? {}
  };
}

export function parseFollowResult(result: Json): IFollowResult {
  if (
    !isObject(result) ||
    !Array.isArray(result.lines) ||
    !result.lines.every(isString) ||
    !isOptional(result.applied, isInt)
  ) {
    fail('follow result');
  }
  return {
    lines: result.lines as string[],
    applied: (result.applied as number | null | undefined) ?? null
  };
}

export function parseProbe(result: Json): IProbe {
  if (!isObject(result) || typeof result.expr !== 'string' || !Array.isArray(result.values)) {
    fail('probe result');
  }
  const values = (result.values as Json[]).map(v => {
    if (!isObject(v) || !isInt(v.version) || !isString(v.value) || typeof v.error !== 'boolean') {
      fail('probe value');
    }
    return { version: v.version as number, value: v.value as string, error: v.error as boolean };
  });
  return { expr: result.expr as string, values };
}

export function parseEvent(data: Json): IChangedEvent | null {
  if (
    !isObject(data) ||
    data.protocol !== PROTOCOL ||
    data.event !== 'changed' ||
    typeof data.kind !== 'string' ||
    typeof data.sandbox !== 'string'
  ) {
    return null;
  }
  return {
    protocol: PROTOCOL,
    event: 'changed',
    kind: data.kind as string,
    sandbox: data.sandbox as string,
    module: typeof data.module === 'string' ? data.module : null,
    version: isInt(data.version) ? data.version : null
  };
}

/** A sandbox module whose code a cell ran, at `version` (null: no longer retained). */
export interface IRanModule {
  sandbox: string;
  module: string;
  version: number | null;
}

/** Which sandbox code one cell ran (the `ran` event, and each entry of the `ran` reply). */
export interface IRan {
  execution_count: number | null;
  cell_id: string | null;
  modules: IRanModule[];
}

const NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,199}$/;

/** The modules of a `ran` record, or null when malformed. */
export function parseRanModules(data: Json): IRanModule[] | null {
  if (!Array.isArray(data) || data.length > 1000) {
    return null;
  }
  const out: IRanModule[] = [];
  for (const m of data) {
    if (
      !isObject(m) ||
      typeof m.sandbox !== 'string' ||
      typeof m.module !== 'string' ||
      !NAME.test(m.sandbox) ||
      !NAME.test(m.module) ||
      !(m.version === null || isInt(m.version))
    ) {
      return null;
    }
    out.push({ sandbox: m.sandbox, module: m.module, version: m.version as number | null });
  }
  return out;
}

function parseRanRecord(data: Json): IRan | null {
  if (!isObject(data)) {
    return null;
  }
  const modules = parseRanModules(data.modules);
  const count = data.execution_count;
  const cell = data.cell_id;
  if (
    !modules ||
    !(count === null || count === undefined || isInt(count)) ||
    !(cell === null || cell === undefined || (typeof cell === 'string' && cell.length <= 200))
  ) {
    return null;
  }
  return {
    execution_count: isInt(count) ? count : null,
    cell_id: typeof cell === 'string' ? cell : null,
    modules
  };
}

/** The `ran` event (a cell ran sandbox code), or null for any other message. */
export function parseRanEvent(data: Json): IRan | null {
  if (!isObject(data) || data.protocol !== PROTOCOL || data.event !== 'ran') {
    return null;
  }
  return parseRanRecord(data);
}

/** The `ran` reply: the newest cells that ran sandbox code. */
export function parseRuns(result: Json): IRan[] {
  if (!isObject(result) || !Array.isArray(result.runs)) {
    throw new ProtocolError('bad_reply', 'malformed ran reply');
  }
  return result.runs.map(r => {
    const run = parseRanRecord(r);
    if (!run) {
      throw new ProtocolError('bad_reply', 'malformed ran reply');
    }
    return run;
  });
}

export interface IReply {
  id: number | string;
  ok: boolean;
  result?: Json;
  error?: { code: string; message: string };
}

/** A reply, or null when the message is not a well-formed reply. */
export function parseReply(data: Json): IReply | null {
  if (!isObject(data) || data.protocol !== PROTOCOL || !('ok' in data)) {
    return null;
  }
  if (!(isInt(data.id) || typeof data.id === 'string') || typeof data.ok !== 'boolean') {
    return null;
  }
  if (!data.ok) {
    const e = data.error;
    if (!isObject(e) || typeof e.code !== 'string' || typeof e.message !== 'string') {
      return null;
    }
    return { id: data.id, ok: false, error: { code: e.code, message: e.message } };
  }
  return { id: data.id, ok: true, result: data.result };
}
