import { describe, expect, it } from "vitest"
import { backoffDelay, conflictDelay } from "../src/lib/backoff"

const options = { initialMs: 100, maxMs: 1000 }

describe("backoffDelay", () => {
  it("doubles its ceiling per attempt up to the maximum", () => {
    const ceilings = [0, 1, 2, 3, 4, 50].map((attempt) => backoffDelay(attempt, options, () => 1))
    expect(ceilings).toEqual([100, 200, 400, 800, 1000, 1000])
  })

  it("keeps half of the ceiling fixed and jitters the other half", () => {
    expect(backoffDelay(2, options, () => 0)).toBe(200)
    expect(backoffDelay(2, options, () => 0.5)).toBe(300)
  })
})

describe("conflictDelay", () => {
  it("does not wait after a first conflict", () => {
    expect(conflictDelay(0, options, () => 1)).toBe(0)
    expect(conflictDelay(1, options, () => 1)).toBe(0)
  })

  it("doubles its ceiling from the second conflict in a row, up to the maximum", () => {
    const ceilings = [2, 3, 4, 5, 6, 1000].map((conflicts) => conflictDelay(conflicts, options, () => 1))
    expect(ceilings).toEqual([100, 200, 400, 800, 1000, 1000])
  })

  it("draws the whole delay at random (full jitter), 50 ms to 2 s by default", () => {
    expect(conflictDelay(3, options, () => 0)).toBe(0)
    expect(conflictDelay(3, options, () => 0.25)).toBe(50)
    expect(conflictDelay(2, undefined, () => 1)).toBe(50)
    expect(conflictDelay(60, undefined, () => 1)).toBe(2000)
  })
})
