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
  const ceiling = Math.min(options.maxMs, options.initialMs * 2 ** attempt)
  return ceiling / 2 + (random() * ceiling) / 2
}
