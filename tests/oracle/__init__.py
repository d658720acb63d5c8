"""Node.js test clients (real Immer) and the helpers that run them from pytest."""
