-- Deleting a signal queues the removal of its Storage object: every way a signal goes (the trader,
-- an operator, the cascade from auth.users), in the same transaction, with the exact path; claims
-- under a lease, confirmed deletions removed unless queued again, failures retried later with
-- their error; orphans of late uploads; who may call what.
begin;
set local search_path = extensions, public;
select plan(23);

insert into auth.users (id, aud, role, email)
values ('aaaaaaaa-0000-0000-0000-0000000e0001', 'authenticated', 'authenticated', 'del-a@example.test'),
       ('aaaaaaaa-0000-0000-0000-0000000e0002', 'authenticated', 'authenticated', 'del-b@example.test');

create function pg_temp.signal(p_user uuid, p_body text) returns uuid language sql as $$
  select (public.ingest_signal((select webhook_token from public.user_config where user_id = p_user), now(), p_body,
                               null, 'NYSE:IBM', 'NYSE', 'IBM', 100, 'long') ->> 'signal_id')::uuid;
$$;
create temp table s on commit drop as
  select pg_temp.signal('aaaaaaaa-0000-0000-0000-0000000e0001', 'stored') as stored,
         pg_temp.signal('aaaaaaaa-0000-0000-0000-0000000e0001', 'pending') as pending,
         pg_temp.signal('aaaaaaaa-0000-0000-0000-0000000e0001', 'kept') as kept,
         pg_temp.signal('aaaaaaaa-0000-0000-0000-0000000e0002', 'b one') as b1,
         pg_temp.signal('aaaaaaaa-0000-0000-0000-0000000e0002', 'b two') as b2;
grant select on s to authenticated;
update public.signals set screenshot_status = 'completed', screenshot_path = 'custom/place.png'
 where id = (select stored from s);
-- Earlier tests' entries stay out of the way.
delete from private.screenshot_deletions;

set local role authenticated;
set local request.jwt.claims = '{"sub": "aaaaaaaa-0000-0000-0000-0000000e0001", "role": "authenticated"}';
select lives_ok($$ delete from public.signals where id in ((select stored from s), (select pending from s)) $$,
  'the trader deletes two of their signals');
reset role;
select set_eq($$ select object_path from private.screenshot_deletions $$,
  $$ values ('custom/place.png'),
            ('aaaaaaaa-0000-0000-0000-0000000e0001/' || (select pending from s) || '.png') $$,
  'each one''s object is queued: its recorded path, or where its upload would land');
select ok((select bool_and(next_attempt_at <= now() and attempts = 0) from private.screenshot_deletions), 'due at once');

delete from auth.users where id = 'aaaaaaaa-0000-0000-0000-0000000e0002';
select ok(exists (select from private.screenshot_deletions
                   where object_path = 'aaaaaaaa-0000-0000-0000-0000000e0002/' || (select b1 from s) || '.png')
          and exists (select from private.screenshot_deletions
                   where object_path = 'aaaaaaaa-0000-0000-0000-0000000e0002/' || (select b2 from s) || '.png'),
  'a deleted account''s signals are queued too');
select is((select count(*)::int from private.screenshot_deletions), 4, 'nothing else is');

create temp table c1 on commit drop as select * from private.claim_screenshot_deletions(3, '1 minute');
select is((select count(*)::int from c1), 3, 'a claim takes at most the limit');
select ok((select bool_and(d.next_attempt_at = now() + interval '1 minute' and d.attempts = 1)
             from private.screenshot_deletions d join c1 using (object_path)), 'under a lease, the attempt counted');
select is((select count(*)::int from private.claim_screenshot_deletions(10, '1 minute')), 1,
  'a second claim gets only what the first left');
select is_empty($$ select * from private.claim_screenshot_deletions(10, '1 minute') $$, 'claimed paths are not handed out again');

-- One of the claimed paths is queued again (a late upload) before the deletion is confirmed.
update private.screenshot_deletions set queued_at = now() + interval '1 second'
 where object_path = (select min(object_path) from c1);
select is(private.finish_screenshot_deletions((select array_agg(object_path) from c1), (select array_agg(queued_at) from c1)), 2,
  'confirmed deletions are removed');
select is((select count(*)::int from private.screenshot_deletions where object_path in (select object_path from c1)), 1,
  'except one queued again meanwhile');

create temp table c2 on commit drop as
  select d.object_path from private.screenshot_deletions d where d.object_path not in (select object_path from c1);
select is(private.retry_screenshot_deletions((select array_agg(object_path) from c2), 'Storage answered 503'), 1,
  'a failed deletion is scheduled again');
select results_eq($$ select next_attempt_at > now() + interval '1 second' and next_attempt_at < now() + interval '3 seconds',
                            last_error from private.screenshot_deletions where object_path in (select object_path from c2) $$,
  $$ values (true, 'Storage answered 503'::text) $$, 'after 2 s (+ jitter) for a first failure, with the error kept');
update private.screenshot_deletions set attempts = 40 where object_path in (select object_path from c2);
select is(private.retry_screenshot_deletions((select array_agg(object_path) from c2), 'again'), 1, 'failing again');
select ok((select next_attempt_at <= now() + interval '1 hour' from private.screenshot_deletions
            where object_path in (select object_path from c2)), 'never more than an hour apart: retried until done');

select ok(not private.queue_orphan_screenshot((select kept from s), 'aaaaaaaa-0000-0000-0000-0000000e0001/' || (select kept from s) || '.png'),
  'an upload for a signal that exists is no orphan');
select ok(private.queue_orphan_screenshot((select pending from s), 'aaaaaaaa-0000-0000-0000-0000000e0001/late.png'),
  'an upload that landed after its signal was deleted is queued');
select ok(exists (select from private.screenshot_deletions where object_path = 'aaaaaaaa-0000-0000-0000-0000000e0001/late.png'),
  '(queued)');
select throws_ok($$ select private.queue_orphan_screenshot(gen_random_uuid(), '') $$, '22023', null, 'an empty path is refused');
select throws_ok($$ select * from private.claim_screenshot_deletions(10, '1 second') $$, '22023', null,
  'a lease too short to delete a batch is refused');

select ok(not has_function_privilege('authenticated', 'private.claim_screenshot_deletions(integer, interval)', 'execute')
          and not has_function_privilege('anon', 'private.queue_orphan_screenshot(uuid, text)', 'execute')
          and not has_function_privilege('authenticated', 'private.finish_screenshot_deletions(text[], timestamptz[])', 'execute'),
  'end users cannot touch the deletion queue');
select ok(has_function_privilege('service_role', 'private.claim_screenshot_deletions(integer, interval)', 'execute')
          and has_function_privilege('service_role', 'private.retry_screenshot_deletions(text[], text)', 'execute'),
  'the service role can');
select ok(not has_table_privilege('service_role', 'private.screenshot_deletions', 'select'),
  'the queue itself is reached through the functions only');

select * from finish();
rollback;
