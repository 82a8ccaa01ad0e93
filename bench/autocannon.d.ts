// autocannon ships no types: the part of its API bench/views.ts uses.
declare module 'autocannon' {
  interface CannonResult {
    requests: { average: number; total: number };
    latency: { p99: number; average: number };
    non2xx: number;
    errors: number;
    timeouts: number;
  }
  function autocannon(o: Record<string, unknown>): Promise<CannonResult>;
  export = autocannon;
}
