-- The capture queue: priority order, leases, stale completions, the retry schedule, dead letters.
begin;
set local search_path = extensions, public;
select plan(38);

-- Other tests' jobs must not interfere: this transaction sees only its own queue.
delete from private.capture_jobs;

insert into auth.users (id, aud, role, email)
values ('dddddddd-0000-0000-0000-000000000004', 'authenticated', 'authenticated', 'free@example.test'),
       ('eeeeeeee-0000-0000-0000-000000000005', 'authenticated', 'authenticated', 'premium@example.test');
update public.user_config set plan = 'premium' where user_id = 'eeeeeeee-0000-0000-0000-000000000005';

create function pg_temp.ingest(p_user uuid, p_body text) returns uuid language sql as $$
  select (public.ingest_signal((select webhook_token from public.user_config where user_id = p_user), now(), p_body,
                               null, 'NYSE:IBM', 'NYSE', 'IBM', 100, 'short') ->> 'signal_id')::uuid
$$;

create temp table s on commit drop as
  select pg_temp.ingest('dddddddd-0000-0000-0000-000000000004', 'free 1') as free1,
         pg_temp.ingest('eeeeeeee-0000-0000-0000-000000000005', 'premium 1') as prem1,
         pg_temp.ingest('dddddddd-0000-0000-0000-000000000004', 'free 2') as free2;
-- run_at orders jobs of the same priority: free 1 waited longer than free 2.
update private.capture_jobs set run_at = now() - interval '10 seconds' where signal_id = (select free1 from s);

create temp table c1 on commit drop as select * from private.claim_capture_jobs('worker-a', 2, interval '60 seconds');
select results_eq($$ select signal_id from c1 order by priority, signal_id = (select free2 from s) $$,
  $$ values ((select prem1 from s)), ((select free1 from s)) $$, 'claims come by priority, then by run_at');
select ok((select bool_and(attempt = 1 and lease_token is not null) from c1), 'a claim counts the attempt and sets a lease token');
select is((select count(*)::int from public.signals where id in (select signal_id from c1) and screenshot_status = 'processing'),
  2, 'claimed signals show processing');
select results_eq($$ select ticker, direction, screenshot_resolution, cookies_valid from c1 where signal_id = (select prem1 from s) $$,
  $$ values ('NYSE:IBM'::text, 'short'::text, '720p'::text, false) $$, 'a claim returns what the capture needs');
select ok((select bool_and(lease_expires_at between now() + interval '59 seconds' and now() + interval '61 seconds')
             from private.capture_jobs where signal_id in (select signal_id from c1)), 'the lease is as long as asked');

create temp table c2 on commit drop as select * from private.claim_capture_jobs('worker-b', 10);
select results_eq($$ select signal_id from c2 $$, $$ select free2 from s $$,
  'a second worker gets only what the first did not hold');
select is((select count(*)::int from private.claim_capture_jobs('worker-c', 10)), 0, 'nothing is handed out twice');
select throws_ok($$ select * from private.claim_capture_jobs('worker-c', 0) $$, '22023', null, 'a zero limit is refused');
select throws_ok($$ select * from private.claim_capture_jobs('worker-c', 1, interval '1 second') $$, '22023', null,
  'a lease shorter than 10 s is refused');

-- complete with the lease token
select is(private.complete_capture_job((select prem1 from s), (select lease_token from c1 where signal_id = (select prem1 from s)),
                                       'eeeeeeee-0000-0000-0000-000000000005/' || (select prem1 from s) || '.png'), true,
  'the lease holder completes the job');
select results_eq($$ select screenshot_status, screenshot_path from public.signals where id = (select prem1 from s) $$,
  $$ select 'completed'::text, 'eeeeeeee-0000-0000-0000-000000000005/' || prem1 || '.png' from s $$,
  'the signal shows completed with its path');
select is((select count(*)::int from private.capture_jobs where signal_id = (select prem1 from s)), 0,
  'a completed job leaves the queue');
select results_eq($$ select worker_id, attempt from private.capture_completions where signal_id = (select prem1 from s) $$,
  $$ values ('worker-a'::text, 1::smallint) $$, 'the completion records which worker took it, at which attempt');

-- expired lease returns the job; the old worker's completion is stale
update private.capture_jobs set lease_expires_at = now() - interval '1 second' where signal_id = (select free1 from s);
select is(private.reclaim_expired_capture_jobs(), 1, 'an expired lease is reclaimed');
select results_eq($$ select state, attempts, lease_token from private.capture_jobs where signal_id = (select free1 from s) $$,
  $$ values ('queued'::text, 1::smallint, null::uuid) $$, 'the job is back in the queue, its attempt counted');
select is((select screenshot_status from public.signals where id = (select free1 from s)), 'processing',
  'lease churn does not touch the signal');
create temp table c3 on commit drop as select * from private.claim_capture_jobs('worker-b', 10);
select results_eq($$ select signal_id, attempt from c3 $$, $$ select free1, 2::smallint from s $$,
  'another worker claims it again, as attempt 2');
