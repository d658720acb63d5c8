import { defineConfig } from "vitest/config"

/** End-to-end tests against a running server, started by pytest (tests/test_embedding.py). */
export default defineConfig({
  test: {
    include: ["test/e2e/**/*.e2e.ts"],
  },
})
