// node:fs, required at its first use rather than imported. In a bundle
// split into chunks an imported built-in is loaded with the chunk that
// imports it, and node:fs costs about 1.2 ms of CPU: an eighth of a pool
// worker's start. One bundle (what ships: docs/DESIGN.md, "The start")
// loads every module's built-ins at start, so this waits for splitting.
// The modules a worker loads at start take node:fs through here; the
// master's and the command line's may import it.
type NodeFs = typeof import("node:fs");

export const fs = (): NodeFs => require("node:fs") as NodeFs;
