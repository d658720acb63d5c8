/**
 * A random hex id. Uses `crypto.getRandomValues`, which (unlike `crypto.randomUUID`) also exists
 * on pages served over plain http from a non-localhost address.
 */
export function randomId(bytes = 12): string {
  const values = crypto.getRandomValues(new Uint8Array(bytes))
  return Array.from(values, (value) => value.toString(16).padStart(2, "0")).join("")
}
