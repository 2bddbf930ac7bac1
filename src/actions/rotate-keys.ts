// Entry of dist/rotate-keys/index.js, run twice by the runner: as the main step and as the post step (action.yml
// `post`), which deletes the job's minted Cloudflare token. The main step leaves a mark in the step's state; the post
// step finds it. The logic is in ./rotate-keys/ and ./common/, where the tests import it.
import * as core from "@actions/core";
import { IS_POST_STATE } from "./common/cloudflare.ts";
import { post } from "./common/cloudflare-post.ts";
import { run } from "./rotate-keys/main.ts";

if (core.getState(IS_POST_STATE) === "true") {
  await post();
} else {
  // First, so a main step that fails at once still gets its post step's cleanup.
  core.saveState(IS_POST_STATE, "true");
  await run();
}
