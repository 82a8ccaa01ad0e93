/**
 * A small typed layer over nact. No other module imports nact directly.
 *
 * Why: nact's typings leave the sender untyped, `Ref<T>` is phantom, `dispatch` to a
 * stopped actor is silently dropped, an `onCrash` that throws becomes an unhandled
 * rejection, and there is no "restart with backoff". This module gives typed
 * spawn / dispatch / query, reply refs inside messages, dead-letter accounting and
 * named supervision policies.
 *
 * The rule every actor follows: **a handler never awaits I/O.** It starts the work (a
 * database query, a NATS request, an HTTP call) and the result comes back to `self` as a
 * message, so a slow dependency never holds the mailbox and every other message (status,
 * drain, a wake-up) is handled at once. A handler may await only a `query` to one of its
 * own children: a supervisor coordinating its subtree (the pipeline's handoff). What an
 * actor needs (repositories, clients, clocks, publishers) is passed at spawn as ports,
 * never bound later with setters.
 */
import * as nact from 'nact';
import type { Logger } from '../log';
import { AppError, describeError } from '../errors';
import { backoffDelay } from '../limits/backoff';

/** nact's untyped reference to an actor (its `Ref<T>` is an empty phantom class). */
// eslint-disable-next-line @typescript-eslint/no-generated-empty-object-type -- nact declares Ref<T> as a memberless class; the handle is opaque on purpose
type RawRef = nact.Ref<unknown>;

/** A typed handle to an actor accepting messages of type M. */
export interface ActorRef<M> {
  readonly path: string;
  /** @internal */ readonly raw: RawRef;
  /** @internal */ readonly life: { stopped: boolean };
  /** Phantom field that makes ActorRef<A> and ActorRef<B> incompatible. */
  readonly __msg?: (m: M) => void;
}

/** Put one of these in a message to get an answer back (see `query`). */
export interface ReplyTo<R> {
  /** @internal */ readonly raw: RawRef;
  readonly __reply?: (r: R) => void;
}

/** Hooks for metrics and logs; the system calls them, never throws from them. */
export interface ActorObserver {
  crashed?(path: string, error: unknown): void;
  restarting?(path: string, attempt: number, delayMs: number): void;
  deadLetter?(path: string, messageType: string): void;
}

export interface ActorSystem {
  readonly name: string;
  /** @internal */ readonly raw: nact.ActorSystemRef;
  readonly log: Logger;
  readonly observer: ActorObserver;
  readonly life: { stopped: boolean };
  /** Messages dispatched to stopped actors. */
  deadLetters: number;
}

export type Parent = ActorSystem | ActorRef<never>;

export interface ActorContext<M> {
  readonly self: ActorRef<M>;
  readonly name: string;
  readonly path: string;
  readonly system: ActorSystem;
  readonly log: Logger;
}

/** What a supervisor does when an actor's handler throws. */
export type SupervisionPolicy =
  /** Re-run `init` after an exponential backoff; the mailbox is kept, the failing message dropped. */
  | {
      kind: 'restart';
      minBackoffMs: number;
      maxBackoffMs: number;
      /** crashes within `windowMs` before giving up (escalate) */ maxRestarts: number;
      windowMs: number;
    }
  /** Drop the failing message and keep the state. */
  | { kind: 'resume' }
  /** Stop the actor (and its children). */
  | { kind: 'stop' }
  /** Hand the failure to the parent's policy. */
  | { kind: 'escalate' };

export const Supervision = {
  restartWithBackoff(opts: Partial<Omit<Extract<SupervisionPolicy, { kind: 'restart' }>, 'kind'>> = {}): SupervisionPolicy {
    return {
      kind: 'restart',
      minBackoffMs: opts.minBackoffMs ?? 100,
      maxBackoffMs: opts.maxBackoffMs ?? 30_000,
      maxRestarts: opts.maxRestarts ?? 20,
      windowMs: opts.windowMs ?? 60_000,
    };
  },
  resume(): SupervisionPolicy {
    return { kind: 'resume' };
  },
  stop(): SupervisionPolicy {
    return { kind: 'stop' };
  },
  escalate(): SupervisionPolicy {
    return { kind: 'escalate' };
  },
} as const;

