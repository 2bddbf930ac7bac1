// The error bodies ARM and the Azure ML resource provider answer with (`ErrorResponse` in common-types), so the SDK
// turns them into a RestError whose `code` and `statusCode` a caller can act on.

export interface ArmErrorBody {
  error: { code: string; message: string; details?: { code: string; message: string }[] };
}

export class ArmError extends Error {
  readonly status: number;
  readonly code: string;
  readonly headers: Record<string, string>;
  readonly details: { code: string; message: string }[] | undefined;
  constructor(
    status: number,
    code: string,
    message: string,
    options: { headers?: Record<string, string>; details?: { code: string; message: string }[] } = {},
  ) {
    super(message);
    this.name = "ArmError";
    this.status = status;
    this.code = code;
    this.headers = options.headers ?? {};
    this.details = options.details;
  }

  body(): ArmErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.details === undefined ? {} : { details: this.details }),
      },
    };
  }
}

export function notFound(type: string, name: string, resourceGroup: string): ArmError {
  // ARM's own wording for a missing resource, which scripts and people grep for.
  return new ArmError(
    404,
    "ResourceNotFound",
    `The Resource '${type}/${name}' under resource group '${resourceGroup}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix`,
  );
}

export function badRequest(message: string, details?: { code: string; message: string }[]): ArmError {
  // The Azure ML resource provider reports a caller's mistake as a UserError, the specific reason in the message.
  return new ArmError(400, "UserError", message, details === undefined ? {} : { details });
}

/** Another operation on the endpoint is still running: Azure ML's wording, so callers recognise it. */
export function operationConflict(workspace: string, running: string): ArmError {
  return new ArmError(
    409,
    "Conflict",
    `Conflict of operation, another operation on same entity is already running in workspace ${workspace}. Running: ${running}.`,
  );
}
