import react from "@vitejs/plugin-react"
import { defineConfig } from "vitest/config"

/** `npm run dev` proxies the server's endpoints to a `python -m server` on the default port. */
const server = "http://127.0.0.1:8000"

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: {
      "/ws": { target: server, ws: true },
      "/state": server,
    },
  },
  test: {
    include: ["test/**/*.test.{ts,tsx}"],
  },
})