export interface ActorDefinition<S, M> {
  /** Unique among siblings; part of the actor's path. */
  name: string;
  /** Builds the initial state; runs again on restart. Must not throw for normal operation. */
  init: (ctx: ActorContext<M>) => S;
  /** Handles one message at a time; returns the next state. */
  receive: (state: S, msg: M, ctx: ActorContext<M>) => S | Promise<S>;
  supervision?: SupervisionPolicy;
  /** Runs once after the actor stopped (timers, leases). */
  afterStop?: (state: S, ctx: ActorContext<M>) => void | Promise<void>;
}

/** Starts a fresh actor system. Use one per process (and one per test). */
export function startActorSystem(name: string, log: Logger, observer: ActorObserver = {}): ActorSystem {
  // nact ignores a string name (`start('x')`): pass it as an object.
  const raw = nact.start({ name: `${name}-${Math.random().toString(36).slice(2, 8)}` } as never);
  return { name, raw, log, observer, life: { stopped: false }, deadLetters: 0 };
}

export function stopActorSystem(system: ActorSystem): void {
  if (system.life.stopped) return;
  stopChildren(system);
  system.life.stopped = true;
  nact.stop(system.raw);
}

const systems = new WeakMap<object, ActorSystem>();

/**
 * The actors spawned under each parent (a system or an actor), kept here because nact
 * 7.6.2 stops neither: its system and actor `stop` pass concrete actors to a lookup that
 * expects references and finds nothing, so without this a stopped system's actors, and a
 * stopped actor's children, keep running (timers, intervals) and never run `afterStop`.
 * A child must be stopped while its parent is still in the tree: nact finds an actor by
 * its path from the root.
 */
const childrenOf = new WeakMap<object, Set<ActorRef<unknown>>>();

function stopChildren(parent: object): void {
  const kids = childrenOf.get(parent);
  if (kids) for (const k of [...kids]) stopTree(k);
}

/** Stops the actor's descendants, deepest first, then the actor. */
function stopTree(ref: ActorRef<unknown>): void {
  stopChildren(ref);
  nact.stop(ref.raw);
}

function systemOf(parent: Parent): ActorSystem {
  if ('deadLetters' in parent) return parent;
  const s = systems.get(parent);
  if (!s) throw new AppError('ACTOR_STOPPED', `unknown parent ${parent.path}`);
  return s;
}

/** Spawns a child actor under `parent` (the system or another actor). */
export function spawn<S, M>(parent: Parent, def: ActorDefinition<S, M>): ActorRef<M> {
  const system = systemOf(parent);
  if (parent.life.stopped) throw new AppError('ACTOR_STOPPED', `cannot spawn ${def.name}: parent ${'path' in parent ? parent.path : system.name} is stopped`);
  const life = { stopped: false };
  const policy = def.supervision ?? Supervision.restartWithBackoff();
  const crashes: number[] = [];
  const log = system.log.child({ actor: def.name });
  // The ref exists before nact returns it, so `init` can spawn children and dispatch to self.
  const self = { path: def.name, raw: undefined as unknown as RawRef, life };
  systems.set(self, system);
  const siblings = childrenOf.get(parent) ?? new Set<ActorRef<unknown>>();
  childrenOf.set(parent, siblings);
  const ctxOf = (): ActorContext<M> => ({ self, name: def.name, path: self.path, system, log });

  const onCrash = async (msg: unknown, err: unknown, nctx: nact.SupervisionContext<unknown, RawRef>): Promise<symbol> => {
    try {
      safe(() => system.observer.crashed?.(self.path, err));
      log.error({ err: describeError(err), message: messageType(msg) }, 'actor crashed');
      switch (policy.kind) {
        case 'resume':
          return nctx.resume as symbol;
        case 'stop':
          stopChildren(self);
          return nctx.stop as symbol;
        case 'escalate':
          return nctx.escalate as symbol;
        case 'restart': {
          const now = Date.now();
          crashes.push(now);
          while (crashes.length && crashes[0]! < now - policy.windowMs) crashes.shift();
          if (crashes.length > policy.maxRestarts) {
            log.error({ crashes: crashes.length, windowMs: policy.windowMs }, 'too many restarts; escalating');
            return nctx.escalate as symbol;
          }
          const attempt = crashes.length;
          // Jittered, so actors that crashed together (a dependency went away) do not restart in step.
          const delay = backoffDelay(attempt, policy.minBackoffMs * 2, policy.maxBackoffMs);
          safe(() => system.observer.restarting?.(self.path, attempt, delay));
          // nact keeps the actor busy while onCrash is pending: new messages wait in the mailbox.
          await sleep(delay);
          // nact's reset stops the children but not theirs: stop the whole subtree here.
          stopChildren(self);
          return nctx.reset as symbol;
        }
      }
    } catch (e) {
      // A throwing onCrash would become an unhandled rejection inside nact.
      log.error({ err: describeError(e) }, 'supervision policy failed; stopping actor');
      stopChildren(self);
      return nctx.stop as symbol;
    }
  };

  nact.spawn(parent.raw, (state: S, msg: M) => def.receive(state, msg, ctxOf()), def.name, {
    initialStateFunc: (nctx: { self: RawRef }) => {
      if (!self.raw) {
        self.raw = nctx.self;
        self.path = pathOf(nctx.self, def.name);
      }
      return def.init(ctxOf());
    },
    onCrash: onCrash as never,
    afterStop: async (state: S) => {
      life.stopped = true;
      siblings.delete(self);
      if (def.afterStop) {
        try {
          await def.afterStop(state, ctxOf());
        } catch (e) {
          log.error({ err: describeError(e) }, 'afterStop failed');
        }
      }
    },
  });
  // Only once nact has it (spawn throws on a duplicate name): stopping a parent stops it too.
  siblings.add(self);
  return self;
}

