// A pool worker's program, loaded by entry.ts when the master started this
// executable with --pool-worker and a configuration: a worker loads the
// worker's code only (no parser, master, client or help text; a gateway's
// engines only when it serves one, pool/worker.ts).
import { takeWorkerConfig } from "./pool/protocol.ts";
import { startWorker } from "./pool/worker.ts";
import { fail, survive } from "./system/failure.ts";
import { NO_LAZY_THREADS } from "./system/threads.ts";

async function main(): Promise<void> {
  // Taken out of the environment: the worker's programs must not see it.
  const config = takeWorkerConfig(process.env);
  if (config === undefined) throw new Error("started as a worker without a configuration");
  for (const name of Object.keys(NO_LAZY_THREADS)) delete process.env[name];
  survive(true);
  await startWorker(config);
}

main().catch(fail);
