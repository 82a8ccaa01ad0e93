/**
 * The one configuration of a process, read from the environment at start-up in sections:
 * core (`core.ts`: roles, database, NATS, Telegram, pipeline, cluster), NATS credentials
 * (`nats-auth.ts`), ads (`ads.ts`) and images (`images.ts`). One reader (`EnvReader`), one
 * duration syntax, named defaults; every error names its variable. Documented in
 * docs/configuration.md.
 */
import { loadConfig, type Config } from './core';
import { loadAdsConfig, type AdsConfig } from './ads';
import { loadImagesConfig, type ImagesConfig } from './images';

export * from './core';
export * from './ads';
export * from './images';
export * from './nats-auth';

/** Every section, validated before anything starts. */
export interface Settings {
  core: Config;
  ads: AdsConfig;
  images: ImagesConfig;
}

type Env = Record<string, string | undefined>;

/** Reads and validates every section; throws a ConfigError naming the first bad variable. */
export function loadSettings(env: Env = process.env): Settings {
  return { core: loadConfig(env), ads: loadAdsConfig(env), images: loadImagesConfig(env) };
}
