export interface BackoffOptions {
  /** Ceiling of the first delay, in milliseconds. */
  readonly initialMs: number
  /** Largest ceiling, in milliseconds. */
  readonly maxMs: number
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 10_000 }

/**
 * Delay before reconnect attempt `attempt` (0 for the first): an exponentially growing ceiling,
 * capped at `maxMs`, of which half is fixed and half random ("equal jitter"), so that clients
 * dropped together by a server restart do not all come back in the same instant.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const limit = ceiling(attempt, options)
  return limit / 2 + (random() * limit) / 2
}

/** `initialMs` doubled `doublings` times, capped at `maxMs`. */
function ceiling(doublings: number, options: BackoffOptions): number {
  return Math.min(options.maxMs, options.initialMs * 2 ** doublings)
}

/** Ceiling of the first wait after repeated conflicts, and the largest, in milliseconds. */
export const CONFLICT_BACKOFF: BackoffOptions = { initialMs: 50, maxMs: 2_000 }

/**
 * Wait before resending a change that met its `conflicts`-th conflict in a row: none after the
 * first (a plain re-run usually wins), then a random delay ("full jitter") under a ceiling that
 * doubles per conflict from `initialMs` up to `maxMs`, so clients racing for the same data spread out.
 */
export function conflictDelay(
  conflicts: number,
  options: BackoffOptions = CONFLICT_BACKOFF,
  random: () => number = Math.random,
): number {
  if (conflicts < 2) return 0
  return random() * ceiling(conflicts - 2, options)
}
