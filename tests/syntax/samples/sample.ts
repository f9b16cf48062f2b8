// Rate limiter — "données" in UTF-8: ✓
export interface Bucket {
  tokens: number;
  refilledAt: number;
}

const DEFAULT_RATE: number = 5;
const buckets = new Map<string, Bucket>();

export function take(key: string, now: number, rate: number = DEFAULT_RATE): boolean {
  const bucket = buckets.get(key) ?? { tokens: rate, refilledAt: now };
  const elapsed = (now - bucket.refilledAt) / 1000;
  bucket.tokens = Math.min(rate, bucket.tokens + elapsed * rate);
  bucket.refilledAt = now;
  buckets.set(key, bucket);
  if (bucket.tokens < 1) {
    return false;
  }
  bucket.tokens -= 1;
  return true;
}

export class Limiter<T> {
  private readonly seen: T[] = [];

  constructor(private readonly limit: number) {}

  offer(value: T): boolean {
    if (this.seen.length >= this.limit) {
      return false;
    }
    this.seen.push(value);
    return true;
  }
}

export const summary = (keys: string[]): string =>
  keys.map((k) => `${k}: ${buckets.get(k)?.tokens ?? "—"}`).join(", ");