/**
 * Sends a message. Returns false (and counts a dead letter) when the actor is stopped,
 * where nact would drop it silently.
 */
export function dispatch<M>(to: ActorRef<M>, msg: M): boolean {
  const system = systems.get(to);
  if (to.life.stopped || !system || system.life.stopped) {
    if (system) {
      system.deadLetters++;
      safe(() => system.observer.deadLetter?.(to.path, messageType(msg)));
    }
    return false;
  }
  nact.dispatch(to.raw, msg);
  return true;
}

/** Answers a query: `reply(msg.replyTo, value)`. */
export function reply<R>(to: ReplyTo<R>, value: R): void {
  nact.dispatch(to.raw, value);
}

/**
 * Asks an actor and awaits the answer. `build` receives the reply ref to put in the
 * message. Rejects with QUERY_TIMEOUT (nact reports handler errors only as timeouts).
 */
export async function query<M, R>(to: ActorRef<M>, build: (replyTo: ReplyTo<R>) => M, timeoutMs: number): Promise<R> {
  if (to.life.stopped) throw new AppError('ACTOR_STOPPED', `actor ${to.path} is stopped`);
  try {
    return await nact.query(to.raw, ((temp: RawRef) => build({ raw: temp })) as never, timeoutMs);
  } catch (e) {
    if (e instanceof Error && /Query Timeout/.test(e.message)) throw new AppError('QUERY_TIMEOUT', `no answer from ${to.path} within ${timeoutMs} ms`);
    throw e;
  }
}

/** Stops the actor and everything under it; `afterStop` runs for each. */
export function stop<M>(ref: ActorRef<M>): void {
  stopTree(ref as ActorRef<unknown>);
}

export function isStopped<M>(ref: ActorRef<M>): boolean {
  return ref.life.stopped;
}

/** For `switch` exhaustiveness: `default: return assertNever(msg)`. */
export function assertNever(x: never): never {
  throw new AppError('INTERNAL', `unexpected message ${JSON.stringify(x)}`);
}

function pathOf(raw: RawRef, fallback: string): string {
  const p = (raw as unknown as { path?: { parts?: string[] } }).path?.parts;
  return p ? `/${p.join('/')}` : fallback;
}

function messageType(msg: unknown): string {
  return msg && typeof msg === 'object' && 'type' in msg ? String(msg.type) : typeof msg;
}

function safe(f: () => void): void {
  try {
    f();
  } catch {
    /* observers must not break supervision */
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
