-- pgTAP checks of the Supabase-compatible bootstrap, run as `postgres` by scripts/test (like the
-- project's tests under supabase/tests). They pin what the mirror promises: postgres is no
-- superuser and owns neither auth nor storage, yet can do what Supabase lets it do there (policies,
-- triggers, bucket rows, the publication) and nothing more; the JWT and path helpers behave like
-- Supabase's. Everything runs in one transaction and rolls back.
begin;
select plan(24);

-- Who is who.
select is(current_user::text, 'postgres', 'the checks run as postgres');
select ok(not (select rolsuper from pg_roles where rolname = 'postgres'), 'postgres is not a superuser');
select ok((select rolbypassrls and rolcreaterole and rolcreatedb and rolreplication
           from pg_roles where rolname = 'postgres'),
  'postgres has BYPASSRLS, CREATEROLE, CREATEDB and REPLICATION, as on Supabase');
select ok((select rolcanlogin and not rolinherit from pg_roles where rolname = 'authenticator'),
  'authenticator logs in and inherits nothing');
select ok(pg_has_role('authenticator', 'anon', 'member') and pg_has_role('authenticator', 'authenticated', 'member')
          and pg_has_role('authenticator', 'service_role', 'member'),
  'authenticator can switch to the three API roles');
select ok((select rolbypassrls from pg_roles where rolname = 'service_role'), 'service_role bypasses RLS');
select is((select relowner::regrole::text from pg_class where oid = 'auth.users'::regclass),
  'supabase_auth_admin', 'auth.users belongs to supabase_auth_admin');
select is((select relowner::regrole::text from pg_class where oid = 'storage.objects'::regclass),
  'supabase_storage_admin', 'storage.objects belongs to supabase_storage_admin');
select is((select pubowner::regrole::text from pg_publication where pubname = 'supabase_realtime'),
  'postgres', 'supabase_realtime belongs to postgres');

-- What postgres may do on auth and storage (supautils.policy_grants on Supabase).
create table public.bootstrap_probe (id uuid primary key references auth.users (id) on delete cascade);
select lives_ok($$ create policy bootstrap_probe on storage.objects for select to authenticated
                   using (bucket_id = 'bootstrap-probe' and (select auth.uid())::text = (storage.foldername(name))[1]) $$,
  'postgres creates a policy on storage.objects');
select lives_ok($$ alter policy bootstrap_probe on storage.objects to authenticated, service_role $$,
  'postgres alters it');
select lives_ok($$ drop policy bootstrap_probe on storage.objects $$, 'postgres drops it');
create function public.bootstrap_probe_trigger() returns trigger language plpgsql set search_path = '' as
  $$ begin return new; end $$;
select lives_ok($$ create trigger bootstrap_probe after insert on auth.users
                   for each row execute function public.bootstrap_probe_trigger() $$,
  'postgres creates a trigger on auth.users');
select lives_ok($$ drop trigger bootstrap_probe on auth.users $$, 'postgres drops it');
select lives_ok($$ insert into storage.buckets (id, name) values ('bootstrap-probe', 'bootstrap-probe') $$,
  'postgres inserts a bucket');
select lives_ok($$ alter publication supabase_realtime add table public.bootstrap_probe $$,
  'postgres adds its table to supabase_realtime');

-- ...and what it may not (it owns neither schema's objects on Supabase).
select throws_ok($$ create index on storage.objects (owner_id) $$, '42501', null,
  'postgres cannot index storage.objects');
select throws_ok($$ alter table auth.users add column nickname text $$, '42501', null,
  'postgres cannot alter auth.users');
select throws_ok($$ create table storage.bootstrap_probe (id int) $$, '42501', null,
  'postgres cannot create tables in storage');
select throws_ok($$ delete from storage.objects $$, '42501', null,
  'plain SQL deletes from storage.objects are refused, as by Supabase Storage');

-- The helpers policies use.
set local request.jwt.claims = '{"sub": "0b0b0b0b-0000-4000-8000-000000000001", "role": "authenticated", "email": "probe@example.com"}';
select is(auth.uid(), '0b0b0b0b-0000-4000-8000-000000000001'::uuid, 'auth.uid() reads sub from request.jwt.claims');
select is(auth.jwt() ->> 'email', 'probe@example.com', 'auth.jwt() returns the claims');
select is(storage.foldername('u1/sub/s1.png'), array['u1', 'sub'], 'storage.foldername() lists the folders');
select is(storage.filename('u1/s1.png') || '|' || storage.extension('u1/s1.tar.png'), 's1.png|png',
  'storage.filename() and storage.extension() split the last segment');

select * from finish();
rollback;
