// Entry of dist/deploy-model/index.js: the logic is in ./deploy-model/main.ts, where the tests import it.
import { run } from "./deploy-model/main.ts";

await run();
