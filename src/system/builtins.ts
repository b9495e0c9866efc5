// The runtime's node built-ins, each loaded at its first use rather than
// imported. A bundle hoists every static import to its top, so one
// `import ... from "node:fs"` in any module loads node:fs at every start,
// `-version`'s and every worker's included, and the first node built-in a
// start loads costs it more than all of socket's own modules
// (docs/DESIGN.md, "The start"). Type-only imports cost nothing and stay.
// test/startup.test.ts holds that no module imports a built-in statically.
/** `load`'s module, loaded at the first call and kept. */
function builtin<T>(load: () => T): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= load());
}

export const fs = builtin(() => process.getBuiltinModule("node:fs"));
export const nodePath = builtin(() => process.getBuiltinModule("node:path"));
export const os = builtin(() => process.getBuiltinModule("node:os"));
export const util = builtin(() => process.getBuiltinModule("node:util"));
