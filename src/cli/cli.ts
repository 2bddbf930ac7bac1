// The `aml-edge` command: picks the command from the arguments, runs it, and turns what went wrong into a message
// and an exit code. Everything a command needs comes in through `CliIo`, so tests run it in-process.
import packageJson from "../../package.json" with { type: "json" };
import { EXIT_CODES, errorMessage, exitCodeFor, UsageError } from "./errors.ts";
import { GATEWAY_DEV_HELP, readGatewayDevSettings, runGatewayDev } from "./gateway-dev.ts";
import type { CliIo } from "./io.ts";
import { readSandboxUpSettings, runSandboxUp, SANDBOX_UP_HELP } from "./sandbox-up.ts";

interface Command {
  words: readonly string[];
  summary: string;
  help: string;
  run(args: readonly string[], io: CliIo): Promise<number>;
}

const COMMANDS: readonly Command[] = [
  {
    words: ["gateway", "dev"],
    summary: "run the gateway locally in workerd, with local stand-ins for loopback issuers and endpoints",
    help: GATEWAY_DEV_HELP,
    async run(args, io) {
      const settings = readGatewayDevSettings(args);
      if (settings === "help") {
        io.stdout(GATEWAY_DEV_HELP);
        return EXIT_CODES.ok;
      }
      return runGatewayDev(settings, io);
    },
  },
  {
    words: ["sandbox", "up"],
    summary: "run the local Azure (GitHub OIDC, Entra ID, Key Vault, Azurite, Azure ML) until Ctrl-C",
    help: SANDBOX_UP_HELP,
    async run(args, io) {
      const settings = readSandboxUpSettings(args);
      if (settings === "help") {
        io.stdout(SANDBOX_UP_HELP);
        return EXIT_CODES.ok;
      }
      return runSandboxUp(settings, io);
    },
  },
];

export const MAIN_HELP = `aml-edge ${packageJson.version}: ship Azure ML models behind an identity-aware Cloudflare Worker gateway.

Usage: aml-edge <command> [options]

Commands:
${COMMANDS.map((c) => `  ${c.words.join(" ").padEnd(14)}  ${c.summary}`).join("\n")}

Options:
  -h, --help      show help (after a command: that command's help)
      --version   print the version

Exit codes: 0 success; 1 failure; 2 bad arguments; 3 the config file, a secret or a port needs fixing.`;

/** Runs the command the arguments name; resolves with the exit code (never throws). */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    const [first] = argv;
    if (first === undefined || first === "--help" || first === "-h" || first === "help") {
      io.stdout(MAIN_HELP);
      return first === undefined ? EXIT_CODES.usage : EXIT_CODES.ok;
    }
    if (first === "--version") {
      io.stdout(packageJson.version);
      return EXIT_CODES.ok;
    }
    const command = COMMANDS.find((c) => c.words.every((word, i) => argv[i] === word));
    if (command === undefined) throw new UsageError(unknownCommand(argv));
    return await command.run(argv.slice(command.words.length), io);
  } catch (error) {
    const code = exitCodeFor(error);
    io.stderr(code === EXIT_CODES.failure ? `aml-edge failed: ${errorMessage(error)}` : errorMessage(error));
    if (code === EXIT_CODES.usage) io.stderr("Run aml-edge --help for usage.");
    return code;
  }
}

function unknownCommand(argv: readonly string[]): string {
  const known = COMMANDS.map((c) => `aml-edge ${c.words.join(" ")}`).join(", ");
  // Name the word that went wrong: the group when it is unknown, else the subcommand after it.
  const group = COMMANDS.filter((c) => c.words[0] === argv[0]);
  if (group.length === 0) return `unknown command ${JSON.stringify(argv[0])}; commands: ${known}`;
  const sub = argv[1];
  return sub === undefined || sub.startsWith("-")
    ? `aml-edge ${argv[0]} needs a subcommand; commands: ${known}`
    : `unknown command "${argv[0]} ${sub}"; commands: ${known}`;
}
