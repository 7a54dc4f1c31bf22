// Compiled (never run) by scripts/test's types step with tsc --noEmit: the generated
// types/database.ts must type the dashboard's supabase-js queries. Each @ts-expect-error line is
// a mistake the types must catch; tsc fails if one of them stops being an error.

import { createClient } from '@supabase/supabase-js';
import type { Database, Tables, TablesUpdate } from '../../types/database';

const supabase = createClient<Database>('http://127.0.0.1:54321', 'anon-key');

export async function newestSignals(): Promise<Pick<Tables<'signals'>, 'id' | 'ticker' | 'timestamp'>[]> {
  const { data, error } = await supabase
    .from('signals')
    .select('id, ticker, timestamp')
    .eq('screenshot_status', 'completed')
    .order('timestamp', { ascending: false })
    .range(0, 49);
  if (error) throw error;
  return data;
}

export async function journal(id: string, change: Pick<TablesUpdate<'signals'>, 'result' | 'profit_loss' | 'notes'>) {
  return supabase.from('signals').update(change).eq('id', id);
}

export async function stats() {
  const { data } = await supabase.rpc('signal_stats');
  const rotated = await supabase.rpc('rotate_webhook_token');
  const token: string | null = rotated.data;
  return { data, token };
}

export function mistakes() {
  // @ts-expect-error no such table
  void supabase.from('signal');
  // @ts-expect-error no such function
  void supabase.rpc('signal_statistics');
  // @ts-expect-error profit_loss is a number
  void supabase.from('signals').update({ profit_loss: 'a lot' });
  // @ts-expect-error ingest_signal needs its token, time and body
  void supabase.rpc('ingest_signal', { p_ticker: 'BINANCE:BTCUSDT' });
  const row = {} as Tables<'signals'>;
  // @ts-expect-error price may be null
  const price: number = row.price;
  return price;
}
