// Entry of dist/main/index.js, the umbrella action: the logic is in ./umbrella/main.ts, where the tests import it.
import { run } from "./umbrella/main.ts";

await run();
