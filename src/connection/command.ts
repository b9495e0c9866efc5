// The -p command, read once: its words, and whether sh would do anything
// with them but split them. Every use of the command (run it, refuse it
// for a gateway, check its program's name) starts from that one reading.

// dash keywords and builtins: a command starting with one needs the shell.
const SHELL_WORDS = new Set(
  ("! { } case do done elif else esac fi for if in then until while " +
    ". : [ alias bg break cd command continue echo eval exec exit export false fc fg getopts " +
    "hash jobs kill local printf pwd read readonly return set shift test times trap true type " +
    "ulimit umask unalias unset wait").split(" "),
);
// Characters with no meaning to sh: no quotes, $, globs, ~, redirections, separators.
const PLAIN_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;

export interface Program {
  argv: string[];
  /** argv[0] as the operator wrote it, as sh would pass it. */
  argv0: string;
  /** The -p command as written, for the operator's messages. */
  command: string;
}

/** The command's words, split as sh splits plain words, and why sh is needed for them (undefined: it is not). */
export interface Words {
  words: string[];
  shellNeed: string | undefined;
}

export function commandWords(command: string): Words {
  const words = command.trim().split(/[ \t]+/);
  const odd = words.find((w) => !PLAIN_WORD.test(w));
  let shellNeed: string | undefined;
  if (odd !== undefined) shellNeed = `'${odd}' has characters the shell would interpret`;
  else if (words[0].includes("=")) shellNeed = "it starts with a variable assignment";
  else if (SHELL_WORDS.has(words[0])) shellNeed = `'${words[0]}' is a shell keyword or builtin`;
  return { words, shellNeed };
}

/**
 * `sh -c command`, or the command's own words when the shell would do
 * nothing but split them: dash does not exec the last command, so that
 * saves a process per connection. A command not found on PATH goes through
 * sh, which prints the error a user expects.
 */
export function programFor(command: string): Program {
  const { words, shellNeed } = commandWords(command);
  const path = shellNeed === undefined ? Bun.which(words[0]) : null;
  if (path) return { argv: [path, ...words.slice(1)], argv0: words[0], command };
  return { argv: ["/bin/sh", "-c", command], argv0: "sh", command };
}

/**
 * The command's words, executed directly whether or not the program can be
 * found now: a missing one fails at spawn (ENOENT) and the caller reports
 * it, rather than sh printing "not found" into a protocol stream. Only for
 * a command without shellNeed (cli/parse.ts refuses the others).
 */
export function directProgram(command: string): Program {
  const { words } = commandWords(command);
  return { argv: [Bun.which(words[0]) ?? words[0], ...words.slice(1)], argv0: words[0], command };
}

/** Why `command` needs a shell (--scgi/--fastcgi refuse it), or undefined when its words can be run as they are. */
export function shellNeed(command: string): string | undefined {
  return commandWords(command).shellNeed;
}

/**
 * Linux's PATH_MAX, its NUL included: execve refuses a longer file name
 * (ENAMETOOLONG), and Bun.which throws on one ("bin path is too long"),
 * which ended every pool worker at start.
 */
const PATH_MAX = 4096;

/**
 * Why the -p command can never start, or undefined: its program's name
 * (a first word the shell would not change, as programFor runs it) is
 * longer than a file name can be. Socket's own arguments bound the rest:
 * the kernel passed the whole command as one (MAX_ARG_STRLEN), so sh -c or
 * the program's own argv can take it too.
 */
export function programNameProblem(command: string): string | undefined {
  const { words } = commandWords(command);
  const name = words[0];
  if (!PLAIN_WORD.test(name) || name.includes("=") || SHELL_WORDS.has(name)) return undefined; // the shell makes the name
  if (name.length < PATH_MAX) return undefined; // PLAIN_WORD is ASCII: characters are bytes
  return `-p: the program's name is ${name.length} bytes long; a file name is at most ${PATH_MAX - 1} (PATH_MAX)`;
}
