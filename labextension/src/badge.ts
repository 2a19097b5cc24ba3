/**
 * What a provenance badge says (no DOM here, so it is tested without a browser):
 * which version made an output, whether a newer one is current, and the cell
 * metadata that keeps it.
 */
import { IRanModule, ISandboxSummary, parseRanModules } from './protocol';

export const METADATA_KEY = 'sandbox_magic';

/** What a cell's metadata keeps: the modules its last run ran, and that run's count. */
export interface IProvenanceMetadata {
  ran: IRanModule[];
  execution_count: number | null;
}

/** The current version of every module of the kernel's sandboxes, by "sandbox.module". */
export function currentVersions(sandboxes: ISandboxSummary[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of sandboxes) {
    for (const [m, v] of Object.entries({ ...s.stored_modules, ...s.modules })) {
      out.set(`${s.id}.${m}`, v);
    }
  }
  return out;
}

/** A cell's provenance metadata, or null when it has none (or it is malformed). */
export function readMetadata(value: unknown): IProvenanceMetadata | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return null;
  }
  const v = value as Record<string, unknown>;
  const ran = parseRanModules(v.ran);
  const count = v.execution_count;
  if (!ran || !ran.length) {
    return null;
  }
  return {
    ran,
    execution_count: typeof count === 'number' && Number.isInteger(count) ? count : null
  };
}

export interface IBadge {
  text: string;
  stale: boolean;
  title: string;
}

/** What the badge of one module says, given the module's current version. */
export function badge(m: IRanModule, now: number | undefined): IBadge {
  const name = `${m.sandbox}.${m.module}`;
  const ran = m.version === null ? 'v?' : `v${m.version}`;
  const stale = now !== undefined && m.version !== null && now !== m.version;
  if (stale) {
    return {
      text: `${name} ${ran} \u2192 now v${now}`,
      stale,
      title:
        `This output was made by ${name} ${ran}; v${now} is current now. ` +
        `Open the diff ${ran} \u2192 v${now} in the Sandbox History sidebar.`
    };
  }
  return {
    text: `${name} ${ran}`,
    stale,
    title: `This output was made by ${name} ${ran}. Show its history in the sidebar.`
  };
}

/** Whether a record belongs to the cell's last run (not to an earlier one). */
export function belongsToLastRun(meta: IProvenanceMetadata, count: number | null): boolean {
  // while a cell runs its count is null; a run without sandbox code leaves a new count
  return count === null || meta.execution_count === null || count === meta.execution_count;
}
