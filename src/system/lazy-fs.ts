// node:fs, required at its first use rather than imported. The bundler
// loads an imported built-in with the chunk that imports it, and loading
// node:fs costs about 1.2 ms of CPU: an eighth of a pool worker's start,
// which needs none of it before it serves (docs/DESIGN.md, "The start").
// The modules a worker loads at start take node:fs through here; the
// master's and the command line's may import it.
type NodeFs = typeof import("node:fs");

export const fs = (): NodeFs => require("node:fs") as NodeFs;
