// The `ws` package (a devDependency without bundled types), as the e2e tests use it: a
// WebSocket for Node 20, which has no global one.
declare module "ws" {
  const WebSocket: new (url: string, protocols?: string[]) => globalThis.WebSocket
  export default WebSocket
}
