/**
 * The one error type of the sync client.
 *
 * `code` is either a code the server sent (see the protocol: `invalid`, `conflict`, `forbidden`,
 * `too_large`, `rate_limited`, `unauthorized`, `unavailable`, `not_found`, `gone`, ...) or one
 * raised by the client itself:
 * - `protocol`: the server sent a frame this client cannot understand (it then resyncs);
 * - `recipe_failed`: a pending change threw when re-run on newer server state (it is dropped).
 * A change dropped after its conflict retries ran out is reported with code `conflict`.
 */
export class SyncError extends Error {
  override readonly name = "SyncError"
  readonly code: string

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}
