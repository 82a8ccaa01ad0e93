import { Model } from 'objection';

export type BumpTrigger = 'timer' | 'manual';

/** One bump run; `finished_at` is null while running (or when the runner died). */
export class BumpRun extends Model {
  static override tableName = 'bump_runs';

  id!: number;
  trigger!: BumpTrigger;
  instance_id!: string;
  started_at!: Date;
  finished_at!: Date | null;
  bumped!: number;
}
