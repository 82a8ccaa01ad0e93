import { startActorSystem, type ActorSystem } from './actor';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';

/** An actor system whose crashes, restarts and dead letters show in metrics and logs. */
export function startObservedSystem(name: string, log: Logger, metrics: Metrics): ActorSystem {
  return startActorSystem(name, log, {
    crashed: (path) => metrics.counter('actor_crashes_total', 'Actor handler failures', ['actor']).inc({ actor: path.replace(/-\d+$/, '') }),
    restarting: (path, attempt, delayMs) => log.warn({ actor: path, attempt, delayMs }, 'restarting actor'),
    deadLetter: (path, type) => {
      metrics.counter('actor_dead_letters_total', 'Messages sent to stopped actors').inc();
      log.debug({ actor: path, message: type }, 'dead letter');
    },
  });
}
