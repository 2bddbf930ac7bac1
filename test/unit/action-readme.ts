// Shared by the action tests: an action's README lists every input and output of its action.yml in its tables, with
// the same required flag, default and description (STYLE.md 10), so the docs cannot drift from the metadata.
import { readFileSync } from "node:fs";
import { expect } from "vitest";
import { parse as parseYaml } from "yaml";

export function expectReadmeMatchesActionYml(action: string): void {
  const root = new URL("../../", import.meta.url);
  const metadata = parseYaml(readFileSync(new URL(`actions/${action}/action.yml`, root), "utf8")) as {
    inputs: Record<string, { description: string; required: boolean; default?: string }>;
    outputs: Record<string, { description: string }>;
  };
  const readme = readFileSync(new URL(`actions/${action}/README.md`, root), "utf8");
  const [inputsPart = "", outputsPart = ""] = readme.split("## Outputs");
  // Table rows as trimmed cells, whatever padding they have.
  const rows = (text: string) =>
    text
      .split("\n")
      .filter((line) => line.startsWith("|"))
      .map((line) =>
        line
          .slice(1, -1)
          .split(/(?<!\\)\|/)
          .map((cell) => cell.trim()),
      );
  const row = (table: string[][], name: string) => table.find((cells) => cells[0] === `\`${name}\``);
  const cell = (text: string) => text.replace(/\|/g, "\\|").replace(/\s+/g, " ").trim();
  for (const [name, input] of Object.entries(metadata.inputs)) {
    expect(row(rows(inputsPart), name), name).toEqual([
      `\`${name}\``,
      input.required ? "yes" : "no",
      input.default === undefined ? "" : `\`${input.default}\``,
      cell(input.description),
    ]);
  }
  for (const [name, output] of Object.entries(metadata.outputs)) {
    expect(row(rows(outputsPart), name), name).toEqual([`\`${name}\``, cell(output.description)]);
  }
}
