// "Where the time goes": the explanation of docs/BENCHMARKS.md, with this
// run's figures filled in. The text states what was found by hand (perf,
// strace, tried and dropped designs); the figures come from the run.
import { f } from "./format.ts";
import { F_Q, NGINX_ALONE, W4_NO_Q, W4_Q as L_W4_Q } from "./launchers.ts";
import { median } from "./loadgen.ts";
import { conn, launcher, mbps, pool, rps } from "./lookups.ts";
import { TCPSERVER, W4, W4_COPY, W4_PRESTART } from "./scenarios.ts";
import type { Results } from "./types.ts";

/** What --prestart and -q changed, from this run's rows; empty when the build lacks them. */
function prestartBullet(r: Results): string {
  const w4 = conn(r, W4);
  const pre = conn(r, W4_PRESTART);
  const out: string[] = [];
  if (pre?.idle && w4?.idle) {
    out.push(`- **--prestart.** With \`cat\` already running when its connection
  arrives, the idle turnaround is ${f(pre.idle.p50, 2)} ms (p50; socket -W 4 ${f(w4.idle.p50, 2)} ms,
  the network alone ${f(r.networkFloor.p50, 2)} ms): what remains above the network is the
  worker's bridging of the connection and the program's pipes with splice(2),
  and the next program's start, which now runs after the answer. socket's own
  processes spend ${f(pre.cpu8?.server, 3)} ms CPU per connection at 8 (${f(w4.cpu8?.server, 3)} ms without),
  ${f(mbps(r, W4_PRESTART), 0)} MB/s through ${r.settings.transferMb} MB (${f(mbps(r, W4), 0)} MB/s handed off).
`);
  }
  const lq = launcher(r, L_W4_Q);
  const lnoq = launcher(r, W4_NO_Q);
  if (lq?.cpu8 && lnoq?.cpu8) {
    out.push(`- **-q.** In the launchers' scenario socket's processes spend ${f(lq.cpu8.server, 3)} ms CPU per
  request with -q and ${f(lnoq.cpu8.server, 3)} ms without (at 8: ${f(rps(lq), 0)} and ${f(rps(lnoq), 0)} req/s);
  the difference is what -q's way of ending the connection costs: the program's output
  goes through a pipe the worker watches, so the worker wakes for the answer and for
  its end, and makes about ten more system calls per request (pipe2, fcntl, splice,
  poll, shutdown, close; strace of a worker over 200 connections). Blocking splice
  calls instead of the poll loop (two calls for a short answer instead of eight)
  were tried and measured no lower (0.73 vs 0.74 ms of master and worker CPU per connection
  with \`-p cat\`, 3 rounds of 400), so the poll loop stayed, one path for -q and
  --prestart.
`);
  }
  return out.join("");
}

/** The "Where the time goes" section's bullets. */
export function whereTheTimeGoes(r: Results): string {
  const w4 = conn(r, W4);
  const tcp = conn(r, TCPSERVER);
  const cat = r.floor.find((x) => x.name.startsWith("`cat "))?.ms;
  const shc = r.floor.find((x) => x.name.startsWith("`sh -c cat"))?.ms;
  const cgi = r.floor.find((x) => x.name.startsWith("`hello-cgi"))?.ms;
  const c = w4?.cpu8;
  const m4 = pool(r, "socket -W 4");
  const m64 = pool(r, "socket -W 64");
  const launch = (name: string) => median(r.launches.find((l) => l.name === name)?.ms ?? []);
  const fq = launcher(r, F_Q);
  const nginxAlone = launcher(r, NGINX_ALONE);
  return `- **A connection is the network plus the start of the program.** With no
  network at all, \`cat </dev/null\` takes ${f(cat, 2)} ms and \`sh -c cat\` ${f(shc, 2)} ms
  (hyperfine); with no program, the same connection through an event loop
  that echoes the request takes ${f(r.networkFloor.p50, 2)} ms (p50). The idle turnaround of each
  server is made of those two and the server's own work: socket -W 4
  ${f(w4?.idle?.p50, 2)} ms${tcp ? `, tcpserver ${f(tcp.idle?.p50, 2)} ms` : ""} (p50). Only a program started before its
  connection arrives (--prestart) takes the program's start off the path.
${prestartBullet(r)}- **On ${r.cores} cores, CPU per connection is the throughput.** At 8 concurrent
  connections the cores are busy, and the connections per second come out
  close to ${r.cores} × 1000 ms divided by all the CPU a connection costs (the CPU
  table's last columns). Per connection under socket -W 4, \`cat\` costs ${f(c?.programs, 3)} ms,
  the load generator ${f(c?.loadgen, 3)} ms and socket's own processes ${f(c?.server, 3)} ms.
- **Inside \`cat\`'s start.** perf, run by hand (not by the script), puts
  about a sixth of it in glibc's CPU-feature detection (\`cpuid\`, which traps
  to the hypervisor on this VM) and most of the rest in \`execve\`, the
  dynamic loader and page faults; \`cat\`'s own code is under 1 %.
- **The launchers' scenario.** nginx answering by itself takes ${f(nginxAlone?.one?.p50, 2)} ms
  (p50, one at a time); through \`socket -f -q\` and the wrapper ${f(fq?.one?.p50, 2)} ms: a
  second connection (nginx to socket), the wrapper's exec, the CGI's exec
  (the CGI alone, no network: ${f(cgi, 2)} ms) and the SCGI exchange.
- **Bulk data.** A worker hands the connection itself to \`cat\`, so ${r.settings.transferMb} MB
  pass between the load generator and \`cat\` as under tcpserver (socket -W 4
  ${f(mbps(r, W4), 0)} MB/s${tcp ? `, tcpserver ${f(mbps(r, TCPSERVER), 0)}` : ""}); runs spread widely on this 2-core machine.
  With \`-c\` the copy loop puts the worker's event loop and two socket pairs
  in the path: ${f(mbps(r, W4_COPY), 0)} MB/s.
- **Memory.** A worker is a whole Bun process: ${f(m4?.anonMean)} MB of its own heap
  and stacks (Pss_Anon). The rest of its PSS is its share of the
  executable's pages, split among the pool's processes: ${f(m4?.fileMean)} MB with 4
  workers, ${f(m64?.fileMean)} MB with 64. Idle, a worker's main thread wakes
  ${f(m64?.wakeupsPerSecond, 1)} times a second: ${f(m64?.idleCpuPercent, 2)} % of a core for 64 idle workers.
- **Launch.** socket -W 4 answers its first connection ${f(launch(W4), 0)} ms after launch
  (median): the master, a Bun process, starts and binds, then starts 4
  workers, each a Bun process too. socket -f takes ${f(launch("socket -f"), 0)} ms${tcp ? `; tcpserver, a small C program, ${f(launch(TCPSERVER), 1)} ms` : ""}.`;
}
