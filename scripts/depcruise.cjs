// The layers of src/ (docs/ARCHITECTURE.md draws them), checked by
// dependency-cruiser in `npm test`: each layer imports only the layers
// below it, and nothing is in an import cycle (type imports count: two
// modules in a cycle cannot be read or changed apart).
const BASE = "src/(fatal|version|options)\\.ts$";
/** `to` paths of src/ outside the given folders and the base modules. */
const outside = (...folders) => ({ path: "^src/", pathNot: [`^${BASE}`, ...folders.map((f) => `^src/${f}/`)] });

/** A gateway's two engines (pool workers' blocking calls, Bun's loop) share the request core and I/O helpers, never each other. */
function engineRule(from, to) {
  return {
    name: `${from}-engine-never-reaches-${to}`,
    severity: "error",
    comment: "a gateway's two engines share the request core and I/O helpers, never each other",
    from: { path: `-${from}\\.ts$` },
    to: { path: `-${to}\\.ts$`, reachable: true },
  };
}

module.exports = {
  forbidden: [
    { name: "no-cycles", severity: "error", comment: "a cycle joins modules that should be read apart", from: {}, to: { circular: true } },
    { name: "base-imports-nothing-of-src", severity: "error", from: { path: `^${BASE}` }, to: outside() },
    { name: "system-stays-at-the-bottom", severity: "error", from: { path: "^src/system/" }, to: outside("system") },
    { name: "net-uses-only-system", severity: "error", from: { path: "^src/net/" }, to: outside("net", "system") },
    {
      name: "connection-never-imports-upward",
      severity: "error",
      comment: "serving a connection knows nothing of protocols, pools, servers or the command line",
      from: { path: "^src/connection/" },
      to: outside("connection", "net", "system"),
    },
    {
      name: "request-core-does-no-io",
      severity: "error",
      comment: "a request's rules (records, variables, environment, --cgi-root) know no socket, loop or process: only the program's words, the log and the runtime's built-ins (--cgi-root's stat and realpath), which system/builtins.ts loads",
      from: { path: "^src/request/" },
      to: { path: "^src/", pathNot: [`^${BASE}`, "^src/request/", "^src/connection/command\\.ts$", "^src/system/log\\.ts$", "^src/system/builtins\\.ts$"] },
    },
    { name: "gateway-uses-only-request-connection-and-below", severity: "error", from: { path: "^src/gateway/" }, to: outside("gateway", "request", "connection", "net", "system") },
    engineRule("blocking", "evented"),
    engineRule("evented", "blocking"),
    { name: "cli-uses-only-connection-and-below", severity: "error", from: { path: "^src/cli/" }, to: outside("cli", "connection", "net", "system") },
    { name: "server-is-not-a-pool-or-client", severity: "error", from: { path: "^src/server/" }, to: { path: "^src/(pool|client)/" } },
    { name: "pool-is-not-a-server-or-client", severity: "error", from: { path: "^src/pool/" }, to: { path: "^src/(server|client)/" } },
    { name: "client-is-not-a-server", severity: "error", from: { path: "^src/client/" }, to: { path: "^src/(server|pool|gateway)/" } },
    {
      name: "master-never-reaches-a-gateway",
      severity: "error",
      comment: "the master keeps workers; only workers speak SCGI or FastCGI",
      from: { path: "^src/pool/(master|run-pool|succession|worker-process|policy)\\.ts$" },
      to: { path: "^src/gateway/", reachable: true },
    },
    {
      name: "nothing-imports-an-entry",
      severity: "error",
      comment: "only entry.ts loads main.ts (the command line) or worker-main.ts (a pool worker), by dynamic import: evaluated only on its path",
      from: { path: "^src/", pathNot: "^src/entry\\.ts$" },
      to: { path: "^src/(entry|main|worker-main)\\.ts$" },
    },
    { name: "src-never-imports-tests-or-scripts", severity: "error", from: { path: "^src/" }, to: { path: "^(test|scripts)/" } },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
  },
};
