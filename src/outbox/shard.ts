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
