import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import type { NatsConnection } from 'nats';

/**
 * A real three-node NATS cluster with JetStream on loopback, for tests and benchmarks:
 * each node is a /usr/sbin/nats-server process with its own server_name, client, route
 * and monitoring port and its own store directory. Nodes can be SIGKILLed and restarted
 * (same ports, same store), and the JetStream meta leader and stream leaders are read
 * from the monitoring endpoint (`/jsz`).
 *
 * Checked with nats-server 2.9.10: the cluster elects a meta leader in ~0.5 s.
 */
export const NATS_SERVER = process.env.NATS_SERVER_BIN ?? '/usr/sbin/nats-server';

export interface NatsNode {
  readonly name: string;
  readonly port: number;
  readonly clusterPort: number;
  readonly httpPort: number;
  /** nats://127.0.0.1:<port> */
  readonly url: string;
  readonly storeDir: string;
  readonly configPath: string;
  /** The running process, undefined while the node is down. */
  proc: ChildProcess | undefined;
}

/** What `/jsz` answers (the fields we read). */
interface Jsz {
  server_id?: string;
  meta_cluster?: { name?: string; leader?: string; cluster_size?: number };
  account_details?: Array<{ stream_detail?: Array<{ name: string; cluster?: { leader?: string } }> }>;
}

export interface NatsClusterOptions {
  /** Number of nodes; default 3. */
  size?: number;
  /** Cluster name; default a unique one. */
  name?: string;
  /** Extra lines for every node's config (e.g. `debug: true`). */
  extraConfig?: string;
  /** Milliseconds to wait for the meta leader at start; default 15 000. */
  startTimeoutMs?: number;
  /** Writes a node's config instead of the built-in one (e.g. a deploy file with loopback ports put in). */
  configFor?: (node: NatsNode, all: readonly NatsNode[], clusterName: string) => string;
}

export class NatsCluster {
  private readonly baseDir: string;
  private stopped = false;

  private constructor(
    readonly name: string,
    readonly nodes: NatsNode[],
    baseDir: string,
  ) {
    this.baseDir = baseDir;
  }

  /** Starts every node and resolves once the cluster has a JetStream meta leader. */
  static async start(opts: NatsClusterOptions = {}): Promise<NatsCluster> {
    const size = opts.size ?? 3;
    const name = opts.name ?? `c${process.pid}${Date.now().toString(36)}`;
    const baseDir = mkdtempSync(join(tmpdir(), 'nats-cluster-'));
    const ports = await freePorts(size * 3);
    const nodes: NatsNode[] = [];
    for (let i = 0; i < size; i++) {
      const n = `n${i + 1}`;
      const storeDir = join(baseDir, n);
      nodes.push({
        name: n,
        port: ports[i * 3]!,
        clusterPort: ports[i * 3 + 1]!,
        httpPort: ports[i * 3 + 2]!,
        url: `nats://127.0.0.1:${ports[i * 3]!}`,
        storeDir,
        configPath: join(baseDir, `${n}.conf`),
        proc: undefined,
      });
    }
    for (const node of nodes)
      writeFileSync(node.configPath, opts.configFor ? opts.configFor(node, nodes, name) : nodeConfig(node, nodes, name, opts.extraConfig ?? ''));
    const cluster = new NatsCluster(name, nodes, baseDir);
    try {
      await Promise.all(nodes.map((n) => cluster.launch(n)));
      await cluster.waitForMetaLeader(opts.startTimeoutMs ?? 15_000);
    } catch (e) {
      await cluster.stop();
      throw e;
    }
    return cluster;
  }

  /** Every node's client URL, comma-separated (what NATS_URL takes). */
  get urls(): string {
    return this.nodes.map((n) => n.url).join(',');
  }

