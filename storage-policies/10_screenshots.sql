-- Storage: the private `screenshots` bucket. Objects live at {user_id}/{signal_id}.png and are
-- written only by the capture daemon with the project's secret key (which bypasses these policies).
-- A signed-in trader may read (and so make signed URLs for) objects under their own folder only;
-- end users write, update and delete nothing. Anonymous callers see nothing.

insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
values ('screenshots', 'screenshots', false, 5242880, array['image/png'])
on conflict (id) do update
  set public = excluded.public,
      file_size_limit = excluded.file_size_limit,
      allowed_mime_types = excluded.allowed_mime_types;

drop policy if exists "traders read their own screenshots" on storage.objects;
create policy "traders read their own screenshots"
  on storage.objects for select to authenticated
  using (
    bucket_id = 'screenshots'
    and (storage.foldername(name))[1] = (select auth.uid())::text
  );
