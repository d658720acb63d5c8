/**
 * The one error type of the sync client.
 *
 * `code` is either a code the server sent (see the protocol: `invalid`, `conflict`, `forbidden`,
 * `too_large`, `rate_limited`, `unauthorized`, `unavailable`, `not_found`, `gone`, ...) or one
 * raised by the client itself:
 * - `protocol`: the server sent a frame this client cannot understand (it then resyncs);
 * - `recipe_failed`: a pending change threw when re-run on newer server state (it is dropped);
 * - `superseded`: a change re-run on newer state (after a remote change or a `conflict`) no longer
 *   changes anything, so it is dropped: someone else's change made it moot.
 * A `conflict` is never reported: the change is re-run and resent until it applies.
 */
export class SyncError extends Error {
  override readonly name = "SyncError"
  readonly code: string

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}
