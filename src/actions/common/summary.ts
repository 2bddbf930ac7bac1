// The job summary each action leaves on the run's page (core.summary). A summary is a report, not the work: when it
// cannot be written (no GITHUB_STEP_SUMMARY outside a runner, a full disk) the step warns and keeps its result.
import * as core from "@actions/core";

export interface SummaryReport {
  title: string;
  /** Label and value; values are shown as code. */
  rows: [string, string][];
  notes?: string[];
  /** Markdown sections after the table, each under its own heading (the text is already Markdown, not escaped). */
  sections?: { heading: string; markdown: string }[];
}

export async function writeSummary(report: SummaryReport, warn: (message: string) => void): Promise<void> {
  if (process.env.GITHUB_STEP_SUMMARY === undefined || process.env.GITHUB_STEP_SUMMARY === "") return;
  try {
    core.summary.addHeading(report.title, 2).addTable([
      [
        { data: "What", header: true },
        { data: "Value", header: true },
      ],
      ...report.rows.map(([label, value]) => [label, `<code>${escapeHtml(value)}</code>`]),
    ]);
    for (const note of report.notes ?? []) core.summary.addRaw(`<p>${escapeHtml(note)}</p>`, true);
    for (const section of report.sections ?? []) {
      // Blank lines around it: GitHub renders Markdown after HTML only as a block of its own.
      core.summary.addHeading(section.heading, 3).addRaw(`\n${section.markdown}\n`, true);
    }
    await core.summary.write();
  } catch (error) {
    warn(`Could not write the job summary: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