select is(private.complete_capture_job((select free1 from s), (select lease_token from c1 where signal_id = (select free1 from s)),
                                       'stale.png'), false, 'the first worker''s late completion is rejected');
select is((select screenshot_path from public.signals where id = (select free1 from s)), null,
  'a stale completion writes nothing');
select is((select count(*)::int from private.capture_completions where signal_id = (select free1 from s)), 0,
  'a stale completion records no completion');

-- failure schedule: 2 s after attempt 1, 4 s after attempt 2, failed after attempt 3
create temp table f on commit drop as
  select * from private.fail_capture_job((select free2 from s), (select lease_token from c2), 'chart did not load');
select is((select outcome from f), 'retry', 'a first failure is retried');
select ok((select retry_at between now() + interval '2 seconds' and now() + interval '2.2 seconds' from f),
  'the first retry waits 2 s (+ up to 10 % jitter)');
select is((select fail_capture_job.outcome from private.fail_capture_job((select free2 from s), (select lease_token from c2), 'again')),
  'stale', 'a failure reported without the current lease is stale');
update private.capture_jobs set run_at = now() - interval '1 second' where signal_id = (select free2 from s);
create temp table c4 on commit drop as select * from private.claim_capture_jobs('worker-a', 10);
select ok((select retry_at between now() + interval '4 seconds' and now() + interval '4.4 seconds'
             from private.fail_capture_job((select free2 from s), (select lease_token from c4 where signal_id = (select free2 from s)), 'timeout')),
  'the second retry waits 4 s');
update private.capture_jobs set run_at = now() - interval '1 second' where signal_id = (select free2 from s);
create temp table c5 on commit drop as select * from private.claim_capture_jobs('worker-a', 10);
select is((select attempt from c5 where signal_id = (select free2 from s)), 3::smallint, 'the third claim is attempt 3');
select is((select fail_capture_job.outcome from private.fail_capture_job((select free2 from s),
             (select lease_token from c5 where signal_id = (select free2 from s)), 'page never became ready')),
  'failed', 'the third failure is final');
select results_eq($$ select state, last_error from private.capture_jobs where signal_id = (select free2 from s) $$,
  $$ values ('failed'::text, 'page never became ready'::text) $$, 'the dead letter keeps its reason');
select results_eq($$ select screenshot_status, screenshot_error from public.signals where id = (select free2 from s) $$,
  $$ values ('failed'::text, 'page never became ready'::text) $$, 'the trader sees failed and why');
select ok(abs(extract(epoch from private.capture_retry_delay(3)) - 8) <= 0.8, 'the schedule continues with 8 s');

-- the dead-letter count of /health reads the partial index, not the whole queue (seq scans are
-- priced out, so without a matching index the plan would still be a scan of capture_jobs)
select is((public.capture_queue_status() ->> 'dead_letter')::int, 1, 'capture_queue_status counts the dead letter');
create function pg_temp.plan_of(p_query text) returns text language plpgsql as $$
declare
  v_plan text;
begin
  execute 'explain (format json) ' || p_query into v_plan;
  return v_plan;
end;
$$;
set local enable_seqscan = off;
select ok(pg_temp.plan_of('select count(*) from private.capture_jobs where state = ''failed''') like '%capture_jobs_failed_idx%',
  'dead letters are counted over capture_jobs_failed_idx');
reset enable_seqscan;

-- a crash-looping job runs out of attempts through lease expiry alone
update private.capture_jobs set attempts = 3, state = 'running', lease_token = gen_random_uuid(),
       lease_expires_at = now() - interval '1 second', locked_by = 'crashed'
 where signal_id = (select free1 from s);
select is(private.reclaim_expired_capture_jobs(), 1, 'the expired, used-up job is handled');
select is((select screenshot_status from public.signals where id = (select free1 from s)), 'failed',
  'a job whose attempts are used up by crashes ends failed');

-- release on shutdown gives the attempt back
select pg_temp.ingest('dddddddd-0000-0000-0000-000000000004', 'free 3');
create temp table c6 on commit drop as select * from private.claim_capture_jobs('worker-a', 10);
select ok(private.release_capture_job((select signal_id from c6), (select lease_token from c6)), 'the holder releases its job');
select results_eq($$ select state, attempts from private.capture_jobs where signal_id = (select signal_id from c6) $$,
  $$ values ('queued'::text, 0::smallint) $$, 'a released job is queued again without spending an attempt');

-- wake-up: NOTIFY only when a daemon said it is idle, once per idle period
update private.capture_wakeup set daemon_waiting = false;
select pg_temp.ingest('dddddddd-0000-0000-0000-000000000004', 'free 4');
select is((select daemon_waiting from private.capture_wakeup), false, 'busy daemons are not woken');
select private.capture_daemon_idle();
select is((select daemon_waiting from private.capture_wakeup), true, 'an idle daemon raises the flag');
select pg_temp.ingest('dddddddd-0000-0000-0000-000000000004', 'free 5');
select is((select daemon_waiting from private.capture_wakeup), false, 'the next alert clears it (and notifies)');

select * from finish();
rollback;
