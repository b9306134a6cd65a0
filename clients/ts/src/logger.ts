/** Where logs go; the default writes warnings and errors to stderr. */
export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export const stderrLogger: Logger = {
  debug: () => {},
  info: (m) => console.error(`ferry: ${m}`),
  warn: (m) => console.error(`ferry: ${m}`),
  error: (m) => console.error(`ferry: ${m}`),
};
