import { crc32 } from 'node:zlib';

/**
 * The shard of a chat, computed exactly as the database's generated column does:
 * CRC32 of the decimal chat id, modulo the shard count.
 */
export function shardOf(chatId: number, shardCount: number): number {
  return crc32(String(chatId)) % shardCount;
}

/** Telegram: positive ids are users (private chats), negative ids are groups and channels. */
export function isGroupChat(chatId: number): boolean {
  return chatId < 0;
}

/** Shard numbers as compact ranges for logs and the CLI: `[0,1,2,5]` → `0-2,5`. */
export function ranges(xs: readonly number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < s.length;) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
    out.push(i === j ? String(s[i]) : `${s[i]}-${s[j]}`);
    i = j + 1;
  }
  return out.join(',');
}
