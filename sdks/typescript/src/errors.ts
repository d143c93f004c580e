/**
 * The one error type of the client calls. A server answer keeps its gRPC code, so callers
 * can branch on it (`NOT_FOUND`, `INVALID_ARGUMENT` naming the field...). No error ever
 * carries the API key.
 */

import { Code, ConnectError } from "@connectrpc/connect";

export { Code };

/** gRPC's own spelling of each code (`INVALID_ARGUMENT`), as Herald's docs and logs use it. */
const CODE_NAMES: Readonly<Record<Code, string>> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/** The gRPC name of `code`, e.g. `INVALID_ARGUMENT`. */
export function codeName(code: Code): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

/** What can go wrong calling Herald: its answer, a broken connection, or a refused argument. */
export class HeraldError extends Error {
  override readonly name = "HeraldError";

  /**
   * @param code The gRPC code (`Code.InvalidArgument` also for arguments the client
   *   refused before sending anything).
   * @param detail Herald's message (for `INVALID_ARGUMENT`, `field: what is wrong`).
   * @param field The argument at fault, when the message names one.
   */
  constructor(
    readonly code: Code,
    readonly detail: string,
    readonly field?: string,
    options?: { cause?: unknown },
  ) {
    super(`${codeName(code)}: ${detail}`, options);
  }

  /** The gRPC name of the code, e.g. `INVALID_ARGUMENT`. */
  get codeName(): string {
    return codeName(this.code);
  }

  /** An argument refused before anything was sent. */
  static invalid(field: string, message: string): HeraldError {
    return new HeraldError(Code.InvalidArgument, `${field}: ${message}`, field);
  }

  /** `error` (a `ConnectError`, or anything thrown under a call) as a `HeraldError`. */
  static from(error: unknown): HeraldError {
    if (error instanceof HeraldError) {
      return error;
    }
    const connect = ConnectError.from(error);
    const detail = connect.rawMessage;
    return new HeraldError(
      connect.code,
      detail,
      connect.code === Code.InvalidArgument ? fieldOf(detail) : undefined,
      { cause: error },
    );
  }
}

/**
 * The field an `INVALID_ARGUMENT` message starts with: Herald writes them as
 * `payload.data.type: is 'machines', but ...`.
 */
function fieldOf(message: string): string | undefined {
  const match = /^([A-Za-z_][\w.[\]-]*): /.exec(message);
  return match?.[1];
}
