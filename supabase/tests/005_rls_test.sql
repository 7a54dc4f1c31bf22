-- Row level security as the dashboard meets it: trader A never sees or changes trader B's rows.
-- (tests/ repeats the essentials through the real PostgREST with minted JWTs.)
begin;
set local search_path = extensions, public;
select plan(20);

insert into auth.users (id, aud, role, email)
values ('a0a0a0a0-0000-0000-0000-00000000000a', 'authenticated', 'authenticated', 'ra@example.test'),
       ('b0b0b0b0-0000-0000-0000-00000000000b', 'authenticated', 'authenticated', 'rb@example.test');
create temp table ids on commit drop as
  select (public.ingest_signal((select webhook_token from public.user_config where user_id = 'a0a0a0a0-0000-0000-0000-00000000000a'),
            now(), 'A 1', null, 'BINANCE:ETHUSDT', 'BINANCE', 'ETHUSDT', 3000, 'long') ->> 'signal_id')::uuid as a1,
         (public.ingest_signal((select webhook_token from public.user_config where user_id = 'b0b0b0b0-0000-0000-0000-00000000000b'),
            now(), 'B 1', null, 'BINANCE:SOLUSDT', 'BINANCE', 'SOLUSDT', 150, 'short') ->> 'signal_id')::uuid as b1;
grant select on ids to authenticated, anon;
insert into storage.objects (bucket_id, name)
values ('screenshots', 'a0a0a0a0-0000-0000-0000-00000000000a/' || (select a1 from ids) || '.png'),
       ('screenshots', 'b0b0b0b0-0000-0000-0000-00000000000b/' || (select b1 from ids) || '.png');

set local role authenticated;
set local request.jwt.claims = '{"sub": "a0a0a0a0-0000-0000-0000-00000000000a", "role": "authenticated"}';

select results_eq($$ select id from public.signals $$, $$ select a1 from ids $$, 'A sees only A''s signals');
select is((select count(*)::int from public.webhook_deliveries where user_id <> 'a0a0a0a0-0000-0000-0000-00000000000a'), 0,
  'A sees no one else''s deliveries');
select is((select count(*)::int from public.webhook_deliveries), 1, 'A sees their own delivery');
select results_eq($$ select name from storage.objects where bucket_id = 'screenshots' $$,
  $$ select 'a0a0a0a0-0000-0000-0000-00000000000a/' || a1 || '.png' from ids $$, 'A sees only A''s screenshot objects');
select lives_ok($$ update public.signals set result = 'win', profit_loss = 125.5, notes = 'clean breakout' $$,
  'A journals their own signal');
select results_eq($$ select result, profit_loss, notes from public.signals $$,
  $$ values ('win'::text, 125.5::numeric, 'clean breakout'::text) $$, 'the journal is saved');
select throws_ok($$ update public.signals set price = 1 $$, '42501', null, 'A cannot change the price');
select throws_ok($$ update public.signals set ticker = 'X' $$, '42501', null, 'A cannot change the ticker');
select throws_ok($$ update public.signals set screenshot_status = 'completed' $$, '42501', null,
  'A cannot change screenshot fields');
select throws_ok($$ update public.signals set screenshot_path = 'x.png' $$, '42501', null, 'nor the screenshot path');
select throws_ok($$ insert into public.signals (user_id, ticker, symbol, raw_message, "timestamp")
                    values ('a0a0a0a0-0000-0000-0000-00000000000a', 'X', 'X', 'x', now()) $$, '42501', null,
  'A cannot insert signals');
select throws_ok($$ insert into storage.objects (bucket_id, name) values ('screenshots', 'a0a0a0a0-0000-0000-0000-00000000000a/x.png') $$,
  '42501', null, 'A cannot upload screenshots');
update public.signals set result = 'loss', notes = 'tampered' where id = (select b1 from ids);
delete from public.signals where id = (select b1 from ids);
-- Storage refuses direct deletes unless the Storage API says it is the one deleting; it says so
-- before running the caller's delete under the caller's role, so RLS is what stops A here.
set local storage.allow_delete_query = 'true';
delete from storage.objects where name like 'b0b0b0b0%';
select lives_ok($$ delete from public.signals where id = (select a1 from ids) $$, 'A deletes their own signal');
select is((select count(*)::int from public.signals), 0, 'A''s signal is gone');

set local role anon;
set local request.jwt.claims = '{"role": "anon"}';
select throws_ok($$ select * from public.signals $$, '42501', null, 'anon cannot read signals');
select throws_ok($$ select * from public.user_config $$, '42501', null, 'anon cannot read configs');
select throws_ok($$ select public.signal_stats() $$, '42501', null, 'anon cannot read statistics');
select is((select count(*)::int from storage.objects), 0, 'anon sees no screenshot objects');
reset role;

select results_eq($$ select result, notes from public.signals where id = (select b1 from ids) $$,
  $$ values ('pending'::text, null::text) $$, 'B''s signal was neither edited nor deleted by A');
select is((select count(*)::int from storage.objects where name like 'b0b0b0b0%'), 1, 'B''s screenshot object survived A');

select * from finish();
rollback;
