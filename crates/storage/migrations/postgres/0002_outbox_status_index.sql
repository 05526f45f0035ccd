-- GET /outbox?status=dead lists newest first: served by this index instead of a scan.
CREATE INDEX outbox_status_id ON outbox (status, id);
