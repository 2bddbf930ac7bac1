// The @actions/core module as the action unit tests mock it: log lines silenced, and what a test asserts on
// (failures, and where asked, outputs and masked secrets) captured into the test's own hoisted object.
export interface CoreCapture {
  failed: string[];
  outputs?: Record<string, string>;
  secrets?: string[];
}

/** Reads the capture's members on every call, so a test may replace them (`core.outputs = {}`) between cases. */
export function stubbedCore<T extends object>(actual: T, capture: CoreCapture): T {
  return {
    ...actual,
    ...("outputs" in capture
      ? {
          setOutput: (name: string, value: string) => {
            (capture.outputs as Record<string, string>)[name] = value;
          },
        }
      : {}),
    setFailed: (message: string) => {
      capture.failed.push(message);
    },
    setSecret: (secret: string) => {
      capture.secrets?.push(secret);
    },
    debug: () => {},
    info: () => {},
    warning: () => {},
  };
}
