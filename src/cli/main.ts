// The `aml-edge` executable: wires the process (arguments, output, environment, signals) to runCli, nothing more.
import { runCli } from "./cli.ts";

const stop = new AbortController();
let signals = 0;
const onSignal = () => {
  signals += 1;
  // A second Ctrl-C while shutting down means "now".
  if (signals > 1) process.exit(130);
  stop.abort();
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

const code = await runCli(process.argv.slice(2), {
  stdout: (line) => process.stdout.write(`${line}\n`),
  stderr: (line) => process.stderr.write(`${line}\n`),
  env: process.env,
  stop: stop.signal,
});
process.exitCode = code;
process.off("SIGINT", onSignal);
process.off("SIGTERM", onSignal);
// Everything is closed by now; if some handle still lingers, it must not keep a finished command alive.
setTimeout(() => process.exit(code), 2000).unref();
