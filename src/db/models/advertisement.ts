import { Model } from 'objection';

/** An ad of the marketplace (`advertisements`). `views_count` and `bumped_at` are written by the ads actors only. */
export class Advertisement extends Model {
  static override tableName = 'advertisements';

  id!: number;
  owner_id!: number;
  title!: string;
  is_active!: number;
  auto_bump!: number;
  bumped_at!: Date | null;
  views_count!: number;
  created_at!: Date;
}
