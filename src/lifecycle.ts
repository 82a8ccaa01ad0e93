import type { Logger } from './log';
import { describeError } from './errors';

/** One shutdown step: a name for the logs and the work. */
export interface ShutdownStep {
  name: string;
  run: () => Promise<void> | void;
}

/**
 * Runs shutdown steps in a fixed order. Each step is isolated: one that throws or
 * times out is logged and the rest still run. Calling `run()` twice returns the
 * same promise.
 */
export class ShutdownSequence {
  private readonly steps: ShutdownStep[] = [];
  private running: Promise<void> | undefined;

  constructor(
    private readonly log: Logger,
    private readonly stepTimeoutMs = 15_000,
  ) {}

  /** Steps run in the order they were added. */
  add(name: string, run: ShutdownStep['run']): this {
    this.steps.push({ name, run });
    return this;
  }

  run(): Promise<void> {
    this.running ??= this.runSteps();
    return this.running;
  }

  private async runSteps(): Promise<void> {
    for (const step of this.steps) {
      const started = Date.now();
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          Promise.resolve().then(step.run),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${this.stepTimeoutMs} ms`)), this.stepTimeoutMs);
            timer.unref();
          }),
        ]);
        this.log.debug({ step: step.name, ms: Date.now() - started }, 'shutdown step done');
      } catch (e) {
        this.log.error({ step: step.name, err: describeError(e) }, 'shutdown step failed; continuing');
      } finally {
        if (timer) clearTimeout(timer);
      }
    }
  }
}
