// Entry of dist/route/index.js, run twice by the runner: as the main step and as the post step (action.yml `post`).
// The main step leaves a mark in the step's state; the post step finds it. The logic is in ./route/, where the tests
// import it.
import * as core from "@actions/core";
import { IS_POST_STATE, run } from "./route/main.ts";
import { post } from "./route/post.ts";

if (core.getState(IS_POST_STATE) === "true") {
  await post();
} else {
  // First, so a main step that fails at once still gets its post step's cleanup.
  core.saveState(IS_POST_STATE, "true");
  await run();
}
