// The project's own SyncClient (client_demo/src/lib/syncClient.ts and its imports, immer
// included) bundled for Node with rolldown from client_demo/node_modules, at run time.
//
// The bundle goes to the OS temp directory (never into the repository), named after a hash of
// the sources and of the immer and rolldown versions, so it is rebuilt exactly when the client
// changes and shared by concurrent runs (written to a temporary name, then renamed).
//
//     const { SyncClient } = await loadSyncClient()
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const DEMO = fileURLToPath(new URL("../../client_demo/", import.meta.url));
const SRC = join(DEMO, "src");
const ENTRY = join(SRC, "lib", "syncClient.ts");

function packageVersion(name) {
  return JSON.parse(readFileSync(join(DEMO, "node_modules", name, "package.json"), "utf8")).version;
}

/** Hash of everything the bundle can be made of: client_demo/src and the two packages. */
function sourceHash() {
  const hash = createHash("sha256");
  const files = readdirSync(SRC, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath ?? entry.path, entry.name))
    .sort();
  for (const file of files) hash.update(file).update("\0").update(readFileSync(file)).update("\0");
  hash.update(`immer ${packageVersion("immer")} rolldown ${packageVersion("rolldown")}`);
  return hash.digest("hex").slice(0, 16);
}

/** Builds the bundle unless it exists; returns its path. */
export async function buildSyncClient() {
  const dir = join(tmpdir(), "immer-sync-client-bundle");
  const file = join(dir, `syncClient-${sourceHash()}.mjs`);
  if (existsSync(file)) return file;
  mkdirSync(dir, { recursive: true });
  const require = createRequire(join(DEMO, "package.json"));
  const { rolldown } = await import(pathToFileURL(require.resolve("rolldown")).href);
  const bundle = await rolldown({
    input: ENTRY,
    platform: "node",
    cwd: DEMO,
    logLevel: "warn",
    // what the demo's production build does: immer without its development-mode checks
    transform: { define: { "process.env.NODE_ENV": JSON.stringify("production") } },
  });
  const partial = `${file}.${process.pid}.tmp`;
  try {
    await bundle.write({ file: partial, format: "esm" });
  } finally {
    await bundle.close();
  }
  renameSync(partial, file);
  return file;
}

/** The bundled module: `{ SyncClient }`. */
export async function loadSyncClient() {
  return import(pathToFileURL(await buildSyncClient()).href);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  process.stdout.write(`${await buildSyncClient()}\n`);
}
