import assert from 'node:assert/strict';
import { knexLog, routeConsole } from '../../src/log';
import { captureLogger } from '../helpers/services';

describe('log: other writers go through the one logger', () => {
  it('routeConsole turns console.* into JSON lines and can be undone', () => {
    const { log, lines } = captureLogger();
    const restore = routeConsole(log);
    try {
      console.log('hello %s', 'world');
      console.warn(new Error('careful'));
      console.error('bad', { a: 1 });
    } finally {
      restore();
    }
    const got = lines().filter((l) => l.source === 'console');
    assert.deepEqual(
      got.map((l) => [l.level, String(l.msg).split('\n')[0]]),
      [
        [30, 'hello world'],
        [40, 'Error: careful'],
        [50, 'bad { a: 1 }'],
      ],
    );
  });

  it('knexLog: warnings, errors and deprecations as one-line JSON; acquire errors at debug (the caller reports them)', () => {
    const { log, lines } = captureLogger('debug');
    const k = knexLog(log);
    k.warn('Connection Error: boom\n    at Foo (x.js:1:1)');
    k.error(new Error('pool is dead'));
    k.deprecate('oldMethod', 'newMethod');
    k.warn('Acquire connection error: Error: Access denied');
    assert.deepEqual(
      lines().map((l) => [l.level, l.source, l.msg]),
      [
        [40, 'knex', 'Connection Error: boom'],
        [50, 'knex', 'pool is dead'],
        [40, 'knex', 'oldMethod is deprecated, use newMethod'],
        [20, 'knex', 'Acquire connection error: Error: Access denied'],
      ],
    );
  });
});
