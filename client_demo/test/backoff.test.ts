import { describe, expect, it } from "vitest"
import { backoffDelay } from "../src/lib/backoff"

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