  node(name: string): NatsNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name} in cluster ${this.name}`);
    return n;
  }

  running(): NatsNode[] {
    return this.nodes.filter((n) => n.proc !== undefined);
  }

  /** SIGKILLs a node and resolves once the process is gone. */
  async kill(name: string): Promise<void> {
    const n = this.node(name);
    const p = n.proc;
    if (!p) return;
    n.proc = undefined;
    if (p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise<void>((res) => {
      p.once('exit', () => {
        res();
      });
    });
    p.kill('SIGKILL');
    await gone;
  }

  /** Starts a killed node again (same ports, same store directory); resolves when it accepts clients. */
  async restart(name: string): Promise<void> {
    const n = this.node(name);
    if (n.proc) return;
    await this.launch(n);
  }

  /** The meta leader's server_name as the running nodes report it (undefined while there is none or they disagree). */
  async metaLeader(): Promise<string | undefined> {
    const answers = await Promise.all(this.running().map((n) => jsz(n).catch(() => undefined)));
    const leaders = new Set(answers.map((a) => a?.meta_cluster?.leader ?? ''));
    if (leaders.size !== 1) return undefined;
    const [l] = leaders;
    return l || undefined;
  }

  /** Resolves with the meta leader's name once the running nodes agree on one. */
  async waitForMetaLeader(timeoutMs = 15_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const l = await this.metaLeader();
      if (l && this.running().some((n) => n.name === l)) return l;
      if (Date.now() > deadline) throw new Error(`cluster ${this.name}: no JetStream meta leader within ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  /**
   * The node leading a stream (a KV bucket is the stream `KV_<bucket>`), as the running
   * nodes report it in `/jsz?streams=1`; undefined while it has none.
   */
  async streamLeader(stream: string): Promise<string | undefined> {
    const answers = await Promise.all(this.running().map((n) => jsz(n, 'accounts=1&streams=1').catch(() => undefined)));
    for (const a of answers) {
      for (const acc of a?.account_details ?? []) {
        for (const s of acc.stream_detail ?? []) {
          const l = s.name === stream ? s.cluster?.leader : undefined;
          if (l && this.running().some((n) => n.name === l)) return l;
        }
      }
    }
    return undefined;
  }

  /** Resolves with the stream's leader once a running node leads it. */
  async waitForStreamLeader(stream: string, timeoutMs = 15_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const l = await this.streamLeader(stream);
      if (l) return l;
      if (Date.now() > deadline) throw new Error(`cluster ${this.name}: stream ${stream} has no leader within ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  /**
   * Asks the stream's leader to step down until `target` leads it (a new leader is picked
   * at random among the replicas): lets a test kill the node that leads both the meta
   * layer and a given bucket. Resolves with the leader reached (maybe not the target after
   * `attempts` step-downs).
   */
  async moveStreamLeader(nc: NatsConnection, stream: string, target: string, attempts = 12): Promise<string> {
    let leader = await this.waitForStreamLeader(stream);
    for (let i = 0; i < attempts && leader !== target; i++) {
      await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, new Uint8Array(), { timeout: 5_000 }).catch(() => undefined);
      const deadline = Date.now() + 3_000;
      let next: string | undefined;
      while (Date.now() < deadline) {
        next = await this.streamLeader(stream);
        if (next && next !== leader) break;
        await sleep(50);
      }
      leader = next ?? (await this.waitForStreamLeader(stream));
    }
    return leader;
  }

  /** Kills every node and removes the store directories. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all(this.nodes.map((n) => this.kill(n.name).catch(() => undefined)));
    rmSync(this.baseDir, { recursive: true, force: true });
  }

  private async launch(n: NatsNode): Promise<void> {
    const proc = spawn(NATS_SERVER, ['-c', n.configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    const err: string[] = [];
    proc.stderr.on('data', (b: Buffer) => {
      err.push(b.toString('utf8'));
      if (err.length > 50) err.shift();
    });
    n.proc = proc;
    const deadline = Date.now() + 10_000;
    while (!(await portOpen(n.port))) {
      if (proc.exitCode !== null) throw new Error(`nats-server ${n.name} exited with ${proc.exitCode}: ${err.join('').slice(-2000)}`);
      if (Date.now() > deadline) throw new Error(`nats-server ${n.name} not accepting clients on ${n.port} within 10 s`);
      await sleep(25);
    }
  }
}

function nodeConfig(node: NatsNode, all: NatsNode[], cluster: string, extra: string): string {
  return `# generated by test/helpers/nats-cluster.ts
server_name: ${node.name}
listen: 127.0.0.1:${node.port}
http: 127.0.0.1:${node.httpPort}
jetstream {
  store_dir: "${node.storeDir}"
  max_memory_store: 256MB
  max_file_store: 2GB
}
cluster {
  name: ${cluster}
  listen: 127.0.0.1:${node.clusterPort}
  routes: [
${all.map((o) => `    nats-route://127.0.0.1:${o.clusterPort}`).join('\n')}
  ]
}
${extra}
`;
}

function jsz(n: NatsNode, query = ''): Promise<Jsz> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: n.httpPort, path: `/jsz${query ? `?${query}` : ''}`, timeout: 1_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Jsz);
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('jsz timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** `count` distinct free loopback ports (held open together, so no two are the same). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<import('node:net').Server>((res) => {
          const s = createServer();
          s.listen(0, '127.0.0.1', () => {
            res(s);
          });
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((res) => {
          s.close(() => {
            res();
          });
        }),
    ),
  );
  return ports;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      resolve(false);
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
